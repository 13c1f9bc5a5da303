"""Quantizers behind one function each: a registry `name -> Quantizer`.

    q = quantize("int8-dynamic", "smollm2-135m")      # -> QuantizedModel
    q.logits(input_ids), q.model.generate(...), q.stored_bytes, q.device

Every quantizer says which devices, packages and models it needs; a combination that cannot run here raises
`QuantizerUnavailable` (a `hardware.Unavailable`) before any work, and a real failure inside one raises as it is.
The device is a parameter: each quantizer places its copy of the weights there (`Quantizer.runs_on`: CPU-only ones).
"""

from __future__ import annotations

import copy
import importlib.util
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

from labkit import models, precision, quanto_kernels
from labkit.convert import Graph, export_onnx
from labkit.convert import genai as genai_format
from labkit.engines.workloads import LogitsOnly
from labkit.hardware import Unavailable, resolve_device
from labkit.memory import resident_bytes, stored_bytes, tensor_bytes  # noqa: F401  (re-exported)
from labkit.models import smollm2


class QuantizerUnavailable(Unavailable):
    """A quantizer cannot run here: its package is missing, or it does not support this device or model."""


@dataclass
class QuantizedModel:
    model: torch.nn.Module | None  # a causal LM (generate() works) — None for ONNX sessions
    session: object | None  # an object with onnxruntime's run(None, {"input_ids": ...}) (forward only, no KV cache)
    stored_bytes: int  # weights as saved (state_dict / ONNX / GGUF file)
    resident_bytes: int  # tensor memory the weights occupy once loaded
    notes: str = ""
    name: str = ""  # the registry name, set by quantize()
    genai: genai_format.GenAIModel | None = None  # ORT GenAI quantizers: the model folder (generation.backend_for)
    device: torch.device = torch.device("cpu")  # where the weights are and the model computes

    @torch.no_grad()
    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(batch, seq) token ids (any device) -> (batch, seq, vocab) float32 logits, on the CPU."""
        if self.session is not None:
            return torch.from_numpy(self.session.run(None, {"input_ids": input_ids.cpu().numpy()})[0]).float()
        return self.model(input_ids=input_ids.to(self.model.device), use_cache=False).logits.float().cpu()


@dataclass(frozen=True)
class Quantizer:
    name: str
    library: str
    what: str  # what is quantized, and when
    devices: tuple[str, ...]  # device types it runs on: "cpu", "cuda"
    apply: Callable[[torch.nn.Module, str, torch.device], QuantizedModel]  # (fp32 model, source, device)
    requires: str | None = None  # the module it imports (None: torch itself)
    check: Callable[[str], None] | None = None  # raises Unavailable when the quantizer does not cover this model

    def ensure_available(self, source: str, device: str | torch.device = "cpu") -> torch.device:
        """Check, without doing any work, that this quantizer can run on `source` at `device` here.

        Returns:
            the resolved torch.device.
        Raises:
            ValueError: for an unknown device string, naming the valid ones.
            QuantizerUnavailable: the device is not one it runs on, or its package is not installed.
            Unavailable: an unsupported model (BLOOM for ORT GenAI), CUDA without a GPU (`CapabilityMissing`).
        """
        kind = "cuda" if str(device).startswith("cuda") else resolve_device(device).type  # validates the string
        if kind not in self.devices:
            other = [n for n, x in QUANTIZERS.items() if kind in x.devices and n != "fp32"]
            raise QuantizerUnavailable(f"{self.name} ({self.library}) runs on {list(self.devices)}, not {device!r}; "
                                       f"on {kind} use one of {other}")  # fmt: skip
        if self.requires and not _installed(self.requires):
            raise QuantizerUnavailable(f"{self.name} needs {self.library}, which is not installed here "
                                       f"(pip install {self.library})")  # fmt: skip
        if self.check is not None:
            self.check(source)
        return resolve_device(device)

    def runs_on(self, device: str | torch.device) -> torch.device:
        """Where it runs when a lab asks for `device`: there when it supports that device type, else on the CPU,
        deliberately (a CPU-only quantizer, e.g. torch.ao's dynamic int8, in a GPU run). Raises as `resolve_device`."""
        dev = resolve_device(device)
        return dev if dev.type in self.devices or "cpu" not in self.devices else torch.device("cpu")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # the parent package of a dotted name is missing
        return False


def _module_result(model: torch.nn.Module, device: torch.device, notes: str = "") -> QuantizedModel:
    return QuantizedModel(model.eval(), None, stored_bytes(model), resident_bytes(model), notes, device=device)


def _copy(model: torch.nn.Module, device: torch.device, dtype: torch.dtype | None = None) -> torch.nn.Module:
    return copy.deepcopy(model).to(device=device, dtype=dtype)  # Module.to moves in place: copy first


def _on_cpu(model: torch.nn.Module) -> torch.nn.Module:  # read-only use by the CPU-only exporters
    return model if next(model.parameters()).device.type == "cpu" else _copy(model, torch.device("cpu"))


def _cast(dtype: torch.dtype) -> Callable:
    return lambda model, source, device: _module_result(_copy(model, device, dtype), device)


def _int8_dynamic(model, source, device):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
        q = torch.ao.quantization.quantize_dynamic(_copy(model, device), {torch.nn.Linear}, dtype=torch.qint8)
    return _module_result(q, device, "Linear weights int8 ahead of time; activations quantized per call")


def _torchao_int8_weight(model, source, device):
    from torchao.quantization import Int8WeightOnlyConfig, quantize_  # optional package

    q = _copy(model, device)
    quantize_(q, Int8WeightOnlyConfig())
    return _module_result(q, device, "torchao: int8 weights, dequantized to fp32 inside each matmul")


def _quanto(bits: int):
    def apply(model, source, device):
        from optimum.quanto import freeze, qint4, qint8, quantize  # optional package

        if bits == 4:  # int4 unpacks with compiled kernels: build them now (not in a timed forward), or refuse
            (quanto_kernels.require_cuda_kernels if device.type == "cuda" else quanto_kernels.build_cpu_kernels)()
        q = _copy(model, device)
        quantize(q, weights=qint4 if bits == 4 else qint8)
        freeze(q)  # replace fp32 weights by their quantized form now, not at every forward
        return _module_result(q, device, "optimum-quanto weight-only (use torch.no_grad, not inference_mode)")

    return apply


def _bnb(kind: str):
    def apply(model, source, device):
        # float parts and compute: fp32 on the CPU; on a GPU its native 16-bit float (fp16 on a T4, bf16 on Ampere+)
        dtype = torch.float32 if device.type == "cpu" else precision.torch_dtype(precision.native_half(device))
        if kind == "int8":
            cfg = BitsAndBytesConfig(load_in_8bit=True)
        else:
            cfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
        with tempfile.TemporaryDirectory() as tmp:  # bitsandbytes quantizes while loading a checkpoint
            model.save_pretrained(tmp)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                q = AutoModelForCausalLM.from_pretrained(tmp, quantization_config=cfg, device_map=str(device),
                                                         dtype=dtype)
        where = "its CPU kernels" if device.type == "cpu" else f"its CUDA kernels, {precision.canonical(dtype)} compute"
        return _module_result(q, device, f"bitsandbytes, quantized at load time; {where}")

    return apply


def _ort(bits: int):
    def apply(model, source, device):
        import onnxruntime as ort  # optional package

        ids = torch.zeros(1, 8, dtype=torch.long)
        graph = Graph(f"{source.replace('/', '--')}-quant", LogitsOnly(_on_cpu(model)).eval(), (ids,), ("input_ids",),
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
    """An ORT GenAI model behind the `session.run(None, {"input_ids": ...})` call `QuantizedModel.logits` makes."""

    def __init__(self, built: genai_format.GenAIModel):
        self.built = built

    def run(self, _outputs, feeds: dict) -> list:
        return [self.built.logits(feeds["input_ids"].tolist())]


def _genai(bits: str):
    def apply(model, source, device):
        path = genai_format.build_genai(models.checkpoint_dir(source), bits)
        built = genai_format.load_genai(path, bits, threads=torch.get_num_threads())
        notes = (f"ONNX Runtime GenAI: {bits} weights in MatMulNBits blocks of 32, int8 dot products, "
                 "KV cache kept in place, C++ decode loop")  # fmt: skip
        size = built.weight_bytes
        return QuantizedModel(None, _GenAILogits(built), size, size, notes, genai=built)

    return apply


def _genai_covers(source: str) -> None:
    genai_format.check_available(models.get_config(source).model_type)


def _gguf(model, source, device):
    # What runs is the GGUF dequantized by transformers (the registry's offline SmolLM2): fp32 weights on the Q4_1
    # grid, so its bytes and speed are fp32's. With the Hub's weights as `source`, it is loaded next to them.
    dequantized = _on_cpu(model) if source == smollm2.NAME else models.load_model(smollm2.NAME, device="cpu")[0]
    file_mib = smollm2.gguf_tensor_bytes() / 2**20
    notes = (f"the Q4_1 GGUF ({file_mib:.1f} MiB of tensors) dequantized to fp32 by transformers and run by PyTorch: "
             "bytes and speed of those fp32 weights; llama.cpp would run the 4-bit file itself")
    return _module_result(dequantized, device, notes)


def _smollm2_only(source: str) -> None:
    if source not in (smollm2.NAME, smollm2.HUB_ID):
        raise QuantizerUnavailable("gguf-q4_1 is the file SmolLM2 ships in; other models need llama.cpp's converter")


QUANTIZERS: dict[str, Quantizer] = {q.name: q for q in (
    Quantizer("fp32", "torch", "nothing: the reference", ("cpu", "cuda"), _cast(torch.float32)),
    Quantizer("fp16", "torch", "every weight and activation in float16", ("cpu", "cuda"), _cast(torch.float16)),
    Quantizer("bf16", "torch", "every weight and activation in bfloat16", ("cpu", "cuda"), _cast(torch.bfloat16)),
    Quantizer("int8-dynamic", "torch.ao", "Linear weights int8 offline, activations int8 at run time", ("cpu",),
              _int8_dynamic),
    Quantizer("int8-weight", "torchao", "Linear weights int8, math in fp32", ("cpu", "cuda"), _torchao_int8_weight,
              "torchao"),
    Quantizer("int4-weight", "optimum-quanto", "Linear weights int4 (groups), math in fp32", ("cpu", "cuda"),
              _quanto(4), "optimum.quanto"),
    Quantizer("quanto-int8", "optimum-quanto", "Linear weights int8, math in fp32", ("cpu", "cuda"), _quanto(8),
              "optimum.quanto"),
    Quantizer("bnb-int8", "bitsandbytes", "LLM.int8(): int8 weights, outlier columns in float", ("cpu", "cuda"),
              _bnb("int8"), "bitsandbytes"),
    Quantizer("bnb-nf4", "bitsandbytes", "4-bit NormalFloat weights; compute in fp32 (CPU) or the GPU's 16-bit float",
              ("cpu", "cuda"), _bnb("nf4"), "bitsandbytes"),
    Quantizer("ort-int8", "onnxruntime", "MatMul weights int8 in the ONNX graph, dynamic activations", ("cpu",),
              _ort(8), "onnxruntime"),
    Quantizer("ort-int4", "onnxruntime", "MatMul weights 4-bit in blocks of 32 (MatMulNBits)", ("cpu",), _ort(4),
              "onnxruntime"),
    Quantizer("genai-int8", "onnxruntime-genai", "weights int8 per block of 32 (MatMulNBits), activations int8 "
              "inside the kernel; whole decode loop in C++", ("cpu",), _genai("int8"), "onnxruntime_genai",
              _genai_covers),
    Quantizer("genai-int4", "onnxruntime-genai", "weights 4-bit per block of 32 (MatMulNBits), activations int8 "
              "inside the kernel; whole decode loop in C++", ("cpu",), _genai("int4"), "onnxruntime_genai",
              _genai_covers),
    Quantizer("gguf-q4_1", "gguf", "the shipped Q4_1 file (4-bit blocks of 32, scale and minimum) dequantized to fp32 "
              "and run as fp32 by PyTorch", ("cpu",), _gguf, "gguf", _smollm2_only),
)}  # fmt: skip


def quantize(name: str, source: str = "smollm2-135m", device: str = "cpu", model=None) -> QuantizedModel:
    """Quantize a registered model with quantizer `name`.

    Args:
        name: one of QUANTIZERS (e.g. "int8-dynamic", "ort-int4", "genai-int4", "gguf-q4_1").
        source: the registered model name (ORT GenAI builds from its checkpoint; loaded when `model` is None).
        device: "cpu", "cuda", "cuda:N" or "auto": where the quantized weights are placed and computed with (one of
            the quantizer's `devices`; `Quantizer.runs_on` picks the CPU for a CPU-only one).
        model: the fp32 source model, on any device (each quantizer works on its own copy; the caller's model is
            never moved or changed). None: loaded on the CPU.
    Returns:
        a QuantizedModel: `model` (a transformers LM on `device`) or `session` (ONNX, forward only; `genai` for ORT
        GenAI), stored and resident bytes, notes, and `device`.
    Raises:
        ValueError: for an unknown quantizer or device string, naming the valid choices.
        Unavailable: before any work, when it cannot run here (`QuantizerUnavailable`: device, package, model;
            `convert.genai.GenAIUnavailable`; `hardware.CapabilityMissing` for CUDA without a GPU).
    """
    if name not in QUANTIZERS:
        raise ValueError(f"unknown quantizer {name!r}; choose from {list(QUANTIZERS)}")
    q = QUANTIZERS[name]
    dev = q.ensure_available(source, device)
    if model is None:
        model, _ = models.load_model(source, device="cpu")
    result = q.apply(model, source, dev)
    result.name, result.device = name, dev
    return result


__all__ = ["QUANTIZERS", "QuantizedModel", "Quantizer", "QuantizerUnavailable", "quantize", "resident_bytes",
           "stored_bytes"]  # fmt: skip
