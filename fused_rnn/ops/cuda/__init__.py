"""The CUDA C++ backend (kernels in csrc/). extension.py: loading or building the extension
(or its emulated build); plans.py: the kernels' variant and plan codes by name (csrc/plans.h);
launch.py: the launchers, custom ops and layer function. Importing this package neither loads
nor builds the extension (the first launch does), and the names below load launch.py on first
access."""

__all__ = ["VARIANTS", "cluster_bwd_plan", "cluster_plan", "last_used", "layer_cuda", "variant"]


def __getattr__(name):
    # Lazy (PEP 562): `fused_rnn.ops.<backend>.variant` without importing launch.py before use.
    if name in __all__:
        from . import launch
        return getattr(launch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
