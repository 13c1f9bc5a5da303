"""A Hugging Face cache that holds what the Hub would serve, built from the offline copies (there is no network here):
tests of the online paths point HF_HOME at it and set HF_HUB_OFFLINE=1."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

COMMIT = "0" * 40  # any revision: refs/main names the snapshot folder


def hub_snapshot(home: Path, repo_id: str, source: Path) -> Path:
    """Write `source` (a checkpoint folder) into `home`'s hub cache as `repo_id`, its weights in bf16 as the Hub stores
    SmolLM2's, and its config saying so. Returns the snapshot folder."""
    repo = home / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    for f in source.iterdir():
        if f.name not in ("model.safetensors", "config.json"):
            shutil.copy(f, snapshot / f.name)
    config = json.loads((source / "config.json").read_text())
    (snapshot / "config.json").write_text(json.dumps({**config, "dtype": "bfloat16"}))
    weights = {k: v.to(torch.bfloat16).contiguous() for k, v in load_file(source / "model.safetensors").items()}
    save_file(weights, snapshot / "model.safetensors", metadata={"format": "pt"})
    return snapshot
