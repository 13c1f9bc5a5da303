#!/bin/sh
# Installs the lock into a venv, every package hash-checked and none resolved (--no-deps: the lock is complete).
#   sh scripts/install_lock.sh VENV_BIN LOCK [PIP_OPTIONS...]     (the Makefile calls it; PIP_OPTIONS: torch's index)
# uv installs it (uv's own pin and hashes are in the lock; pip installs uv first), in well under pip's 2 minutes on
# 2 cores. Both compile every file to bytecode at install (uv only when asked: --compile-bytecode): where
# PYTHONDONTWRITEBYTECODE=1 is set, as on CI and in many containers, Python never writes it on import, and every lab
# kernel and every rank it starts would compile torch, transformers and DeepSpeed from source again (a lab's
# set-up cell took 10 s instead of 4 s; lab 11, with its ranks, 110 s instead of 45 s).
# uv reads no pip configuration, so it is given pip's find-links folders (PIP_FIND_LINKS), which hold the CPU torch
# wheel on some machines, and PIP_OPTIONS. Where uv cannot install the lock (no uv pin, an index only pip is
# configured for), pip does it as before.
set -eu
BIN=$1
LOCK=$2
shift 2
ONLY_UV=$(dirname "$BIN")/uv-lock.txt
awk '/^[^ #]/ {keep = /^uv==/} keep' "$LOCK" > "$ONLY_UV"
if [ -s "$ONLY_UV" ] && "$BIN/python" -m pip install -q --require-hashes --no-deps -r "$ONLY_UV"; then
  FIND=""
  for dir in ${PIP_FIND_LINKS:-}; do [ -d "$dir" ] && FIND="$FIND --find-links $dir"; done
  # shellcheck disable=SC2086  # FIND and "$@" are lists of options
  if UV_LINK_MODE=copy "$BIN/uv" pip install --python "$BIN/python" -q --require-hashes --no-deps \
      --compile-bytecode --index-strategy unsafe-best-match $FIND "$@" -r "$LOCK"; then
    exit 0
  fi
  echo "== uv could not install $LOCK here; pip will (about 2 minutes)"
fi
"$BIN/python" -m pip install -q --require-hashes --no-deps "$@" -r "$LOCK"
