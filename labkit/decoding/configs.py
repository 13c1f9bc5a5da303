"""Decoding methods as `GenerationConfig` builders for `model.generate()`, one plain function per method.

    cfg = config_for("top-p", p=0.9, temperature=0.8, max_new_tokens=32)
    model.generate(input_ids, generation_config=cfg)

Every builder validates its parameters before anything runs and names the valid range when one is off.
"""

from __future__ import annotations

from collections.abc import Callable

from transformers import GenerationConfig


def check_param(name: str, value: float, ok: bool, valid: str) -> None:
    """Raise a ValueError naming the parameter and its valid range unless `ok`.

    Args:
        name: the parameter's name as the caller typed it. value: its value. ok: whether it is in range.
        valid: the valid range in words, e.g. "0 < top_p <= 1".
    Raises:
        ValueError: "{name}={value!r} is out of range; valid: {valid}" when not `ok`.
    """
    if not ok:
        raise ValueError(f"{name}={value!r} is out of range; valid: {valid}")


EARLY_STOPPING = (False, True, "never")


def check_early_stopping(early_stopping: bool | str) -> None:
    """Raise a ValueError unless `early_stopping` is one of beam search's three rules: False, True or "never".

    Raises:
        ValueError: naming the valid choices (0 and 1 are refused: transformers tests `is True`).
    """
    if not any(early_stopping is c if isinstance(c, bool) else early_stopping == c for c in EARLY_STOPPING):
        raise ValueError(f"early_stopping={early_stopping!r} is not valid; choose from False, True, 'never'")


def _sampling(temperature: float, top_k: int = 0, top_p: float = 1.0, min_p: float | None = None,
              **kw) -> GenerationConfig:
    check_param("temperature", temperature, temperature > 0, "temperature > 0 when sampling (use greedy for 0)")
    check_param("top_k", top_k, top_k >= 0, "top_k >= 1 (0 disables it)")
    check_param("top_p", top_p, 0 < top_p <= 1, "0 < top_p <= 1")
    if min_p is not None:
        check_param("min_p", min_p, 0 <= min_p <= 1, "0 <= min_p <= 1")
    return GenerationConfig(do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, **kw)


def greedy(max_new_tokens: int = 32) -> GenerationConfig:
    """Greedy search: the most likely token at every step.

    Args:
        max_new_tokens: tokens to generate at most (generation stops earlier at EOS).
    Returns:
        GenerationConfig(do_sample=False).
    """
    return GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens)


def beam(num_beams: int = 4, no_repeat_ngram_size: int = 0, length_penalty: float = 1.0, num_return_sequences: int = 1,
         max_new_tokens: int = 32, early_stopping: bool | str = False) -> GenerationConfig:
    """Beam search: keep the `num_beams` most likely partial continuations at every step.

    Args:
        num_beams: beams kept (>= 1; 1 is greedy). no_repeat_ngram_size: forbid repeating n-grams of this size
            (0: off). length_penalty: finished beams are scored log p / length**length_penalty.
        num_return_sequences: best finished beams returned (1 <= n <= num_beams).
        max_new_tokens: the length limit; every running beam finishes there.
        early_stopping: when the search stops before the limit (transformers' `_check_early_stop_heuristic`):
            False, once num_beams have finished and the best running beam, scored at its current length, cannot beat
            the worst of them; True, once num_beams have finished; "never", only when no running beam can win.
    Returns:
        GenerationConfig for beam search.
    Raises:
        ValueError: for num_beams < 1, num_return_sequences outside [1, num_beams], no_repeat_ngram_size < 0 or
            early_stopping not False / True / "never".
    """
    check_param("num_beams", num_beams, num_beams >= 1, "num_beams >= 1")
    check_param("no_repeat_ngram_size", no_repeat_ngram_size, no_repeat_ngram_size >= 0, "no_repeat_ngram_size >= 0")
    check_early_stopping(early_stopping)
    check_param("num_return_sequences", num_return_sequences, 1 <= num_return_sequences <= num_beams,
                "1 <= num_return_sequences <= num_beams")
    return GenerationConfig(do_sample=False, num_beams=num_beams, no_repeat_ngram_size=no_repeat_ngram_size,
                            length_penalty=length_penalty, num_return_sequences=num_return_sequences,
                            max_new_tokens=max_new_tokens, early_stopping=early_stopping)


