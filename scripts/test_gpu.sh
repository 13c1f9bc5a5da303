#!/usr/bin/env bash
# `make test-gpu`: on a CUDA machine, the test suite including the GPU-marked tests (< 8 minutes).
# Uses the project's .venv when it has CUDA torch (`make install GPU=1`), else the machine's python3
# plus wheels carried in .whl/ (see scripts/fetch_gpu_wheels.sh). Tests whose packages are missing
# there (JupyterLab, papermill, ipywidgets) skip and say so.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
  PY=.venv/bin/python
fi
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/labkit-site .whl/*.whl
  export PYTHONPATH="/tmp/labkit-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$PY" -c "import torch; assert torch.cuda.is_available(), 'make test-gpu needs a CUDA GPU; use make test'; print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
"$PY" -m labkit.cli doctor
# GPU tests first (the point of this run), then the rest of the suite.
timeout 200 "$PY" -m pytest -p no:cacheprovider -m gpu -v -rs --timeout 120
timeout 260 "$PY" -m pytest -p no:cacheprovider -m "not gpu" -q -rs --timeout 120
