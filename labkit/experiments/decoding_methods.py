"""Decoding methods side by side, measured: text, diversity, likelihood and speed; where the cut-offs fall;
temperature; beam trees; speculative decoding's acceptance and speed-up. Every time comes from `decoding.timing`."""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from labkit import decoding, measure, models, plots, quant
from labkit.decoding import timing
from labkit.plots import Measured

DEFAULT_METHODS: dict[str, dict] = {
    "greedy": {}, "beam": {"num_beams": 4}, "sample": {"temperature": 1.0}, "top-k": {"k": 50},
    "top-p": {"p": 0.9}, "top-k+top-p": {"k": 50, "p": 0.9}, "min-p": {"p": 0.05},
    "repetition-penalty": {"penalty": 1.3}, "prompt-lookup": {"num_tokens": 3}, "contrastive": {"k": 4, "alpha": 0.6},
}  # fmt: skip


def prompt_ids(tokenizer, prompt: str) -> torch.Tensor:
    """The ids of a prompt, with the chat template for chat models (`models.encode_prompt`).

    Args:
        tokenizer: the model's tokenizer. prompt: the text.
    Returns:
        (1, prompt_len) int64 token ids.
    """
    return models.encode_prompt(tokenizer, prompt)["input_ids"]


@torch.no_grad()
def mean_logprob(model, ids: torch.Tensor, n_new: int) -> float:
    """Average log-probability the model gives the generated tokens (higher = more 'expected' text).

    Args:
        model: a causal LM. ids: (1, prompt_len + n_new) prompt and generated ids. n_new: generated tokens.
    Returns:
        mean log p(token | prefix) over the last n_new tokens, nats (NaN when n_new is 0).
    """
    if n_new == 0:
        return math.nan
    logp = model(input_ids=ids, use_cache=False).logits[0, :-1].float().log_softmax(-1)
    chosen = logp.gather(-1, ids[0, 1:].unsqueeze(-1)).squeeze(-1)
    return float(chosen[-n_new:].mean())


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
    if method == "contrastive":
        def loop(mark):
            out = decoding.contrastive_search(model, ids, max_new_tokens=max_new_tokens, mark=mark, **params)
            return out[:, ids.shape[1]:].tolist()

        return timing.time_decode(loop, batch=1, new_tokens=max_new_tokens, warmup=warmup, repeat=repeat)
    cfg = decoding.config_for(method, **params, max_new_tokens=max_new_tokens)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return timing.time_generate(model, ids, max_new_tokens, warmup, repeat, generation_config=cfg, pad_token_id=pad)


def compare_methods(model: str = "smollm2-135m", prompt: str = "Write a short poem about the sea.",
                    methods: dict[str, dict] | None = None, max_new_tokens: int = 32, seed: int = 0,
                    repeat: int = 3) -> Measured:
    """One prompt through every method: the text, its diversity and repetition, likelihood and speed.

    Args:
        model: a registry name. prompt: the text (chat template for chat models).
        methods: method name -> parameters (default: DEFAULT_METHODS). max_new_tokens: tokens per method.
        seed: torch's seed before each method. repeat: timed generations (after one warm-up).
    Returns:
        Measured: table (method, params, text, tokens_per_s = new tokens / median whole generation, prefill
        included, mean_logprob, distinct_1, distinct_2, repetition_4gram, length) and a diversity bar figure.
    Raises:
        ValueError: an unknown method or a parameter out of range.
    """
    net, tok = models.load_cached(model)
    ids = prompt_ids(tok, prompt)
    rows = []
    for method, params in (methods or DEFAULT_METHODS).items():
        torch.manual_seed(seed)
        run = timed_method(net, tok, ids, method, params, max_new_tokens, repeat=repeat)
        new = run.tokens[0]
        out = torch.cat([ids, torch.tensor([new])], dim=1)
        rows.append({"method": method, "params": params, "text": tok.decode(new, skip_special_tokens=True),
                     "tokens_per_s": run.end_to_end_tok_s, "mean_logprob": mean_logprob(net, out, len(new)),
                     **decoding.text_metrics(new)})
    table = measure.results_frame(rows, model=model, prompt=prompt)
    long = table.melt(id_vars="method", value_vars=["distinct_1", "distinct_2", "repetition_4gram"], var_name="metric")
    long.attrs = table.attrs
    return Measured(table, plots.bars(long, "method", "value", "Diversity and repetition per method", color="metric"))


def next_token_cutoffs(model: str = "smollm2-135m", prompt: str = "The capital of France is", temperature: float = 1.0,
                       k: int = 5, p: float = 0.9, min_p: float = 0.1, top: int = 15) -> Measured:
    """The next-token distribution and which tokens top-k, top-p and min-p keep (`decoding.filter_logits`).

    Args:
        model: a registry name. prompt: the text. temperature: divides the logits. k, p, min_p: the cut-offs.
        top: most likely tokens shown.
    Returns:
        Measured: table (token, probability, one kept/cut column per rule), attrs kept_counts (tokens each rule
        keeps out of the whole vocabulary) and entropy_nats; three bar panels, kept tokens in colour.
    """
    net, tok = models.load_cached(model)
    with torch.no_grad():
        logits = net(input_ids=tok(prompt, return_tensors="pt")["input_ids"]).logits[0, -1].float()
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
                        temperatures=(0.25, 0.5, 0.75, 1.0, 1.5, 2.0)) -> Measured:
    """Entropy of the next-token distribution as temperature rescales the logits.

    Args:
        model: a registry name. prompt: the text. temperatures: each > 0.
    Returns:
        Measured: table (temperature, entropy_nats, top1_probability) and a two-axis figure.
    Raises:
        ValueError: a temperature <= 0.
    """
    net, tok = models.load_cached(model)
    with torch.no_grad():
        logits = net(input_ids=tok(prompt, return_tensors="pt")["input_ids"]).logits[0, -1].float()
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


