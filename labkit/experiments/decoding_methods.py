"""Decoding methods side by side, measured: text, diversity, likelihood and speed; where the cut-offs fall;
temperature. Every time comes from `decoding.timing` (speculative decoding: `experiments.speculative`; beam trees and
how likely each search's output is: `experiments.searches`). Each function takes the device its model runs on."""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from labkit import decoding, devices, measure, models, plots
from labkit.decoding import timing
from labkit.plots import Measured

DEFAULT_METHODS: dict[str, dict] = {
    "greedy": {}, "beam": {"num_beams": 4}, "sample": {"temperature": 1.0}, "top-k": {"k": 50},
    "top-p": {"p": 0.9}, "top-k+top-p": {"k": 50, "p": 0.9}, "min-p": {"p": 0.05},
    "repetition-penalty": {"penalty": 1.3}, "prompt-lookup": {"num_tokens": 3}, "contrastive": {"k": 4, "alpha": 0.6},
}  # fmt: skip


def _next_token_logits(model: str, prompt: str, device: str | torch.device) -> tuple[torch.Tensor, object]:
    """(vocab,) float32 next-token logits after `prompt` (no chat template), on the CPU, and the tokenizer."""
    net, tok = models.load_cached(model, device)
    with torch.no_grad():
        logits = net(input_ids=tok(prompt, return_tensors="pt")["input_ids"].to(net.device)).logits[0, -1]
    return logits.float().cpu(), tok


def prompt_ids(tokenizer, prompt: str) -> torch.Tensor:
    """The ids of a prompt, with the chat template for chat models (`models.encode_prompt`).

    Args:
        tokenizer: the model's tokenizer. prompt: the text.
    Returns:
        (1, prompt_len) int64 token ids.
    """
    return models.encode_prompt(tokenizer, prompt)["input_ids"]


@torch.no_grad()
def token_logprobs(model, ids: torch.Tensor, n_new: int) -> torch.Tensor:
    """log p(token | prefix) of the last `n_new` tokens, from one forward pass over the whole sequence (no cache:
    independent of how a search computed its own running score).

    Args:
        model: a causal LM. ids: (1, prompt_len + n_new) prompt and generated ids. n_new: generated tokens.
    Returns:
        (n_new,) float32 log-probabilities, nats.
    """
    logp = model(input_ids=ids, use_cache=False).logits[0, :-1].float().log_softmax(-1)
    return logp.gather(-1, ids[0, 1:].unsqueeze(-1)).squeeze(-1)[ids.shape[1] - 1 - n_new :]


def mean_logprob(model, ids: torch.Tensor, n_new: int) -> float:
    """Average log-probability the model gives the generated tokens (higher = more 'expected' text).

    Args:
        model: a causal LM. ids: (1, prompt_len + n_new) prompt and generated ids. n_new: generated tokens.
    Returns:
        mean log p(token | prefix) over the last n_new tokens, nats (NaN when n_new is 0).
    """
    return float(token_logprobs(model, ids, n_new).mean()) if n_new else math.nan


def timed_method(model, tokenizer, ids: torch.Tensor, method: str, params: dict, max_new_tokens: int,
                 warmup: int = 1, repeat: int = 3) -> timing.DecodeRun:
    """Time one decoding method by name through `decoding.timing` (exactly `max_new_tokens` tokens: EOS is
    suppressed until then, so every method does the same amount of work).

    Args:
        model, tokenizer: a causal LM and its tokenizer. ids: (1, prompt_len) prompt ids.
        method: a name of `decoding.config_for`, or "contrastive" (labkit's loop; params k, alpha).
        params: the method's parameters. max_new_tokens: tokens to generate. warmup, repeat: generations.
    Returns:
        DecodeRun (tokens of the last repeat; seed torch first for reproducible sampling).
    Raises:
        ValueError: an unknown method or a parameter out of range.
    """
    ids = ids.to(model.device)
    if method == "contrastive":
        def loop(mark):
            out = decoding.contrastive_search(model, ids, max_new_tokens=max_new_tokens, eos_token_id=[], mark=mark,
                                              **params)  # [] : no early stop, exactly max_new_tokens like the rest
            return out[:, ids.shape[1]:].tolist()

        return timing.time_decode(loop, batch=1, new_tokens=max_new_tokens, warmup=warmup, repeat=repeat)
    cfg = decoding.config_for(method, **params, max_new_tokens=max_new_tokens)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return timing.time_generate(model, ids, max_new_tokens, warmup, repeat, generation_config=cfg, pad_token_id=pad)


