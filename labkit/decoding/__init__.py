"""Decoding: generation configs, the sampling rule, step-through traces, beam, contrastive and speculative search,
and the one decode timing.

    configs      GenerationConfig builders (greedy, beam, top-p, ...), METHODS, config_for
    sampling     filter_logits, sample_next: the one top-k / top-p / min-p rule
    lm           eos_ids, next_logits: the stop ids and the forward pass every from-scratch loop shares with generate()
    traces       step_through, decode_loop: from-scratch decoding that records each choice; text_metrics
    beam_search  beam_step_through: beam search keeping the tree and why it stopped (not `beam`: the config builder)
    search       contrastive_search, speculative_greedy, speculative_sample, expected_speedup
    timing       time_greedy, time_generate, time_decode -> DecodeRun (TTFT, TPOT, decode tokens/s)
"""

from labkit.decoding.beam_search import BeamNode, BeamTrace, Hypothesis, banned_ngram_tokens, beam_step_through
from labkit.decoding.configs import (
    CUSTOM,
    EARLY_STOPPING,
    METHODS,
    beam,
    check_early_stopping,
    check_param,
    config_for,
    greedy,
    min_p,
    prompt_lookup,
    repetition_penalty,
    sample,
    top_k,
    top_k_top_p,
    top_p,
)
from labkit.decoding.lm import eos_ids, next_logits
from labkit.decoding.sampling import filter_logits, sample_next
from labkit.decoding.search import (
    Speculation,
    contrastive_scores,
    contrastive_search,
    expected_speedup,
    expected_tokens_per_call,
    speculative_greedy,
    speculative_sample,
)
from labkit.decoding.timing import (
    DecodeRun,
    random_prompt,
    static_cache_compile,
    time_decode,
    time_generate,
    time_greedy,
)
from labkit.decoding.traces import Step, Trace, decode_loop, step_through, text_metrics

__all__ = [
    "CUSTOM", "EARLY_STOPPING", "METHODS", "BeamNode", "BeamTrace", "DecodeRun", "Hypothesis", "Speculation", "Step",
    "Trace", "banned_ngram_tokens", "beam", "beam_step_through", "check_early_stopping", "check_param", "config_for",
    "contrastive_scores", "contrastive_search", "decode_loop", "eos_ids", "expected_speedup",
    "expected_tokens_per_call", "filter_logits", "greedy", "min_p", "next_logits", "prompt_lookup", "random_prompt",
    "repetition_penalty", "sample", "sample_next", "speculative_greedy", "speculative_sample", "static_cache_compile",
    "step_through", "text_metrics", "time_decode", "time_generate", "time_greedy", "top_k", "top_k_top_p", "top_p",
]  # fmt: skip
