"""`measure.launches`: one profiled call's dispatches, checked against operations counted by hand."""

import pytest
import torch

from labkit.measure import launches


def test_count_dispatches_counts_each_aten_operator_on_the_cpu():
    a, b = torch.ones(4), torch.ones(4)
    one = launches.count_dispatches(lambda: torch.add(a, b), "cpu")
    five = launches.count_dispatches(lambda: [torch.add(a, b) for _ in range(5)], "cpu")
    assert one.aten >= 1 and five.aten == 5 * one.aten  # five adds dispatch five times what one does
    assert (one.launches, one.kernels, one.graphs) == (0, 0, 0)  # no CUDA activity on a CPU
    assert one.primary("cpu") == one.aten and launches.unit("cpu") == "ATen operator calls (CPU)"


class _Counter(torch.nn.Module):
    """A stand-in model whose generate() runs exactly one add per token: per_token must find exactly one."""

    def generate(self, input_ids, attention_mask, do_sample, max_new_tokens, min_new_tokens, pad_token_id):
        assert max_new_tokens == min_new_tokens and not do_sample
        x = torch.ones(2)
        for _ in range(max_new_tokens):
            x = torch.add(x, x)


def test_per_token_is_the_difference_of_two_generations():
    per = launches.per_token(_Counter(), torch.ones(1, 3, dtype=torch.long), new_tokens=6)
    x = torch.ones(2)
    one_add = launches.count_dispatches(lambda: torch.add(x, x), "cpu").aten  # what one token's work dispatches
    assert per.aten == pytest.approx(one_add)
    with pytest.raises(ValueError, match="new_tokens must be >= 3"):
        launches.per_token(_Counter(), torch.ones(1, 3, dtype=torch.long), new_tokens=2)


@pytest.mark.gpu
def test_count_dispatches_counts_kernel_launches_on_a_gpu():
    a = torch.ones(1024, device="cuda")
    one = launches.count_dispatches(lambda: a + a, "cuda")
    five = launches.count_dispatches(lambda: [a + a for _ in range(5)], "cuda")
    assert one.launches >= 1 and five.launches == 5 * one.launches and five.kernels >= 5
