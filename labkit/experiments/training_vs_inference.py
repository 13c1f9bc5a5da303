"""Training vs inference, measured: one forward's latency distribution, a training step next to an inference step,
and the serving trade-off of batch size. Plain arguments in, a table and a figure out (widget-friendly).

    result = forward_latency("tiny-bloom", batch_size=4)
    result.table, result.figure
    widgets.panel(forward_latency, model=["tiny-bloom", "tiny-llama"], batch_size=(1, 64))

Persistent bytes (weights, gradients, optimizer state) are counted by `labkit.memory.model_state_bytes`, through
`labkit.training.step_costs`.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go
import torch

from labkit import measure, models, plots, training
from labkit.plots import Measured

TINY_MODELS = ["tiny-bloom", "tiny-llama", "tiny-bloom-shakespeare"]


def _model(model: str, loaded):
    """(model, tokenizer): the one passed in, or a cached load of `model` by name."""
    return loaded if loaded is not None else models.load_cached(model)


def check_activation_memory(batch_size: int, seq_len: int, vocab_size: int, copies: int) -> None:
    """Refuse, before allocating, a batch whose logits alone would not fit in free CPU memory.

    Args:
        batch_size, seq_len: the batch's shape (>= 1). vocab_size: the model's vocabulary.
        copies: how many (batch, seq, vocab) fp32 logits live at once (about 1 for inference, 4 for training:
            logits, log-softmax, and their gradients).
    Raises:
        ValueError: for batch_size or seq_len < 1. MemoryError: when batch × seq × vocab × 4 B × copies exceeds the
            free memory, with both sizes in GiB.
    """
    if batch_size < 1 or seq_len < 1:
        raise ValueError(f"batch_size and seq_len must be >= 1, got {batch_size} and {seq_len}")
    need = batch_size * seq_len * vocab_size * 4 * copies
    free = models.available_memory(torch.device("cpu"))
    if need > free:
        raise MemoryError(
            f"batch {batch_size} x {seq_len} tokens needs about {need / 2**30:.1f} GiB for logits alone, "
            f"but {free / 2**30:.1f} GiB is free; use a smaller batch or sequence"
        )


def forward_latency(model: str = "tiny-bloom", batch_size: int = 1, seq_len: int = 32, repeat: int = 30,
                    loaded=None) -> Measured:
    """The distribution of one forward pass's latency over `repeat` runs (after 3 warm-up runs).

    Args:
        model: a registry name (loaded once and cached) unless `loaded` is given. batch_size, seq_len: the input's
            shape (random token ids, seeded). repeat: timed runs. loaded: (model, tokenizer) to measure instead.
    Returns:
        Measured: one row of `measure.Stats` in ms (median, p10, p90, p99, ...) with the model and shape; a histogram
        of the runs with the median, p90 and p99 marked.
    Raises:
        ValueError, MemoryError: see `check_activation_memory`.
    """
    net, _ = _model(model, loaded)
    check_activation_memory(batch_size, seq_len, net.config.vocab_size, copies=1)
    ids = torch.randint(0, net.config.vocab_size, (batch_size, seq_len), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        stats = measure.benchmark(lambda: net(input_ids=ids.to(net.device)), warmup=3, repeat=repeat)
    table = measure.results_frame([{"model": model, "batch_size": batch_size, "seq_len": seq_len, **stats.ms()}])
    samples = pd.DataFrame({"latency_ms": [s * 1e3 for s in stats.samples]})
    fig = go.Figure(go.Histogram(x=samples.latency_ms, nbinsx=20, name="runs"))
    for name, where in (("median", "top left"), ("p90", "top right"), ("p99", "bottom right")):
        fig.add_vline(x=stats.ms()[name], line_dash="dash", annotation_text=name, annotation_position=where)
    fig.update_xaxes(title="latency (ms)")
    fig.update_yaxes(title="runs")
    title = f"{model} forward latency, batch {batch_size} × {seq_len} tokens"
    return Measured(table, plots.style(fig, title, table.attrs["hardware"]))


def compare_steps(model: str = "tiny-bloom", batch_size: int = 8, seq_len: int = 64, repeat: int = 10,
                  loaded=None) -> Measured:
    """One training step (forward, loss, backward, AdamW step) vs one inference step on the same batch.

    Args:
        model: a registry name unless `loaded` is given. batch_size, seq_len: validation tokens per step.
        repeat: timed steps per phase. loaded: (model, tokenizer) to measure instead (its weights are restored).
    Returns:
        Measured: one row per phase (`training.step_costs`: median_ms, p90_ms, peak_step_MiB, persistent_MiB and
        weights/gradients/optimizer_state MiB); grouped bars of time and memory.
    Raises:
        ValueError, MemoryError: see `check_activation_memory`.
    """
    net, tok = _model(model, loaded)
    check_activation_memory(batch_size, seq_len, net.config.vocab_size, copies=4)
    costs = training.step_costs(net, tok, batch_size=batch_size, seq_len=seq_len, repeat=repeat)
    long = costs.melt(id_vars="phase", value_vars=["median_ms", "peak_step_MiB", "persistent_MiB"], var_name="metric")
    long.attrs = costs.attrs
    title = f"Training vs inference step, batch {batch_size} × {seq_len} tokens"
    return Measured(costs, plots.bars(long, x="metric", y="value", color="phase", title=title))


def batch_tradeoff(model: str = "tiny-bloom", batch_sizes: Sequence[int] = (1, 2, 4, 8, 16, 32), seq_len: int = 64,
                   repeat: int = 10, loaded=None, progress: bool = True) -> Measured:
    """Inference latency and throughput over batch size: the serving trade-off.

    Args:
        model: a registry name unless `loaded` is given. batch_sizes: batches to time (>= 1). seq_len: tokens per
            sequence. repeat: timed forwards per batch. loaded: (model, tokenizer) to measure instead.
        progress: show a progress bar.
    Returns:
        Measured: one row per batch (batch_size, latency_ms, p90_ms, sequences_per_s, tokens_per_s); latency and
        throughput on two axes.
    Raises:
        ValueError, MemoryError: see `check_activation_memory`.
    """
    net, _ = _model(model, loaded)
    check_activation_memory(max(batch_sizes, default=0), seq_len, net.config.vocab_size, copies=1)
    sweep = training.batch_sweep(net, tuple(batch_sizes), seq_len=seq_len, repeat=repeat, progress=progress)
    title = "Inference: latency and throughput vs batch size"
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
