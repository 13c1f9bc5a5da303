"""One interface for every scheduler: requests in, token events out, one model-owning worker thread.

HTTP handlers never touch the model. They `submit()` a `GenRequest`; the worker thread runs the model
and calls `request.on_event(kind, value)` for every token ("token", id), at the end ("done", reason)
or on failure ("error", message). A full queue raises `QueueFull` at once: admission control.
"""

from __future__ import annotations

import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


class QueueFull(RuntimeError):
    """The scheduler's queue is at its bound; the server answers 429 with Retry-After."""

    def __init__(self, depth: int, retry_after_s: float):
        super().__init__(f"queue full ({depth} waiting); retry in {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s


class ShuttingDown(RuntimeError):
    """The scheduler is draining for shutdown and takes no new requests (503)."""


def _no_events(kind: str, value) -> None:
    pass


@dataclass(eq=False)
class GenRequest:
    """One generation: prompt token ids in, generated token ids (and timestamps) out."""

    prompt_ids: list[int]
    max_new_tokens: int = 16
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None
    eos_token_id: int | None = None
    on_event: Callable[[str, object], None] = _no_events  # called from the worker thread
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    tokens: list[int] = field(default_factory=list)
    finish_reason: str | None = None  # "stop" (EOS), "length", "cancelled", "error"
    t_submit: float = 0.0
    t_first: float | None = None
    t_done: float | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    _generator: torch.Generator | None = None

    def cancel(self) -> None:
        """Ask the scheduler to stop this request and free its slot at the next step."""
        self.cancelled.set()

    def generator(self) -> torch.Generator | None:
        if self.seed is not None and self._generator is None:
            self._generator = torch.Generator().manual_seed(self.seed)
        return self._generator


def pick_tokens(logits: torch.Tensor, reqs: list[GenRequest]) -> list[int]:
    """Next token per row of `logits` (batch, vocab): argmax for greedy rows, else temperature + top-p."""
    out = logits.argmax(-1).tolist()
    for i, req in enumerate(reqs):
        if req.temperature <= 0:
            continue
        probs = torch.softmax(logits[i].float() / req.temperature, -1)
        sorted_p, order = probs.sort(descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < req.top_p  # smallest set holding top_p of the mass
        sorted_p = sorted_p * keep
        out[i] = int(order[torch.multinomial(sorted_p / sorted_p.sum(), 1, generator=req.generator())])
    return out


class Scheduler(ABC):
    """Owns the model; a worker thread calls `step()` whenever there is work."""

    name = "base"
    supports_sampling = True

    def __init__(self, model, tokenizer, max_batch: int = 8, max_queue: int = 64):
        if max_batch < 1 or max_queue < 0:
            raise ValueError(f"need max_batch >= 1 and max_queue >= 0, got {max_batch}, {max_queue}")
        self.model, self.tokenizer = model, tokenizer
        self.max_batch, self.max_queue = max_batch, max_queue
        self.queue: deque[GenRequest] = deque()
        self.running: list[GenRequest] = []  # requests holding a batch slot now
        self.batch_sizes: Counter[int] = Counter()  # decode steps by batch size
        self.tokens_generated = 0
        self._cv = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._step_s = 0.05  # running estimate of one step's time, for Retry-After

    # --- the HTTP side -------------------------------------------------------------------
    def submit(self, req: GenRequest) -> None:
        with self._cv:
            if self._closing:
                raise ShuttingDown(f"scheduler {self.name!r} is shutting down")
            if len(self.queue) >= self.max_queue:
                raise QueueFull(len(self.queue), max(1.0, self.retry_after_s()))
            req.t_submit = time.perf_counter()
            self.queue.append(req)
            self._cv.notify()

    def cancel(self, req: GenRequest) -> None:
        """Cancel a request: a queued one leaves the queue now, a running one at the next step."""
        req.cancel()
        with self._cv:
            if req in self.queue:
                self.queue.remove(req)
                self._finish(req, "cancelled")
            self._cv.notify()

    def retry_after_s(self) -> float:
        return self._step_s * req_tokens(self.queue) / max(1, self.max_batch)

    @property
    def queue_depth(self) -> int:
        return len(self.queue)

    def start(self) -> Scheduler:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"scheduler-{self.name}", daemon=True)
            self._thread.start()
        return self

    def stop(self, drain: bool = True, timeout: float | None = 30) -> None:
        """Refuse new requests; finish queued and running ones (drain) or cancel them."""
        with self._cv:
            self._closing = True
            if not drain:
                for req in [*self.queue, *self.running]:
                    req.cancel()
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def generate(self, prompts: list[list[int]], max_new_tokens: int = 16, **kw) -> list[list[int]]:
        """Submit prompts together, wait, return their new tokens (for tests and notebooks)."""
        reqs = [GenRequest(list(p), max_new_tokens, **kw) for p in prompts]
        for r in reqs:
            self.submit(r)
        for r in reqs:
            r.finished.wait()
        return [r.tokens for r in reqs]

    # --- the worker side -----------------------------------------------------------------
    def _has_work(self) -> bool:
        return bool(self.queue or self.running)

    def _wait_s(self) -> float | None:
        return None

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._has_work():
                    if self._closing and not self.queue and not self.running:
                        return
                    self._cv.wait(self._wait_s())
            start = time.perf_counter()
            try:
                with torch.no_grad():
                    self.step()
            except Exception as err:  # noqa: BLE001 - a failing batch fails its requests, not the server
                for req in [*self.running]:
                    self._finish(req, "error", f"{type(err).__name__}: {err}")
                self._reset()
            self._step_s = 0.8 * self._step_s + 0.2 * (time.perf_counter() - start)

    def _take(self, n: int) -> list[GenRequest]:
        """Pop up to n queued requests (cancelled ones are finished, not run)."""
        taken = []
        with self._cv:
            while self.queue and len(taken) < n:
                req = self.queue.popleft()
                if req.cancelled.is_set():
                    self._finish(req, "cancelled")
                else:
                    taken.append(req)
        return taken

    def _emit(self, req: GenRequest, token: int) -> bool:
        """Record one new token; True when the request is finished (EOS, length or cancelled)."""
        if req.finish_reason is not None:
            return True  # a finished row in a static batch: its extra tokens are discarded
        if req.cancelled.is_set():
            self._finish(req, "cancelled")
            return True
        req.tokens.append(token)
        self.tokens_generated += 1
        if req.t_first is None:
            req.t_first = time.perf_counter()
        _notify(req, "token", token)
        if token == req.eos_token_id:
            self._finish(req, "stop")
        elif len(req.tokens) >= req.max_new_tokens:
            self._finish(req, "length")
        return req.finish_reason is not None

    def _finish(self, req: GenRequest, reason: str, message: str | None = None) -> None:
        if req.finished.is_set():
            return
        req.finish_reason, req.t_done = reason, time.perf_counter()
        _notify(req, "error" if reason == "error" else "done", message or reason)
        req.finished.set()

    def _reset(self) -> None:
        self.running = []

    @abstractmethod
    def step(self) -> None:
        """One unit of work on the worker thread (a whole request, a whole batch, or one decode step)."""


def _notify(req: GenRequest, kind: str, value) -> None:
    """Deliver an event; a listener that is gone (closed event loop) cancels the request, never the worker."""
    try:
        req.on_event(kind, value)
    except Exception:  # noqa: BLE001
        req.cancel()


def req_tokens(reqs) -> int:
    """Decode steps the given requests still need at most."""
    return sum(r.max_new_tokens - len(r.tokens) for r in reqs)
