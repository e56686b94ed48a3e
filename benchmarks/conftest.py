import pytest

from fused_rnn import _alloc


@pytest.fixture(autouse=True)
def _no_poison():
    # tests/conftest.py NaN-poisons buffers; a benchmark must not time that fill.
    with _alloc.poisoned(False):
        yield
