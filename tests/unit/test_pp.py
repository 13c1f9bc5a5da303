"""Pipeline parallelism on 2 real gloo ranks: naive and GPipe outputs equal the unsplit model, naive
keeps one rank busy at a time, and the measured GPipe bubble follows (p − 1)/(m + p − 1)."""

import statistics

import pytest
import torch

from labkit.experiments import parallelism
from labkit.parallel import bubble, pp
from labkit.parallel.launch import run_distributed

MICROBATCHES = (1, 2, 4, 8)


@pytest.fixture(scope="module")
def ranks():
    return run_distributed(parallelism.modes_rank, pipeline=dict(batch=4, seq=16, steps=2, microbatches=2),
                           bubble=dict(microbatches=MICROBATCHES, repeat=5), world_size=2, backend="gloo",
                           timeout=240)  # fmt: skip


def test_split_layers():
    assert pp.split_layers(4, 2) == [(0, 2), (2, 4)]
    assert pp.split_layers(70, 8)[-1] == (61, 70)
    with pytest.raises(ValueError, match="cannot split"):
        pp.split_layers(4, 5)


@pytest.mark.parametrize("kind", ["naive", "gpipe"])
def test_pipeline_output_equals_single_process(ranks, kind):
    last = ranks[-1].pipeline
    assert getattr(last, f"{kind}_logits").shape == last.reference_logits.shape == (4, 16, 4096)
    assert torch.allclose(getattr(last, f"{kind}_logits"), last.reference_logits, atol=1e-5, rtol=0)
    assert last.max_diff()[kind] < 1e-5
    assert [r.pipeline.layers for r in ranks] == [(0, 2), (2, 4)]
    with pytest.raises(ValueError, match="last rank"):
        ranks[0].pipeline.max_diff()  # only the last stage holds logits


def test_naive_pipeline_keeps_one_rank_busy_at_a_time(ranks):
    computes = sorted((e for r in ranks for e in r.pipeline.naive_events if e.kind == "compute"),
                      key=lambda e: e.start)  # fmt: skip
    assert [e.rank for e in computes] == [0, 1, 0, 1]  # 2 steps, each through both ranks in turn
    assert all(a.end <= b.start for a, b in zip(computes, computes[1:], strict=False))  # never overlapping
    kinds = {e.kind for r in ranks for e in r.pipeline.naive_events}
    assert kinds == {"compute", "send", "recv"}


def test_gpipe_runs_every_microbatch_on_every_rank(ranks):
    for r in ranks:
        computes = [e for e in r.pipeline.gpipe_events if e.kind == "compute"]
        assert [e.label for e in computes] == ["mb0", "mb1"]
    assert any(e.kind == "recv" for e in ranks[1].pipeline.gpipe_events)


def test_measured_bubble_follows_the_gpipe_schedule(ranks):
    """The fill-and-drain share equals GPipe's schedule replayed with the measured compute times (hand-offs are
    cheap next to a stage's work); the replay with equal times is (p − 1)/(m + p − 1) (next test). On a shared CPU
    a stage computes faster alone than alongside the other, so the measurement may sit below the formula itself."""
    for m in MICROBATCHES:
        runs = [list(pair) for pair in zip(ranks[0].bubble.runs[m], ranks[1].bubble.runs[m], strict=True)]
        measured = statistics.median(pp.idle_fractions(pair)["bubble"] for pair in runs)
        replayed = statistics.median(bubble.replayed_bubble(pair) for pair in runs)
        assert abs(measured - replayed) < 0.05, (m, measured, replayed)
    sweep = parallelism.bubble_sweep(ranks).table
    assert list(sweep.microbatches) == list(MICROBATCHES)
    assert (sweep.formula == [pp.bubble_formula(2, m) for m in MICROBATCHES]).all()
    assert ((sweep.measured_bubble - sweep.replayed).abs() < 0.05).all()
    assert sweep.measured_bubble.is_monotonic_decreasing  # more micro-batches, a smaller bubble


def test_replay_with_equal_times_is_the_gpipe_formula():
    for p, m in ((2, 1), (2, 4), (3, 5), (4, 8)):
        assert bubble.replay_gpipe([[1.0] * m for _ in range(p)]) == pytest.approx(pp.bubble_formula(p, m))
    # a stage twice as slow while the others run: 2 stages, 3 micro-batches, alone 1 s, overlapped 2 s
    assert bubble.replay_gpipe([[1, 2, 2], [2, 2, 1]]) == pytest.approx(1 / (1 + 2 + 2 + 1))
    with pytest.raises(ValueError, match="same number"):
        bubble.replay_gpipe([[1.0], [1.0, 1.0]])


def test_tables_and_timeline(ranks):
    events = ranks[0].bubble.table()
    assert set(events.kind) <= {"compute", "send", "recv"} and set(events.microbatches) == set(MICROBATCHES)
    fig = parallelism.timeline_figure([r.pipeline.naive_events for r in ranks], "naive")
    assert {t.name for t in fig.data} == {"compute", "send", "recv (waiting)"}
    with pytest.raises(ValueError, match="micro-batches"):
        parallelism.bubble_rank(microbatches=(3,), rows=8)


def test_idle_fractions_on_a_made_up_schedule():
    ev = lambda rank, a, b: pp.Event(rank, "compute", "", a, b)  # noqa: E731
    # 2 stages, 3 micro-batches of 1 s each: span 4 s, each rank idle 1 s -> 1/4 = (p-1)/(m+p-1)
    r0 = [ev(0, 0, 1), ev(0, 1, 2), ev(0, 2, 3)]
    r1 = [ev(1, 1, 2), ev(1, 2, 3), ev(1, 3, 4)]
    out = pp.idle_fractions([r0, r1])
    assert out["bubble"] == pytest.approx(pp.bubble_formula(2, 3)) == pytest.approx(0.25)
    assert out["total"] == pytest.approx(0.25)


@pytest.mark.gpu
def test_pipeline_on_nccl():
    """Naive and GPipe pipelines with one GPU per stage (NCCL)."""
    if torch.cuda.device_count() < 2:
        pytest.skip(f"an NCCL pipeline needs 2 GPUs; this machine has {torch.cuda.device_count()}")
    ranks = run_distributed(parallelism.modes_rank, pipeline=dict(batch=4, seq=16, steps=2, microbatches=2),
                            bubble=dict(microbatches=(1, 4), repeat=3), world_size=2, backend="nccl")  # fmt: skip
    last = ranks[-1].pipeline
    for kind in ("naive", "gpipe"):
        assert torch.allclose(getattr(last, f"{kind}_logits"), last.reference_logits, atol=1e-3, rtol=0)
