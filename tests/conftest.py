"""Shared test set-up: fixed seeds, TF32 off, NaN-poisoned buffers in the code under test (so an
output element that no code writes fails the parity checks instead of passing as zero), and the
markers (pyproject.toml lists them; docs/testing.md says which stage runs which): `gpu` tests are
skipped without CUDA, GPU grid cases carry their dtype as a marker too, and the `slow` tests run
first so that pytest-xdist's workers finish together."""
import os
import random
import warnings

import pytest
import torch

from fused_rnn import _alloc


def pytest_configure(config):
    if not torch.cuda.is_available():
        # No GPU: the Triton kernels run in Triton's CPU interpreter. triton.jit reads the
        # variable when a function is decorated, so it must be set before triton is imported;
        # tests that unset it later to check the CPU error then find triton already imported.
        os.environ.setdefault("TRITON_INTERPRET", "1")
        try:
            import triton  # noqa: F401  (its own library is decorated for the mode set now)
        except ImportError:
            pass
    _alloc.set_poisoning(True)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        # pytest-xdist: share the cores between the workers instead of each taking them all
        # (two workers with two intra-op threads each on two cores spin against each other).
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // workers))
    # TF32 would make GPU float32 matmuls ~1e-3 accurate and hide real errors.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    # torch's own CPU LSTM warns that oneDNN lacks projections; it is torch's path, not ours.
    warnings.filterwarnings("ignore", message="LSTM with projections is not supported")


# The dtype markers of a GPU grid case, by its dtype parameter.
_DTYPE_MARKERS = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        params = getattr(item, "callspec", None)
        dtype = params.params.get("dtype") if params is not None else None
        if item.get_closest_marker("grid") and dtype in _DTYPE_MARKERS:
            item.add_marker(_DTYPE_MARKERS[dtype])
    # Stable: the slow checks first, each group in its collected order.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_runtest_setup(item):
    if item.get_closest_marker("gpu") and not torch.cuda.is_available():
        pytest.skip("needs CUDA")


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    torch.manual_seed(0)
    yield
