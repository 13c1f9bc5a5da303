"""What converters export and engines run: a PyTorch module with positional tensor inputs and an example."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass(frozen=True)
class Graph:
    """A module to convert or run: `module(*example)` -> one output tensor.

    Attributes:
        name: a label, also the stem of cached files (e.g. "tiny-bloom").
        module: the PyTorch module; run in eval mode.
        example: example inputs, e.g. ((batch, seq) token ids,) or ((batch, 1, 8, 8) images,).
        input_names: one name per input, in order (e.g. ("input_ids",)).
        dynamic_axes: input name -> {axis: symbolic name}, e.g. {"input_ids": {0: "batch", 1: "seq"}}.
        output_name: the name of the single output (e.g. "logits").
    """

    name: str
    module: torch.nn.Module
    example: tuple[torch.Tensor, ...]
    input_names: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)
    output_name: str = "logits"

    def feeds(self, inputs: tuple[torch.Tensor, ...]) -> dict[str, np.ndarray]:
        """Inputs as a name -> numpy dict, the form ONNX Runtime and OpenVINO take."""
        return {n: t.detach().cpu().numpy() for n, t in zip(self.input_names, inputs, strict=True)}

    @torch.no_grad()
    def reference(self, inputs: tuple[torch.Tensor, ...] | None = None) -> np.ndarray:
        """PyTorch eager fp32 output on `inputs` (default: the example): the ground truth for parity.

        Returns:
            the module's output as a float32 numpy array, e.g. (batch, seq, vocab) logits.
        """
        return self.module(*(inputs or self.example)).float().cpu().numpy()
