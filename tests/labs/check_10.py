"""Lab 10 (ZeRO sharding): what its smoke run recorded, against ZeRO's formulas and labkit.models.specs."""

import math

from labkit.models import specs


def check(r: dict) -> None:
    assert r["world_size"] == 2 and r["params_M"] > 1
    assert set(r["measured_over_formula"]) == {"deepspeed-0", "deepspeed-1", "deepspeed-2", "deepspeed-3",
                                               "torch-zero-redundancy", "torch-fsdp2"}
    assert all(abs(v - 1) < 0.05 for v in r["measured_over_formula"].values())  # within 5 % of the formula
    t = r["total_MB"]
    assert t["deepspeed-0"] > t["deepspeed-1"] > t["deepspeed-2"] > t["deepspeed-3"]
    assert r["loss_spread"] < 1e-3  # same training result whatever the sharding
    # Communication per step (ZeRO, section 7): stage 3 moves 3Ψ, plain data parallel 2Ψ, 4 bytes per fp32 value.
    c, psi_MB = r["comm_MB_per_step"], r["params_M"] * 4
    assert abs(c["deepspeed-3"] / (3 * psi_MB) - 1) < 0.01 and abs(c["torch-fsdp2"] / (3 * psi_MB) - 1) < 0.01
    assert abs(c["deepspeed-0"] / (2 * psi_MB) - 1) < 0.01
    # BLOOM-176B's model states at stage 3: (2 + 2 + 12) bytes per parameter over N ranks must fit in an A100-80GB.
    params = specs.BLOOM_176B_BF16_GB * 1e9 / 2
    assert r["bloom176b_stage3_min_dp_80GB"] == math.ceil(params * 16 / (specs.A100_80GB.memory_GB * 1e9))
