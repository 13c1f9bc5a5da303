"""What each quantizer trades: bytes, speed, and quality on real text.

Quality is measured on held-out Shakespeare (plays the training never saw): perplexity, and against the fp32 model on
the same tokens, top-1 agreement and KL divergence. Speed is one `decoding.timing` run per batch size: prefill
(time to first token) and decode tokens/s (batch / median step) of the same generation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd
import plotly.graph_objects as go
import torch
from tqdm.auto import tqdm

from labkit import generation, measure, models, plots
from labkit.data.windows import eval_tokens
from labkit.decoding import timing
from labkit.hardware import Unavailable
from labkit.plots import Measured
from labkit.quant import QUANTIZERS, QuantizedModel, quantize

# Groups of `quant.QUANTIZERS` read together. INT8 / FOUR_BIT: weights stored in 8 / 4 bits as they run (gguf-q4_1 is
# not among them: it runs dequantized to fp32). W8A8_PER_TENSOR: int8 weights with one scale per tensor, and the
# activations quantized at every call with one scale per tensor (torch.ao's default dynamic qconfig; ONNX Runtime's
# DynamicQuantizeLinear). WEIGHT_ONLY_INT8: int8 weights, one scale per output channel, float activations.
INT8 = ("int8-dynamic", "int8-weight", "quanto-int8", "bnb-int8", "ort-int8", "genai-int8")
FOUR_BIT = ("int4-weight", "bnb-nf4", "ort-int4", "genai-int4")
W8A8_PER_TENSOR = ("int8-dynamic", "ort-int8")
WEIGHT_ONLY_INT8 = ("int8-weight", "quanto-int8")


@dataclass
class QuantComparison(Measured):
    """`compare_quantizers`' table and figure, plus the built models (to generate with side by side)."""

    models: dict[str, QuantizedModel] = field(default_factory=dict)  # to generate with, side by side
    tokenizer: object = None


@torch.no_grad()
def quality(candidates: dict[str, QuantizedModel], reference: QuantizedModel, tokens: torch.Tensor) -> pd.DataFrame:
    """Perplexity of each model, and its top-1 agreement and KL(fp32 || model) against `reference`.

    Args:
        candidates: name -> QuantizedModel. reference: the fp32 model. tokens: (n_windows, window) ids
            (`data.windows.eval_tokens`); each window is scored with teacher forcing, one at a time.
    Returns:
        DataFrame: quantizer, perplexity (exp of the mean next-token NLL), top1_agreement (share of positions with
        the reference's argmax), kl_vs_fp32 (mean KL(reference || model), nats per token).
    """
    sums = {n: {"nll": 0.0, "agree": 0.0, "kl": 0.0} for n in candidates}
    count = 0
    for row in tokens.split(1):  # one window at a time: full-vocab logits are large
        ref = torch.log_softmax(reference.logits(row)[:, :-1], -1)  # (1, seq-1, vocab)
        targets = row[:, 1:]
        for name, q in candidates.items():
            logp = torch.log_softmax(q.logits(row)[:, :-1], -1)
            sums[name]["nll"] -= logp.gather(-1, targets.unsqueeze(-1)).sum().item()
            sums[name]["agree"] += (logp.argmax(-1) == ref.argmax(-1)).sum().item()
            sums[name]["kl"] += (ref.exp() * (ref - logp)).sum().item()
        count += targets.numel()
    return pd.DataFrame([
        {"quantizer": n, "perplexity": math.exp(s["nll"] / count), "top1_agreement": s["agree"] / count,
         "kl_vs_fp32": s["kl"] / count} for n, s in sums.items()
    ])  # fmt: skip


def speed(q: QuantizedModel, prefill_tokens: int = 128, decode_tokens: int = 32, batch_sizes=(1, 8),
          vocab: int = 1000, repeat: int = 3, warmup: int = 1) -> dict:
    """Prefill latency and greedy decode tokens/s of a quantized model, one `decoding.timing` run per batch size.

    Each run generates `decode_tokens` tokens after a random prompt of `prefill_tokens` tokens (`warmup` untimed and
    `repeat` timed generations; medians). A forward-only ONNX graph (no KV cache) gets its prefill timed the same
    way (one forward, one token) and NaN for decode: it cannot decode fairly.

    Args:
        q: a QuantizedModel (`quant.quantize`). prefill_tokens: prompt length. decode_tokens: new tokens (>= 2).
        batch_sizes: sequences per generation. vocab: prompt ids are drawn from [10, vocab). repeat, warmup: runs.
    Returns:
        {"prefill_ms": TTFT at the smallest batch size, ms; "decode_tok_s_b{B}": batch / median step, per B}.
    Raises:
        ValueError: for decode_tokens < 2, or batch sizes, prefill_tokens or repeat < 1.
    """
    if decode_tokens < 2 or prefill_tokens < 1 or min(batch_sizes) < 1:
        raise ValueError("decode_tokens must be >= 2, prefill_tokens and batch sizes >= 1 "
                         f"(got {decode_tokens}, {prefill_tokens}, {list(batch_sizes)})")
    try:
        backend = generation.backend_for(q)
    except Unavailable:  # a forward-only graph: time its prefill only
        backend = None
    runs = {}
    for bs in sorted(batch_sizes):
        prompt = timing.random_prompt(bs, prefill_tokens, vocab, seed=bs)
        if backend is not None:
            runs[bs] = backend.generate(prompt.tolist(), decode_tokens, warmup=warmup, repeat=repeat)
        elif bs == min(batch_sizes):
            runs[bs] = timing.time_decode(_forward_once(q, prompt), bs, 1, warmup=warmup, repeat=repeat)
    out = {"prefill_ms": runs[min(batch_sizes)].prefill_s * 1e3}
    for bs in batch_sizes:
        out[f"decode_tok_s_b{bs}"] = runs[bs].decode_tok_s if backend is not None else math.nan
    return out


