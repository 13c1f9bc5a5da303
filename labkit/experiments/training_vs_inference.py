"""Widget-friendly measurements for labs 00-01: plain arguments in, a table and a figure out.

    result = forward_latency("tiny-bloom", batch_size=4)
    result.table, result.figure
    widgets.panel(forward_latency, model=["tiny-bloom", "tiny-llama"], batch_size=(1, 64))
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
    """Refuse, before allocating, a batch whose logits alone would not fit in free memory.

    `copies` of the (batch, seq, vocab) fp32 logits live at once (about 1 for inference, 4 for training:
    logits, log-softmax, and their gradients).
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
    """The distribution of one forward pass's latency: median, p90, p99 over `repeat` runs."""
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
    return Measured(table, plots._style(fig, title, table.attrs["hardware"]))


def compare_steps(model: str = "tiny-bloom", batch_size: int = 8, seq_len: int = 64, repeat: int = 10,
                  loaded=None) -> Measured:
    """One training step vs one inference step on the same batch: time and memory."""
    net, tok = _model(model, loaded)
    check_activation_memory(batch_size, seq_len, net.config.vocab_size, copies=4)
    costs = training.step_costs(net, tok, batch_size=batch_size, seq_len=seq_len, repeat=repeat)
    long = costs.melt(id_vars="phase", value_vars=["median_ms", "peak_step_MiB", "persistent_MiB"], var_name="metric")
    long.attrs = costs.attrs
    title = f"Training vs inference step, batch {batch_size} × {seq_len} tokens"
    return Measured(costs, plots.bars(long, x="metric", y="value", color="phase", title=title))


def batch_tradeoff(model: str = "tiny-bloom", batch_sizes: Sequence[int] = (1, 2, 4, 8, 16, 32), seq_len: int = 64,
                   repeat: int = 10, loaded=None, progress: bool = True) -> Measured:
    """Inference latency and throughput over batch size."""
    net, _ = _model(model, loaded)
    check_activation_memory(max(batch_sizes, default=0), seq_len, net.config.vocab_size, copies=1)
    sweep = training.batch_sweep(net, tuple(batch_sizes), seq_len=seq_len, repeat=repeat, progress=progress)
    title = "Inference: latency and throughput vs batch size"
    return Measured(sweep, plots.dual_axis(sweep, "batch_size", "latency_ms", "sequences_per_s", title, log_x=True))


def max_batch_within(sweep: pd.DataFrame, latency_budget_ms: float) -> int | None:
    """The largest batch whose median latency meets the budget (None if even batch 1 misses it)."""
    ok = sweep[sweep.latency_ms <= latency_budget_ms]
    return int(ok.batch_size.max()) if len(ok) else None
