"""Beam search seen as a tree (every running beam, every finished hypothesis, when and why it stopped), and how likely
each search's output is: greedy and beam search are approximate searches, measured by re-scoring their outputs."""

from __future__ import annotations

import plotly.graph_objects as go
import torch

from labkit import decoding, devices, measure, models, plots
from labkit.experiments.decoding_methods import prompt_ids, token_logprobs
from labkit.plots import Measured


def beam_tree_figure(trace: decoding.BeamTrace, title: str = "Beam search tree") -> go.Figure:
    """The beam tree: each running beam per step, each finished hypothesis, and when and why the search stopped.

    Args:
        trace: a `decoding.beam_step_through` result. title: the figure's title (the stop reason is added below it).
    Returns:
        dots (colour: cumulative log-probability, text: the token) at (new-token index, beam slot); diamonds below
        them for finished hypotheses (text: their length-normalised score); lines join each to the beam it grew
        from; a dotted line marks the step the search stopped at.
    """
    fig = go.Figure()
    slots = 1 + max((n.beam for n in trace.nodes), default=0)
    pos = {(n.step, n.beam): (n.step + 1, -n.beam) for n in trace.nodes}
    ends: dict[int, int] = {}
    done = []
    for h in trace.finished:  # below the running beams, in the order they finished at each step
        ends[h.step] = ends.get(h.step, 0) + 1
        done.append((h, (h.step + 1, -(slots - 1 + ends[h.step]))))
    edges = [(n.step, n.parent, pos[(n.step, n.beam)]) for n in trace.nodes]
    edges += [(h.step, h.parent, xy) for h, xy in done]
    for step, parent, (x1, y1) in edges:
        x0, y0 = pos[(step - 1, parent)] if step > 0 else (0, 0)  # step 0 grows from the prompt at (0, 0)
        fig.add_trace(go.Scatter(x=[x0, x1], y=[y0, y1], mode="lines", line=dict(color="#bbbbbb"),
                                 showlegend=False, hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=[xy[0] for _, xy in done], y=[xy[1] for _, xy in done], name="finished",
                             text=[f"{h.score:.2f}" for h, _ in done], mode="markers+text",
                             textposition="bottom center",
                             marker=dict(symbol="diamond", color=plots.COLORS[1], size=10),
                             hovertext=[repr(h.token_ids) for h, _ in done]))
    fig.add_trace(go.Scatter(x=[xy[0] for xy in pos.values()], y=[xy[1] for xy in pos.values()], name="running",
                             text=[n.token for n in trace.nodes], mode="markers+text", textposition="top center",
                             marker=dict(color=[n.score for n in trace.nodes], colorscale="Viridis", size=10,
                                         colorbar=dict(title="log p")), showlegend=False))
    fig.add_vline(x=trace.steps, line_dash="dot", line_color="#888888")
    fig.update_xaxes(title="step (new tokens)", dtick=1)
    fig.update_yaxes(title="beam slot (finished below)", showticklabels=False)
    return plots.style(fig, title, trace.stop_reason)


def search_likelihood(model: str = "smollm2-135m", prompt: str = "Write a short poem about the sea.",
                      widths: tuple[int, ...] = (1, 2, 4, 8), max_new_tokens: int = 16,
                      device: str | torch.device = "auto") -> Measured:
    """How likely is each search's output? Beam search with length_penalty=0 ranks finished hypotheses by their
    log-probability, so every width aims at the most likely sequence (ending at end of text or at max_new_tokens);
    width 1 is greedy. A wider beam finding a likelier sequence shows the narrower one missed the maximum.

    Args:
        model: a registry name. prompt: the text (chat template for chat models). widths: num_beams values (>= 1).
        max_new_tokens: the length limit. device: where the searches and the re-scoring run.
    Returns:
        Measured: table (num_beams, device, text, tokens, logprob: re-scored by `token_logprobs`, search_score: the
        search's own, stop_reason) and a bar figure of logprob per width.
    Raises:
        ValueError: for a width < 1.
    """
    net, tok = models.load_cached(model, device)
    ids = prompt_ids(tok, prompt).to(net.device)
    label = devices.device_label(net.device)
    rows = []
    for width in widths:
        trace = decoding.beam_step_through(net, tok, ids, width, max_new_tokens, length_penalty=0.0,
                                           early_stopping="never")
        new = trace.token_ids
        rescored = token_logprobs(net, torch.cat([ids, torch.tensor([new], device=ids.device)], 1), len(new))
        rows.append({"num_beams": width, "device": label, "text": tok.decode(new, skip_special_tokens=True),
                     "tokens": len(new), "logprob": float(rescored.sum()),
                     "search_score": trace.score, "stop_reason": trace.stop_reason})
    table = measure.results_frame(rows, model=model, prompt=prompt, max_new_tokens=max_new_tokens, device=label)
    fig = plots.bars(table.assign(search=[f"{w} beam{'s' * (w > 1)}" for w in table.num_beams]), "search", "logprob",
                     "Log-probability of each search's output (higher = likelier)", ylabel="log p (nats)")
    return Measured(table, fig)
