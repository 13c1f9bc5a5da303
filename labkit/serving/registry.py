"""A model registry: every model version as an entry with its format, content hash, lineage and measurements.

    reg = ModelRegistry(cache_dir("registry", "demo"))                     # entries persist in registry.json there
    v1 = reg.register("shakespeare", "v1", "safetensors", ckpt_dir, transformation="trained on ...")
    v2 = reg.register("shakespeare", "v2", "onnx", onnx_file, parent=v1.sha256, transformation="exported to ONNX")
    reg.attach("shakespeare", "v2", perplexity=21.3, p99_ms=4.1)            # measurements travel with the entry
    reg.verify(v2)                                                        # [] unless its bytes changed since
    reg.lineage("shakespeare", "v2")                                      # v2 -> v1 -> ... by parent hash

Where it sits: `labkit.models.registry` maps a *name* to a recipe that loads weights; `serving.repository` holds the
*loaded* versions and routes traffic to them. This registry is the record in between: which bytes a version is (its
SHA-256), where they came from (the parent's hash and the transformation), and how it measured. A version is
immutable: registering the same name and version with other bytes is refused. The promotion gate that reads these
entries is `serving.promotion`.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pandas as pd

from labkit.cache import cache_dir

# format -> the file suffixes an artifact of that format has (a folder needs one file with one of them)
FORMATS = {"safetensors": (".safetensors",), "onnx": (".onnx",), "gguf": (".gguf",), "torchscript": (".pt", ".ts"),
           "openvino": (".xml",), "pytorch": (".pt", ".pth", ".bin")}
STAGES = ("candidate", "production", "archived")
_CHUNK = 1 << 20  # hash files 1 MiB at a time: constant memory whatever their size


def artifact_files(path: str | Path) -> list[Path]:
    """The files that make up an artifact: the file itself, or every file below a folder, sorted by relative name.

    Raises:
        ValueError: the path does not exist, or the folder holds no files.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ValueError(f"{path} does not exist")
    files = sorted((p for p in path.rglob("*") if p.is_file()), key=lambda p: p.relative_to(path).as_posix())
    if not files:
        raise ValueError(f"{path} holds no files")
    return files


