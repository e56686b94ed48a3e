"""The Triton backend. cell.py: the @triton.jit helpers and cell math every kernel shares;
tile.py: one program per batch tile for the whole sequence (the default where W_hh fits);
step.py: the per-step kernels; graphs.py: their CUDA graphs; persistent.py: the grid-barrier
kernels; layer_norm.py: the LayerNorm cells' row kernels; plans.py: tiles, grids and limits;
launch.py: the launchers, custom ops and layer function; compile_check.py: every kernel variant
compiled for a GPU target on any machine. Importing this package imports neither triton nor
launch.py: the names below load launch.py on first access (triton itself is imported on the
first launch)."""

__all__ = ["VARIANTS", "layer_triton", "variant"]


def __getattr__(name):
    # Lazy (PEP 562): `fused_rnn.ops.<backend>.variant` without importing launch.py before use.
    if name in __all__:
        from . import launch
        return getattr(launch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
