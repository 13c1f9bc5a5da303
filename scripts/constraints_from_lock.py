"""requirements/constraints.txt: the lock's versions without hashes, torch and torchao, for installs that keep their
own Python and torch (Colab's CUDA build): `pip install -c requirements/constraints.txt -e .[extras]` pins every
other package to the version the lab is tested with. `make lock` writes it; tests/test_env_files.py checks it
agrees with the lock.

    python scripts/constraints_from_lock.py [--check]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK, CONSTRAINTS = ROOT / "requirements" / "lock.txt", ROOT / "requirements" / "constraints.txt"
KEEP_OWN = {"torch", "torchao"}  # the runtime's own torch build (Colab: CUDA) stays, and torchao follows it
# (its compiled ops are built per torch release); the lock's torch is PyTorch's CPU wheel
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def constraints(lock_text: str) -> str:
    """The constraints file's text for a lock's text: `name==version` per locked package but torch, in lock order."""
    pins = [m.groups() for line in lock_text.splitlines() if (m := PIN.match(line))]
    lines = [f"{name}=={version}" for name, version in pins if name.lower() not in KEEP_OWN]
    header = ("# The lock's versions (requirements/lock.txt) without hashes, torch and torchao, for runtimes that\n"
              "# keep their own Python and torch (Colab). Written by scripts/constraints_from_lock.py (make lock).\n")
    return header + "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    text = constraints(LOCK.read_text())
    if "--check" in argv:
        ok = CONSTRAINTS.exists() and CONSTRAINTS.read_text() == text
        print(f"{CONSTRAINTS.relative_to(ROOT)} {'agrees with' if ok else 'differs from'} the lock")
        return 0 if ok else 1
    CONSTRAINTS.write_text(text)
    print(f"wrote {CONSTRAINTS.relative_to(ROOT)}: {text.count('==')} pins")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
