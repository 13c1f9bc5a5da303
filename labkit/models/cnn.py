"""A small CNN trained in seconds on scikit-learn's bundled 8×8 digits.

It gives the classic engine story a real graph: convolutions (layout: NCHW vs blocked NCHWc),
conv + batch-norm + ReLU fusion, constant folding.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from labkit.cache import cache_dir

NAME = "digits-cnn"


class DigitsCNN(nn.Module):
    """conv-bn-relu ×2 -> pool -> linear: (batch, 1, 8, 8) -> (batch, 10) logits."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.MaxPool2d(2),  # (batch, 2w, 4, 4)
        )  # fmt: skip
        self.head = nn.Linear(2 * width * 16, 10)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixels).flatten(1))


@functools.lru_cache(maxsize=1)
def digits() -> dict[str, torch.Tensor]:
    """scikit-learn's 1797 8×8 digit images, scaled to [0, 1], split 80/20 with a fixed seed (cached).

    Returns:
        {"x_train": (n, 1, 8, 8) float32, "y_train": (n,) int64, "x_test", "y_test"}.
    """
    from sklearn.datasets import load_digits  # here: scikit-learn is optional (the `engines` extra)

    data = load_digits()
    x = torch.tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)  # (n, 1, 8, 8)
    y = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    cut = int(0.8 * len(y))
    train, test = order[:cut], order[cut:]
    return {"x_train": x[train], "y_train": y[train], "x_test": x[test], "y_test": y[test]}


def train_digits_cnn(epochs: int = 8, batch_size: int = 64, seed: int = 0) -> tuple[DigitsCNN, float]:
    """Train the CNN from scratch with AdamW (lr 3e-3) and cross-entropy, on the CPU, in about 10 s.

    Args:
        epochs: passes over the training images. batch_size: images per step. seed: weights and batch order.
    Returns:
        (model in eval mode, test accuracy in 0..1).
    """
    d = digits()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DigitsCNN()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            model.train()
            for idx in torch.randperm(len(d["y_train"]), generator=gen).split(batch_size):
                loss = nn.functional.cross_entropy(model(d["x_train"][idx]), d["y_train"][idx])
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
    model.eval()
    return model, accuracy(model)


@torch.no_grad()
def accuracy(model: nn.Module) -> float:
    """Share of the held-out test digits the model classifies correctly (0..1)."""
    d = digits()
    return float((model(d["x_test"]).argmax(-1) == d["y_test"]).float().mean())


def load_digits_cnn() -> DigitsCNN:
    """The trained CNN from the cache (trained and saved on first use, ~10 s).

    Returns:
        DigitsCNN in eval mode, fp32, on the CPU.
    """
    path = cache_dir("models") / f"{NAME}.safetensors"
    model = DigitsCNN()
    if path.exists():
        model.load_state_dict(load_file(path))
    else:
        model, _ = train_digits_cnn()
        save_file(model.state_dict(), path)
    return model.eval()


def example_images(batch_size: int = 1) -> torch.Tensor:
    """Real test images, repeated to fill a batch.

    Args:
        batch_size: images wanted (>= 1).
    Returns:
        float32 tensor of shape (batch_size, 1, 8, 8).
    """
    x = digits()["x_test"]
    reps = int(np.ceil(batch_size / len(x)))
    return x.repeat(reps, 1, 1, 1)[:batch_size].contiguous()
