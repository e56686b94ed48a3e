"""The code's layout holds: each constant has one home, the Python mirrors of csrc/plans.h and
csrc/params.h agree with them, the backends do not import each other, and no text in the project
speaks of its own work notes."""
import ast
import re
from pathlib import Path

import pytest

from fused_rnn.ops import cells
from fused_rnn.ops.cuda import plans

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "fused_rnn"
CSRC = ROOT / "csrc"


def _header(name: str) -> str:
    # Without comments: they quote names and numbers too.
    text = (CSRC / name).read_text()
    return re.sub(r"//[^\n]*", "", text)


def _enum(text: str, name: str) -> dict:
    body = re.search(rf"enum {name} : int {{([^}}]*)}}", text).group(1)
    return {k.strip(): int(v) for k, v in (item.split("=") for item in body.split(","))}


def _constant(text: str, name: str) -> int:
    return int(re.search(rf"constexpr int {name} = (\d+);", text).group(1))


def _gpu_plans(text: str, macro: str = "FRNN_CLUSTER_PLANS"):
    """The X(H, CS, KS, exchange) (multi-cluster: X(H, NC, CS, KS, BT)) entries of a plans
    macro in the GPU build's branch."""
    block = text[text.index(f"#define {macro}"):]
    gpu = block.split("#else", 1)[1].split("#endif", 1)[0]
    return [tuple(map(int, m.split(", "))) for m in re.findall(r"X\(([\d, ]+)\)", gpu)]


def test_cuda_plans_mirror_plans_h():
    text = _header("plans.h")
    assert _enum(text, "Variant") == {f"k{n.capitalize()}": c for n, c in plans.VARIANT_CODES.items()}
    assert _enum(text, "Exchange") == {"kBarrier": plans.EXCHANGE_CODES[""],
                                       "kAsync": plans.EXCHANGE_CODES["a"]}
    assert _constant(text, "kPlanExchangeUnit") == plans.PLAN_EXCHANGE_UNIT
    assert _constant(text, "kPlanClusterUnit") == plans.PLAN_CLUSTER_UNIT
    assert _constant(text, "kClusterBatch") == plans.CLUSTER_BATCH
    entries = _gpu_plans(text)
    assert len(entries) >= 12, entries
    for H, cs, ks, exchange in entries:
        name = f"{cs}x{ks}{'a' if exchange else ''}"
        code = plans.plan_code(name)
        assert code == exchange * 10000 + cs * 100 + ks  # plan_code() in plans.h
        assert plans.plan_name(code) == name and H % (16 * cs) == 0


def test_cuda_backward_plans_parse_and_default_to_fence_free_ones():
    """The cluster backward's plans (X(H, CS, NW, exchange)) have names plans.py reads back,
    tile H, and each H's default (its first) has no fence in its time loop: one block, or the
    asynchronous exchange (tests/test_sass.py checks the SASS)."""
    entries = _gpu_plans(_header("plans.h"), "FRNN_CLUSTER_BWD_PLANS")
    assert {H for H, *_ in entries} == {64, 128, 256}, entries
    defaults = {}
    for H, cs, nw, exchange in entries:
        name = f"{cs}x{nw}{'a' if exchange else ''}"
        assert plans.plan_name(plans.plan_code(name, backward=True)) == name
        assert H % (16 * cs) == 0 and H % (16 * nw) == 0, (H, name)
        defaults.setdefault(H, (cs, exchange))
    assert all(cs == 1 or exchange for cs, exchange in defaults.values()), defaults


@pytest.mark.parametrize("macro", ["FRNN_MULTI_PLANS", "FRNN_MULTI_BWD_PLANS"])
def test_multicluster_plans_mirror_plans_h(macro):
    """The multi-cluster plans (X(H, NC, CS, KS, BT)): names plans.py reads back to plans.h's
    codes (multi_plan_code), at least two clusters within kMaxClusters, whole tiles of 16 units
    per block, and H from 512 to 1024 on the GPU, each H's first plan one batch tile per
    block (the one tried first)."""
    text = _header("plans.h")
    assert _constant(text, "kPlanMultiUnit") == plans.PLAN_MULTI_UNIT
    assert _constant(text, "kMaxClusters") == plans.MAX_CLUSTERS
    assert _constant(text, "kMaxBatchTiles") == plans.MAX_BATCH_TILES
    entries = _gpu_plans(text, macro)
    assert {H for H, *_ in entries} == {512, 768, 1024}, entries
    first = {}
    for H, nc, cs, ks, bt in entries:
        name = f"{nc}x{cs}x{ks}" + (f"b{bt}" if bt > 1 else "")
        code = plans.plan_code(name, backward=macro.endswith("BWD_PLANS"))
        assert code == nc * 100000 + bt * 10000 + cs * 100 + ks  # multi_plan_code() in plans.h
        assert plans.plan_name(code) == name
        assert 2 <= nc <= plans.MAX_CLUSTERS and H % (16 * nc * cs) == 0, (H, name)
        first.setdefault(H, bt)
    assert set(first.values()) == {1}, first


