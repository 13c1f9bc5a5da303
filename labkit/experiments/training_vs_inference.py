"""Training vs inference, measured: one forward's latency distribution, a training step next to an inference step,
and the serving trade-off of batch size. Plain arguments in, a table and a figure out (widget-friendly).

    result = forward_latency("tiny-bloom", batch_size=4)
    result.table, result.figure
    widgets.panel(forward_latency, model=["tiny-bloom", "tiny-llama"], batch_size=(1, 64))

Persistent bytes (weights, gradients, optimizer state) are counted by `labkit.memory.model_state_bytes`, through
`labkit.training.step_costs`. Every function measures on one `device` (None: where the model passed in is, or the CPU
for a model loaded by name) and its table says which (attrs["device"]).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go
import torch

from labkit import measure, models, plots, training
from labkit.hardware import resolve_device
from labkit.plots import Measured

TINY_MODELS = ["tiny-bloom", "tiny-llama", "tiny-bloom-shakespeare"]


def _model(model: str, loaded, device) -> tuple:
    """(model, tokenizer, device): the pair passed in, or a cached load of `model` by name, on `device` (None: where
    the pair is, or the CPU for a load by name; a pair elsewhere is moved there, in place)."""
    net, tok = loaded if loaded is not None else models.load_cached(model, device if device is not None else "cpu")
    return net, tok, training.place(net, device)


def check_activation_memory(batch_size: int, seq_len: int, vocab_size: int, copies: int,
                            device: str | torch.device = "cpu") -> None:
    """Refuse, before allocating, a batch whose logits alone would not fit in the device's free memory.

    Args:
        batch_size, seq_len: the batch's shape (>= 1). vocab_size: the model's vocabulary.
        copies: how many (batch, seq, vocab) fp32 logits live at once (about 1 for inference, 4 for training:
            logits, log-softmax, and their gradients).
        device: where the batch would be computed (`models.available_memory`: free GPU memory or available RAM).
    Raises:
        ValueError: for batch_size or seq_len < 1, or an unknown device. MemoryError: when batch × seq × vocab × 4 B
            × copies exceeds the device's free memory, with both sizes in GiB.
    """
    if batch_size < 1 or seq_len < 1:
        raise ValueError(f"batch_size and seq_len must be >= 1, got {batch_size} and {seq_len}")
    need = batch_size * seq_len * vocab_size * 4 * copies
    free = models.available_memory(resolve_device(device))
    if need > free:
        raise MemoryError(
            f"batch {batch_size} x {seq_len} tokens needs about {need / 2**30:.1f} GiB for logits alone, "
            f"but {free / 2**30:.1f} GiB is free; use a smaller batch or sequence"
        )


def forward_latency(model: str = "tiny-bloom", batch_size: int = 1, seq_len: int = 32, repeat: int = 30,
                    loaded=None, device: str | torch.device | None = None) -> Measured:
    """The distribution of one forward pass's latency over `repeat` runs (after 3 warm-up runs).

    Args:
        model: a registry name (loaded once and cached) unless `loaded` is given. batch_size, seq_len: the input's
            shape (random token ids, seeded). repeat: timed runs. loaded: (model, tokenizer) to measure instead.
        device: where to run ("cpu", "cuda", "cuda:N", "auto"); None: where `loaded` is, or the CPU.
    Returns:
        Measured: one row of `measure.Stats` in ms (median, p10, p90, p99, ...) with the model, device and shape; a
        histogram of the runs with the median, p90 and p99 marked.
    Raises:
        ValueError, MemoryError: see `check_activation_memory`.
    """
    net, _, dev = _model(model, loaded, device)
    check_activation_memory(batch_size, seq_len, net.config.vocab_size, copies=1, device=dev)
    ids = torch.randint(0, net.config.vocab_size, (batch_size, seq_len), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        stats = measure.benchmark(lambda: net(input_ids=ids.to(dev)), warmup=3, repeat=repeat)
    row = {"model": model, "device": str(dev), "batch_size": batch_size, "seq_len": seq_len, **stats.ms()}
    table = measure.results_frame([row], device=str(dev))
    samples = pd.DataFrame({"latency_ms": [s * 1e3 for s in stats.samples]})
    fig = go.Figure(go.Histogram(x=samples.latency_ms, nbinsx=20, name="runs"))
    for name, where in (("median", "top left"), ("p90", "top right"), ("p99", "bottom right")):
        fig.add_vline(x=stats.ms()[name], line_dash="dash", annotation_text=name, annotation_position=where)
    fig.update_xaxes(title="latency (ms)")
    fig.update_yaxes(title="runs")
    title = f"{model} forward latency, batch {batch_size} × {seq_len} tokens"
    return Measured(table, plots.style(fig, title, table.attrs["hardware"]))


def compare_steps(model: str = "tiny-bloom", batch_size: int = 8, seq_len: int = 64, repeat: int = 10,
                  loaded=None, device: str | torch.device | None = None) -> Measured:
    """One training step (forward, loss, backward, AdamW step) vs one inference step on the same batch.

    Args:
        model: a registry name unless `loaded` is given. batch_size, seq_len: validation tokens per step.
        repeat: timed steps per phase. loaded: (model, tokenizer) to measure instead (its weights are restored).
        device: where to measure ("cpu", "cuda", "cuda:N", "auto"); None: where `loaded` is, or the CPU.
    Returns:
        Measured: one row per phase (`training.step_costs`: median_ms, p90_ms, peak_step_MiB, persistent_MiB and
        weights/gradients/optimizer_state MiB); grouped bars of time and memory.
    Raises:
        ValueError, MemoryError: see `check_activation_memory`.
    """
    net, tok, dev = _model(model, loaded, device)
    check_activation_memory(batch_size, seq_len, net.config.vocab_size, copies=4, device=dev)
    costs = training.step_costs(net, tok, batch_size=batch_size, seq_len=seq_len, repeat=repeat, device=dev)
    long = costs.melt(id_vars="phase", value_vars=["median_ms", "peak_step_MiB", "persistent_MiB"], var_name="metric")
    long.attrs = costs.attrs
    title = f"Training vs inference step on {dev}, batch {batch_size} × {seq_len} tokens"
    return Measured(costs, plots.bars(long, x="metric", y="value", color="phase", title=title))


def batch_tradeoff(model: str = "tiny-bloom", batch_sizes: Sequence[int] = (1, 2, 4, 8, 16, 32), seq_len: int = 64,
                   repeat: int = 10, loaded=None, progress: bool = True,
                   device: str | torch.device | None = None) -> Measured:
    """Inference latency and throughput over batch size: the serving trade-off.

    Args:
        model: a registry name unless `loaded` is given. batch_sizes: batches to time (>= 1). seq_len: tokens per
            sequence. repeat: timed forwards per batch. loaded: (model, tokenizer) to measure instead.
        progress: show a progress bar. device: where to measure ("cpu", "cuda", "cuda:N", "auto"); None: where
            `loaded` is, or the CPU.
    Returns:
        Measured: one row per batch (batch_size, latency_ms, p90_ms, sequences_per_s, tokens_per_s); latency and
        throughput on two axes.
    Raises:
        ValueError, MemoryError: see `check_activation_memory`.
    """
    net, _, dev = _model(model, loaded, device)
    check_activation_memory(max(batch_sizes, default=0), seq_len, net.config.vocab_size, copies=1, device=dev)
    sweep = training.batch_sweep(net, tuple(batch_sizes), seq_len=seq_len, repeat=repeat, progress=progress,
                                 device=dev)
    title = f"Inference on {dev}: latency and throughput vs batch size"
    return Measured(sweep, plots.dual_axis(sweep, "batch_size", "latency_ms", "sequences_per_s", title, log_x=True))


def max_batch_within(sweep: pd.DataFrame, latency_budget_ms: float) -> int | None:
    """The largest batch whose median latency meets a budget.

    Args:
        sweep: `batch_tradeoff().table`. latency_budget_ms: the budget in ms.
    Returns:
        the batch size, or None if even the smallest batch misses the budget.
    """
    ok = sweep[sweep.latency_ms <= latency_budget_ms]
    return int(ok.batch_size.max()) if len(ok) else None


def unigram_loss(tokenizer, max_chars: int | None = None) -> float:
    """The validation loss of a model that knows only how often each token occurs: the baseline a trained language
    model must beat to show it learned context. A fit: the frequencies are counted on the training plays (add-one
    smoothing, so no validation token gets probability 0) and the loss is measured on the validation plays.

    Args:
        tokenizer: the model's tokenizer (its vocabulary sets the unigram's support).
        max_chars: cut each split to this many characters first, as `training.TrainConfig.max_chars` does.
    Returns:
        mean cross-entropy over the validation tokens, nats/token: -mean(log p(token)), p(t) = (count(t) + 1) /
        (tokens + vocabulary) -- Laplace's rule of succession (Jurafsky & Martin, *Speech and Language Processing*,
        3rd ed., §3.5.1).
    """
    train = training.token_stream("train", tokenizer, max_chars)  # (tokens,)
    validation = training.token_stream("validation", tokenizer, max_chars)  # (tokens,)
    counts = torch.bincount(train, minlength=len(tokenizer)).double() + 1  # (vocabulary,)
    return float(-(counts / counts.sum()).log()[validation].mean())
