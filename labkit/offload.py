"""Big-model inference with HF Accelerate: device maps, offload to CPU / disk, and the hooks behind them.

The recipe Accelerate uses for a model larger than the fast device:

1. build the model on the meta device (`init_empty_weights`: no memory used) and tie its weights;
2. `infer_auto_device_map(max_memory=...)` fills devices in order — GPU, then CPU, then "disk";
3. `load_checkpoint_and_dispatch` loads what fits and writes the rest to an offload folder;
   hooks on each offloaded module copy its weights in just before its forward and drop them after.

On a CPU-only machine the "fast" device is the CPU itself and the slow tier is disk, so the same
code shows the same effect: every offloaded byte is read again for every token.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from labkit import measure, models, plots
from labkit.cache import cache_dir

SCENARIOS = {"all in memory": 1.0, "half on disk": 0.5, "all on disk": 0.0}  # share of weight bytes kept in memory


def checkpoint_dir(name: str) -> Path:
    """A safetensors checkpoint folder for a registered model (written once into the labkit cache)."""
    if name == "smollm2-135m":
        from labkit.models import smollm2

        return smollm2.prepare() if not smollm2.is_prepared() else smollm2.converted_dir()
    if name == "tiny-bloom-shakespeare":
        models.load_model(name, device="cpu")  # trains and caches it the first time
        return models.shakespeare_checkpoint_dir()
    path = cache_dir("models") / f"{name}-checkpoint"
    if not (path / "model.safetensors").exists():
        model, tok = models.load_model(name, device="cpu")
        model.save_pretrained(path, safe_serialization=True)
        tok.save_pretrained(path)
    return path


def empty_model(name: str) -> torch.nn.Module:
    """The architecture on the meta device: shapes and names, no memory. Weights tied, as Accelerate needs."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(models.get_config(name))
    model.tie_weights()  # else the map gives lm_head its own device and the forward fails on lm_head.weight
    return model


def fast_device() -> str | int:
    """Where computation happens: GPU 0 when there is one, else the CPU."""
    return 0 if torch.cuda.is_available() else "cpu"


def execution_device() -> torch.device:
    """Where inputs go (an offloaded model's `.device` can be "meta")."""
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def max_memory_for(name: str, in_memory: float) -> dict:
    """A `max_memory` budget that keeps `in_memory` (0..1) of the weight bytes on the fast device.

    On a GPU the rest goes to CPU RAM up to the same budget, then disk; on a CPU the rest goes to disk.
    """
    if not 0.0 <= in_memory <= 1.0:
        raise ValueError(f"in_memory is a share of the weights between 0 and 1, got {in_memory}")
    total = models.estimate_memory(name).bytes
    # 1.0: room for everything. At least 1 MiB: Accelerate cannot load a checkpoint with every module on disk.
    budget = 2 * total if in_memory >= 1.0 else max(int(total * in_memory), 1 << 20)
    memory = {fast_device(): budget}
    if torch.cuda.is_available():
        memory["cpu"] = budget
    memory["disk"] = 10 * total
    return memory


def device_map(name: str, max_memory: dict) -> dict[str, str | int]:
    """Accelerate's placement of each top-level block under `max_memory` (no weights loaded)."""
    from accelerate import infer_auto_device_map

    model = empty_model(name)
    placement = dict(infer_auto_device_map(model, max_memory=max_memory, clean_result=False,
                                           no_split_module_classes=model._no_split_modules))  # fmt: skip
    if all(device == "disk" for device in placement.values()):
        # Accelerate only loads a checkpoint if some module stays off disk: keep the final norm in memory.
        named = dict(model.named_modules())
        with_params = [m for m in placement if any(True for _ in named[m].parameters())]
        smallest = min(with_params, key=lambda m: sum(p.numel() for p in named[m].parameters()))
        placement[smallest] = fast_device()
    return placement


def load_offloaded(name: str, max_memory: dict, offload_dir: str | Path | None = None) -> torch.nn.Module:
    """Load `name` with what does not fit in `max_memory` offloaded (disk files under `offload_dir`)."""
    from accelerate import load_checkpoint_and_dispatch

    model = empty_model(name)
    placement = device_map(name, max_memory)
    folder = Path(offload_dir or tempfile.mkdtemp(prefix="labkit-offload-"))
    model = load_checkpoint_and_dispatch(model, str(checkpoint_dir(name)), device_map=placement,
                                         offload_folder=str(folder), dtype=torch.float32)  # fmt: skip
    _share_tied_offloaded_weight(model, folder)
    return model.eval()


