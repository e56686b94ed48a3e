"""Shared test set-up: fixed seeds, TF32 off, and NaN-poisoned buffers in the code under test,
so an output element that no code writes fails the parity checks instead of passing as zero."""
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
    # TF32 would make GPU float32 matmuls ~1e-3 accurate and hide real errors.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    # torch's own CPU LSTM warns that oneDNN lacks projections; it is torch's path, not ours.
    warnings.filterwarnings("ignore", message="LSTM with projections is not supported")


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    torch.manual_seed(0)
    yield
