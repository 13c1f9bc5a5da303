#!/bin/sh
# Writes requirements/lock.txt, the one lock that `make install`, binder/ and environment.yml install from:
# labkit's dependencies and the extras `make install` installs, every package pinned (==) with its sha256 hashes,
# resolved by uv for CPython 3.11 on Linux x86_64 (manylinux_2_28), torch as PyTorch's CPU build (+cpu, no CUDA).
# Run it through the Makefile, which says which torch and extras:
#   make lock                     re-resolve after a pyproject.toml change, keeping every pin it still allows
#                                 (uv prefers the versions already in the lock)
#   make upgrade                  the newest versions pyproject.toml allows (`--upgrade`), then re-install and test
# Arguments go to `uv pip compile`: `make lock LOCK_ARGS="--upgrade-package transformers"`, `-c constraints.txt`.
# uv is a tool, not a lab dependency: the one on PATH, else a throwaway venv under $TMPDIR that this script makes.
set -eu
cd "$(dirname "$0")/.."
TORCH_VERSION=${TORCH_VERSION:?set by the Makefile: run make lock}
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
EXTRAS=${EXTRAS:?the extras make install installs, set by the Makefile: run make lock}
LOCK=${LOCK:-requirements/lock.txt}
# 3.11.7: the 3.11 release the lab's machines run (some locked packages need >= 3.11.5)
PYTHON_VERSION=${PYTHON_VERSION:-3.11.7}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

UV=${UV:-$(command -v uv || true)}
if [ -z "$UV" ]; then
  TOOLS=${TMPDIR:-/tmp}/labkit-lock-tools
  [ -x "$TOOLS/bin/uv" ] || { python3 -m venv "$TOOLS" && "$TOOLS/bin/python" -m pip install -q uv; }
  UV=$TOOLS/bin/uv
fi

# torch's CPU wheel comes from a folder of wheels: pip's own (PIP_FIND_LINKS) when it holds the file, else one
# downloaded from PyTorch's CPU index. Either way the lock carries that file's hash, and only torch comes from there.
WHEEL=torch-$TORCH_VERSION+cpu-cp311-cp311-manylinux_2_28_x86_64.whl
FIND=""
for dir in ${PIP_FIND_LINKS:-}; do
  [ -f "$dir/$WHEEL" ] && { FIND=$dir; break; }
done
if [ -z "$FIND" ]; then
  echo "== downloading $WHEEL from $TORCH_CPU_INDEX"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 --implementation cp \
    --platform manylinux_2_28_x86_64 --index-url "$TORCH_CPU_INDEX" -d "$TMP/wheels" "torch==$TORCH_VERSION+cpu"
  FIND=$TMP/wheels
fi
echo "torch==$TORCH_VERSION+cpu" > "$TMP/torch.txt"

EXTRA_ARGS=""
for extra in $(echo "$EXTRAS" | tr ',' ' '); do EXTRA_ARGS="$EXTRA_ARGS --extra $extra"; done
mkdir -p "$(dirname "$LOCK")"
echo "== $($UV --version): $LOCK for Python $PYTHON_VERSION, Linux x86_64, extras $EXTRAS, torch $TORCH_VERSION+cpu"
# Left out: rfc3987-syntax (and lark, which only it needs), the IRI checker of jsonschema's format-nongpl extra that
# jupyter-events asks for. It compiles a grammar when imported: 1.4 s of every kernel's start, through plotly ->
# nbformat -> jsonschema, for a format no notebook, event or lab uses; without it jsonschema skips that one format.
# shellcheck disable=SC2086  # EXTRA_ARGS is a list of options
"$UV" pip compile pyproject.toml $EXTRA_ARGS --python-version "$PYTHON_VERSION" \
  --python-platform x86_64-manylinux_2_28 --generate-hashes --find-links "$FIND" --override "$TMP/torch.txt" \
  --no-annotate --custom-compile-command "make lock (scripts/lock.sh)" --quiet -o "$LOCK" \
  --no-emit-package rfc3987-syntax --no-emit-package lark "$@"
echo "== $LOCK: $(grep -c '^[A-Za-z0-9]' "$LOCK") packages"
python3 scripts/constraints_from_lock.py  # requirements/constraints.txt: the same pins for Colab (no hashes, no torch)
