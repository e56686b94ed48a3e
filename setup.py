"""Optional ahead-of-time build of the CUDA extension fused_rnn._C.

    FUSED_RNN_BUILD_CUDA=1 pip install --no-build-isolation .

needs a CUDA build of torch and nvcc (sm_80 and sm_90, flags in fused_rnn/ops/cuda/extension.py). Without the
variable the package installs as pure Python, and the extension is built on first use of
backend="cuda" (torch.utils.cpp_extension + ninja, cached). --no-build-isolation: building
against the installed torch, never a freshly downloaded one.
"""
import os
import runpy
from pathlib import Path

from setuptools import setup

ext_modules, cmdclass = [], {}
if os.environ.get("FUSED_RNN_BUILD_CUDA", "0") not in ("", "0"):
    from torch.utils.cpp_extension import BuildExtension, CUDAExtension

    root = Path(__file__).resolve().parent
    # extension.py's flags, read without importing the package (whose __init__ imports torch
    # modules that may not be importable here yet).
    flags = runpy.run_path(str(root / "fused_rnn" / "ops" / "cuda" / "extension.py"))
    csrc = root / "csrc"
    ext_modules = [CUDAExtension(
        "fused_rnn._C",
        sources=[str(Path("csrc") / "binding.cpp")] +
                [str(Path("csrc") / f) for f in flags["CUDA_SOURCES"]],
        include_dirs=[str(csrc)],
        extra_compile_args={"cxx": ["-O3"], "nvcc": list(flags["NVCC_FLAGS"])},
        # libstdc++ shared, whatever CXX or LDFLAGS add (why: at LINK_FLAGS in extension.py).
        extra_link_args=list(flags["LINK_FLAGS"]))]
    cmdclass = {"build_ext": BuildExtension}

setup(ext_modules=ext_modules, cmdclass=cmdclass)
