"""Launches per decoded token with torch.profiler: the same function on the CPU (ATen operator calls) and a GPU."""

import pytest

from labkit.experiments import cuda_graphs


def test_dispatches_per_token_are_a_per_step_constant():
    short = cuda_graphs.launches_per_token("tiny-llama", device="cpu", new_tokens=4)
    long = cuda_graphs.launches_per_token("tiny-llama", device="cpu", new_tokens=8)
    # a second measurement over another number of tokens: every decode step dispatches the same operators
    assert short.launches_per_token == long.launches_per_token
    layers, linears_per_layer = 4, 7  # q, k, v, o, gate, up, down
    assert long.launches_per_token >= layers * linears_per_layer + 1  # + the LM head: at least one op each
    assert (long.device, long.counted, long.kernels_per_token) == ("cpu", "ATen operator calls (CPU)", None)
    table = cuda_graphs.launch_table([short, long])
    assert list(table.launches_per_token) == [short.launches_per_token] * 2 and "hardware" in table.attrs


def test_bad_input_is_refused_before_loading():
    with pytest.raises(ValueError, match="new_tokens >= 3"):
        cuda_graphs.launches_per_token("tiny-llama", device="cpu", new_tokens=2)
    with pytest.raises(ValueError, match="choose from"):
        cuda_graphs.launches_per_token("tiny-llama", device="tpu")


@pytest.mark.gpu
def test_cuda_graphs_replace_kernel_launches_with_one_graph_launch():
    eager = cuda_graphs.launches_per_token("tiny-llama", device="cuda", new_tokens=8)
    graphs = cuda_graphs.launches_per_token("tiny-llama", device="cuda", new_tokens=8, compile=True)
    assert eager.launches_per_token > 4 * 7 and eager.kernels_per_token > 4 * 7  # every linear of every layer
    assert graphs.graph_launches_per_token >= 1 and graphs.launches_per_token < eager.launches_per_token