def beam_tree_figure(trace: decoding.BeamTrace, title: str = "Beam search tree") -> go.Figure:
    """Each running beam per step; lines join a beam to the beam it grew from.

    Args:
        trace: a `decoding.beam_step_through` result. title: the figure's title.
    Returns:
        dots (colour: cumulative log-probability, text: the token) per step and beam slot.
    """
    fig = go.Figure()
    pos = {(n.step, n.beam): (n.step, -n.beam) for n in trace.nodes}
    for n in trace.nodes:
        if n.step > 0:
            (x0, y0), (x1, y1) = pos[(n.step - 1, n.parent)], pos[(n.step, n.beam)]
            fig.add_trace(go.Scatter(x=[x0, x1], y=[y0, y1], mode="lines", line=dict(color="#bbbbbb"),
                                     showlegend=False, hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=[pos[(n.step, n.beam)][0] for n in trace.nodes],
                             y=[pos[(n.step, n.beam)][1] for n in trace.nodes],
                             text=[n.token for n in trace.nodes], mode="markers+text", textposition="top center",
                             marker=dict(color=[n.score for n in trace.nodes], colorscale="Viridis", size=10,
                                         colorbar=dict(title="log p")), showlegend=False))
    fig.update_xaxes(title="step")
    fig.update_yaxes(title="beam slot", showticklabels=False)
    return plots.style(fig, title)


def speculative_report(target: str = "smollm2-135m", prompt: str = "Explain in one sentence what a GPU is.",
                       gamma: int = 4, max_new_tokens: int = 32, repeat: int = 3) -> Measured:
    """Greedy vs speculative decoding (an int8 copy of the target as draft; prompt lookup): same tokens?
    acceptance? speed-up?

    Each row is one `decoding.timing.time_generate` run (one warm-up, `repeat` timed generations, exactly
    `max_new_tokens` tokens); speed-up = greedy's median generation time / the row's.

    Args:
        target: a registry name. prompt: the text. gamma: draft tokens per round of labkit's own loop.
        max_new_tokens: tokens per generation. repeat: timed generations.
    Returns:
        Measured: table (method, seconds, speedup, same_tokens) with attrs acceptance_rate, gamma, target_calls and
        labkit_same_tokens (labkit's `speculative_greedy` gives greedy's tokens), and a speed-up bar figure.
    """
    net, tok = models.load_cached(target)
    draft = quant.quantize("int8-dynamic", target, model=net).model
    ids = prompt_ids(tok, prompt)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    variants = {"greedy (target only)": {}, "assisted, int8 draft (transformers)": {"assistant_model": draft},
                "prompt lookup (transformers)": {"prompt_lookup_num_tokens": 3}}
    runs = {name: timing.time_greedy(net, ids, max_new_tokens, repeat=repeat, pad_token_id=pad, **kwargs)
            for name, kwargs in variants.items()}
    base = runs["greedy (target only)"]
    rows = [{"method": name, "seconds": run.total_s, "speedup": base.total_s / run.total_s,
             "same_tokens": run.tokens == base.tokens} for name, run in runs.items()]
    spec = decoding.speculative_greedy(net, draft, ids, gamma=gamma, max_new_tokens=max_new_tokens)
    with torch.no_grad():  # greedy as generate() runs it, stopping at end of text (the timed runs force the length)
        greedy = net.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                              do_sample=False, pad_token_id=pad)[0, ids.shape[1]:].tolist()
    same = spec.token_ids[0, ids.shape[1]:].tolist() == greedy
    table = measure.results_frame(rows, model=target, acceptance_rate=spec.acceptance_rate, gamma=gamma,
                                  target_calls=spec.target_calls, labkit_same_tokens=same)
    title = f"Speculative decoding: int8 draft accepts {spec.acceptance_rate:.0%} of its guesses (γ={gamma})"
    return Measured(table, plots.bars(table, "method", "speedup", title, ylabel="× greedy speed"))


def explore(model: str = "smollm2-135m", prompt: str = "Once upon a time", method: str = "top-p",
            temperature: float = 1.0, top_k: int = 50, top_p: float = 0.9, min_p: float = 0.05, steps: int = 12,
            seed: int = 0) -> Measured:
    """The widget's function: step through one method (`decoding.step_through`) and show each step's choice.

    Args:
        model: a registry name. prompt: the text. method: greedy, sample, top-k, top-p, min-p or top-k+top-p.
        temperature, top_k, top_p, min_p: the method's parameters. steps: tokens. seed: the sampling seed.
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
    net, tok = models.load_cached(model)
    trace = decoding.step_through(net, tok, prompt, method, steps, seed=seed, **params[method])
    table = pd.DataFrame([{"step": s.position, "chosen": repr(s.chosen), "p(chosen)": s.chosen_prob, "kept": s.kept,
                           "kept_mass": s.kept_mass, "top-3": [t for t, _ in s.candidates[:3]]} for s in trace.steps])
    fig = go.Figure(go.Bar(x=table.step, y=table["p(chosen)"], text=table.chosen, textposition="outside"))
    fig.update_yaxes(title="model probability of the chosen token", range=[0, 1.1])
    fig.update_xaxes(title="step")
    return Measured(table, plots.style(fig, f"{method}: {prompt!r} →{trace.text!r}"[:120]))
