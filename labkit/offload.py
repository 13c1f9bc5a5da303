"""Big-model inference with HF Accelerate: device maps, offload to CPU / disk, and the bytes behind them.

The recipe Accelerate uses for a model larger than the fast device:

1. build the model on the meta device (`init_empty_weights`: no memory used) and tie its weights;
2. `infer_auto_device_map(max_memory=...)` fills devices in order — GPU, then CPU, then "disk";
3. `load_checkpoint_and_dispatch` loads what fits and writes the rest to an offload folder;
   hooks on each offloaded module copy its weights in just before its forward and drop them after.

On a CPU-only machine the "fast" device is the CPU itself and the slow tier is disk, so the same
code shows the same effect: every offloaded byte is read again for every token.

Every function takes a model name or, better, a `models.ModelSpec` resolved once by the caller.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import torch
from accelerate import infer_auto_device_map, init_empty_weights, load_checkpoint_and_dispatch
from transformers import AutoModelForCausalLM

from labkit import models, plots
from labkit.hardware import resolve_device

Model = str | models.ModelSpec  # a name is resolved once, at the entry of each function


def _spec(model: Model) -> models.ModelSpec:
    return model if isinstance(model, models.ModelSpec) else models.resolve(model)


def empty_model(model: Model) -> torch.nn.Module:
    """The architecture on the meta device: shapes and names, no memory; weights tied, as Accelerate needs.

    Args:
        model: a model name or a resolved `models.ModelSpec`.
    Returns:
        the transformers model with every parameter on the meta device.
    Raises:
        ValueError: an unknown name.
    """
    with init_empty_weights():
        empty = AutoModelForCausalLM.from_config(copy.deepcopy(_spec(model).config))  # the spec's stays as it is
    empty.tie_weights()  # else the map gives lm_head its own device and the forward fails on lm_head.weight
    return empty


def execution_device() -> torch.device:
    """Where an offloaded model computes and where its inputs go (its own `.device` can be "meta").

    Returns:
        `hardware.resolve_device("auto")`, with the GPU index made explicit (cuda:N) when there is a GPU.
    """
    device = resolve_device("auto")
    return torch.device("cuda", torch.cuda.current_device()) if device.type == "cuda" else device


def fast_device() -> str | int:
    """The execution device as Accelerate names it in `max_memory` and device maps.

    Returns:
        the GPU index (int) when there is a GPU, else "cpu".
    """
    device = execution_device()
    return device.index if device.type == "cuda" else "cpu"


def max_memory_for(model: Model, in_memory: float) -> dict:
    """A `max_memory` budget that keeps `in_memory` of the fp32 weight bytes on the fast device.

    On a GPU the rest goes to CPU RAM up to the same budget, then disk; on a CPU the rest goes to disk.

    Args:
        model: a model name or a resolved `models.ModelSpec`.
        in_memory: share of the weight bytes allowed in memory, 0..1 (1.0: everything fits).
    Returns:
        {fast_device(): bytes, ["cpu": bytes,] "disk": bytes}, Accelerate's `max_memory` format.
    Raises:
        ValueError: in_memory outside 0..1 (checked before the name is resolved).
    """
    if not 0.0 <= in_memory <= 1.0:
        raise ValueError(f"in_memory is a share of the weights between 0 and 1, got {in_memory}")
    total = _spec(model).weight_bytes("fp32")
    # 1.0: room for everything. At least 1 MiB: Accelerate cannot load a checkpoint with every module on disk.
    budget = 2 * total if in_memory >= 1.0 else max(int(total * in_memory), 1 << 20)
    memory = {fast_device(): budget}
    if torch.cuda.is_available():
        memory["cpu"] = budget
    memory["disk"] = 10 * total
    return memory


def _placement(empty: torch.nn.Module, max_memory: dict) -> dict[str, str | int]:
    placement = dict(infer_auto_device_map(empty, max_memory=max_memory, clean_result=False,
                                           no_split_module_classes=empty._no_split_modules))  # fmt: skip
    if all(device == "disk" for device in placement.values()):
        # Accelerate only loads a checkpoint if some module stays off disk: keep the smallest block in memory.
        named = dict(empty.named_modules())
        with_params = [m for m in placement if any(True for _ in named[m].parameters())]
        smallest = min(with_params, key=lambda m: sum(p.numel() for p in named[m].parameters()))
        placement[smallest] = fast_device()
    return placement


def device_map(model: Model, max_memory: dict) -> dict[str, str | int]:
    """Accelerate's placement of each top-level block under `max_memory` (no weights loaded).

    Args:
        model: a model name or a resolved `models.ModelSpec`.
        max_memory: device -> bytes, e.g. from `max_memory_for()`.
    Returns:
        module name -> device (GPU index, "cpu" or "disk"), in forward order. When every block would go to disk,
        the smallest one is kept on the fast device (Accelerate needs one off disk to load).
    """
    return _placement(empty_model(model), max_memory)


def load_offloaded(model: Model, max_memory: dict, offload_dir: str | Path | None = None) -> torch.nn.Module:
    """Load a model (fp32) with what does not fit in `max_memory` offloaded; the meta model is built once.

    Args:
        model: a model name or a resolved `models.ModelSpec` (its checkpoint is written on first use).
        max_memory: device -> bytes, e.g. from `max_memory_for()`.
        offload_dir: folder for the offloaded weights (a new temporary folder when None).
    Returns:
        the dispatched model in eval mode; `hf_device_map` says where each block lives. Inputs go to
        `execution_device()`.
    Raises:
        ValueError: an unknown name. ModelNotAvailable: a model with no weights here.
    """
    spec = _spec(model)
    spec.require_weights()
    empty = empty_model(spec)
    placement = _placement(empty, max_memory)
    folder = Path(offload_dir or tempfile.mkdtemp(prefix="labkit-offload-"))
    loaded = load_checkpoint_and_dispatch(empty, str(spec.checkpoint_dir), device_map=placement,
                                          offload_folder=str(folder), dtype=torch.float32)  # fmt: skip
    _share_tied_offloaded_weight(loaded, folder)
    return loaded.eval()


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
    """Where each block of a dispatched model lives and how many weight bytes it holds.

    Args:
        model: a model from `load_offloaded()` (it has `hf_device_map`).
    Returns:
        DataFrame with columns module, device, MB (1e6 bytes); a tied weight (embedding = LM head) counted once.
    """
    named = dict(model.named_modules())
    rows, seen = [], set()  # each tensor once, wherever it lives
    if getattr(model.config, "tie_word_embeddings", False):
        head, embedding = model.get_output_embeddings().weight, model.get_input_embeddings().weight
        if head is not embedding:  # offloaded, the head holds its own handle on the one stored tensor
            seen.add(id(head))
    for module, device in model.hf_device_map.items():
        params = [p for p in (named[module] if module else model).parameters() if id(p) not in seen]
        seen.update(id(p) for p in params)
        nbytes = sum(p.numel() * p.element_size() for p in params)
        rows.append({"module": module or "(whole model)", "device": str(device), "MB": nbytes / 1e6})
    return pd.DataFrame(rows)


def placement_figure(table: pd.DataFrame, title: str = "Where each block lives") -> go.Figure:
    """Bar chart of `placement_table()`: MB of weights per block, coloured by device.

    Args:
        table: from `placement_table()`. title: the figure title.
    Returns:
        a plotly Figure.
    """
    return plots.bars(table, x="module", y="MB", color="device", ylabel="weights (MB)", title=title)


def offload_seconds_per_token(weights_gb: float, fast_memory_gb: float, link_gbps: float, fast_gbps: float,
                              batch: int = 1) -> dict:
    """Bytes / bandwidth: a decode step reads every weight once, the offloaded part over the slow link.

    step_s = resident_GB / fast_gbps + streamed_GB / link_gbps, with resident_GB = min(weights, fast memory); a
    batch shares each weight read, so s_per_token = step_s / batch. This is the bandwidth-bound floor of memory-bound
    decoding (the roofline model, Williams et al., CACM 2009), with compute and overlap of transfers ignored.

    Args:
        weights_gb: weight bytes (GB). fast_memory_gb: memory for weights on the fast device(s) (GB).
        link_gbps: bandwidth of the link the rest streams over (GB/s). fast_gbps: fast memory bandwidth (GB/s).
        batch: sequences decoded together (>= 1).
    Returns:
        {"resident_GB", "streamed_GB", "step_s", "s_per_token"}.
    Raises:
        ValueError: a size or bandwidth <= 0 (fast memory < 0), or batch < 1.
    """
    if min(weights_gb, link_gbps, fast_gbps) <= 0 or fast_memory_gb < 0 or batch < 1:
        raise ValueError("sizes and bandwidths must be positive and batch >= 1")
    resident = min(weights_gb, fast_memory_gb)
    streamed = weights_gb - resident
    step_s = resident / fast_gbps + streamed / link_gbps
    return {"resident_GB": resident, "streamed_GB": streamed, "step_s": step_s, "s_per_token": step_s / batch}
