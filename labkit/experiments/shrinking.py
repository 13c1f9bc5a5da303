"""Shrinking a trained model beyond quantization: a distilled student, and pruned weights.

Distillation (Hinton, Vinyals and Dean 2015, "Distilling the Knowledge in a Neural Network", arXiv:1503.02531): a
smaller *student* learns the teacher's whole next-token distribution softened at temperature T, plus the hard labels.
Pruning (torch.nn.utils.prune): unstructured L1 pruning zeroes the smallest weights but keeps every matrix's shape, so
a dense kernel multiplies the zeros; structured pruning removes whole MLP neurons and the layers physically shrink.
2:4 semi-structured sparsity (two non-zeros in every four; NVIDIA Ampere's sparse tensor cores) sits in between:
`experiments.sparse_2to4`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go
import torch
import torch.nn.functional as F
from torch.nn.utils import prune as torch_prune
from transformers import AutoModelForCausalLM, BloomConfig

from labkit import measure, models, plots, training
from labkit.engines.base import torch_threads
from labkit.plots import Measured

PRUNE_METHODS = ("unstructured", "structured")


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                      temperature: float = 2.0, alpha: float = 0.5) -> torch.Tensor:
    """Hinton et al. 2015 (section 2): alpha · T² · KL(p_teacher,T ‖ p_student,T) + (1 − alpha) · CE(student, targets).

    The T² keeps the soft term's gradients on the scale of the hard term's as T changes (the paper's section 2).

    Args:
        student_logits, teacher_logits: (batch, seq, vocab), already aligned with `targets` (shifted by the caller).
        targets: (batch, seq) next-token ids. temperature: T > 0. alpha: weight of the soft term, in [0, 1].
    Returns:
        a scalar tensor: the mean over positions (nats per token).
    Raises:
        ValueError: for T <= 0 or alpha outside [0, 1].
    """
    if temperature <= 0 or not 0 <= alpha <= 1:
        raise ValueError(f"need temperature > 0 and 0 <= alpha <= 1, got {temperature}, {alpha}")
    vocab = student_logits.shape[-1]
    hard = F.cross_entropy(student_logits.reshape(-1, vocab), targets.reshape(-1))
    if alpha == 0:
        return hard
    s = F.log_softmax(student_logits.reshape(-1, vocab) / temperature, -1)
    t = F.log_softmax(teacher_logits.reshape(-1, vocab).detach() / temperature, -1)
    soft = (t.exp() * (t - s)).sum(-1).mean() * temperature**2
    return alpha * soft + (1 - alpha) * hard


def linear_macs(model: torch.nn.Module) -> int:
    """Multiply-accumulates per token of every nn.Linear as it is stored (in × out, zeros included: a dense kernel
    does them all); the LM head counts too. Attention's score and value products are left out."""
    return sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))


