"""Every from-scratch twin of a library decoding path stops and scores like the library: greedy, sampling and the
repetition penalty stop at the generation config's end-of-text ids and draw generate()'s tokens for the same seed;
contrastive search reproduces transformers' last built-in implementation (4.55.4, recorded); speculative sampling
follows the target's distribution like transformers' `_speculative_sampling`; the speed-up formula is Leviathan's."""

import copy
import functools
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from transformers.generation.utils import _speculative_sampling

from labkit import decoding, models
from labkit.cache import cache_dir

RECORDED = Path(__file__).parent / "decoding_reference" / "contrastive_transformers_4.55.4.json"


@pytest.fixture
def shakespeare_with_stops():
    """The Shakespeare BLOOM made to stop at "\\n" and "." (it almost never emits its own end-of-text id)."""
    model, tok = models.load_cached("tiny-bloom-shakespeare")
    saved = copy.deepcopy(model.generation_config)
    model.generation_config.eos_token_id = [tok(s, add_special_tokens=False)["input_ids"][-1] for s in ("\n", ".")]
    yield model, tok
    model.generation_config = saved


@pytest.mark.parametrize("method, params", [
    ("greedy", {}), ("repetition-penalty", {"penalty": 1.5}), ("sample", {"temperature": 0.8}), ("top-k", {"k": 20}),
    ("top-p", {"p": 0.9, "temperature": 1.2}), ("min-p", {"p": 0.05}), ("top-k+top-p", {"k": 30, "p": 0.8}),
])  # fmt: skip
def test_step_through_draws_and_stops_like_generate(shakespeare_with_stops, method, params):
    """Same seed, same tokens, same stop: generate() seeds torch's global generator; step_through seeds its own."""
    model, tok = shakespeare_with_stops
    stops = set(model.generation_config.eos_token_id)
    for prompt, seed in [("ROMEO:\n", 0), ("To be, or not to be,", 1), ("KING HENRY:\nOnce more unto the", 2)]:
        ids = tok(prompt, return_tensors="pt")["input_ids"]
        trace = decoding.step_through(model, tok, ids, method, 16, seed=seed, **params)
        torch.manual_seed(seed)
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), pad_token_id=tok.pad_token_id,
                                 generation_config=decoding.config_for(method, max_new_tokens=16, **params))
        expected = out[0, ids.shape[1]:].tolist()
        assert trace.token_ids == expected
        assert trace.token_ids[-1] in stops or len(trace.token_ids) == 16


REFERENCE_SETS = json.loads(RECORDED.read_text())["sets"]
SMOLLM2_CASES, SMOLLM2_TOKENS = (0, 5), 8  # two of its six, 8 tokens each: it re-reads the sequence every step


@functools.cache
def weights_sha256(name: str) -> str:
    """The fingerprint the reference's sets are keyed by, computed by the recording script's own function (it runs
    in transformers 4.55.4's venv, so it cannot import labkit's models; loaded here from its file)."""
    script = Path(__file__).parents[2] / "scripts" / "record_contrastive_reference.py"
    spec = importlib.util.spec_from_file_location("record_contrastive_reference", script)
    recorder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recorder)
    return recorder.weights_sha256(cache_dir("models", name))


def recorded_cases(name: str) -> list[dict]:
    """The cases recorded on the weights this machine has; none recorded on them: the test skips, saying why."""
    models.load_cached(name)  # converts or trains them first, if this machine has not yet
    sets = [s for s in REFERENCE_SETS if s["model"] == name]
    found = [s for s in sets if s["weights_sha256"] == weights_sha256(name)]
    if not found:
        pytest.skip(f"{name}'s weights here (sha256 {weights_sha256(name)[:12]}) are not those any reference was "
                    f"recorded on ({', '.join(s['recorded_on'] for s in sets)}): `labkit prepare` trains them on the "
                    "machine and another CPU kind rounds differently; scripts/record_contrastive_reference.py "
                    "records them (transformers 4.55.4 in its own venv). The SmolLM2 cases, whose weights are the "
                    "same everywhere, still run.")
    return found[0]["cases"]