def sample(temperature: float = 1.0, max_new_tokens: int = 32) -> GenerationConfig:
    """Pure sampling from softmax(logits / temperature), every token allowed.

    Raises:
        ValueError: for temperature <= 0 (use `greedy`).
    """
    return _sampling(temperature, max_new_tokens=max_new_tokens)


def top_k(k: int = 50, temperature: float = 1.0, max_new_tokens: int = 32) -> GenerationConfig:
    """Sampling restricted to the `k` most likely tokens (Fan et al., 2018).

    Raises:
        ValueError: for k < 1 or temperature <= 0.
    """
    check_param("top_k", k, k >= 1, "top_k >= 1")
    return _sampling(temperature, top_k=k, max_new_tokens=max_new_tokens)


def top_p(p: float = 0.9, temperature: float = 1.0, max_new_tokens: int = 32) -> GenerationConfig:
    """Nucleus sampling: the smallest set of most likely tokens whose probability sums to at least `p`
    (Holtzman et al., 2020).

    Raises:
        ValueError: for p outside (0, 1] or temperature <= 0.
    """
    return _sampling(temperature, top_p=p, max_new_tokens=max_new_tokens)


def top_k_top_p(k: int = 50, p: float = 0.9, temperature: float = 1.0, max_new_tokens: int = 32) -> GenerationConfig:
    """Top-k, then top-p on what remains (transformers' warper order).

    Raises:
        ValueError: for k < 1, p outside (0, 1] or temperature <= 0.
    """
    check_param("top_k", k, k >= 1, "top_k >= 1")
    return _sampling(temperature, top_k=k, top_p=p, max_new_tokens=max_new_tokens)


def min_p(p: float = 0.05, temperature: float = 1.0, max_new_tokens: int = 32) -> GenerationConfig:
    """Min-p sampling: keep every token at least `p` times as likely as the most likely one (Nguyen et al., 2024).

    Raises:
        ValueError: for p outside [0, 1] or temperature <= 0.
    """
    return _sampling(temperature, min_p=p, max_new_tokens=max_new_tokens)


def repetition_penalty(penalty: float = 1.3, max_new_tokens: int = 32) -> GenerationConfig:
    """Greedy with the CTRL repetition penalty (Keskar et al., 2019): the logit of every token already present
    is divided by `penalty` when positive and multiplied by it when negative.

    Raises:
        ValueError: for penalty <= 0 (1.0 is no penalty, > 1 discourages repeats).
    """
    check_param("penalty", penalty, penalty > 0, "penalty > 0 (1.0 = none, > 1 discourages repeats)")
    return GenerationConfig(do_sample=False, repetition_penalty=float(penalty), max_new_tokens=max_new_tokens)


def prompt_lookup(num_tokens: int = 3, max_new_tokens: int = 32) -> GenerationConfig:
    """Speculative greedy decoding whose draft is an n-gram match inside the prompt (no second model).

    Args:
        num_tokens: tokens proposed per match (>= 1).
    Returns:
        GenerationConfig with prompt_lookup_num_tokens; its output equals greedy's.
    Raises:
        ValueError: for num_tokens < 1.
    """
    check_param("num_tokens", num_tokens, num_tokens >= 1, "num_tokens >= 1")
    return GenerationConfig(do_sample=False, prompt_lookup_num_tokens=num_tokens, max_new_tokens=max_new_tokens)


METHODS: dict[str, Callable[..., GenerationConfig]] = {
    "greedy": greedy, "beam": beam, "sample": sample, "top-k": top_k, "top-p": top_p, "top-k+top-p": top_k_top_p,
    "min-p": min_p, "repetition-penalty": repetition_penalty, "prompt-lookup": prompt_lookup,
}  # fmt: skip
# Implemented in labkit (decoding.search) rather than by a GenerationConfig:
CUSTOM = ("contrastive", "speculative")


def config_for(method: str, **params) -> GenerationConfig:
    """The GenerationConfig of a method by name.

    Args:
        method: one of METHODS ("greedy", "beam", "sample", "top-k", "top-p", "top-k+top-p", "min-p",
            "repetition-penalty", "prompt-lookup").
        **params: that builder's parameters (e.g. p=0.9, temperature=0.8, max_new_tokens=32).
    Returns:
        GenerationConfig for `model.generate(generation_config=...)`.
    Raises:
        ValueError: for an unknown method (naming every method, CUSTOM included) or a parameter out of range.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {list(METHODS) + list(CUSTOM)}")
    return METHODS[method](**params)
