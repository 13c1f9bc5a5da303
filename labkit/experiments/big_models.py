"""Big models with Accelerate, measured: decode latency as weights move from the compute device to CPU RAM and disk,
the bytes each forward moves, and the hook timeline.

    run = offload_latency("smollm2-135m", device="auto")   # one row per placement: ms/token, MB moved, parity
    events = trace_hooks(model, input_ids)                  # when each block's weights arrive (and how many bytes)
    hook_timeline_figure(events, title)

The library part (device maps, loading with offload, bytes moved, the host link) is `labkit.offload`.
"""

from __future__ import annotations

import tempfile
import time

import pandas as pd
import plotly.graph_objects as go
import torch
from tqdm.auto import tqdm

from labkit import measure, models, offload, plots, precision
from labkit.decoding.timing import DecodeRun, time_greedy

# (share of the weight bytes allowed on the compute device, share allowed in CPU RAM); the rest goes to disk.
# Scenarios are named after where the bytes landed (`offload.placement_name`), not after these budgets.
SCENARIOS = ((1.0, 0.0), (0.5, 1.0), (0.5, 0.0), (0.0, 0.0))


def scenarios_for(device: str | torch.device = "auto") -> tuple[tuple[float, float], ...]:
    """The SCENARIOS a compute device can tell apart: on the CPU, CPU RAM is the compute device's own memory, so the
    budgets with a CPU RAM share (which only a GPU has besides its own) are left out.

    Args:
        device: the compute device ("auto", "cpu", "cuda", "cuda:N").
    Returns:
        (in_memory, host) budget pairs for `offload_latency`.
    """
    on_gpu = offload.execution_device(device).type == "cuda"
    return tuple(s for s in SCENARIOS if on_gpu or s[1] == 0)


def _greedy(model, ids: torch.Tensor, new_tokens: int, warmup: int, repeat: int) -> tuple[DecodeRun, torch.Tensor]:
    """A timed greedy decode and the logits of the token after the prompt (to compare within a tolerance)."""
    with torch.no_grad():
        logits = model(input_ids=ids).logits[:, -1].float().cpu()  # (batch, vocab)
    return time_greedy(model, ids, new_tokens, warmup=warmup, repeat=repeat), logits


def offload_latency(name: str = "smollm2-135m", scenarios: tuple[tuple[float, float], ...] | None = None,
                    prompt: str = "The quick brown fox", new_tokens: int = 8, repeat: int = 3,
                    device: str | torch.device = "auto", dtype: str = "fp32") -> plots.Measured:
    """Per-token decode latency with the weights on the compute device, in CPU RAM and on disk, against the same
    model loaded whole on the same device.

    Each scenario loads the checkpoint with `offload.load_offloaded` under `offload.max_memory_for(in_memory, host)`,
    names itself from where the bytes landed (`offload.placement_name`; a placement already measured is skipped),
    counts the bytes the hooks bring in during one forward (`trace_hooks`) and times greedy decoding with
    `decoding.timing.time_greedy` (one warm-up generation, which also fills the OS page cache).

    Args:
        name: a registered model name (resolved once).
        scenarios: (in_memory, host) budget pairs (shares 0..1; `offload.budget`); default `scenarios_for(device)`.
        prompt: the prompt. new_tokens: tokens generated per timed run (>= 2: at least one decode step).
        repeat: timed generations per scenario (their decode steps are pooled).
        device: the compute device ("auto", "cpu", "cuda", "cuda:N"). dtype: fp32 | bf16 | fp16, for the offloaded
            model and its reference alike.
    Returns:
        Measured: table with one row per placement — scenario (its name), in_memory_share, host_share, memory_MB
        (on the compute device), host_MB (CPU RAM while a GPU computes), disk_MB, MB_moved_per_token
        (`offload.bytes_moved_per_forward`: one forward per decode step), MB_loaded_by_hooks (measured during one
        forward), ms_per_token (median decode step, DecodeRun.tpot_s), same_tokens, max_rel_diff (largest |logit
        difference| ÷ largest |reference logit|, next-token logits), tolerance (`precision.tolerance(dtype)`),
        matches_reference (max_rel_diff <= tolerance), slowdown (vs the placement that moves the fewest bytes),
        effective_GBps (MB moved / extra time) — and a bar chart of ms_per_token. attrs: device, dtype,
        device_maps (scenario -> {module: device}) and module_bytes (scenario -> {module: bytes}).
    Raises:
        ValueError: new_tokens < 2, a share outside 0..1 (or a CPU RAM share on the CPU), an unknown name, device or
            dtype — before anything is loaded. CapabilityMissing: CUDA asked for without a GPU.
    """
    dev = offload.execution_device(device)
    tol = precision.tolerance(dtype)
    scenarios = scenarios or scenarios_for(dev)
    if new_tokens < 2:
        raise ValueError(f"new_tokens must be >= 2, got {new_tokens}")
    for in_memory, host in scenarios:
        offload.budget(1, in_memory, host, offload.fast_device(dev))
    spec = models.resolve(name)
    ref, tok = models.load_model(name, dtype=dtype, device=dev)  # the whole model on the same device: the reference
    ids = tok(prompt, return_tensors="pt").input_ids.to(dev)  # (1, prompt_tokens)
    ref_run, ref_logits = _greedy(ref, ids, new_tokens, warmup=0, repeat=1)
    del ref
    rows, maps, sizes = [], {}, {}
    for in_memory, host in tqdm(scenarios, desc=f"offload scenarios ({name})"):
        with tempfile.TemporaryDirectory(prefix="labkit-offload-") as folder:
            model = offload.load_offloaded(spec, offload.max_memory_for(spec, in_memory, host, dev, dtype), folder,
                                           dtype)  # fmt: skip
            table = offload.placement_table(model)
            label = offload.placement_name(table)
            if label in maps:  # the same placement as a scenario already measured
                del model
                continue
            maps[label] = {m: offload.tier(d) for m, d in model.hf_device_map.items()}
            sizes[label] = offload.module_bytes(model)
            hooks = trace_hooks(model, ids)
            run, logits = _greedy(model, ids, new_tokens, warmup=1, repeat=repeat)
            mb = table.groupby("device").MB.sum()
            rel = float((logits - ref_logits).abs().max() / ref_logits.abs().max())
            host_mb = mb.get("cpu", 0.0) if dev.type == "cuda" else 0.0  # on the CPU, CPU RAM is the compute memory
            rows.append({"scenario": label, "in_memory_share": in_memory, "host_share": host,
                         "memory_MB": mb.get(str(dev), 0.0), "host_MB": host_mb, "disk_MB": mb.get("disk", 0.0),
                         "MB_moved_per_token": offload.bytes_moved_per_forward(model) / 1e6,
                         "MB_loaded_by_hooks": hooks.bytes_in.sum() / 1e6, "ms_per_token": 1e3 * run.tpot_s,
                         "same_tokens": run.tokens == ref_run.tokens, "max_rel_diff": rel, "tolerance": tol,
                         "matches_reference": rel <= tol})  # fmt: skip
            del model
    result = pd.DataFrame(rows)
    base = result.ms_per_token[result.MB_moved_per_token.idxmin()]
    result["slowdown"] = result.ms_per_token / base
    extra_s = (result.ms_per_token - base) / 1e3
    result["effective_GBps"] = (result.MB_moved_per_token / 1e3 / extra_s).where(extra_s > 0)
    result = measure.results_frame(result.to_dict("records"), model=name)
    result.attrs.update(device=str(dev), dtype=precision.canonical(dtype), device_maps=maps, module_bytes=sizes)
    fig = plots.bars(result, x="scenario", y="ms_per_token", ylabel="ms per generated token",
                     title=f"{name} on {dev}: decode latency as weights move off the compute device")  # fmt: skip
    return plots.Measured(result, fig)


