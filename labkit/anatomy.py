"""Memory math from a config alone: weights, KV cache and activations, before anything is allocated.

    anatomy.kv_cache_bytes("smollm2-135m", batch=8, seq=4096, precision="bf16")    # the one KV-cache formula
    anatomy.kv_cache_bytes(mistral_config, 2, 64, "fp32", cache="static")          # windows: dynamic or static cache
    anatomy.model_memory("llama-30b", "fp16", batch=1, seq=2048).total_gb           # weights + KV + activations
    anatomy.dims("bloom-176b").layers                                              # a config's dimensions

A model is given by a registry name (including the published architectures of `models.specs.MODEL_CONFIGS`), a
transformers config, or a config dict with "model_type". Precision is one of fp32 | bf16 | fp16 | int8 | int4
(aliases such as "bfloat16" are accepted and shown canonically).
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import AutoConfig, PretrainedConfig
from transformers.cache_utils import get_layer_types_and_kwargs

from labkit import models
from labkit.precision import FLOAT_PRECISIONS, bytes_per_value, canonical


def config_of(model_or_config) -> PretrainedConfig:
    """The transformers config of a model, without loading weights.

    Args:
        model_or_config: a name `models.resolve` accepts (registry names, `models.specs.MODEL_CONFIGS` names,
            Hub ids), a transformers config (returned as it is), or a config dict with "model_type".
    Returns:
        PretrainedConfig.
    Raises:
        ValueError: an unknown name (naming the choices). ModelNotAvailable: a Hub id while offline.
    """
    if isinstance(model_or_config, PretrainedConfig):
        return model_or_config
    if isinstance(model_or_config, dict):  # a Hub config.json written out by hand
        fields = dict(model_or_config)
        return AutoConfig.for_model(fields.pop("model_type"), **fields)
    return models.get_config(model_or_config)


def _get(cfg, *names, default=None):
    """The first of `names` the config sets (architectures spell the same field differently)."""
    for n in names:
        if getattr(cfg, n, None) is not None:
            return getattr(cfg, n)
    return default


@dataclass(frozen=True)
class Dims:
    """The dimensions of a decoder, whatever the architecture calls them (Llama's num_hidden_layers, BLOOM's n_layer).

    kv_heads < heads means grouped-query attention (1: multi-query). layer_types: per layer, the attention kind
    transformers builds its cache from ("full_attention", "sliding_attention", "chunked_attention", ...); windows:
    per layer, the tokens its window spans (None: the whole context). sliding_window: the largest of them (None when
    no layer is windowed).
    """

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    sliding_window: int | None
    layer_types: tuple[str, ...]
    windows: tuple[int | None, ...]


def dims(model_or_config) -> Dims:
    """The dimensions of a model's config.

    Args:
        model_or_config: a model name, a transformers config or a config dict with "model_type" (see `config_of`).
    Returns:
        Dims; intermediate defaults to 4 × hidden (GPT/BLOOM MLPs), kv_heads to heads, head_dim to hidden / heads.
        The per-layer attention kinds and windows are read by `transformers.cache_utils.get_layer_types_and_kwargs`,
        the function DynamicCache and StaticCache build their layers with: a config's `layer_types` (Gemma-2/3,
        GPT-OSS, Cohere2, Qwen2/3 from `max_window_layers` and `use_sliding_window`, ...), else `sliding_window` /
        `attention_chunk_size` per layer (Mistral: every layer windowed).
    """
    cfg = config_of(model_or_config).get_text_config(decoder=True)
    layers = _get(cfg, "num_hidden_layers", "n_layer")
    hidden = _get(cfg, "hidden_size", "n_embed")
    heads = _get(cfg, "num_attention_heads", "n_head")
    types, kwargs = get_layer_types_and_kwargs(cfg)
    windows = tuple(kw.get("sliding_window") for kw in kwargs)
    return Dims(layers, hidden, heads, _get(cfg, "num_key_value_heads", default=heads),
                _get(cfg, "head_dim", default=hidden // heads), _get(cfg, "intermediate_size", default=4 * hidden),
                cfg.vocab_size, max((w for w in windows if w), default=None), tuple(types), windows)


def _check_shape(batch: int, seq: int) -> None:
    if batch < 1 or seq < 1:
        raise ValueError(f"batch and seq must be >= 1, got {batch} and {seq}")


CACHE_KINDS = ("dynamic", "static")
WINDOWED = ("sliding_attention", "chunked_attention")  # one cache layer class for both (transformers' mappings)


def _tokens_kept(layer_type: str, window: int | None, seq: int, cache: str) -> int:
    """Tokens one layer's cache holds for a sequence of `seq` tokens (see `kv_cache_bytes`)."""
    if layer_type == "full_attention":
        return seq
    if layer_type in WINDOWED:
        return min(seq, window - 1 if cache == "dynamic" else window)
    raise ValueError(f"kv_cache_bytes counts full_attention and {' / '.join(WINDOWED)} layers, not "
                     f"{layer_type!r} (a recurrent or compressed state, or a layer that reuses another's cache)")


