"""Compile the Triton kernels for a GPU target on any machine, GPU or not:

    python -m fused_rnn.ops.triton.compile_check [--arch 90]

It catches what the CPU interpreter lets through: tl.dot shape and dtype rules, unsupported ops,
shared memory over the limit. Each variant the launchers can produce is compiled (every cell,
every dtype and dot precision, with and without bias, mask, a next step and the LSTM
projection, without regularisation and with the step masks of training or of eval mode, and the
LayerNorm cells' kernels, the persistent and one-program-per-batch-tile kernels), and its
shared memory, registers and spills are printed. Run it without TRITON_INTERPRET set.
"""
import argparse
import functools
import itertools
import os
import re
import subprocess
import sys
import tempfile
import time

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from ..cells import CELL_CODES, GATES, SAVED
from . import persistent as P
from . import step as S
from . import tile as TL

# The cell tables keyed by the kernels' CELL code, the constexpr they take.
LSTM, GRU = CELL_CODES["LSTM"], CELL_CODES["GRU"]
CODE_GATES = {CELL_CODES[c]: g for c, g in GATES.items()}
CODE_SAVED = {CELL_CODES[c]: n for c, n in SAVED.items()}

# (pointer type, ACC, PRECISION) per dtype as the launchers choose them.
DTYPES = {"fp32-ieee": ("fp32", tl.float32, "ieee"), "fp32-tf32": ("fp32", tl.float32, "tf32"),
          "bf16": ("bf16", tl.float32, "ieee"), "fp16": ("fp16", tl.float32, "ieee"),
          "fp64": ("fp64", tl.float64, "ieee")}
SMEM_LIMIT = 227 * 1024  # bytes per block on sm_90 (opt-in)


def _signature(fn, pointer_types, scalars, constexprs):
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in scalars:
            sig[name] = "i32"
        else:
            sig[name] = pointer_types[name]
    return sig


