"""Quantizers behind one function each: a registry `name -> Quantizer`.

    q = quantize("int8-dynamic", "smollm2-135m")      # -> QuantizedModel
    q.logits(input_ids), q.model.generate(...), q.stored_bytes

Every quantizer says which devices it runs on; an unsupported combination raises before any work.
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from labkit import models
from labkit.memory import resident_bytes, stored_bytes, tensor_bytes  # noqa: F401  (re-exported)


@dataclass
class QuantizedModel:
    model: torch.nn.Module | None  # a causal LM (generate() works) — None for ONNX sessions
    session: object | None  # onnxruntime.InferenceSession (forward only: exported without KV cache)
    stored_bytes: int  # weights as saved (state_dict / ONNX / GGUF file)
    resident_bytes: int  # tensor memory the weights occupy once loaded
    notes: str = ""
    name: str = ""  # the registry name, set by quantize()
    generator: object | None = None  # an engines.generators.Generator that decodes (when model is None)

    @torch.no_grad()
    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(batch, seq) -> (batch, seq, vocab) float32 logits."""
        if self.session is not None:
            return torch.from_numpy(self.session.run(None, {"input_ids": input_ids.numpy()})[0]).float()
        return self.model(input_ids=input_ids.to(self.model.device), use_cache=False).logits.float().cpu()


@dataclass(frozen=True)
class Quantizer:
    name: str
    library: str
    what: str  # what is quantized, and when
    devices: tuple[str, ...]
    apply: Callable[[torch.nn.Module, str], QuantizedModel]


def _module_result(model: torch.nn.Module, notes: str = "") -> QuantizedModel:
    return QuantizedModel(model.eval(), None, stored_bytes(model), resident_bytes(model), notes)


def _cast(dtype: torch.dtype) -> Callable:
    def apply(model, source):
        return _module_result(copy.deepcopy(model).to(dtype))

    return apply


def _int8_dynamic(model, source):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
        q = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
    return _module_result(q, "Linear weights int8 ahead of time; activations quantized per call")


def _torchao_int8_weight(model, source):
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    q = copy.deepcopy(model)
    quantize_(q, Int8WeightOnlyConfig())
    return _module_result(q, "torchao: int8 weights, dequantized to fp32 inside each matmul")


def _quanto(bits: int):
    def apply(model, source):
        from optimum.quanto import freeze, qint4, qint8, quantize

        q = copy.deepcopy(model)
        quantize(q, weights=qint4 if bits == 4 else qint8)
        freeze(q)  # replace fp32 weights by their quantized form now, not at every forward
        notes = "optimum-quanto weight-only (use torch.no_grad, not inference_mode)"
        return _module_result(q, notes)

    return apply


def _bnb(kind: str):
    def apply(model, source):
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        if kind == "int8":
            cfg = BitsAndBytesConfig(load_in_8bit=True)
        else:
            cfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
        with tempfile.TemporaryDirectory() as tmp:  # bitsandbytes quantizes while loading a checkpoint
            model.save_pretrained(tmp)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                q = AutoModelForCausalLM.from_pretrained(tmp, quantization_config=cfg, device_map="cpu")
        return _module_result(q, "bitsandbytes, quantized at load time")

    return apply


def _ort(bits: int):
    def apply(model, source):
        import onnxruntime as ort

        from labkit.convert import export_onnx
        from labkit.engines.base import Graph
        from labkit.engines.workloads import LogitsOnly

        ids = torch.zeros(1, 8, dtype=torch.long)
        graph = Graph(f"{source}-quant", LogitsOnly(model).eval(), (ids,), ("input_ids",),
                      {"input_ids": {0: "batch", 1: "seq"}})
        # the plain export: ORT's quantizers mistake opset 23's standard Attention op for their own
        # com.microsoft Attention and write an invalid QAttention node (seen with onnxruntime 1.32)
        src = export_onnx(graph, fused_attention=False)
        out = src.with_name(f"{src.stem}.int{bits}.onnx")
        if not out.exists():
            if bits == 8:
                from onnxruntime.quantization import QuantType, quantize_dynamic

                quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8)
            else:
                from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

                quantizer = MatMulNBitsQuantizer(str(src), bits=4, block_size=32, is_symmetric=True)
                quantizer.process()
                quantizer.model.save_model_to_file(str(out), use_external_data_format=False)
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        size = out.stat().st_size
        notes = "ONNX Runtime " + ("dynamic int8 MatMul" if bits == 8 else "4-bit block-wise MatMulNBits")
        return QuantizedModel(None, session, size, size, notes)

    return apply


class _GenAILogits:
    """ONNX Runtime GenAI behind the `session.run(None, {"input_ids": ...})` call quality() makes."""

    def __init__(self, generator):
        self.generator = generator

    def run(self, _outputs, feeds: dict) -> list:
        return [self.generator.logits(feeds["input_ids"].tolist())]


