"""The paged engine without a server: greedy generation straight through the scheduler and a model runner.

    runner = OrtRunner(model, num_blocks=64, block_size=16)
    tokens = generate_offline(runner, prompt_ids, max_tokens=64, eos=(2,))

vLLM calls this offline inference (its `LLM` class): the same engine step a server runs, with no HTTP, no
request queue and no worker thread. Timed with `labkit.decoding.timing.time_decode` (pass its `mark`), it is the
engine's own speed, against which a server's tokens/s measure what serving costs (`benchmarks/serving.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from labkit.serving.paged.blocks import BlockManager
from labkit.serving.paged.runner import ModelRunner
from labkit.serving.paged.scheduler import Scheduler
from labkit.serving.paged.sequence import Sequence


def generate_offline(runner: ModelRunner, prompt: list[int], max_tokens: int, eos: Iterable[int] = (),
                     mark: Callable[[], None] | None = None) -> list[int]:
    """Greedy continuation of one prompt through a fresh scheduler over `runner`'s pool.

    Args:
        runner: a ModelRunner (or OrtRunner); its pool is reused, its previous contents ignored.
        prompt: token ids (≥ 1). max_tokens: the most tokens to generate (≥ 1). eos: ids that end the reply (kept).
        mark: called right after each new token (`time_decode`'s clock).
    Returns:
        the new token ids (at most max_tokens).
    Raises:
        ValueError: an empty prompt, max_tokens < 1, or a prompt + reply larger than the runner's pool.
    """
    num_blocks, block_size = runner.k_pool[0].shape[:2]
    if not prompt or max_tokens < 1:
        raise ValueError(f"need a prompt of >= 1 token and max_tokens >= 1, got {len(prompt)} and {max_tokens}")
    if len(prompt) + max_tokens > num_blocks * block_size:
        raise ValueError(f"{len(prompt)} + {max_tokens} tokens do not fit the runner's pool of "
                         f"{num_blocks * block_size} slots")
    scheduler, seq, stop = Scheduler(BlockManager(num_blocks, block_size)), Sequence(list(prompt)), set(eos)
    scheduler.add(seq)
    while scheduler.has_work:
        work = scheduler.schedule()
        logits = runner.run(work)
        scheduler.computed(work)
        if not len(logits):  # a prompt chunk that does not end the prompt
            continue
        token = int(logits[0].argmax())
        seq.append(token)
        if mark is not None:
            mark()
        if token in stop or len(seq.generated) >= max_tokens:
            scheduler.finish(seq)
    return seq.generated
