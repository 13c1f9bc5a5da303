import pytest
import torch

from labkit import models, training
from labkit.experiments import training_vs_inference


def test_forward_latency_returns_stats_and_a_histogram(tiny_bloom):
    r = training_vs_inference.forward_latency(batch_size=2, seq_len=16, repeat=8, loaded=tiny_bloom)
    row = r.table.iloc[0]
    assert row.n == 8 and 0 < row.p10 <= row["median"] <= row.p90 <= row.p99
    assert r.figure.data[0].type == "histogram" and len(r.figure.data[0].x) == 8
    assert r.table.attrs["hardware"] in r.figure.layout.title.text


def test_compare_steps_by_name_loads_and_caches_the_model():
    r = training_vs_inference.compare_steps("tiny-llama", batch_size=2, seq_len=16, repeat=2)
    assert set(r.table.phase) == {"training step", "inference step"}
    assert [t.name for t in r.figure.data] == ["training step", "inference step"]
    assert models.load_cached("tiny-llama") is models.load_cached("tiny-llama")


def test_batch_tradeoff_and_latency_budget(tiny_bloom):
    r = training_vs_inference.batch_tradeoff(batch_sizes=[1, 2, 4], seq_len=16, repeat=3, loaded=tiny_bloom,
                                             progress=False)
    assert r.table.batch_size.tolist() == [1, 2, 4]
    assert training_vs_inference.max_batch_within(r.table, 1e9) == 4
    assert training_vs_inference.max_batch_within(r.table, 0.0) is None


def test_too_big_batches_are_refused_before_allocating(tiny_bloom):
    with pytest.raises(MemoryError, match=r"needs about \d+\.\d GiB for logits alone"):
        training_vs_inference.compare_steps(batch_size=4096, seq_len=4096, loaded=tiny_bloom)
    with pytest.raises(ValueError, match="batch_size and seq_len must be >= 1"):
        training_vs_inference.forward_latency(batch_size=0, loaded=tiny_bloom)


def test_trained_shakespeare_checkpoint_beats_random_init(tiny_bloom):
    trained, tok = models.load_model("tiny-bloom-shakespeare", device="cpu")
    test_tokens = training.token_stream("test", tok)
    batches = [training.get_batch(test_tokens, 8, 64, torch.Generator().manual_seed(i)) for i in range(4)]
    random_loss = training.evaluate(tiny_bloom[0], batches)
    trained_loss = training.evaluate(trained, batches)
    assert trained_loss < random_loss - 2.0  # ~8.3 nats (uniform over 4096) -> below 6.3 on unseen plays


def test_every_measurement_names_its_device(tiny_bloom):
    latency = training_vs_inference.forward_latency(batch_size=1, seq_len=8, repeat=2, loaded=tiny_bloom, device="cpu")
    assert latency.table.device.tolist() == ["cpu"] and latency.table.attrs["device"] == "cpu"
    steps = training_vs_inference.compare_steps(batch_size=2, seq_len=8, repeat=1, loaded=tiny_bloom, device="cpu")
    assert steps.table.device.tolist() == ["cpu", "cpu"] and "on cpu" in steps.figure.layout.title.text
    sweep = training_vs_inference.batch_tradeoff(batch_sizes=[1], seq_len=8, repeat=1, loaded=tiny_bloom,
                                                 progress=False)
    assert sweep.table.attrs["device"] == "cpu"  # None: where the model passed in is
    by_name = training_vs_inference.forward_latency("tiny-llama", batch_size=1, seq_len=8, repeat=2, device="cpu")
    assert by_name.table.device.tolist() == ["cpu"]
    assert models.load_cached("tiny-llama", "cpu")[0] is models.load_cached("tiny-llama")[0]  # one cached copy


def test_the_memory_check_asks_the_device_it_measures_on():
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        training_vs_inference.check_activation_memory(1, 8, 100, copies=1, device="tpu")
    training_vs_inference.check_activation_memory(1, 8, 100, copies=1, device="cpu")  # fits: no error


def test_unigram_loss_is_the_add_one_frequency_model_on_the_validation_plays():
    """Recounted with collections.Counter over the tokenizer's own ids: -mean log((count + 1) / (N + V))."""
    import math

    from tests.hand_counts import add_one_unigram_loss

    trained, tok = models.load_model("tiny-bloom-shakespeare", device="cpu")
    expected, v = add_one_unigram_loss(tok, 200_000), len(tok)
    baseline = training_vs_inference.unigram_loss(tok, max_chars=200_000)
    assert baseline == pytest.approx(expected, rel=1e-9)
    assert math.log(v) - 2.5 < baseline < math.log(v)  # frequencies alone beat a uniform guess, but not by much
    # the checkpoint trained in `labkit prepare` learned context: it beats the frequencies on the same plays
    tokens = training.token_stream("validation", tok, 200_000)
    batches = [training.get_batch(tokens, 8, 64, torch.Generator().manual_seed(i)) for i in range(4)]
    assert training.evaluate(trained, batches) < baseline - 0.5
