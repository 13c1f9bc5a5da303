"""What each quantizer trades: bytes, speed, and quality on real text.

Quality is measured on held-out Shakespeare (plays the training never saw): perplexity, and against the fp32 model on
the same tokens, top-1 agreement and KL divergence. Speed is one `decoding.timing` run per batch size: prefill
(time to first token) and decode tokens/s (batch / median step) of the same generation. Every row names the device it
ran on, and a speed-up divides by the fp32 model's speed on that same device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd
import plotly.graph_objects as go
import torch
from tqdm.auto import tqdm

from labkit import devices, generation, measure, models, plots
from labkit.data.windows import eval_tokens
from labkit.decoding import timing
from labkit.hardware import Unavailable, resolve_device
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
# The precision ladder on one device: fp32, the two 16-bit floats, bitsandbytes' LLM.int8() and NF4.
LADDER = ("fp32", "fp16", "bf16", "bnb-int8", "bnb-nf4")


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
    """Prefill latency and greedy decode tokens/s of a quantized model on its device (`q.device`), one
    `decoding.timing` run per batch size (the timing synchronises the device before every clock read).

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
                       decode_tokens: int = 32, batch_sizes: Sequence[int] = (1, 8), progress: bool = True,
                       device: str | torch.device = "auto") -> QuantComparison:
    """Every quantizer on one model: bytes, perplexity, agreement, KL, prefill and decode speed, on `device`.

    A quantizer that does not run on `device` (torch.ao, ONNX Runtime, ORT GenAI, the GGUF path: CPU-only) runs on
    the CPU, deliberately, and its row says so in `device`; its speed-ups divide by fp32's speed on the CPU.

    Args:
        source: a registry model name. names: quantizers (default: every one in `quant.QUANTIZERS`; "fp32" must be
            among them, it is the reference). budget: evaluation tokens from the held-out plays (`eval_tokens`).
        decode_tokens, batch_sizes: the speed runs (`speed`). progress: show a progress bar.
        device: "auto", "cpu", "cuda" or "cuda:N" (`hardware.resolve_device`): where the quantizers run.
    Returns:
        QuantComparison: table (one row per quantizer: quantizer, library, device (label: `devices.device_label`),
        stored_MiB, resident_MiB, prefill_ms, decode_tok_s_b{B}, notes, perplexity, top1_agreement, kl_vs_fp32,
        size_vs_fp32, perplexity_vs_fp32, decode_speedup_b{B} = decode_tok_s_b{B} / fp32's on the row's device; a
        quantizer that cannot run here keeps its row with the reason in `error`; attrs fp32_decode_tok_s: device
        label -> {decode_tok_s_b{B}: fp32's}), a Pareto figure of size vs perplexity, the built models, the tokenizer.
    Raises:
        ValueError: an unknown quantizer, model or device. CapabilityMissing: CUDA asked for without a GPU. Any
            failure inside a quantizer that can run here (only `hardware.Unavailable` becomes an `error` row).
    """
    names = list(names or QUANTIZERS)
    dev = resolve_device(device)
    base, tok = models.load_model(source, device="cpu")  # every quantizer copies from it onto its own device
    reference = quantize("fp32", source, device=dev, model=base)
    tokens = eval_tokens(tok, budget)
    rows, built, used = [], {}, {}
    for name in tqdm(names, desc=f"quantizing {source}", disable=not progress):
        try:
            built[name] = quantize(name, source, device=QUANTIZERS[name].runs_on(dev), model=base)
        except Unavailable as err:  # cannot run here (package, device, model): keep the row, say why
            rows.append({"quantizer": name, "library": QUANTIZERS[name].library, "error": str(err)[:300]})
            continue
        q = built[name]
        label = devices.device_label(q.device)
        used[label] = q.device
        rows.append({"quantizer": name, "library": QUANTIZERS[name].library, "device": label,
                     "stored_MiB": q.stored_bytes / 2**20, "resident_MiB": q.resident_bytes / 2**20,
                     **speed(q, decode_tokens=decode_tokens, batch_sizes=batch_sizes, vocab=len(tok)),
                     "notes": q.notes})
    table = pd.DataFrame(rows).merge(quality(built, reference, tokens), on="quantizer", how="left")
    fp32 = table.set_index("quantizer").loc["fp32"]
    table["size_vs_fp32"] = table.stored_MiB / fp32.stored_MiB
    table["perplexity_vs_fp32"] = table.perplexity / fp32.perplexity
    columns = [f"decode_tok_s_b{bs}" for bs in batch_sizes]
    same_device = {label: _fp32_speed(table, label, lambda d=d: quantize("fp32", source, device=d, model=base),
                                      decode_tokens, batch_sizes, len(tok), columns) for label, d in used.items()}
    for bs, col in zip(batch_sizes, columns, strict=True):
        fp32_there = table.device.map(lambda lab, c=col: same_device[lab][c] if lab in same_device else math.nan)
        table[f"decode_speedup_b{bs}"] = table[col] / fp32_there
    table = measure.results_frame(table.to_dict("records"), source=source, eval_tokens=int(tokens.numel()),
                                  fp32_decode_tok_s=same_device)
    return QuantComparison(table, pareto(table, "stored_MiB", "size (MiB, as stored)"), built, tok)