def compare_methods(model: str = "smollm2-135m", prompt: str = "Write a short poem about the sea.",
                    methods: dict[str, dict] | None = None, max_new_tokens: int = 32, seed: int = 0,
                    repeat: int = 3, device: str | torch.device = "auto") -> Measured:
    """One prompt through every method: the text, its diversity and repetition, likelihood and speed, on `device`.

    Args:
        model: a registry name. prompt: the text (chat template for chat models).
        methods: method name -> parameters (default: DEFAULT_METHODS). max_new_tokens: tokens per method.
        seed: torch's seed before each method. repeat: timed generations (after one warm-up).
        device: where the model runs (`hardware.resolve_device`).
    Returns:
        Measured: table (method, params, device (label), text, tokens_per_s = new tokens / median whole generation,
        prefill included, warmups and repeats of that timing, mean_logprob, distinct_1, distinct_2, repetition_4gram,
        length) and a diversity bar figure.
    Raises:
        ValueError: an unknown method, device or a parameter out of range.
    """
    net, tok = models.load_cached(model, device)
    ids = prompt_ids(tok, prompt).to(net.device)
    label = devices.device_label(net.device)
    rows = []
    for method, params in (methods or DEFAULT_METHODS).items():
        torch.manual_seed(seed)
        run = timed_method(net, tok, ids, method, params, max_new_tokens, repeat=repeat)
        new = run.tokens[0]
        out = torch.cat([ids, torch.tensor([new], device=ids.device)], dim=1)
        rows.append({"method": method, "params": params, "device": label,
                     "text": tok.decode(new, skip_special_tokens=True),
                     "tokens_per_s": run.end_to_end_tok_s, "warmups": len(run.warmups_s), "repeats": run.repeats,
                     "mean_logprob": mean_logprob(net, out, len(new)),
                     **decoding.text_metrics(new)})
    table = measure.results_frame(rows, model=model, prompt=prompt, device=label)
    long = table.melt(id_vars="method", value_vars=["distinct_1", "distinct_2", "repetition_4gram"], var_name="metric")
    long.attrs = table.attrs
    return Measured(table, plots.bars(long, "method", "value", "Diversity and repetition per method", color="metric"))


def next_token_cutoffs(model: str = "smollm2-135m", prompt: str = "The capital of France is", temperature: float = 1.0,
                       k: int = 5, p: float = 0.9, min_p: float = 0.1, top: int = 15,
                       device: str | torch.device = "auto") -> Measured:
    """The next-token distribution and which tokens top-k, top-p and min-p keep (`decoding.filter_logits`).

    Args:
        model: a registry name. prompt: the text. temperature: divides the logits. k, p, min_p: the cut-offs.
        top: most likely tokens shown. device: where the model's forward runs (the cut-offs then run on the CPU).
    Returns:
        Measured: table (token, probability, one kept/cut column per rule), attrs kept_counts (tokens each rule
        keeps out of the whole vocabulary) and entropy_nats; three bar panels, kept tokens in colour.
    """
    logits, tok = _next_token_logits(model, prompt, device)
    probs = (logits / temperature).softmax(-1)
    kept = {
        f"top-k (k={k})": decoding.filter_logits(logits, temperature, top_k=k),
        f"top-p (p={p})": decoding.filter_logits(logits, temperature, top_p=p),
        f"min-p (min_p={min_p})": decoding.filter_logits(logits, temperature, min_p=min_p),
    }
    best = torch.topk(probs, top).indices.tolist()
    table = pd.DataFrame({"token": [repr(tok.decode([t])) for t in best], "probability": probs[best].tolist(),
                          **{name: torch.isfinite(v[best]).tolist() for name, v in kept.items()}})
    table.attrs["kept_counts"] = {name: int(torch.isfinite(v).sum()) for name, v in kept.items()}
    fig = make_subplots(rows=1, cols=3, subplot_titles=list(kept), shared_yaxes=True)
    for col, name in enumerate(kept, start=1):
        colors = [plots.COLORS[0] if keep else "#d0d0d0" for keep in table[name]]
        fig.add_trace(go.Bar(x=table.token, y=table.probability, marker_color=colors, showlegend=False), 1, col)
    fig.update_yaxes(title="probability", row=1, col=1)
    entropy = float(-(probs * probs.clamp_min(1e-30).log()).sum())
    table.attrs["entropy_nats"] = entropy
    title = f"Next token after {prompt!r} at T={temperature} (entropy {entropy:.2f} nats); kept tokens in colour"
    return Measured(table, plots.style(fig, title))


