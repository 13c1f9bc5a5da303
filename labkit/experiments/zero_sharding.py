"""ZeRO stages 0–3 measured: every method trains on real ranks, and the bytes each rank holds are compared with the
paper's formula (ZeRO, Rajbhandari et al. 2019), as is the communication per step.

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
                      methods: tuple[str, ...] = tuple(METHODS), world_size: int = 2) -> plots.Measured:
    """Train an MLP with every method on `world_size` real ranks; measured vs formula bytes per rank.

    Args:
        hidden, layers: the MLP ((hidden² + hidden) × layers fp32 parameters). batch: rows per rank per step.
        steps: AdamW steps. methods: names from zero_training.METHODS. world_size: data-parallel ranks.
    Returns:
        Measured: `model_state_table` of the ranks' results.
    Raises:
        ValueError: for an unknown method, naming the choices (before any rank starts).
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS)}")
    ranks = run_distributed(train_ranks, tuple(methods), hidden=hidden, layers=layers, batch=batch, steps=steps,
                            world_size=world_size, timeout=900)
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
        Measured: per method stage, bytes P/G/K, params/grads/optimizer/total MB measured and by the formula
        (zero.zero_memory), measured/formula, other buffers, comm MB per step measured (ring accounting) and by
        the paper (zero.comm_volume), comm per collective, final loss, seconds; stacked bars with the formula.
    """
    rows = []
    for runs in zip(*(r.runs for r in ranks), strict=True):
        r0 = runs[0]
        stage, (p, g, k) = METHODS[r0.method]
        f = zero_memory(r0.numel, stage, r0.world_size, k, p, g)
        grads = max(model_state_grads(r) for r in runs)
        params, optimizer = max(r.params for r in runs), max(r.optimizer for r in runs)
        total = params + grads + optimizer
        rows.append({
            "method": r0.method, "stage": stage, "bytes P/G/K": f"{p}/{g}/{k}", "params_M": r0.numel / 1e6,
            "params_MB": params / 1e6, "grads_MB": grads / 1e6, "optimizer_MB": optimizer / 1e6,
            "total_MB": total / 1e6, "formula_MB": f.total / 1e6, "measured/formula": total / f.total,
            "formula_params_MB": f.params / 1e6, "formula_grads_MB": f.grads / 1e6,
            "formula_optimizer_MB": f.optimizer / 1e6, "other_buffers_MB": max(r.buffers for r in runs) / 1e6,
            "grads_kept_after_backward_MB": max(r.grads for r in runs) / 1e6,
            "comm_MB_per_step": r0.comm.traffic_bytes() / 1e6,
            "comm_formula_MB": comm_volume(r0.numel, stage, 4) / 1e6, "comm_ops": r0.comm.traffic_by_op(),
            "final_loss": r0.losses[-1], "seconds": r0.seconds,
        })  # fmt: skip
    df = results_frame(rows, world_size=ranks[0].runs[0].world_size)
    fig = stacked_bars(df, "method", ["params_MB", "grads_MB", "optimizer_MB"],
                       f"Model-state bytes per rank, {df.params_M.iloc[0]:.1f} M params on {len(ranks)} ranks (fp32)",
                       "MB per rank")
    fig.add_trace(go.Scatter(x=df.method, y=df.formula_MB, mode="markers", name="formula",
                             marker=dict(symbol="line-ew-open", size=40, line=dict(width=3, color="black"))))
    return plots.Measured(df, fig)


def comm_figure(df: pd.DataFrame) -> go.Figure:
    """Bytes per rank per training step through collectives: measured vs the ZeRO paper's 2Ψ / 3Ψ.

    Args:
        df: `model_state_table(...).table`.
    Returns:
        grouped bars (MB per rank per step), measured and formula per method.
    """
    long = pd.concat([df[["method"]].assign(kind="measured", MB=df.comm_MB_per_step),
                      df[["method"]].assign(kind="formula (2Ψ, stage 3: 3Ψ)", MB=df.comm_formula_MB)])
    long.attrs = df.attrs
    return plots.bars(long, "method", "MB", "Communication per training step, per rank", color="kind",
                      ylabel="MB per rank per step", text_format=".0f")