def file_sha256(path: str | Path) -> str:
    """SHA-256 of one file's bytes (FIPS 180-4), as 64 hex digits: what `sha256sum FILE` prints."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def content_sha256(path: str | Path) -> tuple[str, int]:
    """The content hash and size of an artifact (a file or a folder of files).

    A file hashes to the SHA-256 of its bytes. A folder hashes to the SHA-256 of its manifest: one line
    "<file sha256>  <relative name>\\n" per file, sorted by name (the text `sha256sum` prints, run in the folder on
    the sorted names), so renaming, adding, removing or changing any file changes the hash.

    Args:
        path: a file or a folder.
    Returns:
        (64 hex digits, total size in bytes).
    Raises:
        ValueError: the path does not exist or is an empty folder.
    """
    path = Path(path)
    files = artifact_files(path)
    size = sum(f.stat().st_size for f in files)
    if path.is_file():
        return file_sha256(path), size
    manifest = "".join(f"{file_sha256(f)}  {f.relative_to(path).as_posix()}\n" for f in files)
    return hashlib.sha256(manifest.encode()).hexdigest(), size


def _check_format(fmt: str, path: Path) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from {list(FORMATS)}")
    if not any(f.name.endswith(FORMATS[fmt]) for f in artifact_files(path)):
        raise ValueError(f"{path} has no {'/'.join(FORMATS[fmt])} file, so it is not a {fmt} artifact")


@dataclass(frozen=True)
class ModelEntry:
    """One registered model version.

    Attributes:
        name, version: what clients and people call it. format: one of FORMATS. path: the file or folder.
        sha256: its content hash (`content_sha256`). size_bytes: its total size.
        parent: the sha256 of the artifact it was made from (None: made from data, or of unknown origin).
        transformation: how it was made from the parent or the data ("exported to ONNX", "quantized int8 dynamic").
        measurements: name -> number (perplexity, p50_ms, p99_ms, ...). stage: one of STAGES.
        registered_at: Unix time (s) of registration.
    """

    name: str
    version: str
    format: str
    path: str
    sha256: str
    size_bytes: int
    parent: str | None = None
    transformation: str = ""
    measurements: dict[str, float] = field(default_factory=dict)
    stage: str = "candidate"
    registered_at: float = 0.0

    @property
    def short(self) -> str:
        """The first 12 hex digits of the hash, for tables."""
        return self.sha256[:12]


class ModelRegistry:
    """Model versions by (name, version), persisted as JSON in `root` (default: the labkit cache, never the repo).

    Args:
        root: the registry's folder; `registry.json` there is read now and rewritten on every change.
    """

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else cache_dir("registry")
        self.root.mkdir(parents=True, exist_ok=True)
        self.file = self.root / "registry.json"
        rows = json.loads(self.file.read_text())["entries"] if self.file.exists() else []
        self.entries: dict[tuple[str, str], ModelEntry] = {(e["name"], e["version"]): ModelEntry(**e) for e in rows}

    def _save(self) -> None:
        tmp = self.file.with_suffix(".part")
        tmp.write_text(json.dumps({"entries": [asdict(e) for e in self.entries.values()]}, indent=1))
        tmp.replace(self.file)  # atomic: a crash leaves the old file or the new one, never half of one

    def clear(self) -> None:
        """Forget every entry (the artifacts themselves stay where they are)."""
        self.entries.clear()
        self._save()

    def register(self, name: str, version: str, format: str, path: str | Path, parent: str | None = None,
                 transformation: str = "", measurements: dict[str, float] | None = None) -> ModelEntry:
        """Hash an artifact and record it as `name` `version` (a candidate).

        Args:
            name, version: the entry's key. format: one of FORMATS. path: the artifact's file or folder.
            parent: the sha256 of a registered entry it was made from (None: made from data).
            transformation: how it was made. measurements: numbers to attach now.
        Returns:
            the entry; the same entry again when this version is already registered with the same bytes.
        Raises:
            ValueError: an unknown format (naming the valid ones), a path that is missing or not of that format, a
                parent hash no entry has, or this version already registered with other bytes (versions are
                immutable: register a new version).
        """
        path = Path(path)
        _check_format(format, path)
        if parent is not None and not any(e.sha256 == parent for e in self.entries.values()):
            raise ValueError(f"no registered entry has the parent hash {parent[:12]}...; register the parent first")
        sha, size = content_sha256(path)
        old = self.entries.get((name, version))
        if old is not None:
            if old.sha256 != sha:
                raise ValueError(f"{name!r} version {version!r} is registered with sha256 {old.short}, not {sha[:12]}: "
                                 "versions are immutable, register a new version")
            return old
        entry = ModelEntry(name, version, format, str(path.resolve()), sha, size, parent, transformation,
                           dict(measurements or {}), "candidate", time.time())
        self.entries[(name, version)] = entry
        self._save()
        return entry

    def get(self, name: str, version: str) -> ModelEntry:
        """The entry of `name` `version`. Raises ValueError naming the registered versions."""
        if (name, version) not in self.entries:
            raise ValueError(f"{name!r} has no version {version!r}; registered: {self.versions(name)}")
        return self.entries[(name, version)]

    def versions(self, name: str) -> list[str]:
        """The registered versions of `name`, in registration order."""
        return [v for n, v in self.entries if n == name]

    def by_hash(self, sha256: str) -> ModelEntry | None:
        """The first entry registered with this content hash (None: none)."""
        return next((e for e in self.entries.values() if e.sha256 == sha256), None)

    def attach(self, name: str, version: str, **measurements: float) -> ModelEntry:
        """Add (or overwrite) measurements of an entry: attach(..., perplexity=21.3, p99_ms=4.1). Returns it."""
        entry = self.get(name, version)
        entry = replace(entry, measurements={**entry.measurements, **{k: float(v) for k, v in measurements.items()}})
        self.entries[(name, version)] = entry
        self._save()
        return entry

    def production(self, name: str) -> ModelEntry | None:
        """The version of `name` now in production (None: none yet)."""
        return next((e for (n, _), e in self.entries.items() if n == name and e.stage == "production"), None)

    def set_production(self, name: str, version: str) -> ModelEntry:
        """Make `version` the production version of `name`; the previous one is archived. Returns the entry.
        The check that it deserves it is `serving.promotion.gate`."""
        entry = self.get(name, version)
        old = self.production(name)
        if old is not None and old.version != version:
            self.entries[(name, old.version)] = replace(old, stage="archived")
        entry = self.entries[(name, version)] = replace(entry, stage="production")
        self._save()
        return entry

    def verify(self, entry: ModelEntry) -> list[str]:
        """Re-hash an entry's artifact. Returns the problems found: [] when its bytes are the registered ones."""
        try:
            sha, size = content_sha256(entry.path)
        except ValueError as err:
            return [f"{entry.version}: {err}"]
        if sha != entry.sha256:
            return [f"{entry.version}: the files changed since registration (sha256 {sha[:12]} != registered "
                    f"{entry.short}, {size} vs {entry.size_bytes} bytes)"]
        return []

    def lineage(self, name: str, version: str) -> list[ModelEntry]:
        """The entry and its ancestors, following parent hashes: [entry, parent, grandparent, ...]."""
        chain = [self.get(name, version)]
        while chain[-1].parent is not None and (up := self.by_hash(chain[-1].parent)) is not None:
            if up in chain:  # a cycle can only come from a hand-edited file: stop rather than loop
                break
            chain.append(up)
        return chain

    def table(self, name: str | None = None) -> pd.DataFrame:
        """One row per entry (of `name`, or all): name, version, format, stage, size_MB, sha256 (12 digits), parent
        (12 digits), transformation, then one column per measurement."""
        rows = [{"name": e.name, "version": e.version, "format": e.format, "stage": e.stage,
                 "size_MB": e.size_bytes / 1e6, "sha256": e.short, "parent": (e.parent or "")[:12],
                 "transformation": e.transformation, **e.measurements}
                for e in self.entries.values() if name is None or e.name == name]
        return pd.DataFrame(rows)