def test_cell_constants_mirror_params_h():
    text = _header("params.h")
    assert _enum(text, "Cell") == {"kLSTM": cells.CELL_CODES["LSTM"],
                                   "kGRU": cells.CELL_CODES["GRU"],
                                   "kRNNTanh": cells.CELL_CODES["RNN_TANH"],
                                   "kRNNRelu": cells.CELL_CODES["RNN_RELU"]}
    gates = re.search(r"gates = (CELL == kLSTM \? 4 : CELL == kGRU \? 3 : 1);", text)
    saved = re.search(r"saved = (CELL == kLSTM \|\| CELL == kGRU \? 4 : 1);", text)
    assert gates and saved, "CellSizes in csrc/params.h changed: update ops/cells.py and here"
    assert cells.GATES == {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}
    assert cells.SAVED == {"LSTM": 4, "GRU": 4, "RNN_TANH": 1, "RNN_RELU": 1}


def _assignments(path: Path):
    for node in ast.parse(path.read_text()).body:
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, ast.AnnAssign) else []
        for t in targets:
            for name in ([t] if isinstance(t, ast.Name) else getattr(t, "elts", [])):
                if isinstance(name, ast.Name):
                    yield name.id, node


@pytest.mark.parametrize("name", ["CELLS", "CELL_CODES", "GATES", "SAVED", "LN_EPS"])
def test_cell_constants_have_one_home(name):
    """Defined in ops/cells.py only: no other module assigns a copy of its value (derived
    tables, keyed otherwise or made from it, are fine)."""
    value = getattr(cells, name)
    copies = []
    for path in PKG.rglob("*.py"):
        if path == PKG / "ops" / "cells.py":
            continue
        for _, node in _assignments(path):
            try:
                literal = ast.literal_eval(node.value)
            except ValueError:
                continue
            if literal == value:
                copies.append(f"{path.relative_to(ROOT)}: {ast.unparse(node)}")
    assert not copies, copies


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            level = "." * node.level
            yield level + (node.module or ""), [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []


def _package_imports(path: Path):
    """The fused_rnn modules a module imports, as dotted names below fused_rnn.ops ("triton",
    "triton.plans", "cells", ...) plus the names it takes from them."""
    package = path.parent.relative_to(PKG / "ops").parts if path.parent != PKG / "ops" else ()
    for module, names in _imports(path):
        if module.startswith("fused_rnn.ops."):
            parts = module.split(".")[2:]
        elif module.startswith("."):
            level = len(module) - len(module.lstrip("."))
            base = list(package)[:len(package) - (level - 1)] if level - 1 <= len(package) \
                else None
            if base is None:  # above fused_rnn/ops: not a backend
                continue
            parts = base + [p for p in module.lstrip(".").split(".") if p]
        else:
            continue
        yield parts, names


def test_backends_do_not_import_each_other():
    """ops/triton and ops/cuda use the shared ops/ modules, never each other; the shared
    modules use neither (functional.py and the benchmark pick a backend)."""
    for backend, other in (("triton", "cuda"), ("cuda", "triton")):
        for path in (PKG / "ops" / backend).glob("*.py"):
            for parts, names in _package_imports(path):
                assert other not in parts[:1] + (names if not parts else []), \
                    f"ops/{backend}/{path.name} imports {parts} {names}"
    for path in (PKG / "ops").glob("*.py"):
        for parts, names in _package_imports(path):
            assert not {"triton", "cuda"} & set(parts[:1] + (names if not parts else [])), \
                f"ops/{path.name} imports {parts} {names}"


# Built from parts, so that this file does not match itself.
_WORK_NOTES = re.compile("|".join([r"issues? [0-9]", r"stop [0-9]+", r"\.\./" + "shared"]),
                         re.IGNORECASE)


def test_no_text_speaks_of_work_notes():
    """No issue numbers, stops of work, or files outside the repository in the code, tests,
    scripts, benchmarks, examples, docs or README."""
    roots = [PKG, CSRC, ROOT / "scripts", ROOT / "tests", ROOT / "benchmarks",
             ROOT / "examples", ROOT / "docs", ROOT / "README.md"]
    hits = []
    for root in roots:
        for path in ([root] if root.is_file() else sorted(root.rglob("*")) if root.exists()
                     else []):
            if not path.is_file() or path.suffix in (".png", ".so", ".o", ".pyc"):
                continue
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if _WORK_NOTES.search(line):
                    hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not hits, "\n".join(hits)