def temperature_entropy(model: str = "smollm2-135m", prompt: str = "The capital of France is",
                        temperatures=(0.25, 0.5, 0.75, 1.0, 1.5, 2.0), device: str | torch.device = "auto") -> Measured:
    """Entropy of the next-token distribution as temperature rescales the logits.

    Args:
        model: a registry name. prompt: the text. temperatures: each > 0. device: where the forward runs.
    Returns:
        Measured: table (temperature, entropy_nats, top1_probability) and a two-axis figure.
    Raises:
        ValueError: a temperature <= 0.
    """
    logits, _ = _next_token_logits(model, prompt, device)
    rows = []
    for t in temperatures:
        if t <= 0:
            raise ValueError(f"temperature must be > 0, got {t}")
        probs = (logits / t).softmax(-1)
        rows.append({"temperature": t, "entropy_nats": float(-(probs * probs.clamp_min(1e-30).log()).sum()),
                     "top1_probability": float(probs.max())})
    table = pd.DataFrame(rows)
    return Measured(table, plots.dual_axis(table, "temperature", "entropy_nats", "top1_probability",
                                           "Temperature flattens (T > 1) or sharpens (T < 1) the distribution"))


def explore(model: str = "smollm2-135m", prompt: str = "Once upon a time", method: str = "top-p",
            temperature: float = 1.0, top_k: int = 50, top_p: float = 0.9, min_p: float = 0.05, steps: int = 12,
            seed: int = 0, device: str | torch.device = "auto") -> Measured:
    """The widget's function: step through one method (`decoding.step_through`) and show each step's choice.

    Args:
        model: a registry name. prompt: the text. method: greedy, sample, top-k, top-p, min-p or top-k+top-p.
        temperature, top_k, top_p, min_p: the method's parameters. steps: tokens. seed: the sampling seed.
        device: where the model's forward runs (the draws are made on the CPU, `decoding.decode_loop`).
    Returns:
        Measured: table (step, chosen, p(chosen), kept, kept_mass, top-3) and a bar of p(chosen) per step.
    Raises:
        ValueError: another method.
    """
    params = {"greedy": {}, "sample": {"temperature": temperature}, "top-k": {"k": top_k, "temperature": temperature},
              "top-p": {"p": top_p, "temperature": temperature}, "min-p": {"p": min_p, "temperature": temperature},
              "top-k+top-p": {"k": top_k, "p": top_p, "temperature": temperature}}
    if method not in params:
        raise ValueError(f"explore steps through {list(params)}; got {method!r}")
    net, tok = models.load_cached(model, device)
    trace = decoding.step_through(net, tok, prompt, method, steps, seed=seed, **params[method])
    table = pd.DataFrame([{"step": s.position, "chosen": repr(s.chosen), "p(chosen)": s.chosen_prob, "kept": s.kept,
                           "kept_mass": s.kept_mass, "top-3": [t for t, _ in s.candidates[:3]]} for s in trace.steps])
    fig = go.Figure(go.Bar(x=table.step, y=table["p(chosen)"], text=table.chosen, textposition="outside"))
    fig.update_yaxes(title="model probability of the chosen token", range=[0, 1.1])
    fig.update_xaxes(title="step")
    return Measured(table, plots.style(fig, f"{method}: {prompt!r} →{trace.text!r}"[:120]))
