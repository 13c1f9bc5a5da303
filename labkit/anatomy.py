"""Memory math from a config alone: weights, KV cache and activations, before anything is allocated."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import AutoConfig, PretrainedConfig

from labkit import models

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "int8": 1, "int4": 0.5}


@dataclass(frozen=True)
class ModelMemory:
    params: int
    dtype: str
    weights_bytes: float
    kv_cache_bytes: float
    activation_bytes: float

    @property
    def total_gb(self) -> float:
        return (self.weights_bytes + self.kv_cache_bytes + self.activation_bytes) / 1e9


def _config(model_or_config) -> PretrainedConfig:
    if isinstance(model_or_config, PretrainedConfig):
        return model_or_config
    if isinstance(model_or_config, dict):  # a Hub config.json written out by hand
        cfg = dict(model_or_config)
        return AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    return models.get_config(model_or_config)


def _get(cfg, *names, default=None):
    for n in names:
        if getattr(cfg, n, None) is not None:
            return getattr(cfg, n)
    return default


def kv_cache_bytes(model_or_config, batch: int = 1, seq: int = 2048, precision: str = "bf16") -> int:
    """The one KV-cache formula: bytes of keys and values a decoder keeps for `batch` sequences of `seq` tokens.

        bytes = Σ_layers 2 (K and V) × kv_heads × head_dim × bytes_per_value × tokens_kept(layer) × batch

    kv_heads is `num_key_value_heads` (grouped-query attention: fewer K/V heads than query heads; multi-query: 1);
    tokens_kept is `seq` for a full-attention layer and min(seq, sliding_window) for a windowed one (per layer when
    `layer_types` alternates "sliding_attention" and "full_attention").

    Args:
        model_or_config: a registry name, a transformers config, or a config dict with "model_type".
        batch: sequences (>= 1). seq: tokens per sequence, prompt + generated (>= 1).
        precision: the cache's element precision (fp32 | bf16 | fp16 | int8, or an alias such as "bfloat16").
    Returns:
        bytes (int).
    Raises:
        ValueError: for batch or seq < 1 or an unknown precision (naming the choices).
    Source: the formula in shared/reference/numbers.md (2 × layers × kv_heads × head_dim × bytes × tokens × batch).
    """
    from labkit import precision as precisions

    if batch < 1 or seq < 1:
        raise ValueError(f"batch and seq must be >= 1, got {batch} and {seq}")
    per_value = precisions.bytes_per_value(precision)
    cfg = _config(model_or_config)
    layers = _get(cfg, "num_hidden_layers", "n_layer")
    hidden = _get(cfg, "hidden_size", "n_embed")
    heads = _get(cfg, "num_attention_heads", "n_head")
    kv_heads = _get(cfg, "num_key_value_heads", default=heads)
    head_dim = _get(cfg, "head_dim", default=hidden // heads)
    window = _get(cfg, "sliding_window")
    types = _get(cfg, "layer_types") or (["sliding_attention" if window else "full_attention"] * layers)
    tokens = sum(min(seq, window) if (t == "sliding_attention" and window) else seq for t in types)
    return int(2 * kv_heads * head_dim * per_value * tokens * batch)


def model_memory(model_or_config, dtype: str = "bfloat16", batch: int = 1, seq: int = 2048,
                 kv_dtype: str | None = None) -> ModelMemory:
    """Weights (parameters counted on the meta device) + KV cache + a one-layer activation estimate.

    KV cache = 2 (K and V) × layers × kv_heads × head_dim × bytes × tokens × batch.
    """
    if dtype not in BYTES:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {list(BYTES)}")
    if batch < 1 or seq < 1:
        raise ValueError(f"batch and seq must be >= 1, got {batch} and {seq}")
    cfg = _config(model_or_config)
    params = models.estimate_memory(cfg, "float32").params
    layers = _get(cfg, "num_hidden_layers", "n_layer")
    hidden = _get(cfg, "hidden_size", "n_embed")
    heads = _get(cfg, "num_attention_heads", "n_head")
    kv_heads = _get(cfg, "num_key_value_heads", default=heads)
    head_dim = _get(cfg, "head_dim", default=hidden // heads)
    kv_bytes = BYTES[kv_dtype or (dtype if dtype in ("float32", "bfloat16", "float16") else "bfloat16")]
    kv = 2 * layers * kv_heads * head_dim * kv_bytes * seq * batch
    act_bytes = BYTES[dtype if dtype in ("float32", "bfloat16", "float16") else "bfloat16"]
    # the widest live tensors of one layer during prefill: the MLP's intermediate and the attention scores
    inter = _get(cfg, "intermediate_size", default=4 * hidden)
    activations = batch * seq * (2 * hidden + inter) * act_bytes + batch * heads * seq * seq * act_bytes
    return ModelMemory(params, dtype, params * BYTES[dtype], kv, activations)


# Well-known configurations for the calculator (written out, no download needed).
KNOWN_CONFIGS = {
    "bloom-176b": {"model_type": "bloom", "n_layer": 70, "hidden_size": 14336, "n_head": 112, "vocab_size": 250880},
    "llama-30b": {"model_type": "llama", "num_hidden_layers": 60, "hidden_size": 6656, "intermediate_size": 17920,
                  "num_attention_heads": 52, "vocab_size": 32000},
    "llama-2-7b": {"model_type": "llama", "num_hidden_layers": 32, "hidden_size": 4096, "intermediate_size": 11008,
                   "num_attention_heads": 32, "vocab_size": 32000},
}
GPU_MEMORY_GB = {"T4 16GB": 16, "A100 40GB": 40, "A100/H100 80GB": 80, "H200 141GB": 141, "8×A100 80GB": 640}


def memory_calculator(model: str = "llama-30b", dtype: str = "float16", batch: int = 1, seq: int = 2048):
    """Weights + KV cache + activations of a model in GB, against common GPU memory sizes."""
    import pandas as pd
    import plotly.graph_objects as go

    from labkit import plots
    from labkit.plots import Measured

    mem = model_memory(KNOWN_CONFIGS.get(model, model), dtype, batch, seq)
    parts = {"weights": mem.weights_bytes, "KV cache": mem.kv_cache_bytes, "activations": mem.activation_bytes}
    row = {"model": model, "dtype": dtype, "batch": batch, "seq": seq, "params_B": mem.params / 1e9}
    table = pd.DataFrame([{**row, **{f"{k}_GB": v / 1e9 for k, v in parts.items()}, "total_GB": mem.total_gb}])
    fig = go.Figure([go.Bar(name=k, x=[model], y=[v / 1e9]) for k, v in parts.items()])
    for name, gb in GPU_MEMORY_GB.items():
        if gb < 4 * mem.total_gb:
            fig.add_hline(y=gb, line_dash="dot", annotation_text=name, annotation_position="right")
    fig.update_layout(barmode="stack")
    fig.update_yaxes(title="GB")
    title = f"{model} in {dtype}, batch {batch} × {seq} tokens: {mem.total_gb:.1f} GB"
    return Measured(table, plots._style(fig, title))


# --- measured on a real model (issue: labs 07) -------------------------------------------------
def cache_bytes(cache) -> int:
    """Bytes held by a transformers cache object (K and V of every layer)."""
    total = 0
    for layer in getattr(cache, "layers", []):
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if t is not None:
                total += t.numel() * t.element_size()
    return total


def kv_cache_check(model: str = "tiny-llama", batch: int = 2, seq: int = 64, dtype: str = "float32",
                   device: str = "auto") -> dict:
    """The KV-cache formula against the bytes of a real cache after a forward pass over `seq` tokens."""
    import torch

    net, _ = models.load_model(model, dtype=dtype, device=device)  # "auto": the GPU when there is one
    ids = torch.randint(0, net.config.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(0))
    ids = ids.to(net.device)
    with torch.no_grad():
        cache = net(input_ids=ids, use_cache=True).past_key_values
    formula = model_memory(net.config, dtype if dtype in BYTES else "float32", batch, seq).kv_cache_bytes
    return {"model": model, "batch": batch, "seq": seq, "dtype": dtype, "formula_bytes": int(formula),
            "measured_bytes": cache_bytes(cache)}


def prefill_decode(model: str = "tiny-llama", prompt_lens=(16, 64, 256), batch_sizes=(1, 4), new_tokens: int = 16,
                   repeat: int = 3, device: str = "auto"):
    """Time to first token (one prefill forward) and time per output token (cached decode steps)."""
    import torch

    from labkit import measure

    net, _ = models.load_model(model, device=device)  # "auto": the GPU when there is one (measure syncs it)
    rows = []
    for bs in batch_sizes:
        for n in prompt_lens:
            ids = torch.randint(0, net.config.vocab_size, (bs, n), generator=torch.Generator().manual_seed(n))
            ids = ids.to(net.device)

            def prefill(ids=ids):
                with torch.no_grad():
                    return net(input_ids=ids, use_cache=True)

            ttft = measure.benchmark(prefill, warmup=1, repeat=repeat).median

            def decode():
                out = prefill()
                cache, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
                with torch.no_grad():
                    for _ in range(new_tokens):
                        out = net(input_ids=nxt, past_key_values=cache, use_cache=True)
                        cache, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)

            total = measure.benchmark(decode, warmup=1, repeat=repeat).median
            rows.append({"batch": bs, "prompt_tokens": n, "ttft_ms": ttft * 1e3,
                         "tpot_ms": (total - ttft) / new_tokens * 1e3,
                         "decode_tok_s": bs * new_tokens / max(total - ttft, 1e-9)})
    return measure.results_frame(rows, model=model)


def matmul_flops(size: int = 1024, dtype: str = "float32", repeat: int = 5, device: str = "cpu") -> float:
    """Measured dense matmul throughput in FLOP/s (2·n³ per product)."""
    import torch

    from labkit import measure

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    a = torch.randn(size, size, device=device).to(torch_dtype)
    stats = measure.benchmark(lambda: a @ a, warmup=2, repeat=repeat)
    return 2 * size**3 / stats.median


def decode_roofline(model: str = "smollm2-135m", dtype: str = "float32", bandwidth_gbps: float | None = None,
                    flops: float | None = None, batch_sizes=(1, 2, 4, 8, 16, 32, 64)):
    """Per batch size: the bandwidth-bound and compute-bound decode limits (tokens/s) from this machine's
    measured bandwidth and FLOP/s. Each decode step reads all weights once and does 2 FLOPs per weight per
    sequence, so arithmetic intensity = batch × 2 / bytes-per-weight."""
    import pandas as pd

    from labkit import measure

    mem = model_memory(model, dtype)
    bw = (bandwidth_gbps or measure.memory_bandwidth()) * 1e9
    fl = flops or matmul_flops(dtype=dtype if dtype in ("float32", "bfloat16") else "float32")
    rows = []
    for b in batch_sizes:
        memory_bound = b * bw / mem.weights_bytes  # tokens/s if only weight reads mattered
        compute_bound = fl / (2 * mem.params)  # tokens/s if only the FLOPs mattered (batch-independent)
        rows.append({"batch": b, "intensity_flop_per_byte": 2 * b * mem.params / mem.weights_bytes,
                     "memory_bound_tok_s": memory_bound, "compute_bound_tok_s": compute_bound,
                     "limit_tok_s": min(memory_bound, compute_bound),
                     "bound_by": "memory" if memory_bound < compute_bound else "compute"})
    table = pd.DataFrame(rows)
    table.attrs.update(bandwidth_GBps=bw / 1e9, tflops=fl / 1e12, weights_GB=mem.weights_bytes / 1e9)
    return table


def kv_cache_curve(model: str = "llama-30b", dtype: str = "float16", batch: int = 8,
                   contexts=(512, 1024, 2048, 4096, 8192, 16384, 32768)):
    """KV-cache GB against context length, next to the weights: where the cache overtakes the model."""
    import pandas as pd

    from labkit import plots

    config = KNOWN_CONFIGS.get(model, model)
    mems = {n: model_memory(config, dtype, batch, n) for n in contexts}
    rows = [{"context": n, "KV_cache_GB": m.kv_cache_bytes / 1e9, "weights_GB": m.weights_bytes / 1e9}
            for n, m in mems.items()]
    table = pd.DataFrame(rows)
    fig = plots.line(table, "context", ["KV_cache_GB", "weights_GB"], log_x=True, xlabel="tokens per sequence",
                     ylabel="GB", title=f"{model} {dtype}, batch {batch}: KV cache vs weights")  # fmt: skip
    return plots.Measured(table, fig)
