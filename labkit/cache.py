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
    root = Path(os.environ.get("LABKIT_CACHE") or Path.home() / ".cache" / "labkit").expanduser()
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