def _val_batches(tok, n: int, batch_size: int, seq_len: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    val = training.token_stream("validation", tok)
    return [training.get_batch(val, batch_size, seq_len, gen) for _ in range(n)]


def _speed(named: dict[str, torch.nn.Module], shape: tuple[int, int], repeat: int) -> dict[str, float]:
    """Median forward ms of each model on the same (batch, seq) random ids, timed side by side."""
    ids = torch.randint(10, 1000, shape, generator=torch.Generator().manual_seed(1))
    fns = {n: (lambda m=m: m(input_ids=ids, use_cache=False)) for n, m in named.items()}
    with torch.inference_mode():
        stats = measure.benchmark_rounds(fns, warmup=1, repeat=repeat, rounds=min(repeat, 3))
    return {n: s.median * 1e3 for n, s in stats.items()}


def _figure(table: pd.DataFrame, label: str, title: str) -> go.Figure:
    fig = go.Figure(go.Scatter(x=table.forward_ms, y=table.val_loss, text=table[label], mode="markers+text",
                               textposition="top center", marker=dict(size=11)))
    fig.update_xaxes(title="forward time (ms, median)")
    fig.update_yaxes(title="validation loss (nats/token)")
    return plots.style(fig, title, table.attrs.get("hardware"))


def distill(teacher: str = "tiny-bloom-shakespeare", student_hidden: int = 128, student_layers: int = 2,
            student_heads: int = 4, steps: int = 200, temperature: float = 2.0, alpha: float = 0.5,
            batch_size: int = 8, seq_len: int = 64, lr: float = 3e-3, eval_batches: int = 8,
            speed_shape: tuple[int, int] = (4, 128), repeat: int = 10, seed: int = 0,
            train_chars: int | None = None, threads: int = 1) -> Measured:
    """Train a narrower, shallower BLOOM student on the teacher's soft targets, and the same student on hard labels
    only (same initial weights, same batches, same steps); compare validation loss and forward time with the teacher.

    Args:
        teacher: a registry model ("tiny-bloom-shakespeare": lab 01's trained BLOOM). student_hidden, student_layers,
            student_heads: the student's BLOOM shape (hidden divisible by heads). steps: AdamW steps (lr, clipping at
            norm 1) on Shakespeare's training plays, (batch_size, seq_len) batches. temperature, alpha: the
            distillation loss (`distillation_loss`). eval_batches: validation batches (seeded). speed_shape:
            (batch, seq) of the timed forward. repeat: timed forwards per model. seed: weights and batches.
            train_chars: cut the training plays to this many characters (None: all; tokenizing them all takes ~15 s).
            threads: torch's CPU threads for all of it (restored after); everything runs on the CPU.
    Returns:
        Measured: table (model, hidden, layers, params, macs_per_token (`linear_macs`), loss: how it was trained,
        val_loss nats/token, forward_ms, params_vs_teacher, speedup_vs_teacher = teacher ms / model ms, measured
        side by side); a figure of forward ms vs validation loss. attrs: temperature, alpha, steps, hardware.
    Raises:
        ValueError: before any work, for a non-positive size or count, hidden not divisible by heads, T <= 0 or alpha
            outside [0, 1]; for an unknown teacher (from the registry).
    """
    counts = dict(student_hidden=student_hidden, student_layers=student_layers, student_heads=student_heads,
                  steps=steps, batch_size=batch_size, seq_len=seq_len, eval_batches=eval_batches, repeat=repeat,
                  threads=threads)
    if min(counts.values()) < 1 or min(speed_shape) < 1 or student_hidden % student_heads:
        raise ValueError(f"sizes and counts must be >= 1 and student_hidden divisible by student_heads: {counts}, "
                         f"speed_shape={speed_shape}")
    distillation_loss(torch.zeros(1, 1, 2), torch.zeros(1, 1, 2), torch.zeros(1, 1, dtype=torch.long),
                      temperature, alpha)  # validates T and alpha before anything is loaded
    with torch_threads(threads):  # one thread: no OpenMP spin-waits; the multiply-adds set the time
        return _distill(teacher, student_hidden, student_layers, student_heads, steps, temperature, alpha, batch_size,
                        seq_len, lr, eval_batches, speed_shape, repeat, seed, train_chars)


def _distill(teacher, student_hidden, student_layers, student_heads, steps, temperature, alpha, batch_size, seq_len,
             lr, eval_batches, speed_shape, repeat, seed, train_chars) -> Measured:
    big, tok = models.load_model(teacher, device="cpu")
    big.eval()
    c = big.config
    config = BloomConfig(vocab_size=c.vocab_size, hidden_size=student_hidden, n_layer=student_layers,
                         n_head=student_heads, bos_token_id=c.bos_token_id, eos_token_id=c.eos_token_id,
                         pad_token_id=c.pad_token_id)  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        init = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    train_tokens = training.token_stream("train", tok, train_chars)
    students = {}
    for name, a in (("student (distilled)", alpha), ("student (hard labels)", 0.0)):
        student, gen = copy.deepcopy(init).train(), torch.Generator().manual_seed(seed)  # same start, same batches
        opt = torch.optim.AdamW(student.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
        for _ in range(steps):
            batch = training.get_batch(train_tokens, batch_size, seq_len, gen)
            logits = student(input_ids=batch).logits[:, :-1]
            with torch.no_grad():
                soft = big(input_ids=batch).logits[:, :-1] if a > 0 else logits
            distillation_loss(logits, soft, batch[:, 1:], temperature, a).backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        students[name] = student.eval()
    named = {"teacher": big, **students}
    val = _val_batches(tok, eval_batches, batch_size, seq_len, seed)
    ms = _speed(named, speed_shape, repeat)
    how = {"teacher": "trained (lab 01)", "student (distilled)": f"KD: T={temperature:g}, alpha={alpha:g}",
           "student (hard labels)": "cross-entropy only"}
    rows = [{"model": n, "hidden": m.config.hidden_size, "layers": m.config.n_layer,
             "params": sum(p.numel() for p in m.parameters()), "macs_per_token": linear_macs(m), "loss": how[n],
             "val_loss": training.evaluate(m, val), "forward_ms": ms[n]} for n, m in named.items()]
    table = measure.results_frame(rows, temperature=temperature, alpha=alpha, steps=steps, teacher=teacher)
    table["params_vs_teacher"] = table.params / table.params.iloc[0]
    table["speedup_vs_teacher"] = table.forward_ms.iloc[0] / table.forward_ms
    return Measured(table, _figure(table, "model", f"Distilling {teacher}: {steps} student steps"))


def _block_linears(model: torch.nn.Module) -> list[torch.nn.Linear]:
    """The Linear layers inside the transformer blocks (the LM head is tied to the embedding: left dense)."""
    return [m for m in model.transformer.h.modules() if isinstance(m, torch.nn.Linear)]


def unstructured(model: torch.nn.Module, sparsity: float) -> torch.nn.Module:
    """A copy with the smallest-magnitude `sparsity` share of every block Linear's weights set to zero
    (`prune.l1_unstructured`, then `prune.remove` to keep the zeros as plain weights). Shapes are unchanged."""
    pruned = copy.deepcopy(model)
    for m in _block_linears(pruned):
        torch_prune.l1_unstructured(m, "weight", amount=sparsity)
        torch_prune.remove(m, "weight")
    return pruned


def structured(model: torch.nn.Module, sparsity: float) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Remove the `sparsity` share of every BLOOM MLP's neurons with the smallest L2 weight rows
    (`prune.ln_structured`, n=2, dim=0 on dense_h_to_4h).

    Returns:
        (masked, shrunk): `masked` keeps the shapes with the pruned rows (and their biases) zeroed — gelu(0) = 0, so a
        pruned neuron contributes nothing; `shrunk` drops those rows of dense_h_to_4h and columns of dense_4h_to_h,
        the same function with smaller matrices (4h → k neurons per block).
    """
    masked, shrunk = copy.deepcopy(model), copy.deepcopy(model)
    for mb, sb in zip(masked.transformer.h, shrunk.transformer.h, strict=True):
        up, down = mb.mlp.dense_h_to_4h, mb.mlp.dense_4h_to_h
        torch_prune.ln_structured(up, "weight", amount=sparsity, n=2, dim=0)
        keep = up.weight_mask.any(1)  # (4h,) True for the neurons that stay
        torch_prune.remove(up, "weight")
        with torch.no_grad():
            up.bias[~keep] = 0
        new_up = torch.nn.Linear(up.in_features, int(keep.sum()))
        new_down = torch.nn.Linear(int(keep.sum()), down.out_features)
        with torch.no_grad():
            new_up.weight.copy_(up.weight[keep])
            new_up.bias.copy_(up.bias[keep])
            new_down.weight.copy_(down.weight[:, keep])
            new_down.bias.copy_(down.bias)
        sb.mlp.dense_h_to_4h, sb.mlp.dense_4h_to_h = new_up, new_down
    return masked, shrunk


def prune(model: str = "tiny-bloom-shakespeare", sparsities: Sequence[float] = (0.5, 0.9),
          methods: Sequence[str] = PRUNE_METHODS, eval_batches: int = 8, batch_size: int = 8, seq_len: int = 64,
          speed_shape: tuple[int, int] = (4, 128), repeat: int = 10, seed: int = 0, threads: int = 1) -> Measured:
    """Magnitude pruning at each sparsity, unstructured and structured: validation loss and forward time, all timed
    side by side with the dense model.

    Args:
        model: a registry BLOOM model. sparsities: shares in (0, 1) — of each block Linear's weights (unstructured)
            or of each MLP's neurons (structured). methods: a subset of PRUNE_METHODS. eval_batches, batch_size,
            seq_len: the seeded validation batches. speed_shape: (batch, seq) of the timed forward. repeat: timings.
            seed: the validation batches. threads: torch's CPU threads for all of it (restored after).
    Returns:
        Measured: table (method, sparsity, params as stored, zero_share = measured share of zero weights in the block
        Linears, macs_per_token = `linear_macs`, theory_speedup = dense macs / macs, val_loss, forward_ms,
        speedup_vs_dense, masked_vs_shrunk = max |logit difference| between the zeroed and the physically shrunk
        structured model, ~0 when the shrinking is exact); figure: forward ms vs validation loss.
    Raises:
        ValueError: before loading, for a sparsity outside (0, 1), an unknown method (naming PRUNE_METHODS) or a
            count < 1; for a non-BLOOM model (no transformer.h blocks with dense_h_to_4h).
    """
    if not sparsities or any(not 0 < s < 1 for s in sparsities):
        raise ValueError(f"sparsities must be shares in (0, 1), got {list(sparsities)}")
    if not methods or set(methods) - set(PRUNE_METHODS):
        raise ValueError(f"unknown pruning method in {list(methods)}; choose from {list(PRUNE_METHODS)}")
    if min(eval_batches, batch_size, seq_len, repeat, threads, *speed_shape) < 1:
        raise ValueError("eval_batches, batch_size, seq_len, repeat, threads and speed_shape must be >= 1")
    with torch_threads(threads):  # one thread: no OpenMP spin-waits; the multiply-adds set the time
        return _prune(model, sparsities, methods, eval_batches, batch_size, seq_len, speed_shape, repeat, seed)


def _prune(model, sparsities, methods, eval_batches, batch_size, seq_len, speed_shape, repeat, seed) -> Measured:
    dense, tok = models.load_model(model, device="cpu")
    if dense.config.model_type != "bloom":
        raise ValueError(f"prune() shrinks BLOOM MLPs (dense_h_to_4h); {model} is {dense.config.model_type!r}")
    dense.eval()
    variants, diffs = {("dense", 0.0): dense}, {}
    probe = torch.randint(10, 1000, (1, 32), generator=torch.Generator().manual_seed(2))
    for s in sparsities:
        if "unstructured" in methods:
            variants["unstructured", s] = unstructured(dense, s)
        if "structured" in methods:
            masked, variants["structured", s] = structured(dense, s)
            with torch.no_grad():
                diffs["structured", s] = (masked(input_ids=probe).logits
                                          - variants["structured", s](input_ids=probe).logits).abs().max().item()
    ms = _speed({f"{m} {s:g}": v for (m, s), v in variants.items()}, speed_shape, repeat)
    val, base = _val_batches(tok, eval_batches, batch_size, seq_len, seed), linear_macs(dense)
    rows = []
    for (m, s), v in variants.items():
        weights = [lin.weight for lin in _block_linears(v)]
        rows.append({"method": m, "sparsity": s, "params": sum(p.numel() for p in v.parameters()),
                     "zero_share": sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights),
                     "macs_per_token": linear_macs(v), "theory_speedup": base / linear_macs(v),
                     "val_loss": training.evaluate(v, val), "forward_ms": ms[f"{m} {s:g}"],
                     "masked_vs_shrunk": diffs.get((m, s), float("nan"))})
    table = measure.results_frame(rows, model=model)
    table["speedup_vs_dense"] = table.forward_ms.iloc[0] / table.forward_ms
    table["label"] = table.method + " " + table.sparsity.map("{:.0%}".format)
    return Measured(table, _figure(table, "label", f"Pruning {model}: zeros vs fewer neurons"))
