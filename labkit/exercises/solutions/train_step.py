"""The training-step exercise's answer (PyTorch's training loop with gradient-norm clipping, Pascanu et al. 2013)."""

from __future__ import annotations

import torch


def train_step(model, optimizer, batch: torch.Tensor) -> float:
    """One optimisation step of a causal LM: forward, next-token loss, backward, clip the gradient norm to 1, step.

    Args:
        model: a transformers causal LM. optimizer: a torch optimizer over its parameters.
        batch: (batch, seq) token ids; the model shifts them into next-token targets itself (labels=batch).
    Returns:
        the batch's mean cross-entropy before the update (nats per token), as a float.
    """
    model.train()  # dropout on (and any layer that behaves differently in training)
    loss = model(input_ids=batch, labels=batch).loss  # forward: a 0-dim tensor holding the graph
    loss.backward()  # a gradient in every parameter's .grad
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)  # rescale all gradients if their norm > 1
    optimizer.step()  # update the weights (and the optimizer's state)
    optimizer.zero_grad(set_to_none=True)  # or the next backward adds to these gradients
    return loss.item()  # a float: the graph can be freed
