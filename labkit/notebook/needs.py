"""What each lab needs, and what this machine lacks of it (`labkit doctor`).

    for n in lab_needs():
        print(n.lab, n.missing, n.gpu_sections)

Three kinds of need. Optional extras (pyproject's `[project.optional-dependencies]`): a lab that imports them fails
without them, so a missing one is named with its install command. GPU sections: read from the lab's source (its
`dev.gpu_section("...")` calls), they skip on a machine without CUDA and say so. Peers: engines in their own
environments that a lab shows beside labkit's when they are there (vLLM: `make peers`; llama.cpp: the `peer` extra).
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass, field
from pathlib import Path

# The extras each lab imports (one home for it; the extras' own comments in pyproject.toml say the same).
# Labs 09 and 13 run their ranks on torch.distributed alone (no DeepSpeed).
LAB_EXTRAS = {"02": ("serve", "engines"), "03": ("engines",), "04": ("engines",), "05": ("quant", "engines"),
              "07": ("engines",), "10": ("parallel",), "11": ("parallel",), "12": ("serve", "engines")}  # fmt: skip
# Peers a lab measures beside labkit when present: (lab, what, how to get it)
LAB_PEERS = {"07": ("llama.cpp", "pip install 'labkit[peer]' (compiles for ~7 min)"),
             "12": ("vLLM (CPU)", "make peers (its own venv, .venv-vllm)")}  # fmt: skip
GPU_SECTION = re.compile(r'gpu_section\(\s*"([^"]+)"')


@dataclass
class LabNeeds:
    """One lab's needs on this machine.

    Attributes:
        lab: the notebook's stem ("04_runtimes_compared"). extras: the extras it imports.
        missing: packages of those extras that are not installed here, each "name (pip install 'labkit[extra]')".
        gpu_sections: its sections that need CUDA (they skip here when `cuda` is False).
        peer: (what, how to get it) when it shows a peer engine, else None.
    """

    lab: str
    extras: tuple[str, ...]
    missing: list[str] = field(default_factory=list)
    gpu_sections: list[str] = field(default_factory=list)
    peer: tuple[str, str] | None = None


def extra_packages(extra: str) -> list[str]:
    """Distribution names labkit's `extra` requires (from the installed package's metadata)."""
    from packaging.requirements import Requirement

    names = []
    for spec in importlib.metadata.requires("labkit") or []:
        req = Requirement(spec)
        if req.marker is not None and req.marker.evaluate({"extra": extra}):
            names.append(req.name)
    return names


def installed(dist: str) -> bool:
    try:
        importlib.metadata.version(dist)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def lab_needs(labs_dir: Path | None = None) -> list[LabNeeds]:
    """Every lab's extras (and which of their packages are missing here), GPU sections and peer.

    Args:
        labs_dir: the folder of labs/NN_*.py (default: the repository's; GPU sections are read from the sources).
    Returns:
        one LabNeeds per lab, in order.
    """
    from labkit.notebook.run import LABS_DIR

    labs_dir = labs_dir or LABS_DIR
    out = []
    for source in sorted(labs_dir.glob("[0-9][0-9]_*.py")):
        number = source.name[:2]
        extras = LAB_EXTRAS.get(number, ())
        missing = [f"{p} (pip install 'labkit[{e}]')" for e in extras for p in extra_packages(e) if not installed(p)]
        out.append(LabNeeds(source.stem, extras, missing, GPU_SECTION.findall(source.read_text()),
                            LAB_PEERS.get(number)))  # fmt: skip
    return out
