"""ZeRO stages 0–3: the paper's memory formula next to the bytes real DeepSpeed (and PyTorch) ranks hold.

    zero_memory(params=25e6, stage=2, dp_degree=4)   # per-device model-state bytes, formula
    run_distributed(zero_training.train_ranks)       # the same, measured on real ranks: see zero_training.py

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
    """Per-device model-state bytes (ZeRO, Rajbhandari et al. 2019, section 5 and figure 1).

    Stage 1 shards the optimizer states, stage 2 also the gradients, stage 3 also the parameters:
    baseline (P + G + K)Ψ; stage 1: PΨ + GΨ + KΨ/N; stage 2: PΨ + (G + K)Ψ/N; stage 3: (P + G + K)Ψ/N.

    Args:
        params: Ψ, the parameter count. stage: 0 (plain data parallel) to 3. dp_degree: N, data-parallel ranks.
        bytes_per_optimizer_state: K, optimizer bytes per parameter (12: fp32 master + Adam m + v).
        bytes_per_param: P (2: fp16). bytes_per_grad: G (2: fp16).
    Returns:
        ZeroBytes (params, grads, optimizer; total), bytes on one device.
    Raises:
        ValueError: for an unknown stage (naming the choices), dp_degree < 1 or params < 0.
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
    """Bytes each rank moves per training step (ZeRO, section 7): 2Ψ (reduce-scatter + all-gather of the gradients)
    at stages 0–2, 3Ψ at stage 3 (parameters all-gathered in the forward and again in the backward).

    Args:
        params: Ψ. stage: 0 to 3. bytes_per_element: bytes of each communicated value (2: fp16).
    Returns:
        bytes per rank per step (the ring's (N − 1)/N factor left out).
    Raises:
        ValueError: for an unknown stage.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown ZeRO stage {stage!r}; choose from {list(STAGES)}")
    return (3 if stage == 3 else 2) * params * bytes_per_element


def memory_table(params_list=(1e9, 7.5e9, 176e9), dp_degrees=(1, 2, 4, 8, 16, 64),
                 bytes_per_optimizer_state: float = 12, bytes_per_param: float = 2,
                 bytes_per_grad: float = 2) -> pd.DataFrame:
    """The formula over model size × dp degree × stage, in GB per device.

    Args:
        params_list: parameter counts Ψ. dp_degrees: data-parallel degrees N.
        bytes_per_optimizer_state, bytes_per_param, bytes_per_grad: K, P, G as in `zero_memory`.
    Returns:
        DataFrame: params_B, dp_degree, stage, params_GB, grads_GB, optimizer_GB, total_GB (1e9 bytes).
    """
    rows = []
    for psi in params_list:
        for n in dp_degrees:
            for s in STAGES:
                b = zero_memory(psi, s, n, bytes_per_optimizer_state, bytes_per_param, bytes_per_grad)
                rows.append({"params_B": psi / 1e9, "dp_degree": n, "stage": s, "params_GB": b.params / 1e9,
                             "grads_GB": b.grads / 1e9, "optimizer_GB": b.optimizer / 1e9, "total_GB": b.total / 1e9})
    return pd.DataFrame(rows)


def stacked_bars(df: pd.DataFrame, x: str, parts: list[str], title: str, ylabel: str) -> go.Figure:
    """One bar per row of `df`, stacked by `parts` (e.g. params / grads / optimizer), in the lab's style."""
    fig = go.Figure([go.Bar(x=df[x].astype(str), y=df[p], name=p) for p in parts])
    fig.update_layout(barmode="stack")
    fig.update_yaxes(title=ylabel)
    return plots.style(fig, title, df.attrs.get("hardware"))


def memory_explorer(params_billion: float = 7.5, dp_degree: int = 8, stage: int = 3,
                    bytes_per_param: int = 2, bytes_per_grad: int = 2,
                    bytes_per_optimizer_state: int = 12) -> plots.Measured:
    """Widget: per-device GB for every stage at one model size and dp degree, the chosen stage highlighted.

    Args:
        params_billion: Ψ in billions. dp_degree: N. stage: the stage to highlight (0 to 3).
        bytes_per_param, bytes_per_grad, bytes_per_optimizer_state: P, G, K as in `zero_memory`.
    Returns:
        Measured: `memory_table` for this size and N (with a label column) and stacked bars.
    Raises:
        ValueError: for an unknown stage.
    """
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
