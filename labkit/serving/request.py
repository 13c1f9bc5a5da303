"""A request's state as it moves through an engine: waiting -> running -> finished.

    req = Request(prompt_ids, SamplingParams(max_tokens=32, temperature=0.8, seed=1), eos_token_id=2)
    engine.submit(req)           # may raise QueueFull (answer 429) or ShuttingDown (answer 503)
    req.finished.wait()          # set by the engine's worker thread
    req.tokens, req.finish_reason

The engine reports progress through `on_event(kind, value)`, called on its worker thread: ("token", id) for every
new token, ("done", reason) at the end, ("error", message) on failure. A request that asks for logprobs
(`SamplingParams.logprobs`) finds each token's TokenLogprob in `req.logprobs` before that token's event is posted,
and with `prompt_logprobs` the prompt's in `req.prompt_logprobs` before the first token event.
"""

from __future__ import annotations

import enum
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

SEED_RANGE = (-(2**63), 2**63 - 1)  # a signed 64-bit integer: OpenAI's spec and vLLM's protocol (torch.long)
GREEDY_BELOW = 1e-5  # a temperature below this is greedy (vLLM's _SAMPLING_EPS): logits / 1e-300 are inf, NaN


class QueueFull(RuntimeError):
    """The engine's queue is at its bound: the server answers 429 with a Retry-After header.

    Args:
        depth: requests waiting now.
        retry_after_s: seconds after which a slot is expected to be free (at least 1).
    """

    def __init__(self, depth: int, retry_after_s: float):
        super().__init__(f"queue full ({depth} waiting); retry in {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s


class ShuttingDown(RuntimeError):
    """The engine is draining for shutdown and takes no new requests (the server answers 503)."""


class Status(enum.Enum):
    """Where a request is: in the queue, holding a batch slot, or done (see `Request.finish_reason`)."""

    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(frozen=True)
class TokenLogprob:
    """One position's log-probabilities (natural log, fp32 log_softmax of the raw logits: `serving.logprobs`).

    Args:
        logprob: the chosen (or given, for a prompt) token's.
        top: the most likely tokens at that position as (token id, logprob), best first.
    """

    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class SamplingParams:
    """How one request picks its tokens (the rule itself is `labkit.decoding.sampling.sample_next`).

    Args:
        max_tokens: most new tokens to generate (>= 1).
        temperature: 0 = greedy (argmax), and so is anything below GREEDY_BELOW; above it the logits are divided
            by it before the draw.
        top_p: keep the smallest set of tokens holding this much probability (0 < top_p <= 1; 1 = off).
        top_k: keep only the k most likely tokens (0 = off).
        seed: seeds the request's own torch.Generator, so the same seed gives the same tokens in any batch
            (a signed 64-bit integer, SEED_RANGE).
        logprobs: None = no logprobs; k >= 0 = each new token's logprob and the k most likely alternatives.
        prompt_logprobs: also the prompt tokens' logprobs (with `logprobs` alternatives each; 0 when None).

    Raises:
        ValueError: for a value outside the ranges above.
    """

    max_tokens: int = 16
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    logprobs: int | None = None
    prompt_logprobs: bool = False

    def __post_init__(self) -> None:
        if self.max_tokens < 1 or self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0 \
                or (self.logprobs is not None and self.logprobs < 0) \
                or (self.seed is not None and not SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]):
            raise ValueError("need max_tokens >= 1, temperature >= 0, 0 < top_p <= 1, top_k >= 0, logprobs None "
                             f"or >= 0 and seed None or a signed 64-bit integer; got {self}")

    @property
    def wants_logprobs(self) -> bool:
        """Logprobs of any kind are asked for."""
        return self.logprobs is not None or self.prompt_logprobs

    @property
    def greedy(self) -> bool:
        """Argmax decoding: temperature 0, or below GREEDY_BELOW."""
        return self.temperature < GREEDY_BELOW


def _no_events(kind: str, value) -> None:
    pass


@dataclass(eq=False)
class Request:
    """One generation: prompt token ids in; generated token ids, a status and timestamps out.

    Args:
        prompt_ids: the prompt's token ids.
        params: sampling settings (greedy, 16 tokens by default).
        eos_token_id: generation stops after this token, or any of these tokens (finish reason "stop"), as
            generate() stops at every id of the generation config; None = only max_tokens stops it.
        on_event: called from the engine's worker thread with ("token", id), ("done", reason) or ("error", msg).

    Logprobs (when `params` asks): `logprobs` aligned with `tokens`; `prompt_logprobs` aligned with `prompt_ids`
    (the first None). Timestamps (`time.perf_counter()` seconds): t_submit (accepted), t_first (first token),
    t_done (finished).
    """

    prompt_ids: list[int]
    params: SamplingParams = SamplingParams()
    eos_token_id: int | tuple[int, ...] | None = None
    on_event: Callable[[str, object], None] = _no_events
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    tokens: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    prompt_logprobs: list[TokenLogprob | None] = field(default_factory=list)
    status: Status = Status.WAITING
    finish_reason: str | None = None  # once FINISHED: "stop" (EOS), "length" (max_tokens), "cancelled" or "error"
    t_submit: float = 0.0
    t_first: float | None = None
    t_done: float | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    _generator: torch.Generator | None = field(default=None, repr=False)

    @property
    def stop_ids(self) -> frozenset[int]:
        """The end-of-text ids that finish this request (empty: only max_tokens does)."""
        e = self.eos_token_id
        return frozenset() if e is None else frozenset((e,) if isinstance(e, int) else e)

    @property
    def tokens_left(self) -> int:
        """Decode steps this request still needs at most."""
        return self.params.max_tokens - len(self.tokens)

    def cancel(self) -> None:
        """Ask the engine to stop this request and free its slot at the next step."""
        self.cancelled.set()

    def generator(self) -> torch.Generator | None:
        """The request's own random generator (seeded once, on first use); None without a seed."""
        if self.params.seed is not None and self._generator is None:
            self._generator = torch.Generator().manual_seed(self.params.seed)
        return self._generator