def _fp32_speed(table: pd.DataFrame, label: str, build: Callable[[], QuantizedModel], decode_tokens: int,
                batch_sizes: Sequence[int], vocab: int, columns: list[str]) -> dict[str, float]:
    """fp32's decode tokens/s on the device `label`: its row's when the table has one there, else measured now (a
    CPU-only quantizer in a GPU run is compared with fp32 on the CPU)."""
    row = table[(table.quantizer == "fp32") & (table.device == label)]
    measured = row.iloc[0] if len(row) else speed(build(), decode_tokens=decode_tokens, batch_sizes=batch_sizes,
                                                  vocab=vocab)
    return {c: float(measured[c]) for c in columns}


def precision_ladder(table: pd.DataFrame, half: str) -> pd.DataFrame:
    """fp32 → 16-bit float → int8 → 4-bit on one device: `compare_quantizers`' rows of LADDER, against the device's
    native 16-bit float (`devices.DeviceChoice.half`: fp16 on a T4, bf16 on Ampere and later and on CPUs).

    Args:
        table: `compare_quantizers`' table. half: "fp16" or "bf16", the device's native 16-bit float.
    Returns:
        DataFrame indexed by quantizer (LADDER rows that ran, on the device of `half`'s row): device, stored_MiB,
        perplexity, decode_tok_s_b{B} and, against `half`: bytes_vs_half, perplexity_vs_half and
        decode_speedup_b{B}_vs_half.
    Raises:
        ValueError: for `half` not fp16 / bf16, or a table without that row.
    """
    if half not in ("fp16", "bf16"):
        raise ValueError(f"half must be 'fp16' or 'bf16' (the device's native 16-bit float), got {half!r}")
    ok = table.dropna(subset=["perplexity"]).set_index("quantizer") if "perplexity" in table else table.iloc[:0]
    if half not in ok.index:
        raise ValueError(f"the table has no {half} row that ran; it has {list(ok.index)}")
    ref = ok.loc[half]
    ladder = ok.loc[[n for n in LADDER if n in ok.index and ok.loc[n, "device"] == ref.device]]
    speed_cols = [c for c in ladder.columns if c.startswith("decode_tok_s_b")]
    out = ladder[["device", "stored_MiB", "perplexity", *speed_cols]].copy()
    out["bytes_vs_half"] = out.stored_MiB / ref.stored_MiB
    out["perplexity_vs_half"] = out.perplexity / ref.perplexity
    for c in speed_cols:
        out[c.replace("decode_tok_s", "decode_speedup") + "_vs_half"] = out[c] / ref[c]
    return out


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
