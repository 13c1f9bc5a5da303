"""Padding removal (labkit.experiments.padding_removal) on tiny-llama, against each prompt run alone and formulas."""

import pytest
import torch

from labkit.experiments import padding_removal as pr
from labkit.models import load_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/conftest.py


@pytest.fixture(scope="module")
def llama():
    """(model, tokenizer) of tiny-llama on the CPU, for every test here."""
    return load_model("tiny-llama", device="cpu")


def test_padding_share_by_hand():
    assert pr.padding_share([4, 4]) == 0
    assert pr.padding_share([1, 3]) == pytest.approx(1 - 4 / 6)
    with pytest.raises(ValueError, match="length"):
        pr.padding_share([])
    with pytest.raises(ValueError, match="length"):
        pr.padding_share([3, 0])


def test_draw_lengths_is_seeded_and_in_range():
    a = pr.draw_lengths(40, 5, 9, seed=3)
    assert a == pr.draw_lengths(40, 5, 9, seed=3) and set(a) <= set(range(5, 10)) and len(a) == 40
    with pytest.raises(ValueError, match="low <= high"):
        pr.draw_lengths(4, 9, 5)


def test_linear_flops_per_token_count_the_models_matmul_weights(llama):
    net, _ = llama
    # 2 FLOPs per weight of every nn.Linear in the decoder layers (the LM head is left out)
    weights = sum(m.weight.numel() for m in net.model.layers.modules() if isinstance(m, torch.nn.Linear))
    f = pr.prefill_flops(net.config, [3, 5])
    assert f["linear_per_token"] == 2 * weights
    cfg = net.config
    assert f["attention_per_pair"] == 4 * cfg.num_hidden_layers * cfg.hidden_size  # heads × head_dim = hidden here
    assert f["varlen"] == 8 * f["linear_per_token"] + (6 + 15) * f["attention_per_pair"]
    assert f["padded"] == 10 * f["linear_per_token"] + 2 * 25 * f["attention_per_pair"]
    assert f["packed"] == 8 * f["linear_per_token"] + 64 * f["attention_per_pair"]


def test_packed_layouts_give_each_prompt_alone_logits(llama):
    net, _ = llama
    lengths = [5, 17, 9]
    prompts = [torch.randint(2, net.config.vocab_size, (n,), generator=torch.Generator().manual_seed(n)).tolist()
               for n in lengths]  # fmt: skip
    kw = pr._inputs(prompts, 0, "cpu")
    with torch.inference_mode():
        alone = torch.cat([net(torch.tensor([p]), use_cache=False).logits[0] for p in prompts])
        padded = net(**kw["padded"], use_cache=False).logits[kw["padded"]["attention_mask"].bool()]
        packed = net(**kw["packed"], use_cache=False).logits[0]
        with pr._attention(net, pr.ATTENTION):
            varlen = net(**kw["varlen"], use_cache=False).logits[0]
        leaky = net(input_ids=kw["packed"]["input_ids"], use_cache=False).logits[0]  # positions 0..T, one sequence
    for got in (padded, packed, varlen):
        assert (got - alone).abs().max() < 1e-4
    assert (leaky[lengths[0]:] - alone[lengths[0]:]).abs().max() > 1e-2  # the check can fail: attention leaks
    assert net.config._attn_implementation != pr.ATTENTION  # switched back after the block


def test_padding_removal_table(llama):
    lengths = [4, 30, 12, 30]
    res = pr.padding_removal("tiny-llama", lengths=lengths, repeat=2, rounds=1, device="cpu", loaded=llama)
    t = res.table.set_index("layout")
    assert list(t.index) == list(pr.LAYOUTS)
    assert t.tokens.to_dict() == {"padded": 4 * 30, "packed": 76, "varlen": 76}
    assert t.attention_pairs["varlen"] == sum(n * (n + 1) // 2 for n in lengths)
    assert (t.max_abs_diff < 1e-4).all()
    assert t.speedup["padded"] == 1 and (t.time_ms > 0).all()
    assert res.table.attrs["padding_share"] == pytest.approx(1 - 76 / 120)
    flops = pr.prefill_flops(llama[0].config, lengths)
    assert t.predicted_speedup["varlen"] == pytest.approx(flops["padded"] / flops["varlen"])
    assert t.predicted_speedup["varlen"] > t.predicted_speedup["packed"] > 1


def test_bad_input_is_refused_before_loading():
    with pytest.raises(ValueError, match="tiny-llama"):
        pr.padding_removal("tiny-bloom")
    with pytest.raises(ValueError, match="repeat"):
        pr.padding_removal("tiny-llama", repeat=0)
    with pytest.raises(ValueError, match="length"):
        pr.padding_removal("tiny-llama", lengths=[4, 0])
    with pytest.raises(ValueError, match="cu_seqlens"):
        pr.varlen_attention(None, torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4))
