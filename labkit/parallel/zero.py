"""ZeRO stages 0–3: the paper's memory formula next to the bytes real DeepSpeed (and PyTorch) ranks hold.

    zero_memory(params=25e6, stage=2, dp_degree=4)   # per-device model-state bytes, formula
    zero_ranks.measure()                             # the same, measured on real ranks: see zero_ranks.py

Byte convention (say it before comparing): every number here is bytes per element. ZeRO's paper uses
mixed precision, P = 2 (fp16 params), G = 2 (fp16 grads), K = 12 (fp32 master copy + Adam m + v).
Our CPU runs train in fp32: P = 4, G = 4, and DeepSpeed's ZeRO optimizer *still* keeps an fp32 master
partition, so K = 12 at stages 1–3. Stage 0 (plain data parallel) and PyTorch's optimizers update the
parameters themselves: no master copy, K = 8 (m + v).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go

from labkit import plots

STAGES = (0, 1, 2, 3)
PARTS = ("params", "grads", "optimizer")
# (bytes/param, bytes/grad, optimizer bytes/param) for the conventions used in the labs
CONVENTIONS = {
    "paper (fp16 + fp32 Adam)": (2, 2, 12),
    "fp32, DeepSpeed ZeRO": (4, 4, 12),
    "fp32, no master copy": (4, 4, 8),
}


# --- the formula -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ZeroBytes:
    """Per-device model-state bytes (one rank), split the way ZeRO partitions them."""

    params: float
    grads: float
    optimizer: float

    @property
    def total(self) -> float:
        return self.params + self.grads + self.optimizer


def zero_memory(params: float, stage: int, dp_degree: int, bytes_per_optimizer_state: float = 12,
                bytes_per_param: float = 2, bytes_per_grad: float = 2) -> ZeroBytes:
    """ZeRO (Rajbhandari et al., 2019): stage 1 shards optimizer states, 2 also gradients, 3 also parameters.

    baseline (P + G + K)Ψ; stage 1: PΨ + GΨ + KΨ/N; stage 2: PΨ + (G + K)Ψ/N; stage 3: (P + G + K)Ψ/N.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown ZeRO stage {stage!r}; choose from {list(STAGES)}")
    if dp_degree < 1 or params < 0:
        raise ValueError(f"need dp_degree >= 1 and params >= 0, got {dp_degree} and {params}")
    n = dp_degree
    return ZeroBytes(
        params * bytes_per_param / (n if stage >= 3 else 1),
        params * bytes_per_grad / (n if stage >= 2 else 1),
        params * bytes_per_optimizer_state / (n if stage >= 1 else 1),
    )


def comm_volume(params: float, stage: int, bytes_per_element: float = 2) -> float:
    """Bytes each rank moves per training step: 2Ψ (reduce-scatter + all-gather) at stages 0–2, 3Ψ at stage 3."""
    if stage not in STAGES:
        raise ValueError(f"unknown ZeRO stage {stage!r}; choose from {list(STAGES)}")
    return (3 if stage == 3 else 2) * params * bytes_per_element


def memory_table(params_list=(1e9, 7.5e9, 176e9), dp_degrees=(1, 2, 4, 8, 16, 64),
                 bytes_per_optimizer_state: float = 12, bytes_per_param: float = 2,
                 bytes_per_grad: float = 2) -> pd.DataFrame:
    """The formula over model size × dp degree × stage, in GB per device."""
    rows = []
    for psi in params_list:
        for n in dp_degrees:
            for s in STAGES:
                b = zero_memory(psi, s, n, bytes_per_optimizer_state, bytes_per_param, bytes_per_grad)
                rows.append({"params_B": psi / 1e9, "dp_degree": n, "stage": s, "params_GB": b.params / 1e9,
                             "grads_GB": b.grads / 1e9, "optimizer_GB": b.optimizer / 1e9, "total_GB": b.total / 1e9})
    return pd.DataFrame(rows)


def stacked_bars(df: pd.DataFrame, x: str, parts: list[str], title: str, ylabel: str) -> go.Figure:
    """One bar per row of `df`, stacked by `parts` (e.g. params / grads / optimizer)."""
    fig = go.Figure([go.Bar(x=df[x].astype(str), y=df[p], name=p) for p in parts])
    fig.update_layout(barmode="stack")
    fig.update_yaxes(title=ylabel)
    return plots._style(fig, title, plots._hardware(df))


def memory_explorer(params_billion: float = 7.5, dp_degree: int = 8, stage: int = 3,
                    bytes_per_param: int = 2, bytes_per_grad: int = 2,
                    bytes_per_optimizer_state: int = 12) -> plots.Measured:
    """Widget: per-device GB for every stage at one model size and dp degree, the chosen stage highlighted."""
    if stage not in STAGES:
        raise ValueError(f"unknown ZeRO stage {stage!r}; choose from {list(STAGES)}")
    df = memory_table((params_billion * 1e9,), (dp_degree,), bytes_per_optimizer_state, bytes_per_param,
                      bytes_per_grad)
    df["label"] = [f"stage {s}" + (" ◀" if s == stage else "") for s in df.stage]
    total = df.total_GB[df.stage == stage].item()
    fig = stacked_bars(df, "label", ["params_GB", "grads_GB", "optimizer_GB"],
                       f"{params_billion:g} B params on {dp_degree} devices: stage {stage} needs "
                       f"{total:,.1f} GB per device", "GB per device")
    return plots.Measured(df, fig)
