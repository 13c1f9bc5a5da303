"""ZeRO: the paper's formula, the layer a stage-3 rank gathers (against DeepSpeed's own estimator), and real
DeepSpeed / PyTorch ranks holding exactly what it predicts."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from labkit import models
from labkit.experiments import zero_sharding
from labkit.models import specs
from labkit.parallel import zero, zero_training

GB = 1e9
DEEPSPEED = zero.CONVENTIONS["DeepSpeed ZeRO-3 estimator (fp32 grad partition)"]
BLOOM = specs.MODEL_CONFIGS["bloom-176b"]
BLOOM_EMBEDDING = BLOOM["vocab_size"] * BLOOM["hidden_size"]  # BLOOM-176B's largest layer


def test_sharded_states_match_the_papers_example():
    # Rajbhandari et al. (2019), Figure 1: 7.5 B params, 64 GPUs, K = 12 (fp16 params and grads).
    psi, n, emb = 7.5e9, 64, 50_000 * 4096
    assert zero.zero_memory(psi, 0, n, emb).sharded_states / GB == pytest.approx(120, rel=1e-3)
    assert zero.zero_memory(psi, 1, n, emb).sharded_states / GB == pytest.approx(31.4, rel=1e-2)
    assert zero.zero_memory(psi, 2, n, emb).sharded_states / GB == pytest.approx(16.6, rel=1e-2)
    stage3 = zero.zero_memory(psi, 3, n, emb)
    assert stage3.sharded_states / GB == pytest.approx(1.9, abs=0.03)  # the paper rounds 1.875
    # ... but a stage-3 rank also holds the 50k × 4096 embedding whole (+ its gradient), 2 + 2 bytes per parameter
    assert stage3.gathered == emb * 4 and stage3.total / GB == pytest.approx(1.875 + 0.8192)
    assert zero.zero_memory(psi, 2, n, emb).gathered == 0  # stages 0–2 keep every parameter whole: counted already
    fp32 = zero.zero_memory(1e6, 2, 4, 0, bytes_per_param=4, bytes_per_grad=4, bytes_per_optimizer_state=12)
    assert (fp32.params, fp32.grads, fp32.optimizer) == (4e6, 1e6, 3e6)
    assert zero.comm_volume(1e6, 2) == 2 * zero.comm_volume(1e6, 3) / 3 == 4e6


def _deepspeed_zero3_gpu_bytes(total: float, largest: float, gpus: int) -> int:
    """DeepSpeed's own ZeRO-3 estimate per GPU, no offload (deepspeed/runtime/zero/stage3.py,
    estimate_zero3_model_states_mem_needs): called when DeepSpeed is installed, else its two lines re-derived:
    largest_layer_memory = 4 * largest_layer_params; gpu_mem = largest_layer_memory + int(18 * total / gpus)."""
    try:
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    except ImportError:
        return 4 * int(largest) + int(18 * total / gpus)
    _cpu, gpu, _largest = estimate_zero3_model_states_mem_needs(
        total, largest, num_gpus_per_node=gpus, num_nodes=1, cpu_offload=False, cpu_offload_params=False)
    return gpu


@pytest.mark.parametrize("total, largest, gpus", [
    (7.5e9, 50_000 * 4096, 64),  # the case: 2.93 GB
    (7.5e9, 50_000 * 4096, 8),
    (1.3e9, 100e6, 16),
    (specs.BLOOM_176B_BF16_GB * 1e9 / 2, BLOOM_EMBEDDING, 384),
], ids=["7.5B-64", "7.5B-8", "1.3B-16", "176B-384"])  # fmt: skip
def test_stage3_total_equals_deepspeeds_estimator(total, largest, gpus):
    p, g, k = DEEPSPEED  # 16-bit parameters, fp32 gradient partition, fp32 master + Adam: 2 + 4 + 12 = 18 bytes
    ours = zero.zero_memory(total, 3, gpus, largest, bytes_per_param=p, bytes_per_grad=g, bytes_per_optimizer_state=k)
    assert ours.total == pytest.approx(_deepspeed_zero3_gpu_bytes(total, largest, gpus), abs=2)
    if (total, gpus) == (7.5e9, 64):
        assert round(ours.total / GB, 2) == 2.93 and ours.sharded_states / GB == pytest.approx(2.109, abs=1e-3)


def test_model_size_finds_the_largest_layer_as_deepspeed_does():
    config = models.get_config("tiny-bloom")
    size = zero.model_size(config)
    model = AutoModelForCausalLM.from_config(config)
    own = [sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules()]  # DeepSpeed's model_to_params
    assert (size.params, size.largest_layer_params) == (sum(p.numel() for p in model.parameters()), max(own))
    assert size.largest_layer == "transformer.word_embeddings"
    assert size.largest_layer_params == config.vocab_size * config.hidden_size
    bloom = zero.model_size("bloom-176b")  # the published config, on the meta device
    assert bloom.largest_layer_params == BLOOM_EMBEDDING and torch.get_default_device().type == "cpu"


def test_bad_input_names_the_choices():
    with pytest.raises(ValueError, match=r"choose from \[0, 1, 2, 3\]"):
        zero.zero_memory(1e6, 4, 2, 0)
    with pytest.raises(ValueError, match="dp_degree"):
        zero.zero_memory(1e6, 1, 0, 0)
    with pytest.raises(ValueError, match="largest_layer_params"):
        zero.zero_memory(1e6, 3, 2, 2e6)
    with pytest.raises(ValueError, match="choose from"):
        zero_sharding.train_all_methods(methods=("deepspeed-9",))
    with pytest.raises(ValueError, match="choose from"):
        zero_training.train_ranks(methods=("deepspeed-9",))


def test_explorer_and_table():
    m = zero.memory_explorer()  # the paper's example: 7.5 B on 64 devices
    assert list(m.table.stage) == [0, 1, 2, 3] and "◀" in m.table.label.iloc[3]
    assert m.table.sharded_states_GB.is_monotonic_decreasing  # each stage shards more
    title = m.figure.layout.title.text
    assert "1.88 GB sharded model states + 0.82 GB gathered layer = 2.69 GB per device" in title
    assert [t.name for t in m.figure.data][-1] == "gathered layer (stage 3)"
    big = zero.memory_explorer(params_billion=176, largest_layer_million=BLOOM_EMBEDDING / 1e6, dp_degree=8)
    assert big.table.total_GB.iloc[0] == pytest.approx(176 * 16)  # (2 + 2 + 12) bytes per param
    table = zero.memory_table({"1 B": (1e9, 1e8)}, (1, 8))
    assert len(table) == 8 and (table[table.dp_degree == 1].sharded_states_GB == 16).all()  # N = 1: no saving
    assert (table.total_GB - table.sharded_states_GB).tolist() == [0, 0, 0, pytest.approx(0.4)] * 2


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
    # Stage 3 / FSDP2 ranks hold one whole Linear (1024² + 1024 fp32 parameters) while it runs; the others none.
    layer_MB = (1024 * 1024 + 1024) * 4 / 1e6
    for method in ("deepspeed-3", "torch-fsdp2"):
        assert df.loc[method, "gathered_MB"] == pytest.approx(layer_MB, rel=0.02) == df.loc[method,
                                                                                         "formula_gathered_MB"]
    assert (df.drop(index=["deepspeed-3", "torch-fsdp2"]).gathered_MB == 0).all()
    # Same data, same initial weights: every method trains to the same loss.
    assert df.final_loss.max() - df.final_loss.min() < 1e-4 * df.final_loss.mean()
    # Communication per step, the paper's convention: plain data parallel 2Ψ, stage 3 / FSDP 3Ψ (fp32 bytes).
    for method in ("deepspeed-0", "deepspeed-3", "torch-fsdp2"):
        assert df.loc[method, "comm_paper_MB"] == pytest.approx(df.loc[method, "comm_formula_MB"], rel=0.01)
    assert set(df.loc["torch-fsdp2", "comm_ops"]) == {"all_gather", "reduce_scatter"}
    assert set(df.loc["deepspeed-0", "comm_ops"]) == {"all_reduce"}  # plain data parallel: gradients only
    # What a rank sends (measured on gloo's sockets) is the ring's count, half the paper's at N = 2 for an
    # all-reduce; gloo's reduce-scatter sends its whole input (as an all-reduce), twice the ring's (N - 1)/N.
    n = df.attrs["world_size"]
    for method, row in df.iterrows():
        rs_ring = row.comm_ops.get("reduce_scatter", 0) * (n - 1) / n / 1e6
        assert row.comm_sent_MB == pytest.approx(row.comm_ring_MB + rs_ring, rel=0.01), method
    assert df.loc["deepspeed-0", "comm_sent_MB"] == pytest.approx(df.loc["deepspeed-0", "comm_paper_MB"] / 2, rel=0.01)
