"""Distillation's loss against PyTorch's own KL and cross-entropy; pruning against magnitudes, shapes and hand-counted
parameters; the 2:4 pattern against its definition; bad input refused before any work."""

import math

import pytest
import torch
import torch.nn.functional as F

from labkit import hardware, models
from labkit.experiments import shrinking, sparse_2to4
from tests.hand_counts import bloom_params

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny():
    model, _ = models.load_model("tiny-bloom", device="cpu")  # random init: shapes and magnitudes are what matter
    return model.eval()


def test_distillation_loss_is_hintons_formula():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 5, 11, generator=g), torch.randn(2, 5, 11, generator=g)
    y = torch.randint(0, 11, (2, 5), generator=g)
    ce = F.cross_entropy(s.reshape(-1, 11), y.reshape(-1))
    kl = F.kl_div(F.log_softmax(s.reshape(-1, 11) / 3, -1), F.log_softmax(t.reshape(-1, 11) / 3, -1),
                  log_target=True, reduction="batchmean")
    assert shrinking.distillation_loss(s, t, y, 3.0, 0.0).item() == pytest.approx(ce.item(), rel=1e-6)
    assert shrinking.distillation_loss(s, t, y, 3.0, 1.0).item() == pytest.approx(9 * kl.item(), rel=1e-5)
    assert shrinking.distillation_loss(s, t, y, 3.0, 0.25).item() == pytest.approx(
        0.25 * 9 * kl.item() + 0.75 * ce.item(), rel=1e-5)
    assert shrinking.distillation_loss(s, s, y, 2.0, 1.0).item() == pytest.approx(0, abs=1e-6)  # no gap, no soft loss
    for bad in ((0.0, 0.5), (2.0, 1.5)):
        with pytest.raises(ValueError, match="temperature > 0 and 0 <= alpha <= 1"):
            shrinking.distillation_loss(s, t, y, *bad)


def test_unstructured_zeroes_the_smallest_and_keeps_shapes(tiny):
    pruned = shrinking.unstructured(tiny, 0.5)
    assert shrinking.linear_macs(pruned) == shrinking.linear_macs(tiny)  # same shapes: a dense kernel does it all
    for before, after in zip(shrinking._block_linears(tiny), shrinking._block_linears(pruned), strict=True):
        w, p = before.weight.detach(), after.weight.detach()
        assert p.shape == w.shape and not hasattr(after, "weight_mask")  # prune.remove made the zeros permanent
        zero = p == 0
        assert int(zero.sum()) == round(0.5 * w.numel())
        assert w[~zero].abs().min() >= w[zero].abs().max()  # magnitude pruning: every kept weight is larger
    assert all((lin.weight != 0).all() for lin in shrinking._block_linears(tiny))  # the original is untouched


