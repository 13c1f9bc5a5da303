"""A training loop next to an inference step, measured side by side.

Training = mini-batch -> forward -> loss -> backward -> optimizer step, repeated for hours and
tuned for throughput. Inference = one forward pass, no gradients, tuned for latency.
Every function takes a model (and its tokenizer), never a model name: names belong to `labkit.models`.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from labkit import devices, measure, precision
from labkit.data import shakespeare
from labkit.memory import model_state_bytes


def place(model, device: str | torch.device | None = None) -> torch.device:
    """`device` with its index, the model moved there in place (None: where the model is). ValueError for an unknown
    device, naming the valid ones; CapabilityMissing for CUDA without a GPU."""
    dev = devices.resolve(device if device is not None else next(model.parameters()).device)
    if next(model.parameters()).device != dev:
        model.to(dev)
    return dev


@dataclass(frozen=True)
class TrainConfig:
    """A training recipe. The defaults train tiny-bloom to a usable checkpoint in under a minute on 2 CPU cores.

    Args:
        steps: optimizer steps. batch_size: sequences per step. seq_len: tokens per sequence.
        lr: peak learning rate (AdamW). betas: AdamW's moment decay rates. warmup_steps: linear warm-up steps.
        eval_every: steps between validation evaluations. eval_batches: validation batches per evaluation.
        seed: seeds the batch sampler. max_chars: cut each split to this many characters (quick runs).
    Raises:
        ValueError: a count < 1 or a learning rate <= 0.
    """

    steps: int = 240
    batch_size: int = 8
    seq_len: int = 64
    lr: float = 5e-3
    betas: tuple[float, float] = (0.9, 0.95)  # the usual LM choice: adapts faster than (0.9, 0.999)
    warmup_steps: int = 20
    eval_every: int = 50
    eval_batches: int = 8
    seed: int = 0
    max_chars: int | None = None  # cut the corpus for quick runs

    def __post_init__(self):
        for field in ("steps", "batch_size", "seq_len", "eval_every", "eval_batches"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be >= 1, got {getattr(self, field)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


@functools.lru_cache(maxsize=8)
def token_stream(split: str, tokenizer, max_chars: int | None = None) -> torch.Tensor:
    """A whole split tokenized once (cached) into one long tensor of ids.

    Args:
        split: "train", "validation" or "test". tokenizer: a transformers tokenizer.
        max_chars: cut the split's text to this many characters first.
    Returns:
        int64 tensor of shape (tokens,).
    """
    ids = tokenizer(shakespeare(split, max_chars), return_attention_mask=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def get_batch(tokens: torch.Tensor, batch_size: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
    """Random windows of a token stream; the model shifts them into next-token targets itself.

    Args:
        tokens: (tokens,) ids from `token_stream()`. batch_size, seq_len: the batch shape.
        generator: the torch.Generator that picks the window starts (deterministic batches).
    Returns:
        int64 tensor of shape (batch_size, seq_len).
    Raises:
        ValueError: the stream is not longer than seq_len.
    """
    if tokens.numel() <= seq_len:
        raise ValueError(f"corpus has {tokens.numel()} tokens, fewer than seq_len={seq_len}")
    starts = torch.randint(0, tokens.numel() - seq_len, (batch_size,), generator=generator)
    return torch.stack([tokens[s : s + seq_len] for s in starts.tolist()])


def train_step(model, optimizer, batch: torch.Tensor) -> float:
    """One optimisation step: forward, next-token loss, backward, gradient clipping (norm 1), optimizer step.

    Args:
        model: a transformers causal LM (put in train mode). optimizer: over its parameters.
        batch: (batch, seq) token ids on the model's device.
    Returns:
        the batch's mean cross-entropy loss before the update (nats per token).
    """
    model.train()
    loss = model(input_ids=batch, labels=batch).loss  # forward + next-token cross-entropy
    loss.backward()  # gradients for every parameter
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()  # update weights (and AdamW's two moment buffers)
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


@torch.no_grad()
def inference_step(model, batch: torch.Tensor) -> torch.Tensor:
    """One forward pass: no graph is recorded, nothing is saved for a backward pass.

    Args:
        model: a transformers causal LM (put in eval mode). batch: (batch, seq) token ids on its device.
    Returns:
        logits of shape (batch, seq, vocab).
    """
    model.eval()
    return model(input_ids=batch).logits  # (batch, seq, vocab)


@torch.no_grad()
def evaluate(model, batches: list[torch.Tensor]) -> float:
    """Mean next-token cross-entropy (nats per token) over (batch, seq) batches, in eval mode, without gradients."""
    model.eval()
    return sum(model(input_ids=b, labels=b).loss.item() for b in batches) / len(batches)


@dataclass
class TrainResult:
    """What `train()` returns: the loss history, the training throughput (tokens per second) and the device."""

    history: pd.DataFrame  # step, train_loss, val_loss (NaN between evals), seconds
    tokens_per_second: float
    device: str = "cpu"  # where it trained: "cpu", "cuda:0"

    @property
    def first_val_loss(self) -> float:
        """Validation loss before the first step."""
        return float(self.history["val_loss"].dropna().iloc[0])

    @property
    def final_val_loss(self) -> float:
        """Validation loss after the last step."""
        return float(self.history["val_loss"].dropna().iloc[-1])


def train(
    model,
    tokenizer,
    config: TrainConfig = TrainConfig(),
    on_eval: Callable[[pd.DataFrame], None] | None = None,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> TrainResult:
    """Train a causal LM on Shakespeare's training plays with AdamW and a warm-up + cosine schedule.

    Args:
        model: a transformers causal LM (trained in place).
        tokenizer: its tokenizer (the corpus is tokenized once per split and cached).
        config: steps, batch size, sequence length, learning rate, evaluation cadence, seed.
        on_eval: called with the history so far (a DataFrame) after each evaluation, e.g. to update a live plot.
        progress: show a progress bar.
        device: where to train ("cpu", "cuda", "cuda:N", "auto"; the model is moved there); None: where it is.
    Returns:
        TrainResult: history (step, train_loss, val_loss with NaN between evaluations, seconds), training
        tokens per second and the device. The model is left in eval mode.
    """
    gen, (b, t) = torch.Generator().manual_seed(config.seed), (config.batch_size, config.seq_len)
    train_tokens = token_stream("train", tokenizer, config.max_chars)
    val_tokens = token_stream("validation", tokenizer, config.max_chars)
    device = place(model, device)
    val_batches = [get_batch(val_tokens, b, t, gen).to(device) for _ in range(config.eval_batches)]  # each (b, t)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=config.betas, weight_decay=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(config))
    rows = [{"step": 0, "train_loss": math.nan, "val_loss": evaluate(model, val_batches), "seconds": 0.0}]
    start, bar = time.perf_counter(), tqdm(range(1, config.steps + 1), desc="training", disable=not progress)
    with precision.flush_denormals(device):  # tiny-bloom's smoke run on 2 CPU cores: 31 s -> 24 s, the same losses
        for step in bar:
            loss = train_step(model, optimizer, get_batch(train_tokens, b, t, gen).to(device))
            schedule.step()
            row = {"step": step, "train_loss": loss, "val_loss": math.nan, "seconds": time.perf_counter() - start}
            if step % config.eval_every == 0 or step == config.steps:
                row["val_loss"] = evaluate(model, val_batches)
                bar.set_postfix(val_loss=f"{row['val_loss']:.3f}")
            rows.append(row)
            if on_eval and not math.isnan(row["val_loss"]):
                on_eval(pd.DataFrame(rows))
    model.eval()
    measure.sync_device()
    elapsed = time.perf_counter() - start
    tokens_per_s = config.steps * config.batch_size * config.seq_len / elapsed
    return TrainResult(measure.results_frame(rows, device=str(device)), tokens_per_s, str(device))


def _warmup_cosine(config: TrainConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def save_checkpoint(model, tokenizer, path: Path) -> Path:
    """Save safetensors weights, config and tokenizer into a folder, loadable with `from_pretrained(path)`.

    Args:
        model: a transformers model. tokenizer: its tokenizer. path: the folder (created if missing).
    Returns:
        `path`.
    """
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


# --- training vs inference, measured -------------------------------------------------------
def step_costs(model, tokenizer, batch_size: int = 8, seq_len: int = 128, repeat: int = 10,
               device: str | torch.device | None = None) -> pd.DataFrame:
    """Time and memory of one training step vs one inference step on the same batch, on one device. The model's
    weights are restored afterwards, so measuring does not train it.

    Args:
        model: a transformers causal LM. tokenizer: its tokenizer (the batch comes from the validation plays).
        batch_size, seq_len: the batch shape. repeat: timed runs per phase (after 2 warm-ups; CUDA synchronised).
        device: where to measure ("cpu", "cuda", "cuda:N", "auto"; the model is moved there); None: where it is.
    Returns:
        DataFrame, one row per phase ("training step", "inference step"): device, median_ms, p90_ms, peak_step_MiB
        (memory allocated during one step: on CUDA `torch.cuda.max_memory_allocated` above the start, on the CPU
        the tensor storages the step creates), persistent_MiB and its parts (weights, gradients, optimizer state).
        attrs: batch_size, seq_len, device, peak_memory (which counter).
    Raises:
        ValueError: batch_size or seq_len < 1, or an unknown device.
    """
    if batch_size < 1 or seq_len < 1:
        raise ValueError(f"batch_size and seq_len must be >= 1, got {batch_size}, {seq_len}")
    device = place(model, device)
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    batch = get_batch(token_stream("validation", tokenizer), batch_size, seq_len, torch.Generator().manual_seed(0))
    batch = batch.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    try:
        steps = {
            "training step": lambda: train_step(model, optimizer, batch),
            "inference step": lambda: inference_step(model, batch),
        }
        rows = []
        for phase, fn in steps.items():
            stats = measure.benchmark(fn, warmup=2, repeat=repeat)  # warm-up also creates AdamW state
            peak = measure.peak_memory(fn, device=device)
            persistent = model_state_bytes(model, optimizer if phase == "training step" else None)
            rows.append({
                "phase": phase, "device": str(device), "median_ms": stats.median * 1e3, "p90_ms": stats.p90 * 1e3,
                "peak_step_MiB": (peak.cuda_bytes if device.type == "cuda" else peak.tensor_bytes) / 2**20,
                "persistent_MiB": sum(persistent.values()) / 2**20,
                **{f"{k}_MiB": v / 2**20 for k, v in persistent.items()},
            })  # fmt: skip
    finally:
        model.load_state_dict(saved)
        model.eval()
    counter = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "tensor storages created by the step"
    return measure.results_frame(rows, batch_size=batch_size, seq_len=seq_len, device=str(device), peak_memory=counter)


def batch_sweep(model, batch_sizes=(1, 2, 4, 8, 16, 32), seq_len: int = 64, repeat: int = 10,
                progress: bool = True, device: str | torch.device | None = None) -> pd.DataFrame:
    """Inference latency and throughput over batch size: the serving trade-off in one table.

    Args:
        model: a transformers causal LM. batch_sizes: batch sizes to time (each >= 1).
        seq_len: tokens per sequence (random ids). repeat: timed forwards per batch size. progress: progress bar.
        device: where to measure ("cpu", "cuda", "cuda:N", "auto"; the model is moved there); None: where it is.
    Returns:
        DataFrame, one row per batch size: latency_ms (median), p90_ms, sequences_per_s, tokens_per_s; attrs
        seq_len and device.
    Raises:
        ValueError: an empty list, a batch size < 1 or an unknown device.
    """
    if not batch_sizes or min(batch_sizes) < 1:
        raise ValueError(f"batch sizes must be >= 1, got {batch_sizes}")
    device = place(model, device)
    vocab = model.config.vocab_size
    rows = []
    for bs in tqdm(batch_sizes, desc="batch sweep", disable=not progress):
        batch = torch.randint(0, vocab, (bs, seq_len), generator=torch.Generator().manual_seed(bs)).to(device)
        stats = measure.benchmark(lambda b=batch: inference_step(model, b), warmup=2, repeat=repeat)
        rows.append({
            "batch_size": bs, "latency_ms": stats.median * 1e3, "p90_ms": stats.p90 * 1e3,
            "sequences_per_s": bs / stats.median, "tokens_per_s": bs * seq_len / stats.median,
        })  # fmt: skip
    return measure.results_frame(rows, seq_len=seq_len, device=str(device))
