"""Decoding: generation configs, the sampling rule, step-through traces, beam, contrastive and speculative search,
and the one decode timing.

    configs      GenerationConfig builders (greedy, beam, top-p, ...), METHODS, config_for
    sampling     filter_logits, sample_next: the one top-k / top-p / min-p rule
    traces       step_through, decode_loop: from-scratch decoding that records each choice; text_metrics
    beam_search  beam_step_through: beam search keeping the tree (not `beam`: that is the config builder)
    search       contrastive_search, speculative_greedy
    timing       time_greedy, time_generate, time_decode -> DecodeRun (TTFT, TPOT, decode tokens/s)
"""

from labkit.decoding.beam_search import BeamNode, BeamTrace, beam_step_through
from labkit.decoding.configs import (
    CUSTOM,
    METHODS,
    beam,
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
from labkit.decoding.sampling import filter_logits, sample_next
from labkit.decoding.search import Speculation, contrastive_scores, contrastive_search, speculative_greedy
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
    "CUSTOM", "METHODS", "BeamNode", "BeamTrace", "DecodeRun", "Speculation", "Step", "Trace", "beam",
    "beam_step_through", "check_param", "config_for", "contrastive_scores", "contrastive_search", "decode_loop",
    "filter_logits", "greedy", "min_p", "prompt_lookup", "random_prompt", "repetition_penalty", "sample",
    "sample_next", "speculative_greedy", "static_cache_compile", "step_through", "text_metrics", "time_decode",
    "time_generate", "time_greedy", "top_k", "top_k_top_p", "top_p",
]  # fmt: skip