def resource_usage(cubin: bytes) -> dict:
    """Registers, stack and local (spill) bytes of a cubin, from cuobjdump -res-usage (shipped
    in triton's nvidia backend)."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True,
                              check=True).stdout
    return {k: int(v) for k, v in re.findall(r"\b(REG|STACK|LOCAL|SHARED):(\d+)", text)}


def step_masks(cell: int, regs: str, acc_t: str):
    """Pointer types and constexpr switches of the step masks (ops/regularize.StepMasks) as the
    launchers pass them for a cell: regs "off", "train" (every mask the cell takes) or "eval"
    (zoneout's constants)."""
    ptrs = dict(hm_ptr="*u8", gm_ptr="*u8", cm_ptr="*u8", zc_ptr="*u8", zh_ptr="*u8",
                scale_ptr=f"*{acc_t}")
    lstm, train = cell == LSTM, regs == "train"
    zone = 1 if train else 2 if regs == "eval" else 0
    return ptrs, dict(HAS_HM=train, HAS_GM=train and cell in (LSTM, GRU),
                      HAS_CM=train and lstm, ZC_MODE=zone if lstm else 0, ZH_MODE=zone)


def variants():
    """(kernel, signature, constexprs, label) for every configuration the launchers use; with
    step masks, only with bias, mask and a next step (they open no other branches)."""
    configs = [((1, 1), "off"), ((0, 0), "off"), ((1, 1), "train"), ((1, 1), "eval")]
    for cell, dtype, (flags, regs) in itertools.product(CODE_GATES, DTYPES, configs):
        elem, acc, precision = DTYPES[dtype]
        acc_t = "fp64" if acc == tl.float64 else "fp32"
        reg_ptrs, reg = step_masks(cell, regs, acc_t)
        projs = (0, 1) if cell == LSTM else (0,)
        for proj in projs:
            common = dict(reg, H=48, CELL=cell, NG=CODE_GATES[cell], NS=CODE_SAVED[cell],
                          HAS_MASK=flags[1], HAS_PROJ=proj, BLOCK_B=16, BLOCK_H=32,
                          PRECISION=precision, ACC=acc)
            if proj:  # the zoneout of h is the projection kernels', and so is hm backward
                common["ZH_MODE"] = 0
            fwd_ptrs = dict(reg_ptrs, gi_ptr=f"*{elem}", w_ptr=f"*{elem}", b_ptr=f"*{elem}",
                            hs_ptr=f"*{elem}", cs_ptr=f"*{acc_t}", out_ptr=f"*{elem}",
                            saved_ptr=f"*{acc_t}", mask_ptr="*u8", ms_ptr=f"*{elem}",
                            hin_ptr=f"*{elem}", xg_ptr=f"*{acc_t}", lnw_ptr=f"*{elem}",
                            lnb_ptr=f"*{elem}")
            cx = dict(common, HK=24 if proj else 48, HAS_BIAS=flags[0], BLOCK_K=32, LN=0)
            yield (S._rnn_fwd_step_kernel,
                   _signature(S._rnn_fwd_step_kernel, fwd_ptrs, {"t", "k", "B"}, cx), cx,
                   (f"fwd cell={cell} {dtype} bias={flags[0]} mask={flags[1]} proj={proj} "
                    f"regs={regs}"))
            bwd_ptrs = dict(reg_ptrs, w_ptr=f"*{elem}", dgh_ptr=f"*{acc_t}",
                            dgi_ptr=f"*{acc_t}", drec_ptr=f"*{acc_t}",
                            dout_ptr=f"*{acc_t}" if proj else f"*{elem}",
                            saved_ptr=f"*{acc_t}", hs_ptr=f"*{elem}", cs_ptr=f"*{acc_t}",
                            carry_h_ptr=f"*{acc_t}", carry_c_ptr=f"*{acc_t}", mask_ptr="*u8",
                            xc_ptr=f"*{acc_t}", dcu_ptr=f"*{acc_t}", lncw_ptr=f"*{elem}",
                            lncb_ptr=f"*{elem}")
            cx = dict(common, P=24 if proj else 48, HAS_NEXT=flags[0] and not proj, BLOCK_N=32,
                      LN_C=False)
            cx["HAS_HM"] = reg["HAS_HM"] and not proj
            yield (S._rnn_bwd_step_kernel,
                   _signature(S._rnn_bwd_step_kernel, bwd_ptrs, {"t", "t_next", "k", "B"}, cx),
                   cx, f"bwd cell={cell} {dtype} next={cx['HAS_NEXT']} mask={flags[1]} "
                       f"proj={proj} regs={regs}")
            if not proj:
                continue
            cx = dict(H=48, P=24, HAS_MASK=flags[1], HAS_HM=reg["HAS_HM"],
                      ZH_MODE=reg["ZH_MODE"], BLOCK_B=16, BLOCK_H=32, BLOCK_K=32,
                      PRECISION=precision, ACC=acc)
            ptrs = dict(reg_ptrs, ms_ptr=f"*{elem}", w_hr_ptr=f"*{elem}", hs_ptr=f"*{elem}",
                        out_ptr=f"*{elem}", mask_ptr="*u8", hin_ptr=f"*{elem}")
            yield (S._lstm_proj_fwd_kernel,
                   _signature(S._lstm_proj_fwd_kernel, ptrs, {"t", "k", "B"}, cx), cx,
                   f"proj fwd {dtype} mask={flags[1]} regs={regs}")
            cx = dict(H=48, P=24, HAS_NEXT=flags[0], HAS_MASK=flags[1], HAS_HM=reg["HAS_HM"],
                      ZH_MODE=reg["ZH_MODE"], BLOCK_B=16, BLOCK_H=32, BLOCK_N=32,
                      PRECISION=precision, ACC=acc)
            ptrs = dict(reg_ptrs, w_ptr=f"*{elem}", dgh_ptr=f"*{acc_t}", dout_ptr=f"*{elem}",
                        dhs_ptr=f"*{acc_t}", carry_h_ptr=f"*{acc_t}", mask_ptr="*u8")
            yield (S._lstm_proj_bwd_dh_kernel,
                   _signature(S._lstm_proj_bwd_dh_kernel, ptrs, {"t", "t_next", "B"}, cx), cx,
                   f"proj bwd-dh {dtype} next={flags[0]} mask={flags[1]} regs={regs}")


def layer_norm_variants():
    """The LayerNorm cells' launches (the LN branches of rnn_fwd_triton and rnn_bwd_triton) for
    LSTM and GRU in every dtype, without step masks and with those of training: the cell
    kernels with LN / LN_C, and the row kernels of layer_norm.py with a row of several
    chunks (W > BLOCK_N) and a partial last chunk."""
    from . import layer_norm as L
    for cell, dtype, regs in itertools.product((LSTM, GRU), DTYPES, ("off", "train")):
        elem, acc, precision = DTYPES[dtype]
        acc_t = "fp64" if acc == tl.float64 else "fp32"
        reg_ptrs, reg = step_masks(cell, regs, acc_t)
        lstm, H, NG = cell == LSTM, 48, CODE_GATES[cell]
        tag = f"cell={cell} {dtype} regs={regs}"
        common = dict(reg, H=H, CELL=cell, NG=NG, NS=CODE_SAVED[cell], HAS_MASK=1, BLOCK_B=16,
                      BLOCK_H=32, PRECISION=precision, ACC=acc)
        ptrs = dict(reg_ptrs, gi_ptr=f"*{elem}", w_ptr=f"*{elem}", b_ptr=f"*{elem}",
                    hs_ptr=f"*{elem}", cs_ptr=f"*{acc_t}", out_ptr=f"*{elem}",
                    saved_ptr=f"*{acc_t}", mask_ptr="*u8", ms_ptr=f"*{acc_t}",
                    hin_ptr=f"*{elem}", xg_ptr=f"*{acc_t}", lnw_ptr=f"*{elem}",
                    lnb_ptr=f"*{elem}")
        cx = dict(common, HK=H, HAS_BIAS=1, HAS_PROJ=lstm, LN=2 if lstm else 1, BLOCK_K=32)
        if lstm:
            cx["ZH_MODE"] = 0
        yield (S._rnn_fwd_step_kernel,
               _signature(S._rnn_fwd_step_kernel, ptrs, {"t", "k", "B"}, cx), cx,
               f"ln fwd {tag}")
        ptrs = dict(reg_ptrs, w_ptr=f"*{elem}", dgh_ptr=f"*{acc_t}", dgi_ptr=f"*{acc_t}",
                    drec_ptr=f"*{acc_t}", dout_ptr=f"*{acc_t}" if lstm else f"*{elem}",
                    saved_ptr=f"*{acc_t}", hs_ptr=f"*{elem}", cs_ptr=f"*{acc_t}",
                    carry_h_ptr=f"*{acc_t}", carry_c_ptr=f"*{acc_t}", mask_ptr="*u8",
                    xc_ptr=f"*{acc_t}", dcu_ptr=f"*{acc_t}", lncw_ptr=f"*{elem}",
                    lncb_ptr=f"*{elem}")
        cx = dict(common, P=H, HAS_NEXT=not lstm, HAS_PROJ=False, LN_C=lstm, BLOCK_N=32)
        if lstm:
            cx.update(HAS_HM=False, ZH_MODE=0)
        yield (S._rnn_bwd_step_kernel,
               _signature(S._rnn_bwd_step_kernel, ptrs, {"t", "t_next", "k", "B"}, cx), cx,
               f"ln bwd {tag}")
        row = dict(ROWS=1, BLOCK_N=64, ACC=acc)  # W = 4·48 or 3·48: 3 chunks, the last partial
        ptrs = dict(reg_ptrs, w_ptr=f"*{elem}", hs_ptr=f"*{elem}", xg_ptr=f"*{acc_t}",
                    hin_ptr=f"*{elem}")
        cx = dict(H=H, NG=NG, HAS_HM=reg["HAS_HM"], BLOCK_B=16, BLOCK_H=32, BLOCK_K=32,
                  PRECISION=precision, ACC=acc)
        yield (L._ln_gates_fwd_kernel,
               _signature(L._ln_gates_fwd_kernel, ptrs, {"t", "k", "B"}, cx), cx,
               f"ln gates fwd {tag}")
        ptrs = dict(reg_ptrs, x_ptr=f"*{acc_t}", rstd_ptr=f"*{acc_t}", lnw_ptr=f"*{elem}",
                    lnb_ptr=f"*{elem}", saved_ptr=f"*{acc_t}", hs_ptr=f"*{elem}",
                    out_ptr=f"*{elem}", mask_ptr="*u8", hin_ptr=f"*{elem}")
        for cell_c in ((0, 1) if lstm else (0,)):
            cx = dict(row, W=H if cell_c else NG * H, H=H, CELL_C=cell_c, HAS_MASK=cell_c,
                      HAS_HM=reg["HAS_HM"] and cell_c, ZH_MODE=reg["ZH_MODE"] if cell_c else 0)
            yield (L._ln_fwd_kernel, _signature(L._ln_fwd_kernel, ptrs, {"t", "k", "B"}, cx),
                   cx, f"ln rows fwd cell_c={cell_c} {tag}")
        if regs != "off":  # the backward row kernels take no step masks
            continue
        ptrs = dict(g_ptr=f"*{acc_t}", x_ptr=f"*{acc_t}", rstd_ptr=f"*{acc_t}",
                    lnw_ptr=f"*{elem}", lnb_ptr=f"*{elem}", saved_ptr=f"*{acc_t}",
                    out_ptr=f"*{acc_t}")
        for cell_c in ((0, 1) if lstm else (0,)):
            cx = dict(row, W=H if cell_c else NG * H, CELL_C=cell_c)
            yield (L._ln_bwd_kernel, _signature(L._ln_bwd_kernel, ptrs, {"t", "B"}, cx), cx,
                   f"ln rows bwd cell_c={cell_c} {tag}")


def persistent_variants():
    """The persistent forward and backward with their grid barriers (ONE_STEP off): every cell
    and dtype at H=48 with the tile the planner takes first (16), without step masks and with
    those of training or of eval mode, and the worst case the planner allows per cell and dtype,
    without and with (training's) step masks: the largest H it takes with the widest tile that
    fits."""
    import torch
    from .plans import PERSISTENT_BLOCK_B, persistent_max_hp, persistent_tiles
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
                   "fp64": torch.float64}
    configs = [(cell, dtype, 48, 16, regs) for cell, dtype, regs
               in itertools.product(CODE_GATES, DTYPES, ("off", "train", "eval"))]
    for cell, dtype, regs in itertools.product(CODE_GATES, DTYPES, ("off", "train")):
        elem, _, precision = DTYPES[dtype]
        max_hp = persistent_max_hp(torch_dtype[elem], precision, masked=regs != "off",
                                   NG=CODE_GATES[cell])
        tiles = persistent_tiles(CODE_GATES[cell], max_hp,
                                 torch.empty((), dtype=torch_dtype[elem]).element_size(),
                                 elem == "fp32" and precision == "ieee")
        if tiles:
            configs.append((cell, dtype, max_hp, tiles[-1], regs))
    for cell, dtype, H, block_h, regs in configs:
        elem, acc, precision = DTYPES[dtype]
        acc_t = "fp64" if acc == tl.float64 else "fp32"
        reg_ptrs, reg = step_masks(cell, regs, acc_t)
        ptrs = dict(reg_ptrs, gi_ptr=f"*{elem}", w_ptr=f"*{elem}", b_ptr=f"*{elem}",
                    hs_ptr=f"*{elem}", cs_ptr=f"*{acc_t}", out_ptr=f"*{elem}",
                    saved_ptr=f"*{acc_t}", mask_ptr="*u8", hin_ptr=f"*{elem}",
                    sync_ptr="*i32")
        cx = dict(reg, H=H, HP=triton.next_power_of_2(H), CELL=cell, NG=CODE_GATES[cell],
                  NS=CODE_SAVED[cell], HAS_BIAS=1, HAS_MASK=1, REVERSE=1, ONE_STEP=0,
                  BLOCK_B=PERSISTENT_BLOCK_B, BLOCK_H=block_h, PRECISION=precision, ACC=acc)
        yield (P._rnn_fwd_persistent_kernel,
               _signature(P._rnn_fwd_persistent_kernel, ptrs, {"k0", "T", "B"}, cx), cx,
               f"persistent fwd cell={cell} {dtype} H={H} BLOCK_H={block_h} regs={regs}")
        ptrs = dict(reg_ptrs, w_ptr=f"*{elem}", dgh_ptr=f"*{acc_t}", dgi_ptr=f"*{acc_t}",
                    dout_ptr=f"*{elem}", saved_ptr=f"*{acc_t}", hs_ptr=f"*{elem}",
                    cs_ptr=f"*{acc_t}", carry_h_ptr=f"*{acc_t}", carry_c_ptr=f"*{acc_t}",
                    mask_ptr="*u8", sync_ptr="*i32")
        cx = {k: v for k, v in cx.items() if k != "HAS_BIAS"}
        yield (P._rnn_bwd_persistent_kernel,
               _signature(P._rnn_bwd_persistent_kernel, ptrs, {"k0", "T", "B"}, cx), cx,
               f"persistent bwd cell={cell} {dtype} H={H} BLOCK_H={block_h} regs={regs}")


