#!/bin/sh
# Prints pip options that pick PyTorch's CPU-only wheels when their index answers (GPU=0),
# and nothing otherwise (then pip takes torch from PyPI or a local wheel, as configured).
[ "${GPU:-0}" = "1" ] && exit 0
python3 - "$INDEX" <<'PY' 2>/dev/null && echo "--extra-index-url $INDEX"
import sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "/torch/", timeout=3)
PY
exit 0
