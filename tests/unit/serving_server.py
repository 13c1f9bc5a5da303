"""One way for the serving tests to start `labkit serve` in-process: models loaded once, one torch thread
(the engine's worker and the HTTP thread share 2 cores; see test_serving.py), loopback only."""

from __future__ import annotations

from contextlib import contextmanager

import torch

from labkit.models import load_cached
from labkit.serving.app import Server, create_app
from labkit.serving.repository import ModelRepository


@contextmanager
def serving(models: dict[str, str | tuple[str, str]], max_tokens_limit: int, request_timeout_s: float = 60):
    """A started Server with `models` ({served name: registry name, or (registry name, scheduler)}) loaded as v1
    on the 'continuous' scheduler (4 slots) unless another is named; torch's thread count is restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        repo = ModelRepository("continuous", max_batch=4)
        for name, source in models.items():
            source, scheduler = (source, None) if isinstance(source, str) else source
            repo.load(name, "v1", loaded=load_cached(source), **({"scheduler": scheduler} if scheduler else {}))
        with Server(create_app(repo, max_tokens_limit=max_tokens_limit, request_timeout_s=request_timeout_s)) as srv:
            yield srv
    finally:
        torch.set_num_threads(threads)