def _forward_once(q: QuantizedModel, prompt: torch.Tensor) -> Callable[[Callable[[], None]], list[list[int]]]:
    """A one-token "generation" of a forward-only model: the prompt's forward and its argmax (the prefill)."""
    def generate(mark: Callable[[], None]) -> list[list[int]]:
        nxt = q.logits(prompt)[:, -1].argmax(-1, keepdim=True)
        mark()
        return nxt.tolist()

    return generate


def compare_quantizers(source: str = "smollm2-135m", names: Sequence[str] | None = None, budget: int = 2048,
                       decode_tokens: int = 32, batch_sizes: Sequence[int] = (1, 8),
                       progress: bool = True) -> QuantComparison:
    """Every quantizer on one model: bytes, perplexity, agreement, KL, prefill and decode speed.

    Args:
        source: a registry model name. names: quantizers (default: every one in `quant.QUANTIZERS`; "fp32" must be
            among them, it is the reference). budget: evaluation tokens from the held-out plays (`eval_tokens`).
        decode_tokens, batch_sizes: the speed runs (`speed`). progress: show a progress bar.
    Returns:
        QuantComparison: table (one row per quantizer: quantizer, library, stored_MiB, resident_MiB, prefill_ms,
        decode_tok_s_b{B}, notes, perplexity, top1_agreement, kl_vs_fp32, size_vs_fp32, perplexity_vs_fp32,
        decode_speedup_b{B}; a quantizer that cannot run here keeps its row with the reason in `error`), a Pareto
        figure of size vs perplexity, the built models and the tokenizer.
    Raises:
        ValueError: an unknown quantizer or model. Any failure inside a quantizer that can run here (only
            `hardware.Unavailable` becomes an `error` row).
    """
    names = list(names or QUANTIZERS)
    base, tok = models.load_model(source, device="cpu")
    reference = quantize("fp32", source, model=base)
    tokens = eval_tokens(tok, budget)
    rows, built = [], {}
    for name in tqdm(names, desc=f"quantizing {source}", disable=not progress):
        try:
            built[name] = quantize(name, source, model=base)
        except Unavailable as err:  # cannot run here (package, device, model): keep the row, say why
            rows.append({"quantizer": name, "library": QUANTIZERS[name].library, "error": str(err)[:300]})
            continue
        q = built[name]
        rows.append({"quantizer": name, "library": QUANTIZERS[name].library, "stored_MiB": q.stored_bytes / 2**20,
                     "resident_MiB": q.resident_bytes / 2**20,
                     **speed(q, decode_tokens=decode_tokens, batch_sizes=batch_sizes, vocab=len(tok)),
                     "notes": q.notes})
    table = pd.DataFrame(rows).merge(quality(built, reference, tokens), on="quantizer", how="left")
    fp32 = table.set_index("quantizer").loc["fp32"]
    table["size_vs_fp32"] = table.stored_MiB / fp32.stored_MiB
    table["perplexity_vs_fp32"] = table.perplexity / fp32.perplexity
    for bs in batch_sizes:
        table[f"decode_speedup_b{bs}"] = table[f"decode_tok_s_b{bs}"] / fp32[f"decode_tok_s_b{bs}"]
    table = measure.results_frame(table.to_dict("records"), source=source, eval_tokens=int(tokens.numel()))
    return QuantComparison(table, pareto(table, "stored_MiB", "size (MiB, as stored)"), built, tok)


def describe_linear(q: QuantizedModel) -> dict:
    """What one MLP projection became: its class and how its weight is stored.

    Args:
        q: a QuantizedModel (`quant.quantize`).
    Returns:
        {"quantizer", "layer": the module class, "weight": "TensorClass (dtype)"}; ONNX graphs say so instead.
    """
    if q.model is None:
        return {"quantizer": q.name, "layer": "ONNX MatMul (see the graph)", "weight": "-"}
    layer = next(m for n, m in q.model.named_modules() if n.endswith(("mlp.down_proj", "mlp.dense_4h_to_h")))
    weight = getattr(layer, "weight", None)
    if callable(weight):  # torch.ao dynamic modules expose weight() as a method
        weight = weight()
    kind = type(weight).__name__ if weight is not None else "-"
    dtype = str(getattr(weight, "dtype", "-")).replace("torch.", "")
    return {"quantizer": q.name, "layer": type(layer).__name__, "weight": f"{kind} ({dtype})"}


def pareto(table: pd.DataFrame, x: str, xlabel: str) -> go.Figure:
    """Each quantizer as a point: cost on x, perplexity on y (lower-left is better).

    Args:
        table: `compare_quantizers`' table. x: its column to plot against perplexity. xlabel: the x-axis title.
    Returns:
        a scatter figure of the rows that have both numbers.
    """
    ok = table.dropna(subset=[x, "perplexity"])
    fig = go.Figure(go.Scatter(x=ok[x], y=ok.perplexity, text=ok.quantizer, mode="markers+text",
                               textposition="top center", marker=dict(size=11)))
    fig.update_xaxes(title=xlabel)
    fig.update_yaxes(title="perplexity on held-out plays")
    return plots.style(fig, f"{table.attrs.get('source', '')}: {xlabel} vs perplexity", table.attrs.get("hardware"))
