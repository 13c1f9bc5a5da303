"""The decode-backend protocol: one greedy-decode interface over HF transformers, ONNX Runtime GenAI and llama.cpp.

Why they differ in speed at batch 1 (the decode step reads every weight once):
- bytes per token: fp32 4 B/weight, int8 1 B, int4 ~0.56 B (4 bits + a scale per block of 32);
- kernels: HF int8 (torch.ao dynamic) quantizes activations per call; ORT's MatMulNBits and llama.cpp
  read packed 4-bit blocks and multiply with int8 dot products (VNNI/AMX) without unpacking to float;
- overhead per step: HF runs ~30 layers × ~10 ops from Python (dispatch costs more than the math for a
  135M model); ORT GenAI and llama.cpp run the whole step in C++ with the KV cache kept in place.

Every backend's `generate()` is timed by `labkit.decoding.timing`, so their tokens/s mean the same thing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch

from labkit.decoding.timing import DecodeRun
from labkit.hardware import Unavailable, resolve_device


class BackendUnavailable(Unavailable):
    """A decode backend cannot run here (missing package, no model file, a CPU it cannot run on); says why."""


class DecodeBackend(ABC):
    """A greedy decoder of a causal LM: `load()` once, then `generate()` (timed) and `logits()`.

    Attributes:
        name: registry name, e.g. "ort-genai-int4".
        description: one line for tables.
        exact: same arithmetic as HF fp32, so greedy tokens must match HF's token for token.
        weight_bytes: bytes of the weights as this backend holds them (set by `load`).
        step_bytes: bytes one batch-1 decode step reads (`generation.step_bytes`: an embedding table stored apart
            from the head counts one row; set by `load`; 0 = unknown, use weight_bytes).
        max_batch: the most sequences it decodes together (None: no limit).
        devices: the device types it decodes on ("cpu", "cuda").
    """

    name: str
    description: str
    exact: bool
    weight_bytes: int = 0
    step_bytes: int = 0
    max_batch: int | None = None
    devices: tuple[str, ...] = ("cpu",)

    def check_device(self, device: str | torch.device) -> torch.device:
        """The resolved device, when this backend decodes there.

        Raises:
            ValueError: an unknown device string. BackendUnavailable: a device type it does not run on, naming
                the ones it does. CapabilityMissing: CUDA asked for without a GPU.
        """
        dev = resolve_device(device)
        if dev.type not in self.devices:
            raise BackendUnavailable(f"{self.name} decodes on {list(self.devices)}, not {str(device)!r}")
        return dev

    def available(self, model: str) -> tuple[bool, str]:
        """Whether this backend can run `model` here, checked without loading anything heavy.

        Returns:
            (True, "") or (False, why not and how to get it).
        """
        return True, ""

    @abstractmethod
    def load(self, model: str, threads: int, device: str | torch.device = "cpu") -> None:
        """Load (building or converting once, cached) the registered `model` to decode with `threads` threads on
        `device` (one of `devices`; `check_device` raises BackendUnavailable otherwise)."""

    @abstractmethod
    def generate(self, prompts: list[list[int]], new_tokens: int, warmup: int = 1, repeat: int = 1) -> DecodeRun:
        """Greedy continuation of equal-length prompts, timed by `decoding.timing`.

        Args:
            prompts: (batch, prompt_len) token ids, all the same length.
            new_tokens: tokens generated per prompt (exactly this many; EOS does not stop it).
            warmup: untimed generations first. repeat: timed generations (medians over them).
        Returns:
            DecodeRun: tokens (batch, new_tokens) of the last repeat, prefill_s (TTFT), step_s, decode_tok_s, ...
        Raises:
            ValueError: for more prompts than `max_batch`.
        """

    def logits(self, prompts: list[list[int]]) -> np.ndarray | None:
        """Next-token logits over the prompts (teacher forcing).

        Args:
            prompts: (batch, seq) token ids.
        Returns:
            (batch, seq, vocab) float32 logits, or None when the backend does not expose them.
        """
        return None
