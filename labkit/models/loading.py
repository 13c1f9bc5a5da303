"""Loading a model by name, after checking that it fits, and prompting it.

    model, tok = load_model("smollm2-135m")            # real pretrained LLM, from a PyPI wheel
    model, tok = load_model("tiny-bloom", dtype="bf16")
    model, tok = load_model("bigscience/bloom-560m")    # any Hub id, when online

`estimate_memory()` counts parameters on the meta device (no memory), so a caller can say "this will not fit"
before allocating anything; `load_model()` does exactly that before it loads.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import psutil
import torch
from transformers import PretrainedConfig

from labkit import devices, precision
from labkit.hardware import resolve_device
from labkit.models.registry import ModelNotAvailable, ModelSpec, count_params, load_weights, resolve


def _float_precision(dtype: str | torch.dtype) -> str:
    """The canonical name of a floating-point precision a model can be loaded in, or a ValueError naming them."""
    try:
        canonical = precision.canonical(dtype)
    except ValueError:
        canonical = None
    if canonical not in precision.FLOAT_PRECISIONS:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {list(precision.FLOAT_PRECISIONS)} "
                         "(aliases such as 'float32', 'bfloat16', 'float16' work too)")
    return canonical


@dataclass(frozen=True)
class MemoryEstimate:
    """Weight memory of a model: `params` parameters stored in `dtype` (a canonical precision) take `bytes`."""

    name: str
    params: int
    dtype: str
    bytes: int

    @property
    def gib(self) -> float:
        """The bytes in GiB (2**30)."""
        return self.bytes / 2**30


def estimate_memory(name_or_config: str | PretrainedConfig, dtype: str = "fp32") -> MemoryEstimate:
    """Weight bytes of a model, counted on the meta device (nothing is allocated).

    Args:
        name_or_config: anything `resolve()` accepts (e.g. "smollm2-135m", "bloom-176b"), or a transformers config.
        dtype: storage precision, one of precision.PRECISIONS or an alias ("float32", "bfloat16", ...).
            int8 / int4 count 1 / 0.5 byte per weight, without block scales.
    Returns:
        MemoryEstimate: params (tied weights counted once), dtype (canonical name), bytes = params × bytes per value.
    Raises:
        ValueError: an unknown name or precision. ModelNotAvailable: a Hub id while offline.
    """
    canonical = precision.canonical(dtype)
    if isinstance(name_or_config, str):
        return _estimate(resolve(name_or_config), canonical)
    params = count_params(name_or_config)
    nbytes = int(params * precision.bytes_per_value(canonical))
    return MemoryEstimate(type(name_or_config).__name__, params, canonical, nbytes)


def _estimate(spec: ModelSpec, canonical: str) -> MemoryEstimate:
    return MemoryEstimate(spec.name, spec.params, canonical, spec.weight_bytes(canonical))


def available_memory(device: torch.device) -> int:
    """Bytes free on a device right now (CUDA: free device memory; CPU: available RAM)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free
    return psutil.virtual_memory().available


def check_fits(estimate: MemoryEstimate, device: torch.device, headroom: float = 1.2) -> None:
    """Raise before allocating when the weights (plus `headroom` for activations) exceed free memory.

    Args:
        estimate: from `estimate_memory()`. device: where the weights would go.
        headroom: multiplier on the weight bytes (1.2: 20 % for activations).
    Raises:
        ModelNotAvailable: saying how much is needed and how much is free.
    """
    need, free = int(estimate.bytes * headroom), available_memory(device)
    if need > free:
        raise ModelNotAvailable(
            f"{estimate.name} in {estimate.dtype} needs about {need / 2**30:.1f} GiB on {device} "
            f"({estimate.params / 1e6:.0f}M params), but only {free / 2**30:.1f} GiB is free; "
            "try a smaller dtype, another device, or offloading (labkit.offload)"
        )


def load_cached(name: str, device: str | torch.device = "cpu"):
    """`load_model(name, device=device)` once per process and device: for widgets that rerun on every click.

    Args:
        name: anything `load_model()` accepts.
        device: "cpu" (the default, which callers that move nothing rely on), "cuda", "cuda:N" or "auto"
            (`hardware.resolve_device`); "cuda" and "cuda:<current>" share one copy.
    Returns:
        (model, tokenizer) on `device`, the same objects on every call with that device: callers must not change
        the model.
    Raises:
        as `load_model()`.
    """
    return _load_cached(name, devices.resolve(device))  # with its index: one cache entry per GPU


@functools.lru_cache(maxsize=4)
def _load_cached(name: str, device: torch.device):
    return load_model(name, device=device)


def load_model(name: str, dtype: str | torch.dtype = "fp32", device: str | torch.device = "auto"):
    """Load a model in eval mode with its tokenizer.

    Args:
        name: a registered name (see `list_models()`), a Hub id (online) or a local folder.
        dtype: "fp32", "bf16" or "fp16" (or an alias: "float32", "bfloat16", "float16", a torch dtype).
        device: "auto" (the GPU when there is one), "cpu", "cuda" or "cuda:N" (hardware.resolve_device).
    Returns:
        (model, tokenizer): a transformers causal LM on `device`, in eval mode, and its tokenizer.
    Raises:
        ValueError: an unknown name, dtype or device (before anything is allocated).
        ModelNotAvailable: the weights would not fit in free memory, the name has no weights here, or a Hub id
            cannot be reached.
        CapabilityMissing: a CUDA device on a machine without one.
    """
    canonical = _float_precision(dtype)
    dev = resolve_device(device)
    spec = resolve(name)
    spec.require_weights()
    check_fits(_estimate(spec, canonical), dev)
    model, tok = load_weights(spec, precision.torch_dtype(canonical))
    return model.to(dev).eval(), tok


def encode_prompt(tokenizer, prompt: str, chat: bool | None = None) -> dict[str, torch.Tensor]:
    """Token ids for a prompt; chat models get their chat template.

    Args:
        tokenizer: a transformers tokenizer. prompt: the user's text.
        chat: apply the chat template (None: when the tokenizer has one).
    Returns:
        {"input_ids", "attention_mask"}: tensors of shape (1, prompt_tokens).
    """
    use_chat = bool(getattr(tokenizer, "chat_template", None)) if chat is None else chat
    if use_chat:
        messages = [{"role": "user", "content": prompt}]
        enc = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
    else:
        enc = tokenizer(prompt, return_tensors="pt")
    return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")}


@torch.no_grad()
def complete(model, tokenizer, prompt: str, max_new_tokens: int = 32, chat: bool | None = None,
             **generate_kwargs) -> str:
    """Continue `prompt` with `model.generate` (greedy unless `do_sample=True` is passed).

    Args:
        model: a transformers causal LM. tokenizer: its tokenizer. prompt: the text to continue.
        max_new_tokens: at most this many new tokens. chat: as in `encode_prompt()`.
        **generate_kwargs: passed to `generate()` (e.g. do_sample=True, temperature=0.8, top_k=50).
    Returns:
        only the new text, special tokens removed.
    """
    enc = {k: v.to(model.device) for k, v in encode_prompt(tokenizer, prompt, chat).items()}
    generate_kwargs.setdefault("do_sample", False)
    out = model.generate(
        **enc, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
        **generate_kwargs,
    )  # (batch, prompt + new)
    return tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
