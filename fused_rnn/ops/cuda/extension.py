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
import struct
import sys
from pathlib import Path
from typing import Optional

import torch

# fused_rnn/ops/cuda/extension.py -> the checkout's csrc/.
CSRC = Path(__file__).resolve().parents[3] / "csrc"
# Kernel sources: compiled by nvcc for the GPU build (and for sm_80/sm_90 in CI), included by
# csrc/emulated.cpp for the emulated build.
CUDA_SOURCES = ("rnn_fwd.cu", "rnn_bwd.cu", "rnn_fwd_cluster.cu", "rnn_bwd_cluster.cu",
                "rnn_fwd_multicluster.cu", "rnn_bwd_multicluster.cu", "device.cu")
# sm_80 (A100) and sm_90 (H100); PTX for compute_90 lets newer GPUs JIT it.
GENCODE = ("-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=sm_90",
           "-gencode=arch=compute_90,code=compute_90")
NVCC_FLAGS = ("-O3", "-std=c++17", "-lineinfo") + GENCODE
# Link flags of every build (both load() calls below and setup.py's fused_rnn._C): libstdc++ as
# a shared library, whatever the build environment adds. On one GPU machine the build
# environment (-static-libstdc++ from a CXX wrapper or LDFLAGS) linked a private copy of
# libstdc++ into the .so, no libstdc++.so.6 in its NEEDED, and its iostreams crashed the
# process on the first error message the binding formatted. torch puts these flags after
# the objects and g++ puts its own -lstdc++ (static under -static-libstdc++) last, so this
# dynamic -lstdc++ comes first and resolves every libstdc++ symbol; --no-as-needed keeps it in
# NEEDED even where the linker defaults to --as-needed (Ubuntu), and --push-state/--pop-state
# (GNU ld, gold, lld, mold) restore the caller's --as-needed setting for the libraries after
# it. No -shared-libgcc: g++ -shared links libgcc_s.so.1 already, libstdc++.so.6 needs it
# itself, and with g++ 12 it does not undo a wrapper's -static-libgcc.
LINK_FLAGS = ("-Wl,--push-state,--no-as-needed", "-lstdc++", "-Wl,--pop-state")


def nvcc() -> str:
    return shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"


