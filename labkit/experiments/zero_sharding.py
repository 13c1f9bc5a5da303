"""ZeRO stages 0–3 measured: every method trains on real ranks, and the bytes each rank holds are compared with the
paper's formula (ZeRO, Rajbhandari et al. 2019) and the layer a stage-3 rank gathers whole; the communication per
step is counted two ways (the paper's convention, ring algorithms) and measured on the wire.

    measured = zero_sharding.train_all_methods(hidden=2048, layers=6)   # Measured: table + stacked bars
    zero_sharding.comm_figure(measured.table)
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from labkit import plots
from labkit.measure import results_frame
from labkit.parallel.launch import run_distributed
from labkit.parallel.zero import comm_volume, stacked_bars, zero_memory
from labkit.parallel.zero_training import METHODS, RankTraining, TrainingRun, train_ranks


def train_all_methods(hidden: int = 2048, layers: int = 6, batch: int = 4, steps: int = 3,
                      methods: tuple[str, ...] = tuple(METHODS), world_size: int = 2,
                      backend: str = "gloo") -> plots.Measured:  # fmt: skip
    """Train an MLP with every method on `world_size` real ranks; measured vs formula bytes per rank.

    Args:
        hidden, layers: the MLP ((hidden² + hidden) × layers fp32 parameters). batch: rows per rank per step.
        steps: AdamW steps. methods: names from zero_training.METHODS. world_size: data-parallel ranks.
        backend: the ranks' process group: "gloo" (CPU ranks, DeepSpeed's CPU accelerator; the default: the
            training runs on the CPU) or a `launch.place_ranks` backend.
    Returns:
        Measured: `model_state_table` of the ranks' results.
    Raises:
        ValueError: for an unknown method, naming the choices (before any rank starts).
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS)}")
    ranks = run_distributed(train_ranks, tuple(methods), hidden=hidden, layers=layers, batch=batch, steps=steps,
                            world_size=world_size, backend=backend, timeout=900)
    return model_state_table(ranks)


def model_state_grads(run: TrainingRun) -> int:
    """The gradient bytes ZeRO's formula counts for one run.

    DeepSpeed's stage 1 (and 0) hold a full gradient at the end of backward, then all-reduce it and keep only
    their partition; stages 2–3 reduce bucket by bucket as backward runs, so what they keep is the partition.

    Args:
        run: one method's TrainingRun.
    Returns:
        bytes.
    """
    return run.grads_end_of_backward if run.method in ("deepspeed-0", "deepspeed-1") else run.grads


def model_state_table(ranks: list[RankTraining]) -> plots.Measured:
    """Rank results -> one row per method: measured MB (the larger over ranks) next to the formula's.

    Args:
        ranks: every rank's RankTraining (from `zero_training.train_ranks`), rank order.
    Returns:
        Measured: per method stage, bytes P/G/K, params/grads/optimizer/total MB measured and the sharded model
        states by the formula (zero.zero_memory: formula_*_MB), measured/formula; gathered_MB, the most whole
        parameters held at once in the forward, next to formula_gathered_MB (the largest layer's parameters at
        stage 3); other buffers; communication per step: comm_paper_MB (the counter's bytes in the ZeRO paper's
        convention, all-reduce 2×), comm_ring_MB (ring algorithms, all-reduce 2(N − 1)/N), comm_sent_MB (measured:
        bytes a rank wrote to gloo's sockets, mean over ranks; NaN on other backends), comm_formula_MB (the paper's
        2Ψ / 3Ψ), comm_ops; final loss, seconds. Figure: stacked bars with the formula as markers.
    """
    rows = []
    for runs in zip(*(r.runs for r in ranks), strict=True):
        r0 = runs[0]
        stage, (p, g, k) = METHODS[r0.method]
        f = zero_memory(r0.numel, stage, r0.world_size, r0.largest_layer, bytes_per_param=p, bytes_per_grad=g,
                        bytes_per_optimizer_state=k)
        grads = max(model_state_grads(r) for r in runs)
        params, optimizer = max(r.params for r in runs), max(r.optimizer for r in runs)
        total = params + grads + optimizer
        sent = [r.sent for r in runs if r.sent is not None]
        rows.append({
            "method": r0.method, "stage": stage, "bytes P/G/K": f"{p}/{g}/{k}", "params_M": r0.numel / 1e6,
            "params_MB": params / 1e6, "grads_MB": grads / 1e6, "optimizer_MB": optimizer / 1e6,
            "total_MB": total / 1e6, "formula_MB": f.sharded_states / 1e6, "measured/formula": total / f.sharded_states,
            "formula_params_MB": f.params / 1e6, "formula_grads_MB": f.grads / 1e6,
            "formula_optimizer_MB": f.optimizer / 1e6, "gathered_MB": max(r.gathered for r in runs) / 1e6,
            "formula_gathered_MB": f.gathered_params / 1e6, "other_buffers_MB": max(r.buffers for r in runs) / 1e6,
            "grads_kept_after_backward_MB": max(r.grads for r in runs) / 1e6,
            "comm_paper_MB": r0.comm.traffic_bytes() / 1e6, "comm_ring_MB": r0.comm.ring_bytes(r0.world_size) / 1e6,
            "comm_sent_MB": sum(sent) / len(sent) / 1e6 if sent else float("nan"),
            "comm_formula_MB": comm_volume(r0.numel, stage, 4) / 1e6, "comm_ops": r0.comm.traffic_by_op(),
            "final_loss": r0.losses[-1], "seconds": r0.seconds,
        })  # fmt: skip
    df = results_frame(rows, world_size=ranks[0].runs[0].world_size)
    fig = stacked_bars(df, "method", ["params_MB", "grads_MB", "optimizer_MB", "gathered_MB"],
                       f"Bytes per rank, {df.params_M.iloc[0]:.1f} M params on {len(ranks)} ranks (fp32)",
                       "MB per rank", names={"gathered_MB": "gathered in the forward"})
    fig.add_trace(go.Scatter(x=df.method, y=df.formula_MB, mode="markers", name="formula: sharded model states",
                             marker=dict(symbol="line-ew-open", size=40, line=dict(width=3, color="black"))))
    fig.add_trace(go.Scatter(x=df.method, y=df.formula_MB + df.formula_gathered_MB, mode="markers",
                             name="+ the largest layer's parameters",
                             marker=dict(symbol="line-ew-open", size=40, line=dict(width=2, color="gray"))))
    return plots.Measured(df, fig)


COMM_KINDS = {  # column -> legend: what each bar counts
    "comm_paper_MB": "counted, paper convention (all-reduce 2×)",
    "comm_ring_MB": "counted, ring (all-reduce 2(N−1)/N)",
    "comm_sent_MB": "measured: sent to gloo's sockets",
    "comm_formula_MB": "ZeRO paper's formula (2Ψ, stage 3: 3Ψ)",
}


def comm_figure(df: pd.DataFrame) -> go.Figure:
    """Bytes per rank per training step through collectives, four ways: the counter's bytes in the ZeRO paper's
    convention and with ring algorithms, the bytes measured on the wire (gloo), and the paper's 2Ψ / 3Ψ.

    Args:
        df: `model_state_table(...).table`.
    Returns:
        grouped bars (MB per rank per step) per method.
    """
    long = pd.concat([df[["method"]].assign(kind=label, MB=df[col]) for col, label in COMM_KINDS.items()])
    long.attrs = df.attrs
    return plots.bars(long, "method", "MB", f"Communication per training step, per rank (N = {df.attrs['world_size']})",
                      color="kind", ylabel="MB per rank per step", text_format=".0f")