@pytest.mark.parametrize("name, case, tokens", [
    *(("tiny-bloom-shakespeare", i, None) for i in range(11)),  # two of them stop at EOS
    *(("smollm2-135m", i, SMOLLM2_TOKENS) for i in SMOLLM2_CASES),
])  # fmt: skip
def test_contrastive_search_equals_transformers_last_builtin_implementation(name, case, tokens):
    """transformers 5 no longer ships contrastive search; 4.55.4 was the last release with it built in
    (`GenerationMixin._contrastive_search`). Its outputs, recorded with that release on the same weights (see the
    file's "how"), are the reference. SmolLM2's cases stop after `tokens` and compare that prefix: a step's choice
    depends only on the tokens before it, so a shorter run is the start of the longer one."""
    c = recorded_cases(name)[case]
    model, _ = models.load_cached(name)
    saved = copy.deepcopy(model.generation_config)
    model.generation_config.eos_token_id = c.get("eos_token_id", saved.eos_token_id)  # the default stop: its config
    try:
        ids = torch.tensor([c["prompt_ids"]])
        out = decoding.contrastive_search(model, ids, k=c["k"], alpha=c["alpha"],
                                          max_new_tokens=tokens or c["max_new_tokens"])
    finally:
        model.generation_config = saved
    assert out[0, ids.shape[1]:].tolist() == c["new_ids"][: tokens or c["max_new_tokens"]]


def test_speculative_sample_follows_the_target_like_transformers():
    """Both speculative-sampling rules (labkit's and transformers' `_speculative_sampling`, one draft token) draw
    the first token from the target p, whatever the draft q, and keep the draft's token with probability Σ min(p, q)
    (Leviathan et al., 2023, Corollary 3.6)."""
    gen = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(6, generator=gen) * 2, -1)
    q = torch.softmax(torch.randn(6, generator=gen) * 2, -1)  # a poor draft: far from p
    n = 20000
    tokens, accepted = decoding.speculative_sample(p, q, n, gen)
    ours = torch.bincount(tokens, minlength=6) / n
    torch.manual_seed(0)
    theirs = torch.zeros(6)
    for _ in range(2000):
        x = torch.multinomial(q, 1)
        valid, _ = _speculative_sampling(x.view(1, 1), q.log().view(1, 1, 6), 1, torch.stack([p, p]).log()[None])
        theirs[valid[0, 0]] += 1 / 2000
    beta = float(torch.minimum(p, q).sum())
    assert 0.5 * float((p - q).abs().sum()) > 0.3  # the draft alone would be far off
    assert 0.5 * float((ours - p).abs().sum()) < 0.02 and 0.5 * float((theirs - p).abs().sum()) < 0.05
    assert abs(float(accepted.float().mean()) - beta) < 4 * math.sqrt(beta * (1 - beta) / n)


@pytest.mark.parametrize("alpha, gamma, c", [(0.0, 4, 0.5), (0.6, 3, 0.1), (0.9, 5, 0.05), (1.0, 4, 0.2)])
def test_expected_speedup_is_leviathans_formula_and_matches_a_simulation(alpha, gamma, c):
    """Theorem 3.8's closed form, checked against a simulation of i.i.d. acceptances: each round keeps draft tokens
    until the first rejection (at most gamma) and adds one target token; a round costs gamma·c + 1 target steps."""
    closed = (gamma + 1) if alpha == 1 else (1 - alpha ** (gamma + 1)) / (1 - alpha)
    expected = closed / (gamma * c + 1)
    assert decoding.expected_speedup(alpha, gamma, c) == pytest.approx(expected)
    gen = torch.Generator().manual_seed(1)
    kept = (torch.rand(20000, gamma, generator=gen) < alpha).long().cumprod(1).sum(1) + 1  # tokens per round
    assert float(kept.float().mean()) == pytest.approx(decoding.expected_tokens_per_call(alpha, gamma), rel=0.02)
    assert float(kept.float().mean()) / (gamma * c + 1) == pytest.approx(expected, rel=0.02)


@pytest.mark.parametrize("args, message", [((1.2, 4, 0.1), "0 <= alpha <= 1"), ((0.5, 0, 0.1), "gamma >= 1"),
                                           ((0.5, 4, -1.0), "c >= 0")])  # fmt: skip
def test_expected_speedup_rejects_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        decoding.expected_speedup(*args)


def test_speculation_counts_alpha_from_the_compared_tokens_only():
    model, tok = models.load_cached("tiny-bloom-shakespeare")
    from labkit import quant

    draft = quant.quantize("int8-dynamic", "tiny-bloom-shakespeare", model=model).model
    ids = tok("ROMEO:\n", return_tensors="pt")["input_ids"]
    spec = decoding.speculative_greedy(model, draft, ids, gamma=4, max_new_tokens=16)
    assert spec.accepted + spec.rejected <= spec.proposed and spec.rejected <= spec.target_calls
    assert spec.alpha == pytest.approx(spec.accepted / (spec.accepted + spec.rejected))
    assert spec.alpha >= spec.acceptance_rate
    same = decoding.speculative_greedy(model, model, ids, gamma=4, max_new_tokens=16)
    assert same.rejected == 0 and same.alpha == 1.0 == same.acceptance_rate
