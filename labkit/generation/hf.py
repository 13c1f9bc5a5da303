"""Hugging Face transformers as a decode backend: `generate()` at a precision from `labkit.quant`, optionally with
a static KV cache and torch.compile; and the fp32 greedy tokens every exact backend must reproduce."""

from __future__ import annotations

import numpy as np
import torch

from labkit import models, quant
from labkit.decoding.timing import DecodeRun, static_cache_compile, time_greedy
from labkit.generation.base import DecodeBackend
from labkit.generation.step_bytes import module_step_bytes
from labkit.hardware import resolve_device


class HFBackend(DecodeBackend):
    """transformers `generate()`; precision via `labkit.quant`; optionally a static cache + torch.compile."""

    def __init__(self, name: str, quantizer: str, compiled: bool = False, description: str = ""):
        self.name, self.quantizer, self.compiled, self.description = name, quantizer, compiled, description
        self.exact = quantizer == "fp32"
        self.devices = quant.QUANTIZERS[quantizer].devices if quantizer in quant.QUANTIZERS else ("cpu", "cuda")

    @classmethod
    def of(cls, q: quant.QuantizedModel) -> HFBackend:
        """A backend over an already quantized transformers model (`q.model` must not be None)."""
        backend = cls(q.name, q.name, description=q.notes)
        backend._use(q)
        return backend

    def _use(self, q: quant.QuantizedModel) -> None:
        self.model, self.weight_bytes = q.model, q.resident_bytes
        self.step_bytes = module_step_bytes(q.model, q.resident_bytes)
        self.kwargs = static_cache_compile() if self.compiled else {}

    def load(self, model: str, threads: int, device="cpu") -> None:
        dev = self.check_device(device)
        torch.set_num_threads(threads)
        self._use(quant.quantize(self.quantizer, source=model, device=dev))

    def generate(self, prompts: list[list[int]], new_tokens: int, warmup: int = 1, repeat: int = 1) -> DecodeRun:
        ids = torch.tensor(prompts, device=self.model.device)
        return time_greedy(self.model, ids, new_tokens, warmup=warmup, repeat=repeat, **self.kwargs)

    @torch.no_grad()  # not inference_mode: optimum-quanto's weights cannot be used inside it
    def logits(self, prompts: list[list[int]]) -> np.ndarray:
        ids = torch.tensor(prompts, device=self.model.device)
        return self.model(input_ids=ids, use_cache=False).logits.float().cpu().numpy()


def reference_tokens(model: str, prompts: list[list[int]], new_tokens: int,
                     device: str | torch.device = "cpu") -> list[list[int]]:
    """The HF fp32 greedy continuation that exact backends must reproduce token for token.

    Args:
        model: a registered model name. prompts: (batch, prompt_len) equal-length token ids.
        new_tokens: tokens generated per prompt. device: where the reference runs ("cpu": the cached model).
    Returns:
        (batch, new_tokens) token ids: one generation by `decoding.timing.time_greedy`, the greedy every HF
        backend runs.
    Raises:
        ValueError: an unknown model or device. CapabilityMissing: CUDA asked for without a GPU.
    """
    dev = resolve_device(device)
    net = models.load_cached(model)[0] if dev.type == "cpu" else models.load_model(model, device=dev)[0]
    return time_greedy(net, torch.tensor(prompts, device=dev), new_tokens, warmup=0, repeat=1).tokens
