"""labkit's paged KV engine: the block manager's bookkeeping, and greedy tokens equal to `generate()` for mixed
lengths, joins, leaves, chunked prefill, preemption and prefix-cache hits (the reference is transformers' own
generate(), one prompt at a time)."""

import copy
import importlib.util
import time

import pytest
import torch

pytest.importorskip("fastapi", reason="the serving extra is not installed (pip install labkit[serve])")

from labkit import anatomy
from labkit.models import load_model
from labkit.serving.limits import Limits
from labkit.serving.paged.blocks import BlockManager
from labkit.serving.paged.runner import ModelRunner
from labkit.serving.paged.scheduler import Scheduler
from labkit.serving.paged.sequence import Sequence
from labkit.serving.paged_engine import PagedEngine
from labkit.serving.repository import make_engine
from labkit.serving.request import Request, SamplingParams

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/conftest.py


@pytest.fixture(scope="module")
def llama():
    model, tok = load_model("tiny-llama", device="cpu")
    return model.eval(), tok


def reference(model, prompts, max_new):
    out = []
    for p, n in zip(prompts, max_new, strict=True):
        gen = model.generate(torch.tensor([p]), max_new_tokens=n, do_sample=False, pad_token_id=0)
        out.append(gen[0, len(p):].tolist())
    return out


if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):  # the engines extra
    from labkit.serving.paged.ort_runner import OrtRunner

    RUNNERS = {"torch": ModelRunner, "onnxruntime": OrtRunner}
else:  # a serving-only install: the torch runner alone
    OrtRunner, RUNNERS = None, {"torch": ModelRunner}
needs_ort = pytest.mark.skipif(OrtRunner is None, reason="onnxruntime is not installed (pip install labkit[engines])")


def drive(model, prompts, max_new, num_blocks=64, block_size=8, max_seqs=8, chunk=None, join_at=None,
          prefix_caching=True, runner="torch"):  # fmt: skip
    """Run the scheduler + runner directly (no threads); prompts from `join_at` on join at step 3.
    Returns (sequences, scheduler, block manager, per-step [(seq id, tokens)], runner)."""
    blocks = BlockManager(num_blocks, block_size, prefix_caching)
    sched = Scheduler(blocks, max_seqs, chunk)
    runner = RUNNERS[runner](model, num_blocks, block_size)
    seqs = [Sequence(p) for p in prompts]
    late = seqs[join_at:] if join_at is not None else []
    for s in seqs:
        if s not in late:
            sched.add(s)
    want = dict(zip((s.seq_id for s in seqs), max_new, strict=True))
    steps, trace = 0, []
    while sched.has_work or late:
        if steps == 3:
            for s in late:
                sched.add(s)
            late = []
        work = sched.schedule()
        steps += 1
        if not work:
            continue
        trace.append([(w.seq.seq_id, w.tokens) for w in work])
        logits = runner.run(work)
        sched.computed(work)
        for seq, tok in zip([w.seq for w in work if w.samples], logits.argmax(-1).tolist(), strict=True):
            seq.append(tok)
            if len(seq.generated) >= want[seq.seq_id]:
                sched.finish(seq)
    return seqs, sched, blocks, trace, runner


def ort_decoded(runner, prefilled: bool = False) -> None:
    """The onnxruntime runner computed decode steps itself (not only through the transformers fallback), and
    single-sequence prefills too when `prefilled`."""
    if OrtRunner is not None and isinstance(runner, OrtRunner):
        assert runner.decode_steps > 0 and (runner.prefills > 0 or not prefilled)


PROMPTS = [list(range(5, 5 + n)) for n in (3, 17, 40, 9, 24)]
MAX_NEW = [12, 5, 9, 14, 7]  # sequences leave at different steps


