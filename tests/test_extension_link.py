"""The CUDA extension loads libstdc++ as a shared library: a build with libstdc++ linked into it
statically crashed the process on the first error message the binding formatted through its
iostreams. extension.check_linkage refuses such a build; these tests check it on tiny libraries
built here (one with libstdc++ shared, one without any, one with -static-libstdc++), that
extension.LINK_FLAGS keep libstdc++ shared under -static-libstdc++, and the emulated build."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fused_rnn.ops.cuda import extension

GXX = shutil.which("g++")
GCC = shutil.which("gcc")
needs_gxx = pytest.mark.skipif(GXX is None, reason="g++ not found")
needs_gcc = pytest.mark.skipif(GCC is None, reason="gcc not found")
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="check_linkage reads ELF files, on Linux only")

# std::string and an ostringstream: code that needs libstdc++.
CXX_SOURCE = """#include <sstream>
#include <string>
extern "C" int formatted_length(int x) {
    std::ostringstream s;
    s << "x = " << x;
    return static_cast<int>(s.str().size());
}
"""
C_SOURCE = "int plus_one(int x) { return x + 1; }\n"


def _build(tmp_path: Path, compiler: str, source: str, suffix: str, name: str, *flags) -> Path:
    src = tmp_path / (name + suffix)
    src.write_text(source)
    out = tmp_path / (name + ".so")
    # Flags after the source, where torch.utils.cpp_extension puts extra_ldflags.
    res = subprocess.run([compiler, "-shared", "-fPIC", str(src), *flags, "-o", str(out)],
                         capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        pytest.skip(f"{compiler} {' '.join(flags)} does not link here: {res.stderr[-500:]}")
    return out


def _has_libstdcxx(path) -> bool:
    return any(n.startswith("libstdc++.so") for n in extension.needed_libraries(path))


@linux_only
@needs_gxx
def test_a_cxx_library_needs_libstdcxx_and_passes(tmp_path):
    lib = _build(tmp_path, GXX, CXX_SOURCE, ".cpp", "cxx")
    assert _has_libstdcxx(lib), extension.needed_libraries(lib)
    extension.check_linkage(lib)


@linux_only
@needs_gcc
def test_a_library_without_libstdcxx_is_refused(tmp_path):
    lib = _build(tmp_path, GCC, C_SOURCE, ".c", "plain_c")
    assert not _has_libstdcxx(lib), extension.needed_libraries(lib)
    with pytest.raises(RuntimeError, match=r"libstdc\+\+.*statically.*[Rr]ebuild"):
        extension.check_linkage(lib)


@linux_only
@needs_gxx
def test_static_libstdcxx_is_refused_and_link_flags_undo_it(tmp_path):
    static = _build(tmp_path, GXX, CXX_SOURCE, ".cpp", "static", "-static-libstdc++")
    assert not _has_libstdcxx(static), extension.needed_libraries(static)
    with pytest.raises(RuntimeError, match=r"libstdc\+\+.*statically.*-static-libstdc\+\+"):
        extension.check_linkage(static)
    # The same link with the extension's flags, as a CXX wrapper adding -static-libstdc++
    # would run it: libstdc++ stays shared.
    fixed = _build(tmp_path, GXX, CXX_SOURCE, ".cpp", "fixed", "-static-libstdc++",
                   *extension.LINK_FLAGS)
    assert _has_libstdcxx(fixed), extension.needed_libraries(fixed)
    extension.check_linkage(fixed)


def test_needed_libraries_rejects_a_non_elf_file(tmp_path):
    path = tmp_path / "not_elf.so"
    path.write_bytes(b"MZ" + bytes(100))
    with pytest.raises(ValueError, match="not an ELF64 file"):
        extension.needed_libraries(path)


def test_check_linkage_skips_non_linux(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    path = tmp_path / "not_elf.dylib"
    path.write_bytes(bytes(64))
    extension.check_linkage(path)  # not read at all


# The first build of the emulated extension takes about 70 s; later ones, and the rest of a
# session that ran tests/test_cuda_kernels.py, reuse it (torch's cache, extension._load's).
@linux_only
@pytest.mark.slow
def test_emulated_build_links_libstdcxx_shared(monkeypatch):
    monkeypatch.setenv("FUSED_RNN_CUDA_EMULATE", "1")
    module = extension.load()  # runs check_linkage itself
    assert _has_libstdcxx(module.__file__), extension.needed_libraries(module.__file__)
    # The flags reached the link: torch writes them into the cached build's build.ninja.
    ninja = Path(module.__file__).parent / "build.ninja"
    assert " ".join(extension.LINK_FLAGS) in ninja.read_text()
