"""Model management: named models with versions, each served by its own engine; canary and rollback.

    repo = ModelRepository("continuous", max_batch=8, device="auto")      # scheduler, limits, device of every version
    repo.load("shakespeare", "v1", source="tiny-bloom-shakespeare")       # the first version is stable
    repo.load("shakespeare", "v2", source="tiny-bloom-shakespeare", dtype="bf16")
    repo.set_canary("shakespeare", "v2", share=0.2)                       # 20 % of traffic to v2
    repo.rollback("shakespeare")                                          # all traffic back to v1, v2 unloaded
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

import pandas as pd
import torch

from labkit import devices, precision
from labkit.models import load_model
from labkit.serving.batch_engine import BatchEngine
from labkit.serving.engine import Engine
from labkit.serving.hf_engine import HFEngine
from labkit.serving.limits import Limits
from labkit.serving.paged_engine import PagedEngine
from labkit.serving.policies import get_policy

# labkit's three batching policies, its paged engine, then transformers' continuous batching
SCHEDULERS = ("sync", "dynamic", "continuous", "paged", "hf-continuous")


def _check_scheduler(name: str) -> None:
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose from {list(SCHEDULERS)}")


def make_engine(scheduler: str, model, tokenizer, limits: Limits | None = None,
                device: str | torch.device | None = None, **overrides) -> Engine:
    """A started engine for `model`, computing where the model lives.

    Args:
        scheduler: 'sync', 'dynamic' or 'continuous' (labkit's engine with that batching policy), 'paged'
            (labkit's paged KV engine: continuous batching, KV blocks, prefix caching, chunked prefill), or
            'hf-continuous' (transformers' continuous batching).
        model: a transformers causal LM, on the device it should serve from. tokenizer: its tokenizer.
        limits: base limits (defaults when None). device: where the engine must compute ("cpu", "cuda", "cuda:N";
            None: wherever the model is); checked against the model's device, not moved (a shared model stays put).
        **overrides: limits by name (max_batch, max_queue, ...).
    Returns:
        the engine, its worker thread running; `engine.device` is where it computes.
    Raises:
        ValueError: an unknown scheduler, limit or device (naming the valid ones), a model on another device than
            `device`, or a model 'hf-continuous' cannot run. CapabilityMissing: CUDA asked for without a GPU.
    """
    _check_scheduler(scheduler)
    limits = Limits.of(limits, **overrides)
    if device is not None:
        check_on(model, device)
    if scheduler == "hf-continuous":
        return HFEngine(model, tokenizer, limits).start()
    if scheduler == "paged":
        return PagedEngine(model, tokenizer, limits).start()
    return BatchEngine(model, tokenizer, get_policy(scheduler), limits).start()


def check_on(model, device: str | torch.device) -> None:
    """Raise unless `model` lives on `device`.

    Args:
        model: a torch module with a `.device`. device: "cpu", "cuda", "cuda:N" or "auto" (`hardware.resolve_device`;
            "cuda" means the current GPU).
    Raises:
        ValueError: the model is elsewhere, or an unknown device (naming the valid ones). CapabilityMissing: CUDA
            asked for without a GPU.
    """
    want, here = devices.resolve(device), torch.device(model.device)  # a model's CUDA device always has its index
    if here != want:
        raise ValueError(f"the model is on {here}, not on {want}: load it there (models.load_model(..., "
                         f"device={str(want)!r})) or serve it on {here}")


def model_on(model: str, device: str | torch.device, loaded: tuple | None = None) -> tuple:
    """The (model, tokenizer) to serve on `device`: `loaded` when given (checked to be there), else loaded there.

    Args:
        model: a labkit model name. device: "cpu", "cuda", "cuda:N" or "auto". loaded: a ready (model, tokenizer).
    Returns:
        (model, tokenizer) on `device`.
    Raises:
        ValueError: `loaded` lives elsewhere, or an unknown device or model (naming the valid ones).
    """
    if loaded is None:
        return load_model(model, device=device)
    check_on(loaded[0], device)
    return loaded


@dataclass
class Deployment:
    """One loaded version of a served model."""

    model: str
    version: str
    source: str  # a labkit model name, Hub id or folder
    dtype: str  # one of labkit.precision.PRECISIONS
    engine: Engine  # computes on `engine.device`
    load_s: float
    loaded_at: float = field(default_factory=time.time)

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    @property
    def context(self) -> int:
        """Longest prompt + completion the model can take (2048 for ALiBi models without a limit)."""
        return int(getattr(self.engine.model.config, "max_position_embeddings", None) or 2048)

    @property
    def device(self) -> str:
        """Where this version computes, with its hardware: "cpu (<CPU model>)", "cuda:0 (NVIDIA T4)"."""
        return devices.device_label(self.engine.device)


@dataclass
class _Route:
    stable: str
    canary: str | None = None
    share: float = 0.0


class ModelRepository:
    """Served models by name and version, each version with its own engine; routes requests, canary included.

    Args:
        scheduler: the default scheduler of every version (one of SCHEDULERS).
        seed: seeds the canary split, so it is reproducible.
        limits: default limits of every version. device: where versions load and compute by default ("auto": the GPU
            when there is one, else the CPU; "cpu", "cuda", "cuda:N"). None: "auto" for the models the repository
            loads, and a `loaded` model serves where it is. **overrides: limits by name (max_batch=8, ...).
    Raises:
        ValueError: an unknown scheduler, limit or device, naming the valid ones. CapabilityMissing: CUDA asked for
            without a GPU.
    """

    def __init__(self, scheduler: str = "continuous", seed: int = 0, limits: Limits | None = None,
                 device: str | torch.device | None = None, **overrides):
        _check_scheduler(scheduler)
        self.device = None if device is None else devices.resolve(device)  # a bad one fails here, before any loading
        self.default_scheduler, self.default_limits = scheduler, Limits.of(limits, **overrides)
        self.deployments: dict[tuple[str, str], Deployment] = {}
        self.routes: dict[str, _Route] = {}
        self._rng = random.Random(seed)  # seeded: a canary split is reproducible
        self._lock = threading.Lock()

    def load(self, model: str, version: str, source: str | None = None, dtype: str = "fp32",
             scheduler: str | None = None, loaded=None, device: str | torch.device | None = None,
             **limits) -> Deployment:
        """Load a version of a served model and start its engine.

        Args:
            model: the name clients send. version: this version's name (the first loaded is the stable one).
            source: a labkit model name, Hub id or folder (default: `model`).
            dtype: fp32 | bf16 | fp16 (aliases such as "bfloat16" accepted).
            scheduler: this version's scheduler (default: the repository's). loaded: a ready (model, tokenizer),
                already on `device`. device: where this version loads and computes (default: the repository's;
                when neither is given, "auto" for a model loaded here and wherever a `loaded` one is).
            **limits: this version's limits on top of the repository's.
        Returns:
            the Deployment (`.device` names where it computes).
        Raises:
            ValueError: the version is already loaded, an unknown scheduler, limit, dtype or device (before loading),
                or a `loaded` model on another device.
        """
        if (model, version) in self.deployments:
            raise ValueError(f"{model!r} version {version!r} is already loaded; unload it first")
        scheduler = scheduler or self.default_scheduler
        _check_scheduler(scheduler)
        limits, dtype = Limits.of(self.default_limits, **limits), precision.canonical(dtype)
        device = self.device if device is None else devices.resolve(device)
        start = time.perf_counter()
        net, tok = loaded if loaded is not None else load_model(source or model, dtype=dtype, device=device or "auto")
        engine = make_engine(scheduler, net, tok, limits, device=device)
        dep = Deployment(model, version, source or model, dtype, engine, time.perf_counter() - start)
        with self._lock:
            self.deployments[(model, version)] = dep
            self.routes.setdefault(model, _Route(stable=version))
        return dep

    def _get(self, model: str, version: str) -> Deployment:
        if (model, version) not in self.deployments:
            raise ValueError(f"{model!r} has no version {version!r}; loaded versions: {self.versions(model)}")
        return self.deployments[(model, version)]

    def models(self) -> list[str]:
        """The served model names."""
        return list(self.routes)

    def versions(self, model: str) -> list[str]:
        """The loaded versions of `model`, in load order."""
        return [v for m, v in self.deployments if m == model]

    def set_canary(self, model: str, version: str, share: float) -> None:
        """Send `share` of `model`'s traffic to `version` (already loaded), the rest to the stable version."""
        self._get(model, version)
        if not 0 <= share <= 1:
            raise ValueError(f"canary share must be in [0, 1], got {share}")
        route = self.routes[model]
        if version == route.stable:
            raise ValueError(f"{version!r} is already the stable version of {model!r}")
        with self._lock:
            route.canary, route.share = version, share

    def promote(self, model: str) -> None:
        """The canary becomes the stable version and gets all traffic; the old stable one is unloaded."""
        self._end_canary(model, promote=True)

    def rollback(self, model: str) -> None:
        """All traffic back to the stable version; the canary is drained and unloaded."""
        self._end_canary(model, promote=False)

    def _end_canary(self, model: str, promote: bool) -> None:
        route = self._route(model)
        if route.canary is None:
            raise ValueError(f"{model!r} has no canary to {'promote' if promote else 'roll back'}")
        leaving = route.stable if promote else route.canary
        with self._lock:
            route.stable = route.canary if promote else route.stable
            route.canary, route.share = None, 0.0
        self.unload(model, leaving)

    def _route(self, model: str) -> _Route:
        if model not in self.routes:
            raise KeyError(f"model {model!r} is not served; served models: {self.models()}")
        return self.routes[model]

    def route(self, model: str) -> Deployment:
        """The deployment that serves the next request for `model` (KeyError if unknown)."""
        r = self._route(model)
        with self._lock:
            to_canary = r.canary is not None and self._rng.random() < r.share
            return self.deployments[(model, r.canary if to_canary else r.stable)]

    def unload(self, model: str, version: str, drain: bool = True) -> None:
        dep = self._get(model, version)
        route = self.routes[model]
        if version == route.stable and len(self.versions(model)) > 1:
            raise ValueError(f"{version!r} is the stable version of {model!r}: promote or roll back first")
        with self._lock:
            del self.deployments[(model, version)]
            if version == route.stable:
                del self.routes[model]
        dep.engine.stop(drain=drain)

    def close(self, drain: bool = True) -> None:
        """Stop every engine (draining in-flight requests by default)."""
        for dep in list(self.deployments.values()):
            dep.engine.stop(drain=drain)

    def table(self) -> pd.DataFrame:
        """One row per loaded version: source, dtype, device, scheduler, traffic share, load time (s), queue,
        running."""
        rows = []
        for (model, version), dep in self.deployments.items():
            r = self.routes[model]
            share = r.share if version == r.canary else 1 - (r.share if r.canary else 0.0)
            rows.append({"model": model, "version": version, "source": dep.source, "dtype": dep.dtype,
                         "device": dep.device, "scheduler": dep.engine.name, "traffic_share": share,
                         "load_s": round(dep.load_s, 2), "queue": dep.engine.queue_depth,
                         "running": len(dep.engine.running)})
        return pd.DataFrame(rows)
