"""The Triton backend's launch plans, in one place: the tile and grid of each kernel, the dot
precision, the limits of the persistent kernels (read from sm_90 compiles by compile_check.py),
and the row kernels' configuration of the LayerNorm cells. launch.py asks these functions; the
kernels themselves take the results as constexprs.
"""
from typing import Optional

import torch

# A persistent program keeps its W_hh slices and one dot operand on chip: at most 180 KiB of
# the 227 KiB of shared memory a block may have on sm_90. Limits read from sm_90 compiles
# (python -m fused_rnn.ops.triton.compile_check): H padded to a power of two up to 256 (at 512 the
# fp32 LSTM needs a 10 KB stack and 64-row batch tiles overflow shared memory), 512 in 16 bits
# (the LSTM at 1024 leaves a 600-byte stack: its h_{t-1} operand, 16 x 1024), but up to 64
# for fp32 with IEEE dots (no tensor cores: stack frames from 128 up); hidden tiles of at most 32
# (bf16 LSTM at 64 needs a stack); batch tiles of 16 rows, the least tl.dot takes. With step
# masks (regularisation) padded H up to 64 only: from 128 up the programs already use all 255
# registers a thread may have, and the masks' tiles make ptxas spill.
PERSISTENT_BYTES = 180 * 1024
PERSISTENT_MAX_HP = {"ieee": 64, "tf32": 256, "half": 512}
PERSISTENT_MAX_HP_MASKED = 64
PERSISTENT_BLOCK_B = 16


# Row kernels of the LayerNorm cells (layer_norm.py): rows per program (a power of two, for
# tl.arange) and the chunk of the row each pass loads (1024 fp32 values: 8 per thread at 4
# warps).
LN_ROWS, LN_BLOCK_N = 1, 1024


def ln_rows(W: int) -> dict:
    """Rows per program and chunk width of a row kernel over rows of W units."""
    import triton
    return dict(ROWS=LN_ROWS, BLOCK_N=min(LN_BLOCK_N, max(16, triton.next_power_of_2(W))))


def config(B: int, dtype: torch.dtype) -> dict:
    """Batch tile and dot precision. tl.dot on the GPU needs every dimension >= 16; fp32 dots
    use TF32 only where cuDNN would (torch.backends.cudnn.allow_tf32, as nn.LSTM)."""
    import triton
    import triton.language as tl
    fp32 = dtype == torch.float32
    return dict(BLOCK_B=max(16, min(64, triton.next_power_of_2(B))),
                PRECISION="tf32" if fp32 and torch.backends.cudnn.allow_tf32 else "ieee",
                ACC=tl.float64 if dtype == torch.float64 else tl.float32)