def test_structured_shrinks_to_the_same_function(tiny):
    masked, shrunk = shrinking.structured(tiny, 0.75)
    h, layers = tiny.config.hidden_size, tiny.config.n_layer
    kept = 4 * h - round(0.75 * 4 * h)
    for block, orig in zip(shrunk.transformer.h, tiny.transformer.h, strict=True):
        assert block.mlp.dense_h_to_4h.weight.shape == (kept, h) and block.mlp.dense_4h_to_h.weight.shape == (h, kept)
        norms = orig.mlp.dense_h_to_4h.weight.detach().norm(dim=1)  # the rows with the largest L2 norms stay
        expected = orig.mlp.dense_h_to_4h.weight.detach()[norms.topk(kept).indices.sort().values]
        assert torch.equal(block.mlp.dense_h_to_4h.weight.detach(), expected)
    params = sum(p.numel() for p in shrunk.parameters())  # each neuron: a row of h + a bias in, a column of h out
    assert params == bloom_params(tiny.config.to_dict()) - layers * (4 * h - kept) * (2 * h + 1)
    ids = torch.randint(10, 1000, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(shrunk(input_ids=ids).logits, masked(input_ids=ids).logits, atol=1e-4, rtol=1e-4)
    assert shrinking.linear_macs(tiny) - shrinking.linear_macs(shrunk) == layers * 2 * h * (4 * h - kept)


def test_prune_table_measures_what_it_pruned():
    result = shrinking.prune("tiny-bloom", sparsities=(0.5,), eval_batches=1, batch_size=2, seq_len=32,
                             speed_shape=(1, 16), repeat=1)
    t = result.table.set_index("method")
    assert list(t.index) == ["dense", "unstructured", "structured"]
    assert t.loc["unstructured", "zero_share"] == pytest.approx(0.5, abs=1e-3)
    assert t.loc["unstructured", "theory_speedup"] == 1.0 and t.loc["dense", "speedup_vs_dense"] == 1.0
    h, layers = 256, 4
    macs = t.loc["dense", "macs_per_token"]
    assert macs == layers * 12 * h * h + h * models.get_config("tiny-bloom").vocab_size  # blocks + tied LM head
    assert t.loc["structured", "theory_speedup"] == pytest.approx(macs / (macs - layers * 2 * h * 2 * h))
    assert t.loc["structured", "masked_vs_shrunk"] < 1e-4
    assert all(math.isfinite(v) for v in t.val_loss)


def test_two_four_mask_keeps_the_two_largest_of_four():
    w = torch.randn(8, 16, generator=torch.Generator().manual_seed(3))
    mask = sparse_2to4.two_four_mask(w)
    assert (mask.reshape(8, 4, 4).sum(-1) == 2).all()
    groups, kept = w.abs().reshape(8, 4, 4), mask.reshape(8, 4, 4)
    assert (groups.masked_fill(~kept, math.inf).amin(-1) >= groups.masked_fill(kept, -math.inf).amax(-1)).all()
    with pytest.raises(ValueError, match="columns divide by 4"):
        sparse_2to4.two_four_mask(torch.zeros(4, 6))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_semi_structured_needs_cuda():
    with pytest.raises(hardware.CapabilityMissing):
        sparse_2to4.semi_structured(size=128, tokens=128)


@pytest.mark.parametrize("kwargs, match", [
    (dict(sparsities=(1.0,)), r"sparsities must be shares in \(0, 1\)"),
    (dict(methods=("random",)), r"choose from \['unstructured', 'structured'\]"),
    (dict(repeat=0), "must be >= 1"),
])  # fmt: skip
def test_prune_refuses_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        shrinking.prune("no-such-model", **kwargs)  # refused before the model name is even resolved


def test_distill_refuses_bad_input():
    with pytest.raises(ValueError, match="divisible by student_heads"):
        shrinking.distill("no-such-model", student_hidden=100, student_heads=3)
    with pytest.raises(ValueError, match="temperature > 0"):
        shrinking.distill("no-such-model", temperature=0)
    with pytest.raises(ValueError, match="unknown"):
        shrinking.prune("no-such-model")


def test_distill_trains_the_student_it_describes():
    result = shrinking.distill("tiny-bloom-shakespeare", student_hidden=64, student_layers=1, student_heads=2,
                               steps=3, batch_size=2, seq_len=32, eval_batches=1, speed_shape=(1, 16), repeat=1,
                               train_chars=50_000)
    t = result.table.set_index("model")
    vocab = models.get_config("tiny-bloom-shakespeare").vocab_size
    assert t.loc["teacher", "params"] == bloom_params(models.get_config("tiny-bloom-shakespeare").to_dict())
    student = bloom_params({"vocab_size": vocab, "hidden_size": 64, "n_layer": 1})
    assert t.loc["student (distilled)", "params"] == t.loc["student (hard labels)", "params"] == student
    assert t.loc["teacher", "val_loss"] < math.log(vocab)  # the trained teacher beats a uniform guess
    assert t.loc["student (distilled)", "val_loss"] != t.loc["student (hard labels)", "val_loss"]  # the soft term acts


def test_threads_are_restored():
    before = torch.get_num_threads()
    shrinking.prune("tiny-bloom", sparsities=(0.5,), methods=("structured",), eval_batches=1, batch_size=1, seq_len=8,
                    speed_shape=(1, 4), repeat=1, threads=2)
    assert torch.get_num_threads() == before
