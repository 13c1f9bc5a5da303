"""decoding.sampling: the one top-k / top-p / min-p rule, against transformers' own warpers and by hand."""

import pytest
import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from labkit.decoding import sampling


def test_filter_logits_by_hand():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    kept = lambda **kw: torch.isfinite(sampling.filter_logits(logits, **kw)).tolist()  # noqa: E731
    assert kept(top_k=2) == [True, True, False, False]
    assert kept(top_p=0.8) == [True, True, False, False]
    assert kept(top_p=0.81) == [True, True, True, False]
    assert kept(min_p=0.5) == [True, True, False, False]
    assert kept() == [True] * 4


@pytest.mark.parametrize("temperature, top_k, top_p, min_p", [
    (1.0, 5, 1.0, None), (0.7, 0, 0.9, None), (1.3, 0, 1.0, 0.1), (0.8, 20, 0.95, None), (1.0, 50, 0.5, 0.05),
])  # fmt: skip
def test_filter_logits_keeps_what_transformers_keeps(temperature, top_k, top_p, min_p):
    """transformers' warpers in their generate() order are the independent reference."""
    logits = torch.randn(1, 500, generator=torch.Generator().manual_seed(3)) * 3
    warpers = [TemperatureLogitsWarper(temperature)]
    warpers += [TopKLogitsWarper(top_k)] if top_k else []
    warpers += [TopPLogitsWarper(top_p)] if top_p < 1 else []
    warpers += [MinPLogitsWarper(min_p)] if min_p is not None else []
    reference = LogitsProcessorList(warpers)(torch.zeros(1, 1, dtype=torch.long), logits.clone())[0]
    ours = sampling.filter_logits(logits[0], temperature, top_k, top_p, min_p)
    assert torch.equal(torch.isfinite(ours), torch.isfinite(reference))
    assert torch.allclose(ours.softmax(-1), reference.softmax(-1), atol=1e-6)


def test_sample_next_is_greedy_at_zero_temperature_and_draws_only_kept_tokens():
    logits = torch.tensor([1.0, 3.0, 2.0, 0.5])
    assert sampling.sample_next(logits, temperature=0) == 1
    gen = torch.Generator().manual_seed(0)
    draws = {sampling.sample_next(logits, 1.0, top_k=2, generator=gen) for _ in range(200)}
    assert draws == {1, 2}  # both kept tokens appear, the cut ones never


def test_sample_next_is_reproducible_with_a_seeded_generator():
    logits = torch.randn(100, generator=torch.Generator().manual_seed(1))
    a = [sampling.sample_next(logits, 0.9, top_p=0.9, generator=torch.Generator().manual_seed(5)) for _ in range(3)]
    assert len(set(a)) == 1