def test_block_manager_counts_references_and_wastes_at_most_one_block(llama):
    bm = BlockManager(num_blocks=10, block_size=4)
    a, b = Sequence(list(range(10))), Sequence(list(range(3)))
    bm.allocate(a), bm.allocate(b)
    assert len(a.block_table) == 3 and len(b.block_table) == 1 and bm.used == 4
    assert len(a.block_table) * 4 - len(a.token_ids) < 4  # waste: the unfilled tail of the last block only
    a.token_ids += [1, 2]  # 12 tokens: still 3 blocks; a 13th needs a 4th
    bm.append_slot(a)
    assert len(a.block_table) == 3
    a.token_ids.append(3)
    bm.append_slot(a)
    assert len(a.block_table) == 4 and bm.used == 5
    bm.free(a)
    assert bm.used == 1 and len(bm.free_ids) == 9
    with pytest.raises(ValueError, match="num_blocks"):
        BlockManager(0)


def test_prefix_blocks_are_found_only_once_computed_and_shared_by_reference():
    bm = BlockManager(num_blocks=16, block_size=4)
    system = list(range(100, 112))  # three full blocks of shared prefix
    a, b = Sequence(system + [1, 2]), Sequence(system + [7])
    assert bm.allocate(a) == 0
    assert bm.allocate(b) == 0  # a's blocks are not computed yet: nothing to reuse
    bm.free(b)
    a.num_computed_tokens = len(a.token_ids)
    bm.mark_computed(a)
    c = Sequence(system + [9, 9, 9])
    assert bm.allocate(c) == 12 and c.block_table[:3] == a.block_table[:3]
    assert all(bm.blocks[i].ref_count == 2 for i in a.block_table[:3])
    d = Sequence(system)  # the prompt's last token is always computed: its block is not taken from the cache
    assert bm.allocate(d) == 8


@pytest.mark.parametrize("runner", RUNNERS)
def test_greedy_equals_generate_with_joins_leaves_and_mixed_lengths(llama, runner):
    model, _ = llama
    seqs, sched, blocks, trace, used = drive(model, PROMPTS, MAX_NEW, join_at=3, runner=runner)
    assert [s.generated for s in seqs] == reference(model, PROMPTS, MAX_NEW)
    ort_decoded(used)
    assert max(len(step) for step in trace) >= 3 and sched.preemptions == 0
    assert blocks.used == 0  # every block came back


@pytest.mark.parametrize("runner", RUNNERS)
def test_chunked_prefill_runs_decodes_alongside_a_long_prompt(llama, runner):
    model, _ = llama
    prompts = [list(range(7, 10)), list(range(20, 84))]  # a short request decoding while a 64-token prompt arrives
    seqs, _, _, trace, used = drive(model, prompts, [10, 4], chunk=16, join_at=1, runner=runner)
    assert [s.generated for s in seqs] == reference(model, prompts, [10, 4])
    ort_decoded(used, prefilled=True)
    short, long = (s.seq_id for s in seqs)
    chunks = [n for step in trace for sid, n in step if sid == long]
    # 64 prompt tokens in chunks of what the 16-token budget leaves after the short request's decode token
    assert chunks[:5] == [15, 15, 15, 15, 4] and set(chunks[5:]) == {1}
    during = [dict(step) for step in trace if dict(step).get(long, 0) > 1]
    assert len(during) == 5 and all(step.get(short) == 1 for step in during)  # it never stopped decoding
    assert all(sum(n for _, n in step) <= 16 for step in trace)


@pytest.mark.parametrize("runner", RUNNERS)
def test_preemption_by_recomputation_keeps_greedy_tokens(llama, runner):
    model, _ = llama
    prompts = [list(range(5, 5 + n)) for n in (14, 12, 10)]
    # 10 blocks of 4 tokens: all three prompts fit at first (10 blocks), their growth does not
    seqs, sched, blocks, _, used = drive(model, prompts, [12, 12, 12], num_blocks=10, block_size=4, runner=runner)
    ort_decoded(used)
    assert sched.preemptions > 0 and sum(s.preemptions for s in seqs) == sched.preemptions
    assert [s.generated for s in seqs] == reference(model, prompts, [12, 12, 12])
    assert blocks.used == 0


