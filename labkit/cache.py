"""Where labkit keeps what it builds: converted models, checkpoints, compiled files.

Never inside the repository. `LABKIT_CACHE` overrides the default `~/.cache/labkit`.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """The cache root (or a sub-folder of it), created on first use.

    Args:
        *parts: sub-folder names below the root, e.g. ("onnx", "tiny-bloom").
    Returns:
        the folder's path ($LABKIT_CACHE or ~/.cache/labkit, then *parts); it exists on return.
    """
    path = cache_root().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_root() -> Path:
    """$LABKIT_CACHE, or ~/.cache/labkit when it is unset; not created here (`cache_dir` creates)."""
    return Path(os.environ.get("LABKIT_CACHE") or Path.home() / ".cache" / "labkit").expanduser()


def keep_compiled_kernels() -> str:
    """Point Inductor's kernel cache (torch.compile's generated C++/Triton code and its compiled libraries) at
    `cache_root()/inductor`, unless the caller set TORCHINDUCTOR_CACHE_DIR.

    Inductor reads the variable once, the first time anything touches its code cache (transformers' BLOOM forward
    already does), and fixes it then to its default, /tmp/torchinductor_<user>, which a reboot empties: so labkit
    sets it on import. Returns the folder Inductor will use (it creates it when it first writes).
    """
    return os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_root() / "inductor"))
