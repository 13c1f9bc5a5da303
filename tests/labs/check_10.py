"""Lab 10 (ZeRO sharding): what its smoke run recorded, against ZeRO's formulas, DeepSpeed's own estimator, the ring
algorithms' byte counts, hand counts and labkit.models.specs."""

import math

from labkit.models import specs
from tests.hand_counts import bloom_params
from tests.labs.ranks import check_ranks_device


def _deepspeed_zero3_gpu_bytes(total: float, largest: float, gpus: int) -> float:
    """DeepSpeed's estimate per GPU without offload (deepspeed/runtime/zero/stage3.py,
    estimate_zero3_model_states_mem_needs), called when DeepSpeed is importable, else its two lines."""
    try:
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    except ImportError:
        return 4 * largest + int(18 * total / gpus)
    return estimate_zero3_model_states_mem_needs(total, largest, num_gpus_per_node=gpus, num_nodes=1,
                                                 cpu_offload=False, cpu_offload_params=False)[1]


def check(r: dict) -> None:
    n = r["world_size"]
    check_ranks_device(r, world_size=n, nccl_ok=False)  # DeepSpeed's gloo ranks: on this CPU, recorded as such
    assert n == 2 and r["params_M"] > 1
    methods = {"deepspeed-0", "deepspeed-1", "deepspeed-2", "deepspeed-3", "torch-zero-redundancy", "torch-fsdp2"}
    assert set(r["measured_over_formula"]) == methods
    assert all(abs(v - 1) < 0.05 for v in r["measured_over_formula"].values())  # within 5 % of the formula
    t = r["total_MB"]
    assert t["deepspeed-0"] > t["deepspeed-1"] > t["deepspeed-2"] > t["deepspeed-3"]
    assert r["loss_spread"] < 1e-3  # same training result whatever the sharding
    # Stage 3 and FSDP2 gather one Linear at a time: (h² + h) fp32 parameters, h² + h = params / layers.
    for method in ("deepspeed-3", "torch-fsdp2"):
        assert abs(r["gathered_MB"][method] / r["formula_gathered_MB"][method] - 1) < 0.02
    assert all(r["gathered_MB"][m] == 0 for m in methods - {"deepspeed-3", "torch-fsdp2"})
    # Communication per step (ZeRO, section 7), the paper's convention: stage 3 moves 3Ψ, plain data parallel 2Ψ,
    # 4 bytes per fp32 value.
    c, psi_MB = r["comm_paper_MB"], r["params_M"] * 4
    assert abs(c["deepspeed-3"] / (3 * psi_MB) - 1) < 0.01 and abs(c["torch-fsdp2"] / (3 * psi_MB) - 1) < 0.01
    assert abs(c["deepspeed-0"] / (2 * psi_MB) - 1) < 0.01
    # Measured on gloo's sockets, plain data parallel's all-reduce of Ψ fp32 values sends 2(N - 1)/N of it per rank
    # (a ring), not the paper's 2×.
    assert abs(r["comm_sent_MB"]["deepspeed-0"] / (2 * (n - 1) / n * psi_MB) - 1) < 0.02
    for method in methods:  # gloo's reduce-scatter sends its whole input: 2× the ring's (N - 1)/N
        extra = r["comm_ops"][method].get("reduce_scatter", 0) * (n - 1) / n / 1e6
        assert abs(r["comm_sent_MB"][method] / (r["comm_ring_MB"][method] + extra) - 1) < 0.02, method
    # The ZeRO paper's example with DeepSpeed's byte convention is DeepSpeed's own estimate: 7.5 B on 64 devices,
    # a 50k × 4096 embedding as the largest layer.
    ex = r["example_stage3_GB"]
    assert abs(ex["deepspeed_convention"] * 1e9 - _deepspeed_zero3_gpu_bytes(7.5e9, 50_000 * 4096, 64)) < 10
    assert abs(ex["sharded"] - 7.5e9 * 16 / 64 / 1e9) < 1e-9 and abs(ex["gathered"] - 50_000 * 4096 * 4 / 1e9) < 1e-9
    # BLOOM-176B at stage 3 in an A100-80GB: 16 bytes per parameter over N ranks plus its embedding gathered whole
    # (2 + 2 bytes per parameter) must fit; hand-counted from the published config.
    config = specs.MODEL_CONFIGS["bloom-176b"]
    params, embedding = bloom_params(config), config["vocab_size"] * config["hidden_size"]
    assert (r["bloom176b"]["params"], r["bloom176b"]["largest_layer_params"]) == (params, embedding)
    gpu = specs.A100_80GB.memory_GB * 1e9
    assert r["bloom176b_stage3_min_dp_80GB"] == math.ceil(params * 16 / (gpu - 4 * embedding))
    assert r["bloom176b_stage3_min_dp_80GB_sharded_only"] == math.ceil(params * 16 / gpu)
