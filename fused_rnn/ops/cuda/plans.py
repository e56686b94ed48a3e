"""The CUDA kernels' codes by name: the Python mirror of csrc/plans.h (variants, cluster plan
codes, the cluster's batch tile). tests/test_layout.py reads csrc/plans.h and checks that these
agree with it.

A forward cluster plan's name is "<CS>x<KS>" (blocks per cluster, k slices), with a trailing
"a" for the asynchronous exchange (st.async and transaction barriers instead of the cluster
barrier; not yet run on a GPU). Its code is exchange * PLAN_EXCHANGE_UNIT + CS *
PLAN_CLUSTER_UNIT + KS; 0 asks for the default plan of H. A backward plan's name is
"<CS>x<NW>" (NW: warps per block, each owning H / NW columns of W_hh), coded the same way.
A multi-cluster plan's name is "<NC>x<CS>x<KS>" (NC clusters of CS blocks per batch tile,
exchanging state through L2 between clusters and st.async within one), with "b<BT>" after it
for BT batch tiles per block ("8x8x8b4"); its code is NC * PLAN_MULTI_UNIT + BT *
PLAN_EXCHANGE_UNIT + CS * PLAN_CLUSTER_UNIT + KS (BT = 1: the code of "<CS>x<KS>a" plus NC's).
"""
from typing import Optional

# enum Variant.
VARIANT_CODES = {"step": 0, "persistent": 1, "cluster": 2}
VARIANTS = tuple(VARIANT_CODES)
VARIANT_NAMES = {code: name for name, code in VARIANT_CODES.items()}
# enum Exchange, by the suffix of a plan's name.
EXCHANGE_CODES = {"": 0, "a": 1}  # kBarrier, kAsync
PLAN_EXCHANGE_UNIT = 10000  # kPlanExchangeUnit
PLAN_CLUSTER_UNIT = 100     # kPlanClusterUnit
PLAN_MULTI_UNIT = 100000    # kPlanMultiUnit
MAX_CLUSTERS = 66           # kMaxClusters: NC of a multi-cluster plan at most
MAX_BATCH_TILES = 9         # kMaxBatchTiles: BT of a multi-cluster plan at most
CLUSTER_BATCH = 16          # kClusterBatch: batch rows per cluster
# The ranges the kernels' templates take: CS blocks per cluster (a portable cluster has at most
# 8, 16 with the non-portable size opt-in of sm_90), KS k slices dividing the 4 quarters of a
# warp's output tile.
CLUSTER_SIZES = range(1, 17)
K_SLICES = (1, 2, 4)
MULTI_K_SLICES = (1, 2, 4, 8, 16)  # the multi-cluster forward sums any number of slices
BWD_WARPS = (1, 2, 4, 8)  # the backward's warps per block


def plan_code(name: Optional[str], backward: bool = False) -> int:
    """The code of a plan name (0 for None: the default plan of H); backward: a plan of the
    cluster backward ("<CS>x<NW>")."""
    if name is None:
        return 0
    text = str(name)
    if text.count("x") == 2:
        return _multi_plan_code(text)
    suffix = "a" if text.endswith("a") else ""
    cs, sep, ks = text[:len(text) - len(suffix)].partition("x")
    second, allowed = ("NW", BWD_WARPS) if backward else ("KS", K_SLICES)
    if not (sep and cs.isdigit() and ks.isdigit() and int(cs) in CLUSTER_SIZES
            and int(ks) in allowed):
        kind = "cluster backward plan" if backward else "cluster plan"
        raise ValueError(f"{kind}: expected '<CS>x<{second}>' with CS in 1..16 and {second} in "
                         f"{', '.join(map(str, allowed))}, and 'a' after it for the asynchronous "
                         f"exchange (e.g. '16x4', '16x4a'), got {name!r}")
    return (EXCHANGE_CODES[suffix] * PLAN_EXCHANGE_UNIT + int(cs) * PLAN_CLUSTER_UNIT + int(ks))


def _multi_plan_code(text: str) -> int:
    head, sep, bt = text.partition("b")
    parts = head.split("x")
    if not (all(p.isdigit() for p in parts) and (not sep or bt.isdigit())
            and 2 <= int(parts[0]) <= MAX_CLUSTERS and int(parts[1]) in CLUSTER_SIZES
            and int(parts[2]) in MULTI_K_SLICES
            and 1 <= int(bt or 1) <= MAX_BATCH_TILES and bt != "1"):
        raise ValueError(f"multi-cluster plan: expected '<NC>x<CS>x<KS>' with NC in "
                         f"2..{MAX_CLUSTERS}, CS in 1..16 and KS in "
                         f"{', '.join(map(str, MULTI_K_SLICES))}, and 'b<BT>' after it for BT "
                         f"in 2..{MAX_BATCH_TILES} batch tiles per block (e.g. '6x8x8', "
                         f"'8x8x8b4'), got {text!r}")
    nc, cs, ks = map(int, parts)
    return (nc * PLAN_MULTI_UNIT + int(bt or 1) * PLAN_EXCHANGE_UNIT + cs * PLAN_CLUSTER_UNIT
            + ks)


def checked_plan_name(name: Optional[str]) -> Optional[str]:
    """name itself, after plan_code has checked it."""
    plan_code(name)
    return name


def checked_bwd_plan_name(name: Optional[str]) -> Optional[str]:
    """name itself, after plan_code has checked it as a backward plan."""
    plan_code(name, backward=True)
    return name


def plan_name(code: int) -> Optional[str]:
    """The name of a plan code (None for 0: no cluster kernel ran)."""
    if not code:
        return None
    nc, code = divmod(code, PLAN_MULTI_UNIT)
    exchange, rest = divmod(code, PLAN_EXCHANGE_UNIT)
    cs, ks = divmod(rest, PLAN_CLUSTER_UNIT)
    if nc:
        return f"{nc}x{cs}x{ks}" + (f"b{exchange}" if exchange > 1 else "")
    suffix = next(s for s, c in EXCHANGE_CODES.items() if c == exchange)
    return f"{cs}x{ks}{suffix}"
