"""The workloads engines are compared on: causal LMs (input_ids -> logits) and the digits CNN."""

from __future__ import annotations

import functools

import torch

from labkit import models
from labkit.convert import Graph
from labkit.models import cnn

WORKLOADS = ("tiny-bloom", "tiny-llama", "smollm2-135m", cnn.NAME)


class _BloomGeluForward(torch.nn.Module):
    """BLOOM's GELU without its custom autograd.Function (same forward math).

    transformers wraps the tanh-GELU in a Python `autograd.Function` (for a hand-written backward);
    TorchScript cannot save a graph that calls Python, and inference never needs the backward.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from transformers.models.bloom.modeling_bloom import bloom_gelu_forward

        return bloom_gelu_forward(x)


def _export_friendly(model: torch.nn.Module) -> torch.nn.Module:
    for name, child in model.named_children():
        if type(child).__name__ == "BloomGelu":
            setattr(model, name, _BloomGeluForward())
        else:
            _export_friendly(child)
    return model


class LogitsOnly(torch.nn.Module):
    """(batch, seq) token ids -> (batch, seq, vocab) logits; no KV cache, no dict outputs (export-friendly)."""

    def __init__(self, lm: torch.nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids=input_ids, use_cache=False).logits


@functools.lru_cache(maxsize=8)
def _module(name: str) -> torch.nn.Module:
    if name == cnn.NAME:
        return cnn.load_digits_cnn()
    model, _ = models.load_model(name, device="cpu")  # the export source and fp32 reference; engines copy it to theirs
    return LogitsOnly(_export_friendly(model)).eval()


def graph_for(name: str, batch_size: int = 1, seq_len: int = 32) -> Graph:
    """A workload by name with example inputs of the given shape.

    Args:
        name: one of WORKLOADS: "tiny-bloom", "tiny-llama", "smollm2-135m" (causal LMs: (batch, seq) token ids ->
            (batch, seq, vocab) logits, no KV cache) or "digits-cnn" ((batch, 1, 8, 8) images -> (batch, 10)).
        batch_size: examples in the batch (>= 1).
        seq_len: tokens per example for the LMs (>= 1; ignored by the CNN). Token ids are random but seeded by the
            shape; the CNN gets real digits.
    Returns:
        a `convert.Graph` (the module is loaded once per process and shared between shapes).
    Raises:
        ValueError: for an unknown workload (naming the valid ones) or a size < 1.
    """
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; choose from {list(WORKLOADS)}")
    if batch_size < 1 or seq_len < 1:
        raise ValueError(f"batch_size and seq_len must be >= 1, got {batch_size} and {seq_len}")
    module = _module(name)
    if name == cnn.NAME:
        return Graph(name, module, (cnn.example_images(batch_size),), ("pixels",), {"pixels": {0: "batch"}})
    vocab = module.lm.config.vocab_size
    ids = torch.randint(0, vocab, (batch_size, seq_len), generator=torch.Generator().manual_seed(batch_size * seq_len))
    return Graph(name, module, (ids,), ("input_ids",), {"input_ids": {0: "batch", 1: "seq"}})
