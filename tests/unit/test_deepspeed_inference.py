"""DeepSpeed-Inference AutoTP and ZeRO-Inference on real gloo ranks; kernel injection on a GPU."""

import pytest
import torch

from labkit.hardware import CapabilityMissing
from labkit.parallel import deepspeed_env, zero_inference
from labkit.parallel import deepspeed_inference as dsi
from labkit.parallel.launch import run_distributed


def test_autotp_llama_matches_single_process():
    ranks = run_distributed(dsi.autotp_ranks, "tiny-llama", seq=16, new_tokens=6, repeat=2, world_size=2)
    for r in ranks:
        assert r.max_abs_diff < 1e-4 and r.same_tokens
        assert r.param_bytes_rank < 0.8 * r.param_bytes_full  # each rank holds a slice
        assert r.single_ms > 0 and r.autotp_ms > 0
    assert ranks[0].tokens == ranks[1].tokens


def test_bloom_autotp_fails_without_the_alibi_fix_and_matches_with_it():
    ranks = run_distributed(dsi.bloom_alibi_demo, "tiny-bloom", world_size=2)
    for r in ranks:
        assert "expanded size of the tensor (4) must match the existing size (8)" in r.error_without_fix
        assert r.fixed and r.same_tokens and r.max_abs_diff < 1e-4


def test_zero_inference_different_prompts_equal_single_process():
    ranks = run_distributed(zero_inference.generate_ranks, "tiny-llama", new_tokens=6, world_size=2)
    assert [r.prompt for r in ranks] == list(zero_inference.PROMPTS[:2])  # one stream per rank
    for r in ranks:
        assert r.same_as_single_process and r.new_tokens == 6 and r.decode.new_tokens == 6
        assert r.weight_bytes_held == pytest.approx(r.weight_bytes_full / 2, rel=0.01)  # ZeRO-3 shard
        assert len(r.decode.step_s) == 5 and r.decode.total_s >= sum(r.decode.step_s)  # one timed generation
    assert ranks[0].baseline is not None and ranks[1].baseline is None  # rank 0 alone times the whole model
    m = zero_inference.throughput(ranks)
    assert m.table.aggregate_tok_s.iloc[1] == pytest.approx(12 / max(r.decode.total_s for r in ranks))
    assert m.table.aggregate_tok_s.iloc[0] == pytest.approx(6 / ranks[0].baseline.total_s)
    out = zero_inference.outputs_table(ranks)
    assert list(out.decode_tok_s) == [r.decode.decode_tok_s for r in ranks]


def test_bad_model_names_the_choices():
    with pytest.raises(ValueError, match="choose from"):
        dsi.autotp_ranks("gpt-17")
    if not torch.cuda.is_available():
        with pytest.raises(CapabilityMissing, match="GPU per rank"):
            dsi.autotp_ranks("tiny-bloom", kernel_inject=True)


@pytest.mark.gpu
def test_bloom_kernel_injection_on_gpu():
    # replace_with_kernel_inject swaps BLOOM's blocks for DeepSpeed's fused CUDA kernels (JIT-compiled here).
    ranks = run_distributed(dsi.autotp_ranks, "tiny-bloom", seq=16, new_tokens=4, kernel_inject=True,
                            world_size=torch.cuda.device_count() if torch.cuda.is_available() else 1,
                            backend="nccl", timeout=600)
    for r in ranks:
        assert r.kernel_inject and r.max_abs_diff < 5e-2  # fp16 fused kernels vs fp16 eager


def test_op_compile_time_can_report_without_loading():
    pytest.importorskip("deepspeed")
    info = deepspeed_env.op_compile_time(compile_if_missing=False, load=False)
    assert info.seconds is None and isinstance(info.was_cached, bool)
    assert info.op.endswith("shm_comm_op") and info.extensions_dir == deepspeed_env.use_extension_cache()