def _on_meta(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: t for n, t in [*module.named_parameters(), *module.named_buffers()] if t.device.type == "meta"}


def _arrived(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> int:
    """Bytes of the tensors that were on "meta" (offloaded) before a pre_forward and hold data now."""
    now = dict([*module.named_parameters(), *module.named_buffers()])
    return sum(t.numel() * t.element_size() for n, t in now.items() if n in before and t.device.type != "meta")


def trace_hooks(model: torch.nn.Module, input_ids: torch.Tensor) -> pd.DataFrame:
    """One forward, stepping through Accelerate's hooks: when each block's weights arrive, how many bytes, and when
    they leave.

    Args:
        model: a model from `offload.load_offloaded()` (its blocks carry Accelerate's `_hf_hook`).
        input_ids: (batch, seq) token ids; moved to the model's compute device (`offload.compute_device`).
    Returns:
        DataFrame of hook calls in the order they ran: module, event ("weights in" = pre_forward, "done" =
        post_forward), offloaded (the hook loads the block's weights), bytes_in (bytes of the block's tensors that
        went from "meta" to real memory in that pre_forward: what the hook copied in; 0 for "done"), t_ms (since the
        forward started). The hooks are Accelerate's own again afterwards.
    """
    events, t0 = [], time.perf_counter()
    originals = []
    for module_name, module in model.named_modules():
        hook = getattr(module, "_hf_hook", None)
        if hook is None or not hasattr(hook, "pre_forward"):
            continue

        offloaded = bool(getattr(hook, "offload", False))

        def wrap_in(fn, module_name=module_name, offloaded=offloaded):
            def traced(block, *args, **kwargs):
                t_ms, before = 1e3 * (time.perf_counter() - t0), _on_meta(block)
                out = fn(block, *args, **kwargs)
                events.append({"module": module_name, "event": "weights in", "offloaded": offloaded,
                               "bytes_in": _arrived(block, before), "t_ms": t_ms})  # fmt: skip
                return out

            return traced

        def wrap_done(fn, module_name=module_name, offloaded=offloaded):
            def traced(*args, **kwargs):
                events.append({"module": module_name, "event": "done", "offloaded": offloaded, "bytes_in": 0,
                               "t_ms": 1e3 * (time.perf_counter() - t0)})  # fmt: skip
                return fn(*args, **kwargs)

            return traced

        originals.append(hook)
        hook.pre_forward, hook.post_forward = wrap_in(hook.pre_forward), wrap_done(hook.post_forward)
    try:
        with torch.no_grad():
            model(input_ids=input_ids.to(offload.compute_device(model.hf_device_map)))
    finally:
        for hook in originals:  # drop the instance attributes: the class's methods apply again
            del hook.pre_forward, hook.post_forward
    return pd.DataFrame(events, columns=["module", "event", "offloaded", "bytes_in", "t_ms"])


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
