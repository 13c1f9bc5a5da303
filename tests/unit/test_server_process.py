"""labkit's server in its own process (as the serving benchmark runs it beside vLLM): it serves, its /metrics count
the decode steps it ran, and it ends with the block."""

import os

import pytest

from labkit.serving.loadgen import run_load
from labkit.serving.server_process import decode_counts, labkit_server


def test_a_server_process_serves_and_counts_one_decode_step_per_later_token():
    with labkit_server("tiny-llama", "paged", max_batch=4, max_queue=8) as server:
        steps0, seqs0 = decode_counts(server.url)
        result = run_load(server.url, server.model, clients=1, requests=3, max_tokens=6)
        steps1, seqs1 = decode_counts(server.url)
        pid = server.pid
    assert result.summary["succeeded"] == 3
    tokens = int(result.records.tokens.sum())
    # one client: each decode step computes one sequence, and each request's first token comes from its prefill
    assert steps1 - steps0 == tokens - 3
    assert seqs1 - seqs0 == steps1 - steps0
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # ended with the block


def test_unknown_limits_are_refused_by_name_before_a_process_starts():
    with pytest.raises(ValueError, match="prefill_chunk"), labkit_server("tiny-llama", "paged", block=16):
        pass