@functools.lru_cache(maxsize=None)
def compiled_objects(sources: tuple = CUDA_SOURCES) -> dict:
    """{source: (object file, nvcc and ptxas -v output, return code)}: each source compiled
    alone (nvcc -c) with the GPU build's flags and -Xptxas -v, all at once. Kept in the
    temporary directory under a hash of csrc/ and the flags, behind a file lock, so that the
    build check (tests/test_cuda_build.py) and the SASS table (benchmarks/sass_table.py, which
    disassembles these objects' sm_90 code) share one compile whichever processes run them:
    the sm_90 compile of the cluster kernels is CI's longest step."""
    import fcntl
    import hashlib
    import json
    import subprocess
    import tempfile
    version = subprocess.run([nvcc(), "--version"], capture_output=True, text=True).stdout
    digest = hashlib.sha256(repr((nvcc(), version, NVCC_FLAGS, sources)).encode())
    for path in sorted(CSRC.iterdir()):
        if path.suffix in (".cu", ".cuh", ".h"):
            digest.update(path.name.encode() + path.read_bytes())
    out = Path(tempfile.gettempdir()) / f"fused_rnn_nvcc_{digest.hexdigest()[:16]}"
    out.mkdir(exist_ok=True)
    done = out / "logs.json"
    with open(out / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.is_file():
            procs = {}
            try:
                for name in sources:  # each one's output to a file: a full pipe would stall it
                    cmd = [nvcc(), *NVCC_FLAGS, "-Xptxas", "-v", "-I", str(CSRC), "-c",
                           str(CSRC / name), "-o", str(out / (name + ".o"))]
                    with open(out / (name + ".log"), "w") as log:
                        procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
                codes = {name: proc.wait(timeout=1500) for name, proc in procs.items()}
            finally:
                for proc in procs.values():
                    if proc.poll() is None:
                        proc.kill()
            logs = {name: ((out / (name + ".log")).read_text(), rc) for name, rc in codes.items()}
            if any(rc != 0 for rc in codes.values()):
                return {name: (out / (name + ".o"), log, rc) for name, (log, rc) in logs.items()}
            (out / "logs.tmp").write_text(json.dumps(logs))  # kept only when all compiled
            os.replace(out / "logs.tmp", done)
        logs = json.loads(done.read_text())
    return {name: (out / (name + ".o"), log, rc) for name, (log, rc) in logs.items()}


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
        return _checked(cpp_extension.load(
            name="fused_rnn_emulated", sources=[str(src / "binding.cpp"), str(src / "emulated.cpp")],
            extra_cflags=["-O2", "-DFRNN_EMULATE", "-pthread"],
            extra_ldflags=["-pthread", *LINK_FLAGS], extra_include_paths=[str(src)],
            verbose=_verbose()))
    try:
        prebuilt = importlib.import_module("fused_rnn._C")
    except ImportError:
        prebuilt = None
    if prebuilt is not None:
        return _checked(prebuilt)
    reason = why_not_buildable()
    if reason is not None:
        raise RuntimeError(f"fused_rnn's CUDA extension cannot be built: {reason}")
    try:
        module = cpp_extension.load(
            name="fused_rnn_cuda",
            sources=[str(src / "binding.cpp")] + [str(src / f) for f in CUDA_SOURCES],
            extra_cflags=["-O3"], extra_cuda_cflags=list(NVCC_FLAGS),
            extra_ldflags=list(LINK_FLAGS), extra_include_paths=[str(src)], verbose=_verbose())
    except Exception as e:  # a compiler error: say how to see it
        raise RuntimeError(
            f"building fused_rnn's CUDA extension failed ({type(e).__name__}: {e}). Set "
            f"FUSED_RNN_BUILD_VERBOSE=1 to see the compiler's output; the build is cached under "
            f"TORCH_EXTENSIONS_DIR (default ~/.cache/torch_extensions)") from e
    # Outside the try: a linkage error is not a compiler error.
    return _checked(module)


# ELF constants (System V gABI): program header PT_LOAD/PT_DYNAMIC, dynamic tags DT_NULL,
# DT_NEEDED and DT_STRTAB.
_PT_LOAD, _PT_DYNAMIC = 1, 2
_DT_NULL, _DT_NEEDED, _DT_STRTAB = 0, 1, 5


def needed_libraries(path) -> list[str]:
    """The DT_NEEDED entries of an ELF64 shared library, in order, as readelf -d lists them.
    A reader of its own (some 30 lines of struct) rather than pyelftools: the GPU machines
    install fused_rnn offline with --no-deps (scripts/gpu_check.sh), so a new dependency would
    stop the extension from loading there, and reading one table of the dynamic section needs
    none."""
    data = Path(path).read_bytes()
    # EI_CLASS 2: 64-bit (every platform torch ships for); EI_DATA 1/2: little/big endian.
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] not in (1, 2):
        raise ValueError(f"{path} is not an ELF64 file")
    order = "<" if data[5] == 1 else ">"
    # e_phoff at 32, e_phentsize and e_phnum at 54 and 56 (Elf64_Ehdr).
    phoff, = struct.unpack_from(order + "Q", data, 32)
    phentsize, phnum = struct.unpack_from(order + "HH", data, 54)
    loads, dynamic = [], None
    for i in range(phnum):
        # Elf64_Phdr: p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz.
        p_type, _, offset, vaddr, _, filesz = struct.unpack_from(order + "IIQQQQ", data,
                                                                 phoff + i * phentsize)
        if p_type == _PT_LOAD:
            loads.append((vaddr, offset, filesz))
        elif p_type == _PT_DYNAMIC:
            dynamic = (offset, filesz)
    if dynamic is None:  # statically linked: needs nothing
        return []
    needed, strtab = [], None
    for pos in range(dynamic[0], dynamic[0] + dynamic[1], 16):  # Elf64_Dyn: d_tag, d_val
        tag, value = struct.unpack_from(order + "qQ", data, pos)
        if tag == _DT_NULL:
            break
        if tag == _DT_NEEDED:
            needed.append(value)  # an offset into the string table
        elif tag == _DT_STRTAB:
            strtab = value  # a virtual address: the file offset is the PT_LOAD's that holds it
    if not needed:
        return []
    base = next((offset + strtab - vaddr for vaddr, offset, filesz in loads
                 if strtab is not None and vaddr <= strtab < vaddr + filesz), None)
    if base is None:
        raise ValueError(f"{path}: DT_STRTAB is in no loaded segment")
    return [data[base + n:data.index(b"\0", base + n)].decode() for n in needed]


def check_linkage(path) -> None:
    """Raise RuntimeError unless the extension at path loads libstdc++ as a shared library
    (a libstdc++.so* in its DT_NEEDED): with libstdc++ linked into it statically, the
    binding's first error message, formatted through that private copy's iostreams, crashed
    the process. Linux only: elsewhere the extension is no ELF file (Mach-O on macOS, PE on
    Windows) and has no DT_NEEDED to read."""
    if not sys.platform.startswith("linux"):
        return
    needed = needed_libraries(path)
    if any(name.startswith("libstdc++.so") for name in needed):
        return
    path = Path(path)
    # torch.utils.cpp_extension.load builds NAME.so in a directory NAME of its cache; the
    # prebuilt fused_rnn._C lies in the package, beside __init__.py.
    if path.parent.name == path.name.split(".")[0]:
        rebuild = (f"delete its cached build directory {path.parent} (under "
                   f"TORCH_EXTENSIONS_DIR, default ~/.cache/torch_extensions) and the next use "
                   f"rebuilds it")
    else:
        rebuild = ("reinstall it (FUSED_RNN_BUILD_CUDA=1 pip install --no-build-isolation . in "
                   "the source checkout)")
    raise RuntimeError(
        f"fused_rnn's CUDA extension {path} does not load libstdc++ as a shared library (its "
        f"NEEDED: {', '.join(needed) or 'none'}): libstdc++ was linked into it statically, and "
        f"its iostreams would crash the process on the first error message. Rebuild it with "
        f"libstdc++ shared: unset CXX wrappers and LDFLAGS that add -static-libstdc++, then "
        f"{rebuild}.")


def _checked(module):
    check_linkage(module.__file__)
    return module


def _verbose() -> bool:
    return os.environ.get("FUSED_RNN_BUILD_VERBOSE", "0") not in ("", "0")


def load():
    """The extension module (emulated build when FUSED_RNN_CUDA_EMULATE=1)."""
    return _load(emulated())
