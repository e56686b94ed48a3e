"""Loading the CUDA C++ extension (csrc/): prebuilt as fused_rnn._C by setup.py, or built on
first use with torch.utils.cpp_extension + ninja and cached (in TORCH_EXTENSIONS_DIR, by
default ~/.cache/torch_extensions). Every reason it cannot load is an error that says what to
do.

FUSED_RNN_CUDA_EMULATE=1 selects the emulated build instead: the same kernels compiled as host
C++ with one std::thread per CUDA thread (csrc/platform.cuh), on CPU tensors in float32/float64.
It exists for tests on machines without a GPU and is slow.
"""
import functools
import importlib
import os
import shutil
from pathlib import Path
from typing import Optional

import torch

# fused_rnn/ops/cuda/extension.py -> the checkout's csrc/.
CSRC = Path(__file__).resolve().parents[3] / "csrc"
# Kernel sources: compiled by nvcc for the GPU build (and for sm_80/sm_90 in CI), included by
# csrc/emulated.cpp for the emulated build.
CUDA_SOURCES = ("rnn_fwd.cu", "rnn_bwd.cu", "rnn_fwd_cluster.cu", "device.cu")
# sm_80 (A100) and sm_90 (H100); PTX for compute_90 lets newer GPUs JIT it.
GENCODE = ("-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=sm_90",
           "-gencode=arch=compute_90,code=compute_90")
NVCC_FLAGS = ("-O3", "-std=c++17", "-lineinfo") + GENCODE


def emulated() -> bool:
    """Whether the CUDA backend runs its emulated build (FUSED_RNN_CUDA_EMULATE=1)."""
    return os.environ.get("FUSED_RNN_CUDA_EMULATE", "0") not in ("", "0")


def _sources_dir() -> Path:
    if not (CSRC / "binding.cpp").is_file():
        raise RuntimeError(
            f"fused_rnn's CUDA sources are not at {CSRC}: install from a source checkout "
            f"(pip install -e .), or build the extension ahead of time there "
            f"(FUSED_RNN_BUILD_CUDA=1 pip install .)")
    return CSRC


@functools.lru_cache(maxsize=None)
def why_not_buildable() -> Optional[str]:
    """None if the GPU extension can be loaded or built here, else the reason (cached: the
    backend choice asks on every call)."""
    try:
        importlib.import_module("fused_rnn._C")
        return None
    except ImportError:
        pass
    if torch.version.cuda is None:
        return (f"this torch ({torch.__version__}) is a CPU build; the CUDA kernels need a "
                f"CUDA build of torch")
    from torch.utils.cpp_extension import CUDA_HOME
    if CUDA_HOME is None and shutil.which("nvcc") is None:
        return "nvcc was not found: install the CUDA toolkit or set CUDA_HOME"
    if not (CSRC / "binding.cpp").is_file():
        return f"the CUDA sources are not at {CSRC}"
    return None


@functools.lru_cache(maxsize=None)
def _load(emulate: bool):
    from torch.utils import cpp_extension
    src = _sources_dir()
    if emulate:
        return cpp_extension.load(
            name="fused_rnn_emulated", sources=[str(src / "binding.cpp"), str(src / "emulated.cpp")],
            extra_cflags=["-O2", "-DFRNN_EMULATE", "-pthread"], extra_ldflags=["-pthread"],
            extra_include_paths=[str(src)], verbose=_verbose())
    try:
        return importlib.import_module("fused_rnn._C")
    except ImportError:
        pass
    reason = why_not_buildable()
    if reason is not None:
        raise RuntimeError(f"fused_rnn's CUDA extension cannot be built: {reason}")
    try:
        return cpp_extension.load(
            name="fused_rnn_cuda",
            sources=[str(src / "binding.cpp")] + [str(src / f) for f in CUDA_SOURCES],
            extra_cflags=["-O3"], extra_cuda_cflags=list(NVCC_FLAGS),
            extra_include_paths=[str(src)], verbose=_verbose())
    except Exception as e:  # a compiler error: say how to see it
        raise RuntimeError(
            f"building fused_rnn's CUDA extension failed ({type(e).__name__}: {e}). Set "
            f"FUSED_RNN_BUILD_VERBOSE=1 to see the compiler's output; the build is cached under "
            f"TORCH_EXTENSIONS_DIR (default ~/.cache/torch_extensions)") from e


def _verbose() -> bool:
    return os.environ.get("FUSED_RNN_BUILD_VERBOSE", "0") not in ("", "0")


def load():
    """The extension module (emulated build when FUSED_RNN_CUDA_EMULATE=1)."""
    return _load(emulated())
