"""Backends: ops/cells.py holds the cell math shared by all cells, ops/naive.py the reference
recurrence, ops/native.py torch's own implementation (cuDNN on CUDA)."""
