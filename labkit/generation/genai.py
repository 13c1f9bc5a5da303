"""ONNX Runtime GenAI as a decode backend: a model folder built once by `convert.genai` (KV cache kept in place
between steps, MatMulNBits int4/int8 weights), decoded by its C++ generation loop."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from labkit import models
from labkit.convert import genai, gguf_nbits
from labkit.decoding.timing import DecodeRun, time_decode
from labkit.generation.base import DecodeBackend
from labkit.generation.step_bytes import onnx_step_bytes
from labkit.models import smollm2


class OrtGenAI(DecodeBackend):
    """ONNX Runtime GenAI at fp32, int8 or int4 weights: its model builder's graph and its C++ decode loop."""

    def __init__(self, precision: str):
        if precision not in genai.PRECISIONS:
            raise ValueError(f"unknown ORT GenAI precision {precision!r}; choose from {list(genai.PRECISIONS)}")
        self.precision = precision
        self.name = f"ort-genai-{precision}"
        self.exact = precision == "fp32"
        self.description = f"onnxruntime-genai model builder, {precision} weights, C++ decode loop"

    def available(self, model: str) -> tuple[bool, str]:
        try:
            genai.check_available(models.get_config(model).model_type if model in models.REGISTRY else None)
        except genai.GenAIUnavailable as err:
            return False, str(err)
        return True, ""

    @classmethod
    def of(cls, built: genai.GenAIModel) -> OrtGenAI:
        """A backend over an already loaded model folder (e.g. a `genai-int4` QuantizedModel's `genai`)."""
        backend = cls(built.precision)
        backend.genai, backend.weight_bytes = built, built.weight_bytes
        backend.step_bytes = onnx_step_bytes(built.path)
        return backend

    def load(self, model: str, threads: int, device="cpu") -> None:
        """Build the model folder once (cached; see `convert.genai.build_genai`) and load it for the CPU."""
        self.check_device(device)  # the CPU build of onnxruntime-genai
        path = genai.build_genai(models.checkpoint_dir(model), self.precision)
        self.genai = genai.load_genai(path, self.precision, threads)
        self.weight_bytes, self.step_bytes = self.genai.weight_bytes, onnx_step_bytes(path)

    def generate(self, prompts: list[list[int]], new_tokens: int, warmup: int = 1, repeat: int = 1) -> DecodeRun:
        return time_decode(self._loop(prompts, new_tokens), len(prompts), new_tokens, warmup, repeat)

    def _loop(self, prompts: list[list[int]], new_tokens: int) -> Callable[[Callable[[], None]], list[list[int]]]:
        """One greedy generation that marks the clock after each token: the first `generate_next_token` picks from
        the prompt's logits (`append_tokens` ran the prefill), each later one runs one cached decode step."""
        import onnxruntime_genai as og  # optional package; load() has checked it is there

        batch, length = len(prompts), len(prompts[0])

        def run(mark: Callable[[], None]) -> list[list[int]]:
            params = og.GeneratorParams(self.genai.model)
            params.set_search_options(max_length=length + new_tokens, min_length=length + new_tokens,
                                      do_sample=False, batch_size=batch)  # fmt: skip
            gen = og.Generator(self.genai.model, params)
            gen.append_tokens(np.asarray(prompts, dtype=np.int32))
            tokens = []
            while not gen.is_done():
                gen.generate_next_token()
                tokens.append(gen.get_next_tokens().tolist())
                mark()
            return [list(t) for t in zip(*tokens, strict=True)]

        return run

    def logits(self, prompts: list[list[int]]) -> np.ndarray:
        return self.genai.logits(prompts)


class OrtGenAIGGUF(OrtGenAI):
    """ONNX Runtime GenAI over the GGUF file's own quantized blocks (`convert.gguf_nbits`): SmolLM2's Q4_1 weights
    and Q8_0 embedding / LM head, unchanged, in MatMulNBits.

    Args:
        accuracy_level: 0 = fp32 activations (exact against the dequantized model), 4 = int8 activations.
        zero_point: "exact" (each block's minimum as a residual branch) or "rounded" (as an integer zero point:
            one op, each block moved by at most half a step; `convert.gguf_blocks.to_matmul_nbits`).
    """

    def __init__(self, accuracy_level: int = 0, zero_point: str = "exact"):
        super().__init__("int4")
        self.accuracy_level, self.zero_point = accuracy_level, zero_point
        self.name = ("ort-genai-gguf-q4_1" + ("" if accuracy_level in (0, 1) else f"-a{accuracy_level}")
                     + ("-zp" if zero_point == "rounded" else ""))  # fmt: skip
        self.exact = accuracy_level in (0, 1) and zero_point == "exact"
        self.description = (f"onnxruntime-genai, the GGUF's Q4_1 blocks carried into MatMulNBits "
                            f"(accuracy_level {accuracy_level}, {zero_point} zero points), C++ decode loop")

    def available(self, model: str) -> tuple[bool, str]:
        ok, reason = super().available(model)
        if ok and model != smollm2.NAME:
            return False, f"only {smollm2.NAME} ships as a GGUF file here"
        return ok, reason

    def load(self, model: str, threads: int, device="cpu") -> None:
        """Convert once (cached): ORT GenAI's int4 graph with the GGUF's blocks; then load it for the CPU."""
        self.check_device(device)
        template = genai.build_genai(models.checkpoint_dir(model), "int4")
        path = gguf_nbits.convert(smollm2.find_gguf() or smollm2.download_gguf(), template, self.accuracy_level,
                                  self.zero_point)
        self.genai = genai.load_genai(path, "int4", threads)
        self.weight_bytes, self.step_bytes = self.genai.weight_bytes, onnx_step_bytes(path)
