"""Lab 06's measurements and pictures: methods side by side, cut-offs, temperature, beam trees,
speculative decoding's acceptance and speed-up."""

from __future__ import annotations

import math
import time

import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from labkit import decoding, measure, models, plots
from labkit.plots import Measured

DEFAULT_METHODS: dict[str, dict] = {
    "greedy": {}, "beam": {"num_beams": 4}, "sample": {"temperature": 1.0}, "top-k": {"k": 50},
    "top-p": {"p": 0.9}, "top-k+top-p": {"k": 50, "p": 0.9}, "min-p": {"p": 0.05},
    "repetition-penalty": {"penalty": 1.3}, "prompt-lookup": {"num_tokens": 3}, "contrastive": {"k": 4, "alpha": 0.6},
}  # fmt: skip


def prompt_ids(tokenizer, prompt: str) -> torch.Tensor:
    return models.encode_prompt(tokenizer, prompt)["input_ids"]  # chat template for chat models


@torch.no_grad()
def mean_logprob(model, ids: torch.Tensor, n_new: int) -> float:
    """Average log-probability the model gives the generated tokens (higher = more 'expected' text)."""
    if n_new == 0:
        return math.nan
    logp = model(input_ids=ids, use_cache=False).logits[0, :-1].float().log_softmax(-1)
    chosen = logp.gather(-1, ids[0, 1:].unsqueeze(-1)).squeeze(-1)
    return float(chosen[-n_new:].mean())


def compare_methods(model: str = "smollm2-135m", prompt: str = "Write a short poem about the sea.",
                    methods: dict[str, dict] | None = None, max_new_tokens: int = 32, seed: int = 0) -> Measured:
    """One prompt through every method: the text, its diversity and repetition, likelihood and speed."""
    net, tok = models.load_cached(model)
    ids = prompt_ids(tok, prompt)
    rows = []
    for method, params in (methods or DEFAULT_METHODS).items():
        torch.manual_seed(seed)
        start = time.perf_counter()
        if method == "contrastive":
            out = decoding.contrastive_search(net, ids, max_new_tokens=max_new_tokens, eos_token_id=tok.eos_token_id,
                                              **params)
        else:
            cfg = decoding.config_for(method, **params, max_new_tokens=max_new_tokens)
            out, _ = decoding.timed_generate(net, ids, cfg, pad_token_id=tok.pad_token_id or tok.eos_token_id)
        seconds = time.perf_counter() - start
        new = out[0, ids.shape[1] :].tolist()
        rows.append({"method": method, "params": params, "text": tok.decode(new, skip_special_tokens=True),
                     "tokens_per_s": len(new) / seconds, "mean_logprob": mean_logprob(net, out[:1], len(new)),
                     **decoding.text_metrics(new)})
    table = measure.results_frame(rows, model=model, prompt=prompt)
    long = table.melt(id_vars="method", value_vars=["distinct_1", "distinct_2", "repetition_4gram"], var_name="metric")
    long.attrs = table.attrs
    return Measured(table, plots.bars(long, "method", "value", "Diversity and repetition per method", color="metric"))


def next_token_cutoffs(model: str = "smollm2-135m", prompt: str = "The capital of France is", temperature: float = 1.0,
                       k: int = 5, p: float = 0.9, min_p: float = 0.1, top: int = 15) -> Measured:
    """The next-token distribution and which tokens top-k, top-p and min-p keep (kept bars in colour)."""
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
    return Measured(table, plots._style(fig, title))


def temperature_entropy(model: str = "smollm2-135m", prompt: str = "The capital of France is",
                        temperatures=(0.25, 0.5, 0.75, 1.0, 1.5, 2.0)) -> Measured:
    """Entropy of the next-token distribution as temperature rescales the logits."""
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
    """Each running beam per step; lines join a beam to the beam it grew from."""
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
    return plots._style(fig, title)


def speculative_report(target: str = "smollm2-135m", prompt: str = "Explain in one sentence what a GPU is.",
                       gamma: int = 4, max_new_tokens: int = 32) -> Measured:
    """Greedy vs speculative decoding (int8 draft; prompt lookup): same tokens? acceptance? speed-up?"""
    from labkit import quant

    net, tok = models.load_cached(target)
    draft = quant.quantize("int8-dynamic", target, model=net).model
    ids = prompt_ids(tok, prompt)
    pad = tok.pad_token_id or tok.eos_token_id
    cfg = decoding.greedy(max_new_tokens)
    cfg.min_new_tokens = max_new_tokens  # the same amount of work for every row
    base, t_greedy = decoding.timed_generate(net, ids, cfg, pad_token_id=pad)
    assisted, t_assisted = decoding.timed_generate(net, ids, cfg, assistant_model=draft, pad_token_id=pad)
    lookup_cfg = decoding.prompt_lookup(3, max_new_tokens)
    lookup_cfg.min_new_tokens = max_new_tokens
    lookup, t_lookup = decoding.timed_generate(net, ids, lookup_cfg, pad_token_id=pad)
    spec = decoding.speculative_greedy(net, draft, ids, gamma=gamma, max_new_tokens=max_new_tokens)
    n = ids.shape[1]
    rows = [
        {"method": "greedy (target only)", "seconds": t_greedy, "speedup": 1.0, "same_tokens": True},
        {"method": "assisted, int8 draft (transformers)", "seconds": t_assisted, "speedup": t_greedy / t_assisted,
         "same_tokens": assisted[0, n:].tolist() == base[0, n:].tolist()},
        {"method": "prompt lookup (transformers)", "seconds": t_lookup, "speedup": t_greedy / t_lookup,
         "same_tokens": lookup[0, n:].tolist() == base[0, n:].tolist()},
    ]
    same = spec.token_ids[0, n:].tolist() == base[0, n : n + max_new_tokens].tolist()
    table = measure.results_frame(rows, model=target, acceptance_rate=spec.acceptance_rate, gamma=gamma,
                                  target_calls=spec.target_calls, labkit_same_tokens=same)
    title = f"Speculative decoding: int8 draft accepts {spec.acceptance_rate:.0%} of its guesses (γ={gamma})"
    return Measured(table, plots.bars(table, "method", "speedup", title, ylabel="× greedy speed"))


def explore(model: str = "smollm2-135m", prompt: str = "Once upon a time", method: str = "top-p",
            temperature: float = 1.0, top_k: int = 50, top_p: float = 0.9, min_p: float = 0.05, steps: int = 12,
            seed: int = 0) -> Measured:
    """The widget's function: step through one method and show each step's choice and cut-off."""
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
    return Measured(table, plots._style(fig, f"{method}: {prompt!r} →{trace.text!r}"[:120]))
