"""Lab 12 (LLM serving): what its smoke run must have recorded."""

import itertools

import pytest

from labkit import anatomy


def check(r: dict) -> None:
    # every engine of the sweeps computed on the recorded device (read from each engine's model), and the step cost
    # was timed on the same hardware
    assert r["served_on"] == [r["device"]]
    assert r["step_measured_on"] in r["device"]
    assert set(r["schedulers"]) >= {"sync", "dynamic", "continuous"}
    assert all(r["greedy_parity"].values()), r["greedy_parity"]  # batching never changes greedy's text
    assert r["all_succeeded"]
    # open loop: the queue holds every request of a run, so each one sent must come back answered
    assert r["open_loop_succeeded"] and all(n == r["open_loop_requests"] for n in r["open_loop_succeeded"])
    top = max(r["clients"])
    batch = r["mean_decode_batch"]
    assert batch[f"sync@{top}"] == 1 and batch[f"continuous@{top}"] > 2  # continuous really batches
    assert r["continuous_over_sync"] > 1.5  # loose: the CPU is shared during tests
    # the step cost that bounds batching: measured at batch 1 and at the top concurrency, with its ridge point
    assert r["step_batches"] == [1, top]
    # more sequences never make a step cheaper (on a GPU the smoke model's step is launch-bound: no order to see)
    assert r["step_ratio_top_vs_1"] > 1 or r["device_type"] == "cuda"
    # the ridge as a batch: FLOP/s ÷ bandwidth (FLOP/byte) × 4 B per fp32 weight ÷ 2 FLOPs per weight and sequence
    assert r["step_ridge_batch"] == pytest.approx(r["step_gflops"] / r["step_bandwidth_GBps"] * 4 / 2)
    ttft = r["ttft_p50_s"]
    assert ttft[f"continuous@{top}"] < ttft[f"sync@{top}"]  # nobody waits for a whole generation
    assert r["timeline_ttft_p50_s"]["continuous"] < r["timeline_ttft_p50_s"]["sync"]
    # section 6, the paged engine. KV waste: a sequence's blocks leave at most one block (minus a token) empty,
    # whatever the load; the padded batch's rows pad to the longest
    block = r["kv_block_size"]
    assert r["kv_max_unfilled_per_seq"]["paged"] <= block - 1
    assert r["kv_waste_pct"]["paged"] < r["kv_waste_pct"]["padded"]
    assert r["kv_waste_same_tokens"]
    # one KV budget: the reservation rule admits the first requests whose prompt + max_tokens fit together; the paged
    # engine's first step admits those whose prompt blocks fit its pool of ceil(budget / block) blocks with one block
    # left for each sequence admitted before (its next token's)
    budget, prompts, news = r["budget_kv_tokens"], r["budget_prompt_tokens"], r["budget_max_tokens"]
    reserved = list(itertools.accumulate(p + m for p, m in zip(prompts, news, strict=True)))
    assert r["budget_first"]["reserve"] == sum(t <= budget for t in reserved)
    blocks = list(itertools.accumulate(-(-p // block) for p in prompts))
    assert r["budget_first"]["paged"] == sum(n + i <= -(-budget // block) for i, n in enumerate(blocks))
    assert r["budget_peak"]["paged"] > r["budget_peak"]["reserve"]
    # prefix caching: every timed request finds the system prompt's full blocks (the warm-up computed them)
    n, prefix = r["prefix_requests"], r["prefix_tokens"]
    assert r["prefix_hit_rate"] == pytest.approx(n * (prefix // block * block) / r["prefix_prompt_tokens_sent"])
    ttft = r["prefix_ttft_p50_s"]
    on, off, none = ttft["system prompt, caching on"], ttft["system prompt, caching off"], ttft["no system prompt"]
    if r["device_type"] == "cpu":  # a prefill's time grows with its tokens: caching saves most of it
        assert on * 2 < off  # loose: the CPU is shared
    else:  # seen on an H200 with the smoke run's tiny model: a 512-token prefill cost one step's launches (9.4 ms
        # with or without the prefix, 9.0 ms with none; in a second run 5.3 off, 7.0 on, 5.8 none, with three other
        # labs on the box). What the lab says then: the prefix cost little, so caching could save little; nor may it
        # cost a second prefill (loose: a few ms, shared with neighbours)
        assert off - none < 0.5 * none or on * 2 < off
        assert on < 2 * off
    assert r["prefix_same_tokens"]
    # chunked prefill: decoders wait for one chunk's step, not the whole prompt's; the tokens do not change
    gap_max, gap_p50 = r["chunk_gap_max_s"], r["chunk_gap_p50_s"]
    if r["device_type"] == "cpu":
        assert gap_max["chunked"] < gap_max["whole"]
    else:  # where the whole prompt's step costs about a decode step (launch-bound), there is no stall to bound
        assert gap_max["whole"] < 2 * gap_p50["whole"] or gap_max["chunked"] < gap_max["whole"]
    assert r["chunk_same_tokens"]
    # section 7: the same paged scheduler over both runners; every request answered. On the CPU the ONNX Runtime
    # runner's decode step (one graph call) is faster than the transformers model's (hundreds of op dispatches);
    # on a GPU it refuses, naming the CPU
    assert r["engine_all_succeeded"]
    one = min(r["engine_clients"])
    decode = r["engine_decode_tok_s"]
    if r["device_type"] == "cpu":
        assert decode[f"paged+onnxruntime@{one}"] > decode[f"paged+torch@{one}"]
    else:
        assert "CPU" in r["engine_unavailable"]["paged+onnxruntime"]
    assert r["peer_source"] == "" or "vLLM" in r["peer_source"] or "benchmarks/serving.py" in r["peer_source"]
    # section 8, padding removal: the padding share and the layouts' sizes from the recorded lengths alone
    lengths = r["pad_lengths"]
    b, m, t = len(lengths), max(lengths), sum(lengths)
    assert r["pad_share"] == pytest.approx(1 - t / (b * m))
    assert r["pad_tokens"] == {"padded": b * m, "packed": t, "varlen": t}
    assert r["pad_attention_pairs"] == {"padded": b * m * m, "packed": t * t,
                                        "varlen": sum(n * (n + 1) // 2 for n in lengths)}
    # the predicted speed-up, from the model's config: 2 FLOPs per matmul weight per token, 4 · hidden_attn per pair
    d = anatomy.dims(r["model"])
    linear = 2 * d.layers * d.hidden * (2 * d.heads * d.head_dim + 2 * d.kv_heads * d.head_dim + 3 * d.intermediate)
    pair = 4 * d.layers * d.heads * d.head_dim
    flops = {k: linear * r["pad_tokens"][k] + pair * r["pad_attention_pairs"][k] for k in r["pad_tokens"]}
    assert r["pad_predicted_speedup"] == pytest.approx({k: flops["padded"] / f for k, f in flops.items()})
    # packing changes no real token's logits (fp32; the padded batch is the reference)
    assert max(r["pad_max_abs_diff"].values()) < 1e-3
    assert r["pad_speedup"]["padded"] == 1
    # compute-bound on a CPU: 30% of the predicted gain must show (loose: the CPU is shared). The smoke run's lengths
    # reach 128 so that the gain stands above the noise: on a 2-core AMD EPYC, ten runs each measured 1.08-1.59x for
    # lengths 8-64 (1.36x predicted; CI once saw < 1.11x) and 1.48-1.91x for 8-128 (1.79x predicted)
    if r["device_type"] == "cpu":
        assert r["pad_speedup"]["varlen"] > 1 + 0.3 * (r["pad_predicted_speedup"]["varlen"] - 1)
