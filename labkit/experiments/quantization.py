"""Lab 05's measurements: what each quantizer trades — bytes, speed, and quality on real text.

Quality is measured on held-out Shakespeare (plays the models never saw in lab 01): perplexity, and
against the fp32 model on the same tokens, top-1 agreement and KL divergence.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch

from labkit import measure, models, plots
from labkit.data import shakespeare
from labkit.plots import Measured
from labkit.quant import QUANTIZERS, QuantizedModel, quantize


@dataclass
class QuantComparison(Measured):
    models: dict[str, QuantizedModel] = field(default_factory=dict)  # to generate with, side by side
    tokenizer: object = None


def eval_tokens(tokenizer, budget: int = 2048, window: int = 256) -> torch.Tensor:
    """(n_windows, window) token ids from the test plays: a fixed, deterministic budget."""
    if budget < window:
        raise ValueError(f"budget ({budget}) must be at least one window ({window})")
    ids = tokenizer(shakespeare("test", max_chars=budget * 8))["input_ids"][: budget - budget % window]
    return torch.tensor(ids).view(-1, window)


@torch.no_grad()
def quality(candidates: dict[str, QuantizedModel], reference: QuantizedModel, tokens: torch.Tensor) -> pd.DataFrame:
    """Perplexity of each model, and its top-1 agreement and KL(fp32 || model) against `reference`."""
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


@torch.no_grad()
def speed(q: QuantizedModel, prefill_tokens: int = 128, decode_tokens: int = 32, batch_sizes=(1, 8),
          vocab: int = 1000, repeat: int = 3) -> dict:
    """Prefill latency of `prefill_tokens` (batch 1) and greedy decode tokens/s per batch size."""
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(10, vocab, (1, prefill_tokens), generator=gen)
    out = {"prefill_ms": measure.benchmark(lambda: q.logits(prompt), warmup=1, repeat=repeat).median * 1e3}
    for bs in batch_sizes:
        if q.model is None and q.generator is not None:  # ORT GenAI: its own C++ loop with a KV cache
            start = torch.randint(10, vocab, (bs, 8), generator=gen).tolist()
            q.generator.generate(start, 2)  # warm-up
            run = q.generator.generate(start, decode_tokens)
            out[f"decode_tok_s_b{bs}"] = bs * decode_tokens / (run.prefill_s + run.decode_s)  # as HF's: whole call
            continue
        if q.model is None:  # ONNX graphs here are exported without a KV cache: no fair decode number
            out[f"decode_tok_s_b{bs}"] = math.nan
            continue
        start = torch.randint(10, vocab, (bs, 8), generator=gen).to(q.model.device)
        kwargs = dict(max_new_tokens=decode_tokens, min_new_tokens=decode_tokens, do_sample=False, pad_token_id=0)
        q.model.generate(input_ids=start, **{**kwargs, "max_new_tokens": 2, "min_new_tokens": 2})  # warm-up
        t = time.perf_counter()
        q.model.generate(input_ids=start, **kwargs)
        out[f"decode_tok_s_b{bs}"] = bs * decode_tokens / (time.perf_counter() - t)
    return out


def compare_quantizers(source: str = "smollm2-135m", names: Sequence[str] | None = None, budget: int = 2048,
                       decode_tokens: int = 32, batch_sizes: Sequence[int] = (1, 8),
                       progress: bool = True) -> QuantComparison:
    """Every quantizer on one model: bytes, perplexity, agreement, KL, prefill and decode speed."""
    from tqdm.auto import tqdm

    names = list(names or QUANTIZERS)
    base, tok = models.load_model(source, device="cpu")
    reference = quantize("fp32", source, model=base)
    tokens = eval_tokens(tok, budget)
    rows, built = [], {}
    for name in tqdm(names, desc=f"quantizing {source}", disable=not progress):
        try:
            built[name] = quantize(name, source, model=base)
        except (ValueError, ImportError, RuntimeError) as err:  # unsupported here: keep the row, say why
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
    """What one MLP projection became: its class and how its weight is stored."""
    if q.model is None:
        return {"quantizer": q.name, "layer": "ONNX MatMul (see the graph)", "weight": "-"}
    layer = next(m for n, m in q.model.named_modules() if n.endswith(("mlp.down_proj", "mlp.dense_4h_to_h")))
    weight = getattr(layer, "weight", None)
    if callable(weight):  # torch.ao dynamic modules expose weight() as a method
        weight = weight()
    kind = type(weight).__name__ if weight is not None else "-"
    dtype = str(getattr(weight, "dtype", "-")).replace("torch.", "")
    return {"quantizer": q.name, "layer": type(layer).__name__, "weight": f"{kind} ({dtype})"}


def pareto(table: pd.DataFrame, x: str, xlabel: str):
    """Each quantizer as a point: cost on x, perplexity on y (lower-left is better)."""
    import plotly.graph_objects as go

    ok = table.dropna(subset=[x, "perplexity"])
    fig = go.Figure(go.Scatter(x=ok[x], y=ok.perplexity, text=ok.quantizer, mode="markers+text",
                               textposition="top center", marker=dict(size=11)))
    fig.update_xaxes(title=xlabel)
    fig.update_yaxes(title="perplexity on held-out plays")
    return plots._style(fig, f"{table.attrs.get('source', '')}: {xlabel} vs perplexity", table.attrs.get("hardware"))
