"""Lab 10 (ZeRO sharding): what its smoke run recorded."""


def check(r: dict) -> None:
    assert r["world_size"] == 2 and r["params_M"] > 1
    assert set(r["measured_over_formula"]) == {"deepspeed-0", "deepspeed-1", "deepspeed-2", "deepspeed-3",
                                               "torch-zero-redundancy", "torch-fsdp2"}
    assert all(abs(v - 1) < 0.05 for v in r["measured_over_formula"].values())  # within 5 % of the formula
    t = r["total_MB"]
    assert t["deepspeed-0"] > t["deepspeed-1"] > t["deepspeed-2"] > t["deepspeed-3"]
    assert r["loss_spread"] < 1e-3  # same training result whatever the sharding
    c, f = r["comm_MB_per_step"], r["comm_formula_MB"]
    assert abs(c["deepspeed-3"] / f["deepspeed-3"] - 1) < 0.01 and abs(c["torch-fsdp2"] / f["torch-fsdp2"] - 1) < 0.01
    assert r["bloom176b_stage3_min_dp_80GB"] == 36  # 176e9 × 16 B / 80 GB = 35.2 -> 36
