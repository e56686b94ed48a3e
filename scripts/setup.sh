#!/usr/bin/env bash
# Set-up for a fresh clone; safe to run again. It never replaces or upgrades an installed torch:
# on a CUDA machine the torch already there is used as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}

if ! "$PY" -c "import torch" 2>/dev/null; then
  # No torch yet: the CPU build (a file on our CPU machines). A bare "torch" would pull a
  # several-GB CUDA build.
  "$PY" -m pip install -q "torch==2.13.0"
fi
if ! "$PY" -c "import triton" 2>/dev/null; then
  # The GPU machines' Triton: it also runs our kernels on the CPU (TRITON_INTERPRET=1) and
  # compiles them for sm_90 without a GPU. CUDA machines bring their own with torch.
  "$PY" -m pip install -q "triton==3.6.0"
fi
# Editable install without build isolation, so pip builds nothing against a torch of its own.
if ! "$PY" -c "import setuptools" 2>/dev/null; then
  "$PY" -m pip install -q "setuptools>=64"
fi
"$PY" -m pip install -q --no-build-isolation -e ".[test]"
"$PY" -c "import torch, fused_rnn; print('fused_rnn', fused_rnn.__version__, 'with torch', torch.__version__)"
