"""Big models with Accelerate, measured: decode latency as weights move from memory to disk, and the hook timeline.

    run = offload_latency("smollm2-135m")      # one row per scenario: ms per token, MB moved, bit-identical outputs
    events = trace_hooks(model, input_ids)     # when each block's weights arrive and leave during one forward
    hook_timeline_figure(events, title)

The library part (device maps, loading with offload, the bytes / bandwidth formula) is `labkit.offload`.
"""

from __future__ import annotations

import tempfile
import time

import pandas as pd
import plotly.graph_objects as go
import torch
from tqdm.auto import tqdm

from labkit import measure, models, offload, plots
from labkit.decoding.timing import DecodeRun, time_greedy

SCENARIOS = {"all in memory": 1.0, "half on disk": 0.5, "all on disk": 0.0}  # share of weight bytes kept in memory


def _greedy(model, ids: torch.Tensor, new_tokens: int, warmup: int, repeat: int) -> tuple[DecodeRun, torch.Tensor]:
    """A timed greedy decode and the logits of the token after the prompt (to compare bit for bit)."""
    with torch.no_grad():
        logits = model(input_ids=ids).logits[:, -1].float().cpu()  # (batch, vocab)
    return time_greedy(model, ids, new_tokens, warmup=warmup, repeat=repeat), logits


def offload_latency(name: str = "smollm2-135m", scenarios: dict[str, float] | None = None,
                    prompt: str = "The quick brown fox", new_tokens: int = 8, repeat: int = 3) -> plots.Measured:
    """Per-token decode latency with all / part / none of the weights in memory; outputs must be identical.

    Each scenario loads the checkpoint with `offload.load_offloaded` under `offload.max_memory_for(share)` and times
    greedy decoding with `decoding.timing.time_greedy` (one warm-up generation, which also fills the OS page cache).

    Args:
        name: a registered model name (resolved once).
        scenarios: label -> share of the weight bytes kept in memory (0..1); default SCENARIOS.
        prompt: the prompt. new_tokens: tokens generated per timed run (>= 2: at least one decode step).
        repeat: timed generations per scenario (their decode steps are pooled).
    Returns:
        Measured: table with one row per scenario — in_memory_share, memory_MB, disk_MB, ms_per_token (median decode
        step, DecodeRun.tpot_s), MB_moved_per_token (= disk_MB: offloaded weights are read every step),
        identical_to_in_memory (same greedy tokens and bit-identical next-token logits as the model loaded in
        memory), slowdown (vs the scenario with the most in memory), effective_GBps (MB moved / extra time) — and a
        bar chart of ms_per_token.
    Raises:
        ValueError: new_tokens < 2, a share outside 0..1, or an unknown name.
    """
    scenarios = scenarios or SCENARIOS
    if new_tokens < 2:
        raise ValueError(f"new_tokens must be >= 2, got {new_tokens}")
    if bad := {label: share for label, share in scenarios.items() if not 0.0 <= share <= 1.0}:
        raise ValueError(f"scenario shares must be between 0 and 1, got {bad}")
    spec = models.resolve(name)
    ref, tok = models.load_cached(name)  # the in-memory model every scenario must reproduce
    ids = tok(prompt, return_tensors="pt").input_ids  # (1, prompt_tokens)
    ref_run, ref_logits = _greedy(ref, ids.to(ref.device), new_tokens, warmup=0, repeat=1)
    rows = []
    for label, share in tqdm(scenarios.items(), desc=f"offload scenarios ({name})"):
        with tempfile.TemporaryDirectory(prefix="labkit-offload-") as folder:
            model = offload.load_offloaded(spec, offload.max_memory_for(spec, share), folder)
            table = offload.placement_table(model)
            run, logits = _greedy(model, ids.to(offload.execution_device()), new_tokens, warmup=1, repeat=repeat)
            disk_mb = table[table.device == "disk"].MB.sum()
            rows.append({"scenario": label, "in_memory_share": share, "memory_MB": table.MB.sum() - disk_mb,
                         "disk_MB": disk_mb, "ms_per_token": 1e3 * run.tpot_s, "MB_moved_per_token": disk_mb,
                         "identical_to_in_memory": run.tokens == ref_run.tokens and torch.equal(logits, ref_logits)})
            del model
    result = pd.DataFrame(rows)
    base = result.ms_per_token[result.in_memory_share.idxmax()]
    result["slowdown"] = result.ms_per_token / base
    extra_s = (result.ms_per_token - base) / 1e3
    result["effective_GBps"] = (result.MB_moved_per_token / 1e3 / extra_s).where(extra_s > 0)
    result = measure.results_frame(result.to_dict("records"), model=name)
    fig = plots.bars(result, x="scenario", y="ms_per_token", ylabel="ms per generated token",
                     title=f"{name}: decode latency as weights move from memory to disk")  # fmt: skip
    return plots.Measured(result, fig)