def kv_cache_bytes(model_or_config, batch: int = 1, seq: int = 2048, precision: str = "bf16",
                   cache: str = "dynamic") -> int:
    """The one KV-cache formula: bytes of keys and values a decoder's cache holds for `batch` sequences of `seq` tokens.

        bytes = Σ_layers 2 (K and V) × kv_heads × head_dim × bytes_per_value × tokens_kept(layer) × batch

    kv_heads is `num_key_value_heads` (grouped-query attention: fewer K/V heads than query heads; multi-query: 1).
    tokens_kept is `seq` for a full-attention layer; for a windowed layer (sliding or chunked attention, per layer
    when the config alternates them) it depends on the cache (transformers 5.x, `cache_utils.py`):

    - "dynamic" (DynamicCache, what `model(...)` and `generate()` use by default): `DynamicSlidingWindowLayer.update`
      keeps the last `sliding_window - 1` tokens after each step, so min(seq, window − 1). During a step the layer
      attends over those plus the new tokens (a full window while decoding).
    - "static" (StaticCache, `seq` = its max_cache_len): `StaticSlidingWindowLayer` allocates
      min(max_cache_len, sliding_window) tokens, so min(seq, window); a full layer allocates max_cache_len.

    Which layers are windowed, and their windows, come from `dims` (transformers' own reading of the config).

    Args:
        model_or_config: a model name, a transformers config, or a config dict with "model_type".
        batch: sequences (>= 1). seq: tokens per sequence, prompt + generated (>= 1); for "static", max_cache_len.
        precision: the cache's element precision (fp32 | bf16 | fp16 | int8, or an alias such as "bfloat16").
        cache: "dynamic" (after a step of transformers' default cache) or "static" (what a static cache allocates;
            also the most a dynamic cache holds while it decodes a token).
    Returns:
        bytes (int).
    Raises:
        ValueError: for batch or seq < 1, an unknown precision or cache kind (naming the choices), or a layer kind
            the formula does not cover (linear attention / state-space layers, shared-KV layers).
    Source: the formula in shared/reference/numbers.md (2 × layers × kv_heads × head_dim × bytes × tokens × batch),
        the window rules above from transformers' DynamicSlidingWindowLayer and StaticSlidingWindowLayer.
    """
    if cache not in CACHE_KINDS:
        raise ValueError(f"unknown cache kind {cache!r}; choose from {list(CACHE_KINDS)}")
    _check_shape(batch, seq)
    per_value = bytes_per_value(precision)
    d = dims(model_or_config)
    tokens = sum(_tokens_kept(t, w, seq, cache) for t, w in zip(d.layer_types, d.windows, strict=True))
    return int(2 * d.kv_heads * d.head_dim * per_value * tokens * batch)


@dataclass(frozen=True)
class ModelMemory:
    """Bytes a model needs to serve `batch` sequences of `seq` tokens (weights in `precision`)."""

    params: int
    precision: str  # canonical: fp32 | bf16 | fp16 | int8 | int4
    weights_bytes: float
    kv_cache_bytes: float
    activation_bytes: float

    @property
    def total_gb(self) -> float:
        """Weights + KV cache + activations, GB (1e9 bytes)."""
        return (self.weights_bytes + self.kv_cache_bytes + self.activation_bytes) / 1e9


def model_memory(model_or_config, precision: str = "bf16", batch: int = 1, seq: int = 2048,
                 kv_precision: str | None = None) -> ModelMemory:
    """Weights (parameters counted on the meta device) + KV cache (`kv_cache_bytes`) + a one-layer activation estimate.

    The KV cache is counted with the static rule (a windowed layer holds its whole window): the most a cache holds
    while it decodes, whichever kind it is.

    Args:
        model_or_config: a model name, a transformers config, or a config dict with "model_type".
        precision: the weights' precision, fp32 | bf16 | fp16 | int8 | int4 (or an alias such as "float16").
        batch: sequences (>= 1). seq: tokens per sequence (>= 1).
        kv_precision: the KV cache's precision; default: `precision` when it is a float, else bf16 (quantized
            weights, 16-bit cache and activations).
    Returns:
        ModelMemory. Weights = params × bytes per value (int4: 0.5 byte, block scales not counted). Activations:
        the widest live tensors of one layer during prefill, batch × seq × (2·hidden + intermediate) plus the
        attention scores batch × heads × seq², in the activation precision.
    Raises:
        ValueError: an unknown precision (naming the choices), or batch or seq < 1.
    """
    name = canonical(precision)
    float_name = name if name in FLOAT_PRECISIONS else "bf16"
    _check_shape(batch, seq)
    cfg = config_of(model_or_config)
    params = models.estimate_memory(model_or_config if isinstance(model_or_config, str) else cfg).params
    kv = kv_cache_bytes(cfg, batch, seq, kv_precision or float_name, cache="static")
    d = dims(cfg)
    act = bytes_per_value(float_name)
    activations = batch * seq * (2 * d.hidden + d.intermediate) * act + batch * d.heads * seq * seq * act
    return ModelMemory(params, name, params * bytes_per_value(name), kv, activations)


def cache_bytes(cache) -> int:
    """Bytes held by a transformers cache object: the keys and values of every layer.

    Args:
        cache: a `transformers.Cache` (DynamicCache, StaticCache, ...), e.g. `model(...).past_key_values`.
    Returns:
        bytes (int): Σ numel × element size over every layer's keys and values.
    """
    total = 0
    for layer in getattr(cache, "layers", []):
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if t is not None:
                total += t.numel() * t.element_size()
    return total