def grid(B: int, width: int, cfg: dict):
    """Grid over (batch tiles, tiles of `width` units) and its BLOCK_H."""
    block = 16 if width <= 16 else 32
    return (-(-B // cfg["BLOCK_B"]), -(-width // block)), block


def persistent_tiles(NG: int, HP: int, elem: int, ieee_fp32: bool):
    """Hidden-tile widths whose on-chip data fits a persistent program: NG weight slices of
    HP x BLOCK_H plus the BLOCK_B x HP operand of its dots (h_{t-1}, or dgates per gate).
    IEEE fp32 dots keep their operands in registers: 16 only (32 needs a stack); so does HP =
    512 (the GRU and RNN backwards at 32 leave 56-104-byte stacks)."""
    return [block_h for block_h in ((16,) if ieee_fp32 or HP >= 512 else (16, 32))
            if (NG * block_h + PERSISTENT_BLOCK_B) * HP * elem <= PERSISTENT_BYTES]


# One program per batch tile (tile.py) keeps all of W_hh, NG x HP x HP, and the 16 x HP dot
# operand on chip: the persistent kernels' byte budget. Limits read from sm_90 compiles
# (compile_check.py): TILE_MAX_HP per dot precision (IEEE fp32 dots keep W_hh in registers:
# HP = 64 needs a stack), TILE_MAX_HP_MASKED with step masks (the bf16 LSTM backward at 128
# needs a 200-byte stack). The LayerNorm cells fused (TILE_MAX_HP_LN) take 16-bit storage (and
# fp64, for exactness) without step masks: the LSTM at 128 leaves 400-800-byte stacks, with step
# masks 8-16 bytes at 48-64, and fp32 GRU with TF32 dots 8 bytes at 48. Warps by W_hh's bytes,
# TILE_WARPS: ptxas hoists the weights' shared-memory loads out of the time loop, so each warp
# holds its slice of W_hh in registers; the bf16 LSTM at HP = 128 (128 KiB) needs 16 warps (8
# leave the backward a stack frame), the bf16 GRU with step masks at 64 (24 KiB) 8 warps.
TILE_MAX_HP = {"ieee": 32, "tf32": 256}
TILE_MAX_HP_MASKED = 64
TILE_MAX_HP_LN = 64
TILE_WARPS = ((16 * 1024, 4), (96 * 1024, 8))  # (W_hh bytes under which, warps); else 16


def tile_plan(B: int, H: int, NG: int, dtype: torch.dtype, masked: bool = False,
              ln: bool = False, device: Optional[torch.device] = None) -> Optional[dict]:
    """HP, grid (batch tiles of PERSISTENT_BLOCK_B rows), warps and config of the one-program-
    per-batch-tile kernels, or None where W_hh does not fit one program (masked: with step
    masks; ln: a LayerNorm cell; device: where it runs, None for a GPU). On a GPU fp64 takes
    neither step masks nor LayerNorm: Triton 3.6 cannot lower the fp64 dot whose operand is
    h·hm with hm from an 8-bit load ("fp64 don't support largeK MMA", as in cell._store_h),
    and the LayerNorm LSTM leaves 150-420-byte stacks. The interpreter runs them."""
    import triton
    if (dtype == torch.float64 and (masked or ln)
            and (device is None or device.type == "cuda")):
        return None
    HP = max(16, triton.next_power_of_2(H))
    cfg = dict(config(B, dtype), BLOCK_B=PERSISTENT_BLOCK_B)
    hp_max = TILE_MAX_HP["ieee" if ieee_fp32(dtype, cfg["PRECISION"]) else "tf32"]
    if masked:
        hp_max = min(hp_max, TILE_MAX_HP_MASKED)
    if ln:
        hp_max = 0 if masked or dtype == torch.float32 else TILE_MAX_HP_LN
    elem = torch.empty((), dtype=dtype).element_size()
    w_bytes = NG * HP * HP * elem
    if HP > hp_max or w_bytes + PERSISTENT_BLOCK_B * HP * elem > PERSISTENT_BYTES:
        return None
    warps = next((w for limit, w in TILE_WARPS if w_bytes < limit), 16)
    if dtype == torch.float64:  # at 16 warps the fp64 LSTM leaves 80-170-byte stacks
        warps = min(warps, 8)
    return dict(HP=HP, grid=(-(-B // PERSISTENT_BLOCK_B),), cfg=cfg, num_warps=warps)


def ieee_fp32(dtype: torch.dtype, precision: str) -> bool:
    # The precision setting only changes fp32 dots (bf16/fp16/fp64 dots ignore it).
    return dtype == torch.float32 and precision == "ieee"


def persistent_max_hp(dtype: torch.dtype, precision: str, masked: bool = False,
                      NG: int = 4) -> int:
    """Largest padded H the persistent kernels take for NG gates (masked: with step masks).
    16-bit Elman RNNs stop at 256: their backward at 512 leaves a 16-24-byte stack."""
    half = dtype in (torch.float16, torch.bfloat16) and NG > 1
    hp = PERSISTENT_MAX_HP["ieee" if ieee_fp32(dtype, precision) else "half" if half else "tf32"]
    return min(hp, PERSISTENT_MAX_HP_MASKED) if masked else hp


def persistent_plan(B: int, H: int, NG: int, dtype: torch.dtype, device,
                     masked: bool = False) -> Optional[dict]:
    """Tiles and grid for the persistent kernels, or None where they do not apply: padded H
    over persistent_max_hp, or no tile whose grid fits on the GPU at once (a cooperative launch
    needs every program resident). The narrowest fitting tile is taken."""
    import triton
    HP = max(16, triton.next_power_of_2(H))
    cfg = dict(config(B, dtype), BLOCK_B=PERSISTENT_BLOCK_B)
    if HP > persistent_max_hp(dtype, cfg["PRECISION"], masked, NG):
        return None
    sms = (torch.cuda.get_device_properties(device).multi_processor_count
           if device.type == "cuda" else None)
    for block_h in persistent_tiles(NG, HP, torch.empty((), dtype=dtype).element_size(),
                                    ieee_fp32(dtype, cfg["PRECISION"])):
        grid = (-(-B // PERSISTENT_BLOCK_B), -(-H // block_h))
        if sms is None or grid[0] * grid[1] <= sms:
            return dict(HP=HP, BLOCK_H=block_h, grid=grid, cfg=cfg)
    return None