def _genai(precision: str):
    def apply(model, source):
        from labkit.generation.backends import OrtGenAI

        gen = OrtGenAI(precision)
        ok, reason = gen.available(source)
        if not ok:
            raise ImportError(reason)
        gen.load(source, threads=torch.get_num_threads())
        notes = (f"ONNX Runtime GenAI: {precision} weights in MatMulNBits blocks of 32, int8 dot products, "
                 "KV cache kept in place, C++ decode loop")  # fmt: skip
        return QuantizedModel(None, _GenAILogits(gen), gen.weight_bytes, gen.weight_bytes, notes, generator=gen)

    return apply


def _gguf(model, source):
    if source != "smollm2-135m":
        raise ValueError("gguf-q4_1 is the file SmolLM2 ships in; other models need llama.cpp's converter")
    import gguf

    from labkit.models import smollm2

    path = smollm2.find_gguf() or smollm2.download_gguf()
    size = sum(int(t.n_bytes) for t in gguf.GGUFReader(str(path)).tensors)
    # labkit's fp32 SmolLM2 *is* this file dequantized, so PyTorch runs exactly the Q4_1 model's function.
    return QuantizedModel(model, None, size, size,
                          "GGUF Q4_1 (Q8_0 embeddings); run by PyTorch after dequantization, by llama.cpp if installed")


QUANTIZERS: dict[str, Quantizer] = {q.name: q for q in (
    Quantizer("fp32", "torch", "nothing: the reference", ("cpu", "cuda"), _cast(torch.float32)),
    Quantizer("fp16", "torch", "every weight and activation in float16", ("cpu", "cuda"), _cast(torch.float16)),
    Quantizer("bf16", "torch", "every weight and activation in bfloat16", ("cpu", "cuda"), _cast(torch.bfloat16)),
    Quantizer("int8-dynamic", "torch.ao", "Linear weights int8 offline, activations int8 at run time", ("cpu",),
              _int8_dynamic),
    Quantizer("int8-weight", "torchao", "Linear weights int8, math in fp32", ("cpu", "cuda"), _torchao_int8_weight),
    Quantizer("int4-weight", "optimum-quanto", "Linear weights int4 (groups), math in fp32", ("cpu", "cuda"),
              _quanto(4)),
    Quantizer("quanto-int8", "optimum-quanto", "Linear weights int8, math in fp32", ("cpu", "cuda"), _quanto(8)),
    Quantizer("bnb-int8", "bitsandbytes", "LLM.int8(): int8 weights, outliers kept in fp16", ("cpu", "cuda"),
              _bnb("int8")),
    Quantizer("bnb-nf4", "bitsandbytes", "4-bit NormalFloat weights, fp32 compute", ("cpu", "cuda"), _bnb("nf4")),
    Quantizer("ort-int8", "onnxruntime", "MatMul weights int8 in the ONNX graph, dynamic activations", ("cpu",),
              _ort(8)),
    Quantizer("ort-int4", "onnxruntime", "MatMul weights 4-bit in blocks of 32 (MatMulNBits)", ("cpu",), _ort(4)),
    Quantizer("genai-int8", "onnxruntime-genai", "weights int8 per block of 32 (MatMulNBits), activations int8 "
              "inside the kernel; whole decode loop in C++", ("cpu",), _genai("int8")),
    Quantizer("genai-int4", "onnxruntime-genai", "weights 4-bit per block of 32 (MatMulNBits), activations int8 "
              "inside the kernel; whole decode loop in C++", ("cpu",), _genai("int4")),
    Quantizer("gguf-q4_1", "gguf", "4-bit blocks of 32 with scale and minimum (llama.cpp format)", ("cpu",), _gguf),
)}  # fmt: skip


def quantize(name: str, source: str = "smollm2-135m", device: str = "cpu", model=None) -> QuantizedModel:
    """Quantize a registered model (or `model`, loaded from `source`) with quantizer `name`."""
    if name not in QUANTIZERS:
        raise ValueError(f"unknown quantizer {name!r}; choose from {list(QUANTIZERS)}")
    q = QUANTIZERS[name]
    if device not in q.devices:
        other = [n for n, x in QUANTIZERS.items() if device in x.devices and n != "fp32"]
        raise ValueError(f"{name} ({q.library}) runs on {list(q.devices)}, not {device!r}; "
                         f"on {device} use one of {other}")
    if model is None:
        model, _ = models.load_model(source, device="cpu")
    result = q.apply(model, source)
    result.name = name
    if result.model is not None and device != "cpu" and name in ("fp32", "fp16", "bf16"):
        result.model.to(device)
    return result


def gguf_tensor_types(path: Path) -> dict[str, int]:
    """How many tensors of each GGUF type a file holds (e.g. {'Q4_1': 210, 'F32': 61, 'Q8_0': 1})."""
    import gguf

    types = [t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors]
    return {k: types.count(k) for k in sorted(set(types))}


__all__ = ["QUANTIZERS", "QuantizedModel", "Quantizer", "quantize", "resident_bytes", "stored_bytes"]