def tile_variants():
    """The one-program-per-batch-tile forward and backward (tile.py) as the GPU runs them (a
    for loop, not the interpreter's while): every cell and dot dtype (fp64's stack frames
    reported, not gated, as everywhere) without step masks and with those of training or of
    eval mode, and the LayerNorm LSTM and GRU without and with training's, each at H = 48
    (where taken) and at the largest H plans.tile_plan takes, with its warps."""
    import torch
    from .plans import tile_plan
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
                   "fp64": torch.float64}
    configs = [(cell, dtype, regs, 0) for cell, dtype, regs in itertools.product(
        CODE_GATES, DTYPES, ("off", "train", "eval"))]
    configs += [(cell, dtype, regs, 2 if cell == LSTM else 1) for cell, dtype, regs in
                itertools.product((LSTM, GRU), DTYPES, ("off", "train"))]
    for cell, dtype, regs, ln in configs:
        elem, acc, precision = DTYPES[dtype]
        acc_t = "fp64" if acc == tl.float64 else "fp32"
        reg_ptrs, reg = step_masks(cell, regs, acc_t)
        tf32 = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = precision == "tf32"  # tile_plan's precision
        try:
            plan = functools.partial(tile_plan, 4, NG=CODE_GATES[cell], dtype=torch_dtype[elem],
                                     masked=regs != "off", ln=ln != 0)
            largest = max((h for h in (16, 32, 64, 128, 256) if plan(h) is not None), default=0)
            shapes = [(H, plan(H)["num_warps"]) for H in sorted({48, largest})
                      if H and plan(H) is not None]
        finally:
            torch.backends.cudnn.allow_tf32 = tf32
        ln_ptrs = dict(xg_ptr=f"*{acc_t}", xc_ptr=f"*{acc_t}", rstd_ptr=f"*{acc_t}",
                       lnw_ptr=f"*{elem}", lnb_ptr=f"*{elem}", lncw_ptr=f"*{elem}",
                       lncb_ptr=f"*{elem}")
        for H, warps in shapes:
            common = dict(reg, H=H, HP=triton.next_power_of_2(H), CELL=cell,
                          NG=CODE_GATES[cell], NS=CODE_SAVED[cell], HAS_MASK=1, LN=ln,
                          REVERSE=1, WHILE=0, BLOCK_B=16, PRECISION=precision, ACC=acc)
            tag = f"cell={cell} {dtype} H={H} warps={warps} regs={regs} ln={ln}"
            ptrs = dict(reg_ptrs, **ln_ptrs, gi_ptr=f"*{elem}", w_ptr=f"*{elem}",
                        b_ptr=f"*{elem}", hs_ptr=f"*{elem}", cs_ptr=f"*{acc_t}",
                        out_ptr=f"*{elem}", saved_ptr=f"*{acc_t}", mask_ptr="*u8")
            cx = dict(common, HAS_BIAS=1)
            yield (TL._rnn_fwd_tile_kernel,
                   _signature(TL._rnn_fwd_tile_kernel, ptrs, {"T", "B"}, cx), cx,
                   f"tile fwd {tag}", warps)
            ptrs = dict(reg_ptrs, **ln_ptrs, drec_ptr=f"*{acc_t}", dhc_ptr=f"*{acc_t}",
                        w_ptr=f"*{elem}", dgh_ptr=f"*{acc_t}", dgi_ptr=f"*{acc_t}",
                        dout_ptr=f"*{elem}", saved_ptr=f"*{acc_t}", hs_ptr=f"*{elem}",
                        cs_ptr=f"*{acc_t}", carry_h_ptr=f"*{acc_t}",
                        carry_c_ptr=f"*{acc_t}", mask_ptr="*u8")
            yield (TL._rnn_bwd_tile_kernel,
                   _signature(TL._rnn_bwd_tile_kernel, ptrs, {"T", "B"}, common), common,
                   f"tile bwd {tag}", warps)


