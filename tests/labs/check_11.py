"""Lab 11 (DeepSpeed-Inference and ZeRO-Inference): what its smoke run recorded."""


def check(r: dict) -> None:
    assert r["deepspeed_version"].count(".") >= 2
    assert r["op_compile_s"] is None or r["op_compile_s"] >= 0
    diffs = r["tp_max_abs_diff"]
    assert diffs["DeepSpeed AutoTP"] < 1e-4  # AutoTP computes what one process computes
    assert all(v < 1e-4 for k, v in diffs.items() if k != "labkit TP / DTensor"), diffs  # (nan if tp.py is missing)
    assert all(v > 0 for k, v in r["tp_ms"].items() if k != "labkit TP / DTensor")
    assert "expanded size of the tensor" in r["bloom_error_without_fix"] and r["bloom_fixed_same_tokens"]
    assert r["zi_same_as_single_process"] and len(set(r["zi_prompts"])) == 2  # different prompt per rank
    full, held = r["zi_weights_held_MB"]
    assert abs(held / full - 0.5) < 0.01  # ZeRO-3: each of 2 ranks stores half the weights
    assert all(v > 0 for v in r["zi_aggregate_tok_s"]) and r["zi_speedup"] > 0
    assert abs(r["published_speedup_bs1"] - 5.2) < 0.05  # 230.38 / 44.02