def test_admission_is_by_kv_capacity_not_only_batch_slots(llama):
    model, _ = llama
    prompts = [list(range(5, 21)) for _ in range(4)]  # 16 tokens = 4 blocks each; the pool holds 10 blocks
    blocks = BlockManager(10, 4, prefix_caching=False)
    sched = Scheduler(blocks, max_seqs=8)
    for p in prompts:
        sched.add(Sequence(p))
    sched.schedule()
    assert len(sched.running) == 2 and len(sched.waiting) == 2  # 8 slots free, 2 sequences in: blocks ran out
    with pytest.raises(ValueError, match="KV blocks"):
        sched.add(Sequence(list(range(41))))  # 11 blocks: could never fit


@pytest.mark.parametrize("runner", RUNNERS)
def test_prefix_hits_skip_computation_and_keep_tokens(llama, runner):
    model, _ = llama
    system = list(range(200, 232))  # 4 blocks of 8 tokens shared
    prompts = [system + [5, 6, 7], system + [9], system + [11, 12]]
    seqs, _, blocks, trace, used = drive(model, prompts, [6, 6, 6], join_at=1, runner=runner)
    assert [s.generated for s in seqs] == reference(model, prompts, [6, 6, 6])
    ort_decoded(used)
    assert blocks.hit_tokens == 2 * 32  # the two late prompts found the whole shared prefix
    late_prefill = [n for step in trace[3:] for sid, n in step if n > 1]
    assert late_prefill and max(late_prefill) <= 3  # only their own tokens were computed
    assert drive(model, prompts, [6, 6, 6], join_at=1, prefix_caching=False)[2].hit_tokens == 0


def test_pool_bytes_is_the_kv_formula(llama):
    model, _ = llama
    runner = ModelRunner(model, num_blocks=6, block_size=8)
    assert runner.bytes == anatomy.kv_cache_bytes(model.config, batch=6, seq=8, precision="fp32")


def test_engine_serves_paged_and_refuses_what_it_cannot(llama):
    model, tok = llama
    prompts, max_new = PROMPTS[:4], [6, 3, 8, 5]
    engine = make_engine("paged", model, tok, max_batch=3, max_queue=8, kv_tokens=128, kv_block_size=8,
                         prefill_chunk=16)  # fmt: skip
    try:
        assert isinstance(engine, PagedEngine)
        reqs = [Request(p, SamplingParams(n)) for p, n in zip(prompts, max_new, strict=True)]
        for r in reqs:
            engine.submit(r)
        deadline = time.perf_counter() + 60
        for r in reqs:
            assert r.finished.wait(max(0.0, deadline - time.perf_counter()))
        assert [r.tokens for r in reqs] == reference(model, prompts, max_new)
        report = engine.kv_report()
        assert report["blocks_total"] == 16 and report["blocks_used"] == 0 and report["peak_blocks_used"] > 0
        assert report["peak_waste_pct"] < 100 * 8 / (8 + 1)  # under one block per sequence: slots < tokens + 8·seqs
        with pytest.raises(ValueError, match="logprobs"):
            engine.submit(Request(prompts[0], SamplingParams(2, logprobs=1)))
    finally:
        engine.stop()
    bloom, bloom_tok = load_model("tiny-bloom", device="cpu")
    with pytest.raises(ValueError, match="AttentionInterface"):
        PagedEngine(bloom, bloom_tok)


@pytest.mark.parametrize("runner", RUNNERS)
def test_smollm2_grouped_query_attention_matches_generate(runner):
    model, _ = load_model("smollm2-135m", device="cpu")
    prompts = [list(range(1000, 1000 + n)) for n in (5, 21, 13)]
    seqs, _, _, _, used = drive(model.eval(), prompts, [6, 4, 5], block_size=16, chunk=12, join_at=2, runner=runner)
    assert [s.generated for s in seqs] == reference(model, prompts, [6, 4, 5])
    ort_decoded(used, prefilled=True)