def compile_all(arch: int = 90, verbose: bool = True):
    """Compile every variant for sm_{arch}; returns [(label, shared bytes, cuobjdump's
    REG/STACK/LOCAL)]. Raises on the first variant that does not compile or needs more shared
    memory than a block can have."""
    target = GPUTarget("cuda", arch, 32)
    report = []
    four = ((*v, 4) for v in itertools.chain(variants(), layer_norm_variants(),
                                              persistent_variants()))
    for fn, sig, cx, label, warps in itertools.chain(four, tile_variants()):
        t0 = time.time()
        kernel = triton.compile(ASTSource(fn, sig, cx), target=target,
                                options={"num_warps": warps})
        shared = kernel.metadata.shared
        if shared > SMEM_LIMIT:
            raise RuntimeError(f"{label}: {shared} bytes of shared memory > {SMEM_LIMIT}")
        usage = resource_usage(kernel.asm["cubin"])
        report.append((label, shared, usage))
        if verbose:
            print(f"sm_{arch} {label}: shared {shared} B, registers {usage.get('REG')}, "
                  f"stack {usage.get('STACK')} B, local (spills) {usage.get('LOCAL')} B "
                  f"({time.time() - t0:.1f} s)", flush=True)
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", type=int, default=90)
    args = p.parse_args(argv)
    if _interpreted():
        print("unset TRITON_INTERPRET: the interpreter does not compile", file=sys.stderr)
        return 2
    report = compile_all(args.arch)
    spilling = [label for label, _, u in report if u.get("LOCAL", 0) or u.get("STACK", 0)]
    # fp64 is for exactness checks, not speed: its stack frames are reported, not gated.
    fast = [label for label in spilling if "fp64" not in label]
    print(f"compiled {len(report)} kernel variants for sm_{args.arch}; {len(fast)} of the "
          f"fp32/tf32/bf16/fp16 ones use local memory or a stack frame"
          f"{': ' + ', '.join(fast) if fast else ''}; fp64 ones that do: "
          f"{', '.join(label for label in spilling if 'fp64' in label) or 'none'}")
    return 1 if fast else 0


def _interpreted() -> bool:
    return not isinstance(S._rnn_fwd_step_kernel, triton.runtime.JITFunction)


if __name__ == "__main__":
    sys.exit(main())