def trace_hooks(model: torch.nn.Module, input_ids: torch.Tensor) -> pd.DataFrame:
    """One forward, stepping through Accelerate's hooks: when each block's weights arrive and leave.

    Args:
        model: a model from `offload.load_offloaded()` (its blocks carry Accelerate's `_hf_hook`).
        input_ids: (batch, seq) token ids; moved to `offload.execution_device()`.
    Returns:
        DataFrame of hook calls in the order they ran: module, event ("weights in" = pre_forward, "done" =
        post_forward), offloaded (the hook loads the block's weights from the offload folder), t_ms (since the
        forward started). The hooks are Accelerate's own again afterwards.
    """
    events, t0 = [], time.perf_counter()
    originals = []
    for module_name, module in model.named_modules():
        hook = getattr(module, "_hf_hook", None)
        if hook is None or not hasattr(hook, "pre_forward"):
            continue

        offloaded = bool(getattr(hook, "offload", False))

        def wrap(fn, kind, module_name=module_name, offloaded=offloaded):
            def traced(*args, **kwargs):
                events.append({"module": module_name, "event": kind, "offloaded": offloaded,
                               "t_ms": 1e3 * (time.perf_counter() - t0)})  # fmt: skip
                return fn(*args, **kwargs)

            return traced

        originals.append(hook)
        hook.pre_forward, hook.post_forward = wrap(hook.pre_forward, "weights in"), wrap(hook.post_forward, "done")
    try:
        with torch.no_grad():
            model(input_ids=input_ids.to(offload.execution_device()))
    finally:
        for hook in originals:  # drop the instance attributes: the class's methods apply again
            del hook.pre_forward, hook.post_forward
    return pd.DataFrame(events)


def hook_timeline_figure(events: pd.DataFrame, title: str, max_depth: int = 2) -> go.Figure:
    """A Gantt-style timeline of one forward: a bar per block from "weights in" to "done", coloured by offload.

    Args:
        events: from `trace_hooks()`.
        title: the figure title.
        max_depth: show modules with at most this many dots in their name (2: blocks such as model.layers.0,
            not every sub-layer).
    Returns:
        a plotly Figure (x: ms since the forward started; blocks top to bottom in the order they ran).
    """
    spans = events.pivot_table(index="module", columns="event", values="t_ms", aggfunc="first").dropna()
    spans = spans.join(events.groupby("module").offloaded.first()).sort_values("weights in")
    spans = spans[spans.index.str.count(r"\.") <= max_depth]
    bars = []
    for off in (False, True):
        part = spans[spans.offloaded == off]
        bars.append(go.Bar(y=part.index, x=part["done"] - part["weights in"], base=part["weights in"],
                           orientation="h",
                           name="offloaded: weights loaded by the hook" if off else "resident in memory"))
    fig = go.Figure(bars)
    fig.update_layout(xaxis_title="ms since the forward started", yaxis=dict(autorange="reversed"), height=520)
    return plots.style(fig, title)