@needs_ort
def test_onnxruntime_decode_step_matches_the_torch_runner(llama):
    """One mixed-length decode step: logits and the keys/values written, ONNX Runtime graph vs transformers."""
    model, _ = llama
    prompts = [list(range(5, 5 + n)) for n in (3, 17, 9)]
    out = {}
    for name, cls in RUNNERS.items():
        blocks, runner = BlockManager(32, 8), cls(model, 32, 8)
        sched = Scheduler(blocks, 8)
        for p in prompts:
            sched.add(Sequence(p))
        for _ in range(2):  # the prefill, then one decode step of all three
            work = sched.schedule()
            logits = runner.run(work)
            sched.computed(work)
            for w, tok in zip(work, logits.argmax(-1).tolist(), strict=True):
                w.seq.append(tok)
        out[name] = logits, runner.k_all.clone(), runner.v_all.clone()
    assert all(w.tokens == 1 for w in work) and runner.decode_steps == 1 and runner.prefills == 0
    for a, b in zip(out["torch"], out["onnxruntime"], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)  # fp32 both: summation order only


@needs_ort
def test_onnxruntime_prefill_chunks_match_the_torch_runner(llama):
    """One prompt prefilled in chunks (no past, then a past of 8 tokens), then decoded: logits and the pool,
    ONNX Runtime graph vs transformers."""
    model, _ = llama
    out = {}
    for name, cls in RUNNERS.items():
        blocks, runner = BlockManager(16, 8), cls(model, 16, 8)
        sched, seq = Scheduler(blocks, 4, max_batched_tokens=8), Sequence(list(range(5, 25)))  # 20 tokens
        sched.add(seq)
        logits = []
        while len(seq.generated) < 3:
            work = sched.schedule()
            got = runner.run(work)
            sched.computed(work)
            if len(got):
                logits.append(got)
                seq.append(int(got.argmax(-1)))
        out[name] = torch.cat(logits), runner.k_all.clone(), runner.v_all.clone()
    assert runner.prefills == 3 and runner.decode_steps == 2  # chunks of 8, 8, 4, then two decode steps
    assert runner.gathers == 4  # one per chunk, one for the first decode step; the second reuses its buffer
    for a, b in zip(out["torch"], out["onnxruntime"], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


@needs_ort
def test_onnxruntime_runner_refuses_what_it_cannot_build(llama):
    model, _ = llama
    with pytest.raises(ValueError, match="choose from"):
        Limits(runner="tensorrt")
    with pytest.raises(ValueError, match="fp32"):
        OrtRunner(copy.deepcopy(model).to(torch.bfloat16), 8, 8)
    bloom, _ = load_model("tiny-bloom", device="cpu")
    with pytest.raises(ValueError, match="AttentionInterface"):
        OrtRunner(bloom, 8, 8)
    from transformers import LlamaConfig, LlamaForCausalLM

    heads_of_8 = LlamaForCausalLM(LlamaConfig(hidden_size=64, num_attention_heads=8, num_key_value_heads=4,
                                              intermediate_size=128, num_hidden_layers=1, vocab_size=100))
    with pytest.raises(ValueError, match="multiples of 16"):  # ONNX Runtime's fused attention kernel's rule
        OrtRunner(heads_of_8, 8, 8)


def test_http_server_on_the_paged_engine(llama):
    import httpx

    from labkit.serving import metrics
    from labkit.serving.app import Server, create_app
    from labkit.serving.repository import ModelRepository

    model, tok = llama
    repo = ModelRepository("paged", max_batch=4, max_queue=8)
    repo.load("tiny-llama", "v1", loaded=llama)
    prompt = "ROMEO:\nBut soft"
    ids = tok(prompt)["input_ids"]
    with Server(create_app(repo, max_tokens_limit=64, request_timeout_s=30)) as srv, \
            httpx.Client(base_url=srv.url, timeout=60) as client:  # fmt: skip
        body = {"model": "tiny-llama", "prompt": prompt, "max_tokens": 8, "temperature": 0}
        r = client.post("/v1/completions", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["text"] == tok.decode(reference(model, [ids], [8])[0])
        refused = client.post("/v1/completions", json={**body, "logprobs": 1})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "logprobs"
        parsed = metrics.parse(client.get("/metrics").text)
        assert metrics.total(parsed, "labkit_kv_blocks_total") == repo.deployments[("tiny-llama", "v1")].engine \
            .kv_report()["blocks_total"] > 0  # fmt: skip
        assert metrics.total(parsed, "labkit_kv_blocks_used") == 0  # the request finished: its blocks are back
