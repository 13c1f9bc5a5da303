"""Model management: named models with versions, each served by its own scheduler; canary and rollback.

    repo = ModelRepository()
    repo.load("shakespeare", "v1", source="tiny-bloom-shakespeare")       # the first version is stable
    repo.load("shakespeare", "v2", source="tiny-bloom-shakespeare", dtype="bfloat16")
    repo.set_canary("shakespeare", "v2", share=0.2)                       # 20 % of traffic to v2
    repo.rollback("shakespeare")                                          # all traffic back to v1, v2 unloaded
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

import pandas as pd

from labkit.serving.schedulers import Scheduler, make_scheduler


@dataclass
class Deployment:
    """One loaded version of a served model."""

    model: str
    version: str
    source: str  # a labkit model name, Hub id or folder
    dtype: str
    scheduler: Scheduler
    load_s: float
    loaded_at: float = field(default_factory=time.time)

    @property
    def tokenizer(self):
        return self.scheduler.tokenizer

    @property
    def context(self) -> int:
        """Longest prompt + completion the model can take (2048 for ALiBi models without a limit)."""
        return int(getattr(self.scheduler.model.config, "max_position_embeddings", None) or 2048)


@dataclass
class _Route:
    stable: str
    canary: str | None = None
    share: float = 0.0


class ModelRepository:
    def __init__(self, scheduler: str = "continuous", seed: int = 0, **limits):
        self.default_scheduler, self.default_limits = scheduler, limits
        self.deployments: dict[tuple[str, str], Deployment] = {}
        self.routes: dict[str, _Route] = {}
        self._rng = random.Random(seed)  # seeded: a canary split is reproducible
        self._lock = threading.Lock()

    def load(self, model: str, version: str, source: str | None = None, dtype: str = "float32",
             scheduler: str | None = None, loaded=None, **limits) -> Deployment:
        """Load `source` (default: `model`) and start a scheduler for it; `loaded` = a ready (model, tokenizer)."""
        if (model, version) in self.deployments:
            raise ValueError(f"{model!r} version {version!r} is already loaded; unload it first")
        start = time.perf_counter()
        if loaded is None:
            from labkit.models import load_model

            loaded = load_model(source or model, dtype=dtype, device="cpu")
        net, tok = loaded
        sched = make_scheduler(scheduler or self.default_scheduler, net, tok, **{**self.default_limits, **limits})
        dep = Deployment(model, version, source or model, dtype, sched, time.perf_counter() - start)
        with self._lock:
            self.deployments[(model, version)] = dep
            self.routes.setdefault(model, _Route(stable=version))
        return dep

    def _get(self, model: str, version: str) -> Deployment:
        if (model, version) not in self.deployments:
            have = [v for m, v in self.deployments if m == model]
            raise ValueError(f"{model!r} has no version {version!r}; loaded versions: {have}")
        return self.deployments[(model, version)]

    def models(self) -> list[str]:
        return list(self.routes)

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
        if version == route.stable and len([v for m, v in self.deployments if m == model]) > 1:
            raise ValueError(f"{version!r} is the stable version of {model!r}: promote or roll back first")
        with self._lock:
            del self.deployments[(model, version)]
            if version == route.stable:
                del self.routes[model]
        dep.scheduler.stop(drain=drain)

    def close(self, drain: bool = True) -> None:
        """Stop every scheduler (draining in-flight requests by default)."""
        for dep in list(self.deployments.values()):
            dep.scheduler.stop(drain=drain)

    def table(self) -> pd.DataFrame:
        rows = []
        for (model, version), dep in self.deployments.items():
            r = self.routes[model]
            share = r.share if version == r.canary else 1 - (r.share if r.canary else 0.0)
            rows.append({"model": model, "version": version, "source": dep.source, "dtype": dep.dtype,
                         "scheduler": dep.scheduler.name, "traffic_share": share, "load_s": round(dep.load_s, 2),
                         "queue": dep.scheduler.queue_depth, "running": len(dep.scheduler.running)})
        return pd.DataFrame(rows)