def _share_tied_offloaded_weight(model: torch.nn.Module, folder: Path) -> None:
    """Accelerate writes a tied weight to disk once, under the input embedding's name, but the LM head's
    hook looks it up under the head's own name. Point that name at the same file (a hard link, no copy)."""
    head = model.get_output_embeddings()
    hook = getattr(head, "_hf_hook", None)
    if not getattr(model.config, "tie_word_embeddings", False) or not getattr(hook, "offload", False):
        return
    names = {id(m): n for n, m in model.named_modules()}
    embed_key, head_key = f"{names[id(model.get_input_embeddings())]}.weight", f"{names[id(head)]}.weight"
    loader = hook.weights_map.dataset  # PrefixedDataset -> OffloadedWeightsLoader
    if head_key not in loader.index and embed_key in loader.index:
        loader.index[head_key] = loader.index[embed_key]
        (folder / f"{head_key}.dat").hardlink_to(folder / f"{embed_key}.dat")


def placement_table(model: torch.nn.Module) -> pd.DataFrame:
    """Module -> device and its weight bytes, from the model's `hf_device_map`."""
    named = dict(model.named_modules())
    rows, seen = [], set()
    if getattr(model.config, "tie_word_embeddings", False):
        seen.add(id(model.get_output_embeddings().weight))  # stored once, as the input embedding
    for module, device in model.hf_device_map.items():
        params = [p for p in (named[module] if module else model).parameters() if id(p) not in seen]
        seen.update(id(p) for p in params)  # a tied weight (embedding = LM head) is counted once
        nbytes = sum(p.numel() * p.element_size() for p in params)
        rows.append({"module": module or "(whole model)", "device": str(device), "MB": nbytes / 1e6})
    return pd.DataFrame(rows)


def placement_figure(table: pd.DataFrame, title: str = "Where each block lives"):
    return plots.bars(table, x="module", y="MB", color="device", ylabel="weights (MB)", title=title)


def _decode(model, ids: torch.Tensor, new_tokens: int) -> tuple[list[int], list[float], torch.Tensor]:
    """Greedy decode with a KV cache; returns the tokens, seconds per step and the first step's logits."""
    tokens, step_s = [], []
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True)
        first_logits = out.logits[:, -1].float().cpu()
        for _ in range(new_tokens):
            nxt = out.logits[:, -1:].argmax(-1)
            tokens.append(int(nxt))
            start = time.perf_counter()
            out = model(input_ids=nxt.to(ids.device), past_key_values=out.past_key_values, use_cache=True)
            step_s.append(time.perf_counter() - start)
    return tokens, step_s, first_logits


def offload_latency(name: str = "smollm2-135m", scenarios: dict[str, float] | None = None,
                    prompt: str = "The quick brown fox", new_tokens: int = 8) -> plots.Measured:
    """Per-token decode latency with all / part / none of the weights in memory; outputs must be identical."""
    from tqdm.auto import tqdm

    scenarios = scenarios or SCENARIOS
    if new_tokens < 2:
        raise ValueError(f"new_tokens must be >= 2, got {new_tokens}")
    ref, tok = models.load_cached(name)  # the in-memory model every scenario must reproduce
    ids = tok(prompt, return_tensors="pt").input_ids
    ref_tokens, _, ref_logits = _decode(ref, ids, new_tokens)
    rows = []
    for label, share in tqdm(scenarios.items(), desc=f"offload scenarios ({name})"):
        with tempfile.TemporaryDirectory(prefix="labkit-offload-") as folder:
            model = load_offloaded(name, max_memory_for(name, share), folder)
            table = placement_table(model)
            _decode(model, ids, 2)  # warm-up: first reads fill the OS page cache
            tokens, step_s, logits = _decode(model, ids.to(execution_device()), new_tokens)
            disk_mb = table[table.device == "disk"].MB.sum()
            rows.append({"scenario": label, "in_memory_share": share, "memory_MB": table.MB.sum() - disk_mb,
                         "disk_MB": disk_mb, "ms_per_token": 1e3 * measure.Stats.of(step_s).median,
                         "MB_moved_per_token": disk_mb,
                         "identical_to_in_memory": tokens == ref_tokens and torch.equal(logits.cpu(), ref_logits)})
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
    """One forward, stepping through Accelerate's hooks: when each block's weights arrive and leave."""
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
            model(input_ids=input_ids.to(execution_device()))
    finally:
        for hook in originals:  # drop the instance attributes: the class's methods apply again
            del hook.pre_forward, hook.post_forward
    return pd.DataFrame(events)


def offload_seconds_per_token(weights_gb: float, fast_memory_gb: float, link_gbps: float, fast_gbps: float,
                              batch: int = 1) -> dict:
    """Bytes / bandwidth: a decode step reads every weight once, the offloaded part over the slow link.

    Returns the step time and the per-token time (step / batch: a batch shares each weight read).
    """
    if min(weights_gb, link_gbps, fast_gbps) <= 0 or fast_memory_gb < 0 or batch < 1:
        raise ValueError("sizes and bandwidths must be positive and batch >= 1")
    resident = min(weights_gb, fast_memory_gb)
    streamed = weights_gb - resident
    step_s = resident / fast_gbps + streamed / link_gbps
    return {"resident_GB": resident, "streamed_GB": streamed, "step_s": step_s, "s_per_token": step_s / batch}
