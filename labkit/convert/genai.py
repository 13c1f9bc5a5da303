"""The ONNX Runtime GenAI model format: build a model folder once with its model builder, load it, read logits.

The builder (`onnxruntime_genai.models.builder`) reads a Hugging Face checkpoint and writes a decoder ONNX graph
whose KV cache stays in place between steps (fused GroupQueryAttention), with weights as MatMulNBits blocks of 32 for
int4 / int8 (`accuracy_level=4`: int8 dot products), plus `genai_config.json` for its C++ generation loop. It covers
Llama, Mistral, Phi, Qwen, Gemma, ... but not BLOOM (ALiBi attention).

onnxruntime-genai is optional: `check_available()` says why it cannot run before any work is done.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from labkit.cache import cache_dir
from labkit.hardware import Unavailable

PRECISIONS = ("fp32", "int8", "int4")  # what labkit builds with it (the builder's -p names)
UNSUPPORTED_MODEL_TYPES = frozenset({"bloom"})  # its builder has no ALiBi attention


class GenAIUnavailable(Unavailable):
    """onnxruntime-genai is not installed, or its model builder does not cover this architecture."""


def check_available(model_type: str | None = None) -> None:
    """Raise `GenAIUnavailable` unless ORT GenAI can build and run a model of this architecture here.

    Args:
        model_type: a transformers `config.model_type` (e.g. "llama", "bloom"); None checks the package only.
    Raises:
        GenAIUnavailable: onnxruntime-genai is missing, or its builder does not support `model_type`.
    """
    if importlib.util.find_spec("onnxruntime_genai") is None:
        raise GenAIUnavailable("onnxruntime-genai is not installed (pip install onnxruntime-genai)")
    if model_type in UNSUPPORTED_MODEL_TYPES:
        raise GenAIUnavailable(f"the onnxruntime-genai model builder does not support {model_type}")


def _key(checkpoint_dir: Path) -> str:
    """A short hash of the checkpoint's location and of its files' sizes and times: a changed model rebuilds."""
    files = sorted(p for p in checkpoint_dir.iterdir() if p.suffix in (".json", ".safetensors"))
    stamp = "|".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    return hashlib.sha1(f"{checkpoint_dir.resolve()}|{stamp}".encode()).hexdigest()[:8]


def build_genai(checkpoint_dir: Path | str, precision: str) -> Path:
    """Run the ORT GenAI model builder once for a checkpoint (cached under `LABKIT_CACHE/genai`).

    Args:
        checkpoint_dir: a Hugging Face checkpoint folder (config.json, *.safetensors, tokenizer files), e.g.
            `models.checkpoint_dir("smollm2-135m")`.
        precision: "fp32", "int8" or "int4" (weights; int8/int4 as MatMulNBits blocks of 32).
    Returns:
        the model folder (model.onnx, model.onnx.data, genai_config.json, tokenizer files); the builder's log is
        build.log inside it.
    Raises:
        ValueError: for a precision other than PRECISIONS.
        GenAIUnavailable: before any work, when onnxruntime-genai is missing or the architecture is not supported.
        RuntimeError: when the builder itself fails (the message quotes the last line of its log).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown ORT GenAI precision {precision!r}; choose from {list(PRECISIONS)}")
    checkpoint_dir = Path(checkpoint_dir)
    check_available(json.loads((checkpoint_dir / "config.json").read_text()).get("model_type"))
    out = cache_dir("genai") / f"{checkpoint_dir.name}-{precision}-{_key(checkpoint_dir)}"
    if (out / "genai_config.json").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    options = ["accuracy_level=4"] if precision in ("int4", "int8") else []  # int8 dot products
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(checkpoint_dir), "-o", str(out),
           "-p", precision, "-e", "cpu", "-c", str(out / "tmp")]  # fmt: skip
    cmd += ["--extra_options", *options] if options else []
    with open(out / "build.log", "w") as log:
        done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0 or not (out / "genai_config.json").exists():
        last = (out / "build.log").read_text().strip().splitlines()[-1:] or [""]
        raise RuntimeError(f"onnxruntime-genai builder failed for {checkpoint_dir} ({precision}): {last[0]} "
                           f"(log: {out}/build.log)")  # fmt: skip
    return out


@dataclass(frozen=True)
class GenAIModel:
    """A built model folder loaded for the CPU (see `load_genai`).

    Attributes:
        path: the folder `build_genai` wrote. precision: its weights' precision ("fp32", "int8", "int4").
        model: the `onnxruntime_genai.Model` (its C++ generation loop decodes it).
    """

    path: Path
    precision: str
    model: object

    @property
    def weight_bytes(self) -> int:
        """Bytes of the folder's ONNX files (graph + external weights), as stored."""
        return sum(f.stat().st_size for f in self.path.glob("model.onnx*"))

    def logits(self, prompts: list[list[int]]) -> np.ndarray:
        """Next-token logits over whole prompts (teacher forcing): one prefill forward.

        Args:
            prompts: (batch, seq) token ids, every prompt the same length.
        Returns:
            (batch, seq, vocab) float32 logits.
        """
        import onnxruntime_genai as og  # optional package; load_genai checked it is there

        params = og.GeneratorParams(self.model)
        params.set_search_options(max_length=len(prompts[0]) + 1, batch_size=len(prompts))
        gen = og.Generator(self.model, params)
        gen.append_tokens(np.asarray(prompts, dtype=np.int32))  # one prefill forward over the whole text
        return gen.get_output("logits")


def load_genai(path: Path, precision: str, threads: int | None = None) -> GenAIModel:
    """Load a built model folder for the CPU.

    Args:
        path: a folder written by `build_genai`. precision: the precision it was built at.
        threads: intra-op threads of its ONNX Runtime session; None lets ONNX Runtime choose.
    Returns:
        a GenAIModel.
    Raises:
        GenAIUnavailable: when onnxruntime-genai is not installed.
    """
    check_available()
    import onnxruntime_genai as og  # optional package

    config = og.Config(str(path))
    config.clear_providers()  # CPU
    if threads:
        config.overlay(f'{{"model": {{"decoder": {{"session_options": {{"intra_op_num_threads": {threads}}}}}}}}}')
    return GenAIModel(Path(path), precision, og.Model(config))
