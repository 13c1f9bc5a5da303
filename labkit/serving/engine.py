"""The engine: one worker thread owns the model; requests join and leave a running batch as a policy says.

HTTP handlers never touch the model. They `submit()` a Request: admission control refuses it at once when the
queue is full (QueueFull, HTTP 429 with Retry-After) or the engine is draining (ShuttingDown, 503). The worker
thread then repeats one step:

    admit (the policy: how many queued requests join) -> prefill them (KVBatch) -> decode one token for every
    running sequence -> sample (`decoding.sampling.sample_next`) -> emit tokens -> finished sequences leave

`Engine` is the interface, the admission and the loop; `batch_engine.BatchEngine` is labkit's step over a `KVBatch`;
`hf_engine.HFEngine` puts transformers' continuous batching behind the same interface. An engine computes where its
model lives (`Engine.device`): load the model on the device it should serve from.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections import Counter, deque

import torch

from labkit.serving.limits import Limits
from labkit.serving.policies import Decision, Policy, View
from labkit.serving.request import QueueFull, Request, SamplingParams, ShuttingDown, Status, TokenLogprob


class Engine(ABC):
    """Owns a model and a worker thread; requests go in with `submit()`, tokens come out as request events.

    Args:
        model: a transformers causal LM (on any device).
        tokenizer: its tokenizer.
        policy: when requests join and leave the batch (`policies.POLICIES`).
        limits: batch slots, queue bound, ... (`Limits`; defaults when None).
        name: the scheduler's name in tables and errors (default: the policy's).

    Counters: `batch_sizes` (decode steps by batch size), `decode_steps` / `decode_sequences` (the same, never
    cleared), `tokens_generated`; `running` holds the requests in the batch now, `queue_depth` the ones waiting.
    """

    supports_sampling = True  # temperature > 0 (else greedy only)
    supports_logprobs = True  # SamplingParams.logprobs / prompt_logprobs

    def __init__(self, model, tokenizer, policy: Policy, limits: Limits | None = None, name: str | None = None):
        self.model, self.tokenizer, self.policy = model, tokenizer, policy
        self.name = name or policy.name
        self.limits = limits or Limits()
        self.max_batch, self.max_queue = policy.max_batch(self.limits), self.limits.max_queue
        self.queue: deque[Request] = deque()
        self.running: list[Request] = []  # requests holding a batch slot now
        self.batch_sizes: Counter[int] = Counter()  # decode steps by batch size (a harness may clear it)
        self.decode_steps = self.decode_sequences = 0  # the same, summed over the engine's life (/metrics)
        self.tokens_generated = 0
        self._cv = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._step_s = 0.05  # running estimate of one step's time (s), for Retry-After

    def count_decode_step(self, sequences: int) -> None:
        """Count one decode step of `sequences` sequences (`batch_sizes`, `decode_steps`, `decode_sequences`)."""
        self.batch_sizes[sequences] += 1
        self.decode_steps += 1
        self.decode_sequences += sequences

    # --- the HTTP side: admission --------------------------------------------------------
    def submit(self, req: Request) -> None:
        """Queue a request for the worker thread.

        Raises:
            ValueError: sampling (temperature > 0) sent to a greedy-only engine, or logprobs to one without them.
            ShuttingDown: the engine is draining.
            QueueFull: `max_queue` requests are already waiting; carries the seconds to wait before retrying.
        """
        if not req.params.greedy and not self.supports_sampling:
            raise ValueError(f"scheduler {self.name!r} serves greedy decoding only (temperature 0)")
        if req.params.wants_logprobs and not self.supports_logprobs:
            raise ValueError(f"scheduler {self.name!r} does not compute logprobs")
        with self._cv:
            if self._closing:
                raise ShuttingDown(f"scheduler {self.name!r} is shutting down")
            if len(self.queue) >= self.max_queue:
                raise QueueFull(len(self.queue), max(1.0, self.retry_after_s()))
            req.t_submit, req.status = time.perf_counter(), Status.WAITING
            self.queue.append(req)
            self._cv.notify()

    def cancel(self, req: Request) -> None:
        """Cancel a request: a queued one leaves the queue now, a running one at the next step."""
        req.cancel()
        with self._cv:
            if req in self.queue:
                self.queue.remove(req)
                self._finish(req, "cancelled")
            self._cv.notify()

    def retry_after_s(self) -> float:
        """Seconds until the queue ahead has been decoded: step time x queued tokens / batch slots."""
        return self._step_s * sum(r.tokens_left for r in self.queue) / self.max_batch

    @property
    def queue_depth(self) -> int:
        return len(self.queue)

    @property
    def device(self) -> torch.device:
        """Where the engine computes: its model's device (inputs and KV cache go there)."""
        return self.model.device

    def start(self) -> Engine:
        """Start the worker thread (once); returns the engine."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"engine-{self.name}", daemon=True)
            self._thread.start()
        return self

    def stop(self, drain: bool = True, timeout: float | None = 30) -> None:
        """Refuse new requests; finish queued and running ones (drain) or cancel them; wait for the thread (s)."""
        with self._cv:
            self._closing = True
            if not drain:
                for req in [*self.queue, *self.running]:
                    req.cancel()
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def generate(self, prompts: list[list[int]], params: SamplingParams | None = None,
                 eos_token_id: int | tuple[int, ...] | None = None) -> list[list[int]]:
        """Submit prompts together and wait for them (for tests and notebooks).

        Args:
            prompts: token ids per prompt.
            params: sampling settings for every prompt (greedy, 16 tokens by default).
            eos_token_id: stop a sequence after this token or tokens (None: only max_tokens stops it).
        Returns:
            the new token ids per prompt.
        Raises:
            QueueFull: more prompts than the queue holds.
        """
        reqs = [Request(list(p), params or SamplingParams(), eos_token_id) for p in prompts]
        for r in reqs:
            self.submit(r)
        for r in reqs:
            r.finished.wait()
        return [r.tokens for r in reqs]

    # --- the worker side: one loop -------------------------------------------------------
    def _decide(self) -> Decision:
        """The policy's decision now, with `join` capped at the queue length (call holding the lock)."""
        oldest = time.perf_counter() - self.queue[0].t_submit if self.queue else 0.0
        d = self.policy.schedule(View(len(self.queue), len(self.running), self.max_batch, oldest,
                                      self.limits.max_wait_ms / 1e3, self._closing))
        return Decision(min(d.join, len(self.queue)), d.wake_in_s if self.queue else None)

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self.running and not (decision := self._decide()).join:
                    if self._closing and not self.queue:
                        return
                    self._cv.wait(decision.wake_in_s)
            start = time.perf_counter()
            try:
                with torch.no_grad():
                    self.step()
            except Exception as err:  # noqa: BLE001 - a failing batch fails its requests, not the server
                for req in [*self.running]:
                    self._finish(req, "error", f"{type(err).__name__}: {err}")
                self._reset()
            self._step_s = 0.8 * self._step_s + 0.2 * (time.perf_counter() - start)

    def _admit(self) -> list[Request]:
        """Move the queued requests the policy lets join now into `running` (cancelled ones are finished instead)."""
        taken = []
        with self._cv:
            n = self._decide().join
            while self.queue and len(taken) < n:
                req = self.queue.popleft()
                if req.cancelled.is_set():
                    self._finish(req, "cancelled")
                else:
                    req.status = Status.RUNNING
                    taken.append(req)
            self.running = [*self.running, *taken]  # they hold a slot from now on (a new list: readers iterate)
        return taken

    def _emit(self, req: Request, token: int, logprob: TokenLogprob | None = None) -> bool:
        """Record one new token (and its logprob, stored before the event); True when the request is finished."""
        if req.finish_reason is not None:
            return True  # a finished row in a static batch: its extra tokens are discarded
        if req.cancelled.is_set():
            self._finish(req, "cancelled")
            return True
        req.tokens.append(token)
        if logprob is not None:
            req.logprobs.append(logprob)
        self.tokens_generated += 1
        if req.t_first is None:
            req.t_first = time.perf_counter()
        _notify(req, "token", token)
        if token in req.stop_ids:
            self._finish(req, "stop")
        elif len(req.tokens) >= req.params.max_tokens:
            self._finish(req, "length")
        return req.finish_reason is not None

    def _finish(self, req: Request, reason: str, message: str | None = None) -> None:
        if req.finished.is_set():
            return
        req.finish_reason, req.t_done, req.status = reason, time.perf_counter(), Status.FINISHED
        _notify(req, "error" if reason == "error" else "done", message or reason)
        req.finished.set()

    def _reset(self) -> None:
        """Forget the running batch after a failed step."""
        self.running = []

    @abstractmethod
    def step(self) -> None:
        """One iteration on the worker thread: admit, run the model one step, emit tokens, let finished ones leave."""


def _notify(req: Request, kind: str, value) -> None:
    """Deliver an event; a listener that is gone (closed event loop) cancels the request, never the worker."""
    try:
        req.on_event(kind, value)
    except Exception:  # noqa: BLE001 - the listener's failure is the client's, not the engine's
        req.cancel()
