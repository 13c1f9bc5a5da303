"""ZeRO stages 0–3: the paper's memory formula, the layer a stage-3 rank gathers whole, and the bytes real DeepSpeed
(and PyTorch) ranks hold.

    zero_memory(7.5e9, stage=3, dp_degree=64, largest_layer_params=50_000 * 4096).total   # bytes per device
    model_size("bloom-176b")                           # parameters and largest layer, from the config (meta device)
    run_distributed(zero_training.train_ranks)         # the same, measured on real ranks: see zero_training.py

Byte convention (say it before comparing): every number here is bytes per element. ZeRO's paper uses
mixed precision, P = 2 (fp16 params), G = 2 (fp16 grads), K = 12 (fp32 master copy + Adam m + v).
DeepSpeed's own ZeRO-3 estimator counts 18 bytes per sharded parameter: its gradient partition is fp32
(`gradient_accumulation_dtype`), so G = 4. Our CPU runs train in fp32: P = 4, G = 4, and DeepSpeed's ZeRO
optimizer *still* keeps an fp32 master partition, so K = 12 at stages 1–3. Stage 0 (plain data parallel) and
PyTorch's optimizers update the parameters themselves: no master copy, K = 8 (m + v).

The paper's formula is the *sharded model states*. A stage-3 rank also holds, while it runs a layer, that layer's
parameters gathered whole and, in the backward, its whole gradient before the reduce-scatter: the largest layer
sets the peak (DeepSpeed's `estimate_zero3_model_states_mem_needs`). Activations and communication buckets come on
top of both and are not counted here.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
import torch
from transformers import AutoModelForCausalLM

from labkit import anatomy, plots

STAGES = (0, 1, 2, 3)
PARTS = ("params", "grads", "optimizer")
# (bytes/param, bytes/grad, optimizer bytes/param) for the conventions used in the labs
CONVENTIONS = {
    "paper (fp16 + fp32 Adam)": (2, 2, 12),
    "DeepSpeed ZeRO-3 estimator (fp32 grad partition)": (2, 4, 12),
    "fp32, DeepSpeed ZeRO": (4, 4, 12),
    "fp32, no master copy": (4, 4, 8),
}
# The explorer's default: the ZeRO paper's figure-1 model (7.5 B parameters, 64 devices); its largest layer taken as
# the token embedding of a 4096-wide GPT with a 50k vocabulary, the case DeepSpeed's estimator puts at 2.93 GB.
EXAMPLE_LARGEST_LAYER = 50_000 * 4096


# --- the formula -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ZeroBytes:
    """Per-device bytes of one rank during a training step.

    params, grads, optimizer: the sharded model states (the paper's formula). gathered_params, gathered_grads:
    stage 3 only, the largest layer's parameters gathered whole while it runs and its whole gradient before the
    reduce-scatter (0 at stages 0–2, which keep every parameter whole and count it in `params`).
    """

    params: float
    grads: float
    optimizer: float
    gathered_params: float = 0.0
    gathered_grads: float = 0.0

    @property
    def sharded_states(self) -> float:
        """The paper's per-device model states, (P + G + K)Ψ with each part divided by N from its stage on."""
        return self.params + self.grads + self.optimizer

    @property
    def gathered(self) -> float:
        """The gathered-layer term: the largest layer's full parameters and gradient (stage 3)."""
        return self.gathered_params + self.gathered_grads

    @property
    def total(self) -> float:
        """Sharded model states + gathered layer: what a rank needs before activations and buckets."""
        return self.sharded_states + self.gathered


def zero_memory(params: float, stage: int, dp_degree: int, largest_layer_params: float, *,
                bytes_per_param: float = 2, bytes_per_grad: float = 2,
                bytes_per_optimizer_state: float = 12) -> ZeroBytes:
    """Per-device bytes at a ZeRO stage: the sharded model states plus, at stage 3, the gathered largest layer.

    Sharded model states (ZeRO, Rajbhandari et al. 2019, section 5 and figure 1): stage 1 shards the optimizer
    states, stage 2 also the gradients, stage 3 also the parameters: baseline (P + G + K)Ψ; stage 1: PΨ + GΨ + KΨ/N;
    stage 2: PΨ + (G + K)Ψ/N; stage 3: (P + G + K)Ψ/N. Gathered layer (stage 3): a rank all-gathers each layer's
    parameters before running it and holds that layer's whole gradient until the reduce-scatter, both in the
    parameters' precision: 2P × the largest layer (DeepSpeed's `estimate_zero3_model_states_mem_needs`,
    deepspeed/runtime/zero/stage3.py: 4 bytes per parameter of the largest layer at 16 bits, plus 18 bytes per
    parameter over N = this formula with P = 2, G = 4, K = 12). Prefetching (`stage3_prefetch_bucket_size`)
    gathers that many more parameters ahead; the estimator, like this formula, leaves it out.

    Args:
        params: Ψ, the parameter count. stage: 0 (plain data parallel) to 3. dp_degree: N, data-parallel ranks.
        largest_layer_params: parameters of the largest module run at once (e.g. the token embedding; see
            `model_size`); used at stage 3.
        bytes_per_param: P (2: fp16). bytes_per_grad: G (2: fp16). bytes_per_optimizer_state: K (12: fp32 master +
            Adam m + v).
    Returns:
        ZeroBytes (params, grads, optimizer, gathered_params, gathered_grads; sharded_states, gathered, total),
        bytes on one device.
    Raises:
        ValueError: for an unknown stage (naming the choices), dp_degree < 1, params < 0, or a largest layer
            outside [0, params].
    """
    if stage not in STAGES:
        raise ValueError(f"unknown ZeRO stage {stage!r}; choose from {list(STAGES)}")
    if dp_degree < 1 or params < 0:
        raise ValueError(f"need dp_degree >= 1 and params >= 0, got {dp_degree} and {params}")
    if not 0 <= largest_layer_params <= params:
        raise ValueError(f"largest_layer_params must be in [0, params = {params:g}], got {largest_layer_params:g}")
    n = dp_degree
    gathered = largest_layer_params * bytes_per_param if stage == 3 else 0.0
    return ZeroBytes(
        params * bytes_per_param / (n if stage >= 3 else 1),
        params * bytes_per_grad / (n if stage >= 2 else 1),
        params * bytes_per_optimizer_state / (n if stage >= 1 else 1),
        gathered, gathered,
    )  # fmt: skip


@dataclass(frozen=True)
class ModelSize:
    """A model's parameter count (tied weights once) and its largest layer: the most parameters one module owns
    itself (not counting its children), the unit a ZeRO-3 rank gathers whole."""

    params: int
    largest_layer_params: int
    largest_layer: str


def model_size(model_or_config) -> ModelSize:
    """Parameters and largest layer of an architecture, built on the meta device (nothing is allocated).

    The largest layer follows DeepSpeed's `model_to_params` (deepspeed/runtime/zero/stage3.py): for every module,
    the parameters it owns directly; the largest of those.

    Args:
        model_or_config: a model name (`models.specs.MODEL_CONFIGS` names included), a transformers config or a
            config dict with "model_type".
    Returns:
        ModelSize.
    Raises:
        ValueError: an unknown name (naming the choices).
    """
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(copy.deepcopy(anatomy.config_of(model_or_config)))
    own = {name: sum(p.numel() for p in m.parameters(recurse=False)) for name, m in model.named_modules()}
    largest = max(own, key=own.get)
    return ModelSize(sum(p.numel() for p in model.parameters()), own[largest], largest)


def comm_volume(params: float, stage: int, bytes_per_element: float = 2) -> float:
    """Bytes each rank moves per training step (ZeRO, section 7): 2Ψ (reduce-scatter + all-gather of the gradients)
    at stages 0–2, 3Ψ at stage 3 (parameters all-gathered in the forward and again in the backward).

    The paper's convention: an all-reduce counts twice its tensor, and the ring's (N − 1)/N factor is left out
    (`comm.CommLog.ring_bytes` puts it back).

    Args:
        params: Ψ. stage: 0 to 3. bytes_per_element: bytes of each communicated value (2: fp16).
    Returns:
        bytes per rank per step, the paper's convention.
    Raises:
        ValueError: for an unknown stage.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown ZeRO stage {stage!r}; choose from {list(STAGES)}")
    return (3 if stage == 3 else 2) * params * bytes_per_element


def memory_table(sizes: dict[str, tuple[float, float]] | None = None, dp_degrees=(1, 2, 4, 8, 16, 64), *,
                 bytes_per_param: float = 2, bytes_per_grad: float = 2,
                 bytes_per_optimizer_state: float = 12) -> pd.DataFrame:
    """`zero_memory` over model × dp degree × stage, in GB per device.

    Args:
        sizes: {label: (Ψ, largest layer's parameters)}; default: the ZeRO paper's 7.5 B example
            (EXAMPLE_LARGEST_LAYER). dp_degrees: data-parallel degrees N.
        bytes_per_param, bytes_per_grad, bytes_per_optimizer_state: P, G, K as in `zero_memory`.
    Returns:
        DataFrame: model, params_B, largest_layer_M, dp_degree, stage, params_GB, grads_GB, optimizer_GB,
        sharded_states_GB (the paper's formula), gathered_GB (stage 3: the largest layer's parameters and
        gradient), total_GB (1e9 bytes).
    """
    sizes = sizes or {"ZeRO paper, 7.5 B": (7.5e9, EXAMPLE_LARGEST_LAYER)}
    rows = []
    for label, (psi, largest) in sizes.items():
        for n in dp_degrees:
            for s in STAGES:
                b = zero_memory(psi, s, n, largest, bytes_per_param=bytes_per_param, bytes_per_grad=bytes_per_grad,
                                bytes_per_optimizer_state=bytes_per_optimizer_state)
                rows.append({"model": label, "params_B": psi / 1e9, "largest_layer_M": largest / 1e6,
                             "dp_degree": n, "stage": s, "params_GB": b.params / 1e9, "grads_GB": b.grads / 1e9,
                             "optimizer_GB": b.optimizer / 1e9, "sharded_states_GB": b.sharded_states / 1e9,
                             "gathered_GB": b.gathered / 1e9, "total_GB": b.total / 1e9})
    return pd.DataFrame(rows)


def stacked_bars(df: pd.DataFrame, x: str, parts: list[str], title: str, ylabel: str,
                 names: dict[str, str] | None = None, subtitle: str | None = None) -> go.Figure:
    """One bar per row of `df`, stacked by `parts` (e.g. params / grads / optimizer), in the lab's style.

    Args:
        df: the rows. x: the column labelling each bar. parts: the columns stacked. title, ylabel: the figure's.
        names: legend names for some parts (default: the column names). subtitle: default the hardware attrs.
    Returns:
        the figure.
    """
    names = names or {}
    fig = go.Figure([go.Bar(x=df[x].astype(str), y=df[p], name=names.get(p, p)) for p in parts])
    fig.update_layout(barmode="stack")
    fig.update_yaxes(title=ylabel)
    return plots.style(fig, title, subtitle or df.attrs.get("hardware"))


def memory_explorer(params_billion: float = 7.5, largest_layer_million: float = EXAMPLE_LARGEST_LAYER / 1e6,
                    dp_degree: int = 64, stage: int = 3, bytes_per_param: int = 2, bytes_per_grad: int = 2,
                    bytes_per_optimizer_state: int = 12) -> plots.Measured:
    """Widget: per-device GB for every stage at one model size and dp degree, the chosen stage highlighted.

    Args:
        params_billion: Ψ in billions. largest_layer_million: the largest layer's parameters in millions (the
            token embedding of most LLMs: vocabulary × hidden). dp_degree: N. stage: the stage to highlight (0–3).
        bytes_per_param, bytes_per_grad, bytes_per_optimizer_state: P, G, K as in `zero_memory`.
    Returns:
        Measured: `memory_table` for this model and N (with a label column) and bars stacking the sharded model
        states (params, grads, optimizer) and the gathered layer.
    Raises:
        ValueError: for an unknown stage, or a largest layer bigger than the model.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown ZeRO stage {stage!r}; choose from {list(STAGES)}")
    df = memory_table({f"{params_billion:g} B": (params_billion * 1e9, largest_layer_million * 1e6)}, (dp_degree,),
                      bytes_per_param=bytes_per_param, bytes_per_grad=bytes_per_grad,
                      bytes_per_optimizer_state=bytes_per_optimizer_state)
    df["label"] = [f"stage {s}" + (" ◀" if s == stage else "") for s in df.stage]
    row = df[df.stage == stage].iloc[0]
    fig = stacked_bars(df, "label", ["params_GB", "grads_GB", "optimizer_GB", "gathered_GB"],
                       f"{params_billion:g} B params on {dp_degree} devices, stage {stage}: "
                       f"{row.sharded_states_GB:,.2f} GB sharded model states + {row.gathered_GB:,.2f} GB gathered "
                       f"layer = {row.total_GB:,.2f} GB per device", "GB per device",
                       names={"gathered_GB": "gathered layer (stage 3)"},
                       subtitle=f"P/G/K = {bytes_per_param}/{bytes_per_grad}/{bytes_per_optimizer_state} bytes; "
                                "activations and communication buckets not counted")  # fmt: skip
    return plots.Measured(df, fig)
