"""The CUDA sources compile with nvcc for sm_80 and sm_90 (no GPU needed), without register
spills, and stay free of torch headers (the CPU build of torch ships no CUDA headers, and only
csrc/binding.cpp faces torch). Catches syntax and template errors before they land."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from fused_rnn.ops.cuda import extension

NVCC = extension.nvcc()
needs_nvcc = pytest.mark.skipif(not Path(NVCC).exists(), reason="nvcc not found")


def test_kernel_sources_do_not_include_torch():
    files = sorted(p for p in extension.CSRC.iterdir() if p.suffix in (".cu", ".cuh", ".h"))
    assert {f"{name}" for name in extension.CUDA_SOURCES} <= {p.name for p in files}
    for path in files:
        includes = re.findall(r'#include\s+[<"]([^>"]+)[>"]', path.read_text())
        bad = [i for i in includes if i.split("/")[0] in ("torch", "ATen", "c10", "caffe2")]
        assert not bad, f"{path.name} includes {bad}"


@needs_nvcc
@pytest.mark.nvcc
@pytest.mark.slow
# The SASS table's group (tests/test_sass.py): one worker, one compile for both.
@pytest.mark.xdist_group("sass")
def test_cuda_sources_compile_for_sm80_and_sm90():
    objects = extension.compiled_objects()
    kernels = 0
    for name, (_, out, returncode) in objects.items():
        assert returncode == 0, f"{name}:\n{out[-5000:]}"
        # ptxas -v: one "Compiling entry function '...' for 'sm_XX'" per kernel and arch, then
        # its spill counts.
        archs = re.findall(r"Compiling entry function '\S+' for '(sm_\d+)'", out)
        if name != "device.cu":
            assert {"sm_80", "sm_90"} <= set(archs), f"{name}: {sorted(set(archs))}"
        kernels += len(archs)
        spills = [(int(s), int(l)) for s, l in
                  re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", out)]
        assert all(s == 0 and l == 0 for s, l in spills), f"{name} spills registers"
    # 4 cells x 4 dtypes x 2 variants each way, plus the projection kernels, per arch.
    assert kernels >= 2 * 2 * 32, kernels


@pytest.mark.nvcc
def test_binding_compiles_for_the_gpu_build():
    """binding.cpp as the GPU build compiles it (no FRNN_EMULATE), against this torch's headers:
    it includes no CUDA header, so the CPU wheel's headers suffice. The emulated build, which
    tests/test_cuda_kernels.py links and runs, covers the other branch."""
    import sysconfig

    from torch.utils.cpp_extension import include_paths
    cxx = shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    incs = [f"-I{p}" for p in include_paths() + [sysconfig.get_paths()["include"],
                                                 str(extension.CSRC)]]
    res = subprocess.run([cxx, "-std=c++17", "-fsyntax-only", "-DTORCH_EXTENSION_NAME=_C", *incs,
                          str(extension.CSRC / "binding.cpp")], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-5000:]
