"""ZeRO: the paper's formula, and real DeepSpeed / PyTorch ranks holding exactly what it predicts."""

import pytest

from labkit.experiments import zero_sharding
from labkit.parallel import zero, zero_training

GB = 1e9


def test_formula_matches_the_papers_example():
    # Rajbhandari et al. (2019), Figure 1: 7.5 B params, 64 GPUs, K = 12 (fp16 params and grads).
    psi, n = 7.5e9, 64
    assert zero.zero_memory(psi, 0, n).total / GB == pytest.approx(120, rel=1e-3)
    assert zero.zero_memory(psi, 1, n).total / GB == pytest.approx(31.4, rel=1e-2)
    assert zero.zero_memory(psi, 2, n).total / GB == pytest.approx(16.6, rel=1e-2)
    assert zero.zero_memory(psi, 3, n).total / GB == pytest.approx(1.9, abs=0.03)  # the paper rounds 1.875
    fp32 = zero.zero_memory(1e6, 2, 4, bytes_per_optimizer_state=12, bytes_per_param=4, bytes_per_grad=4)
    assert (fp32.params, fp32.grads, fp32.optimizer) == (4e6, 1e6, 3e6)
    assert zero.comm_volume(1e6, 2) == 2 * zero.comm_volume(1e6, 3) / 3 == 4e6


def test_bad_input_names_the_choices():
    with pytest.raises(ValueError, match=r"choose from \[0, 1, 2, 3\]"):
        zero.zero_memory(1e6, 4, 2)
    with pytest.raises(ValueError, match="dp_degree"):
        zero.zero_memory(1e6, 1, 0)
    with pytest.raises(ValueError, match="choose from"):
        zero_sharding.train_all_methods(methods=("deepspeed-9",))
    with pytest.raises(ValueError, match="choose from"):
        zero_training.train_ranks(methods=("deepspeed-9",))


def test_explorer_and_table():
    m = zero.memory_explorer(params_billion=176, dp_degree=8, stage=3)
    assert list(m.table.stage) == [0, 1, 2, 3] and "◀" in m.table.label.iloc[3]
    assert m.table.total_GB.is_monotonic_decreasing  # each stage shards more
    assert m.table.total_GB.iloc[0] == pytest.approx(176 * 16)  # (2 + 2 + 12) bytes per param
    table = zero.memory_table((1e9,), (1, 8))
    assert len(table) == 8 and (table[table.dp_degree == 1].total_GB == 16).all()  # N = 1: no saving


def test_measured_bytes_per_rank_match_the_formula_for_every_stage():
    m = zero_sharding.train_all_methods(hidden=1024, layers=4, batch=2, steps=3)  # 4.2 M params, 2 gloo ranks
    df = m.table.set_index("method")
    assert list(df.index) == list(zero_training.METHODS)
    for method, row in df.iterrows():
        assert row["measured/formula"] == pytest.approx(1.0, abs=0.05), method
        for part in ("params", "grads", "optimizer"):
            assert row[f"{part}_MB"] == pytest.approx(row[f"formula_{part}_MB"], rel=0.05), (method, part)
    total = df.total_MB
    assert total["deepspeed-0"] > total["deepspeed-1"] > total["deepspeed-2"] > total["deepspeed-3"]
    assert df.loc["deepspeed-1", "grads_kept_after_backward_MB"] < df.loc["deepspeed-1", "grads_MB"]
    # Same data, same initial weights: every method trains to the same loss.
    assert df.final_loss.max() - df.final_loss.min() < 1e-4 * df.final_loss.mean()
    # Communication per step: plain data parallel 2Ψ, stage 3 / FSDP 3Ψ (fp32 bytes).
    for method in ("deepspeed-0", "deepspeed-3", "torch-fsdp2"):
        assert df.loc[method, "comm_MB_per_step"] == pytest.approx(df.loc[method, "comm_formula_MB"], rel=0.01)
    assert set(df.loc["torch-fsdp2", "comm_ops"]) == {"all_gather", "reduce_scatter"}
    assert set(df.loc["deepspeed-0", "comm_ops"]) == {"all_reduce"}  # plain data parallel: gradients only
