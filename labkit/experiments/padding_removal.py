"""Padding removal measured: one prefill of a mixed-length batch, padded to the longest vs packed into one row.

    padding_share     the share of a padded batch's token slots that hold padding: 1 − Σ lengths / (batch × max)
    prefill_flops     the FLOPs of one prefill per layout, from the model's dimensions (linear layers + attention)
    padding_removal   one prefill of the same prompts in three layouts, checked token by token, timed side by side

The three layouts of one batch of prompts with lengths l_1 .. l_B (max M, total T = Σ l_i):

    padded     (B, M) right-padded with an attention mask: every layer computes B × M tokens, attention B × M² pairs
    packed     (1, T): the sequences concatenated, position ids restarting at 0 in each; transformers sees the
               restarts (`masking_utils.find_packed_sequence_indices`) and builds a block-diagonal causal mask, so the
               linear layers compute T tokens, but the masked attention still scores T² pairs
    varlen     the same (1, T) row, attention run per sequence (ATTENTION, registered with transformers'
               AttentionInterface; the boundaries `cu_seqlens` as in FlashAttention's `flash_attn_varlen_func`): T
               tokens through the linear layers, Σ l_i (l_i + 1) / 2 pairs in attention (causal kernels)

Lineage: Effective Transformer (github.com/bytedance/effective_transformer, built on FasterTransformer v1) drops the
padded tokens before the linear layers and puts them back for attention; NVIDIA took it into FasterTransformer v2.1
("Effective FasterTransformer", NVIDIA/DeepLearningExamples FasterTransformer/v2.1/README.md); ByteTransformer (Zhai
et al., IPDPS '23, arXiv:2210.03052) removes padding from attention too (a fused variable-length MHA); TensorRT-LLM
(FasterTransformer's successor) packs every request's tokens into one row (`remove_input_padding`, required for its
in-flight batching), and vLLM's batches are flattened token lists with per-sequence start offsets.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface

from labkit.anatomy import dims
from labkit.devices import device_label
from labkit.measure import benchmark_rounds, results_frame
from labkit.models import load_model
from labkit.plots import Measured, bars

ATTENTION = "labkit_varlen"
MODELS = ("tiny-llama", "smollm2-135m")  # Llama architecture: positions from position_ids, attention pluggable
LAYOUTS = ("padded", "packed", "varlen")


def padding_share(lengths: list[int]) -> float:
    """The share of a padded batch's token slots that hold padding: 1 − Σ l_i / (B × max l_i).

    Args:
        lengths: tokens per sequence (each ≥ 1).
    Returns:
        a share in [0, 1).
    Raises:
        ValueError: no lengths, or a length below 1.
    """
    _check_lengths(lengths)
    return 1 - sum(lengths) / (len(lengths) * max(lengths))


def _check_lengths(lengths) -> None:
    if not lengths or min(lengths) < 1:
        raise ValueError(f"need at least one sequence, each of length >= 1; got {list(lengths)}")


def draw_lengths(batch: int, low: int, high: int, seed: int = 0) -> list[int]:
    """Prompt lengths uniform in [low, high] (inclusive), seeded: the batch's stated distribution.

    Raises:
        ValueError: batch < 1 or not 1 ≤ low ≤ high.
    """
    if batch < 1 or not 1 <= low <= high:
        raise ValueError(f"need batch >= 1 and 1 <= low <= high; got batch={batch}, low={low}, high={high}")
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high + 1, (batch,), generator=g).tolist()


def prefill_flops(model_or_config, lengths: list[int]) -> dict[str, float]:
    """FLOPs of one prefill of the decoder stack (no LM head: a server runs it on one token per sequence in every
    layout), per layout.

    Per token, 2 FLOPs per weight of every matmul (Kaplan et al. 2020, "Scaling laws", C_forward ≈ 2N): per layer
    q and o (hidden × heads·head_dim each), k and v (hidden × kv_heads·head_dim each), and the gated MLP's three
    (hidden × intermediate). Attention: 4 · heads · head_dim FLOPs per (query, key) pair scored (QKᵀ and P·V, 2 each),
    counting every pair the kernel scores: one given a mask tensor (padded, packed) scores the whole square, masked
    or not; a causal one (`is_causal=True`, varlen) only the l(l + 1)/2 pairs on or below the diagonal.

    Args:
        model_or_config: a Llama-style model, config or name (`anatomy.dims`). lengths: tokens per sequence.
    Returns:
        {"padded", "packed", "varlen"} → FLOPs; "linear_per_token" and "attention_per_pair" the two coefficients.
    Raises:
        ValueError: bad lengths (see `padding_share`).
    """
    _check_lengths(lengths)
    d = dims(model_or_config)
    attn_width, kv_width = d.heads * d.head_dim, d.kv_heads * d.head_dim
    linear = 2 * d.layers * (2 * d.hidden * attn_width + 2 * d.hidden * kv_width + 3 * d.hidden * d.intermediate)
    pair = 4 * d.layers * attn_width
    b, m, t = len(lengths), max(lengths), sum(lengths)
    return {"padded": linear * b * m + pair * b * m * m, "packed": linear * t + pair * t * t,
            "varlen": linear * t + pair * causal_pairs(lengths), "linear_per_token": linear,
            "attention_per_pair": pair}


def causal_pairs(lengths: list[int]) -> int:
    """(query, key) pairs a causal kernel scores inside each sequence: Σ l_i (l_i + 1) / 2."""
    return sum(n * (n + 1) // 2 for n in lengths)


def varlen_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask=None,
                     scaling: float | None = None, dropout: float = 0.0, cu_seqlens: tuple[int, ...] | None = None,
                     **kwargs) -> tuple[torch.Tensor, None]:  # fmt: skip
    """transformers' attention-function signature over packed sequences: causal SDPA inside each sequence only.

    Args:
        module: the attention layer. query: (1, heads, T, head_dim); key, value: (1, kv_heads, T, head_dim), RoPE
            applied. attention_mask: ignored (None: ATTENTION's mask function builds none). scaling: softmax scale.
        cu_seqlens: (B + 1,) cumulative sequence starts, 0 .. T (FlashAttention's `cu_seqlens`), passed as a keyword
            of the model's forward.
    Returns:
        ((1, T, heads, head_dim) attention output, None).
    Raises:
        ValueError: without `cu_seqlens`.
    """
    if cu_seqlens is None:
        raise ValueError(f"attn_implementation {ATTENTION!r} needs the `cu_seqlens=` sequence boundaries")
    out = torch.empty_like(query)
    gqa = query.shape[1] != key.shape[1]
    for a, b in zip(cu_seqlens[:-1], cu_seqlens[1:], strict=True):  # each sequence attends to itself alone
        out[:, :, a:b] = F.scaled_dot_product_attention(query[:, :, a:b], key[:, :, a:b], value[:, :, a:b],
                                                        is_causal=True, scale=scaling, enable_gqa=gqa)  # fmt: skip
    return out.transpose(1, 2), None


AttentionInterface.register(ATTENTION, varlen_attention)
AttentionMaskInterface.register(ATTENTION, lambda *args, **kwargs: None)  # causality comes from the boundaries


@contextlib.contextmanager
def _attention(model, name: str):
    """Switch `model`'s attention implementation for the duration (restored after, even on errors)."""
    cfg = model.config
    before = cfg._attn_implementation
    try:
        cfg._attn_implementation = name
        yield model
    finally:
        cfg._attn_implementation = before


def _inputs(prompts: list[list[int]], pad_id: int, device) -> dict[str, dict]:
    """The forward keyword arguments of each layout (see the module docstring)."""
    b, m = len(prompts), max(map(len, prompts))
    padded = torch.full((b, m), pad_id, dtype=torch.long)
    mask = torch.zeros((b, m), dtype=torch.long)
    for i, p in enumerate(prompts):  # right padding: a real token never sees a pad (they come after it)
        padded[i, :len(p)], mask[i, :len(p)] = torch.tensor(p), 1
    row = torch.tensor([t for p in prompts for t in p])[None]
    pos = torch.cat([torch.arange(len(p)) for p in prompts])[None]
    cu = tuple(int(c) for c in torch.tensor([0, *map(len, prompts)]).cumsum(0))
    on = lambda x: x.to(device)  # noqa: E731
    return {"padded": {"input_ids": on(padded), "attention_mask": on(mask)},
            "packed": {"input_ids": on(row), "position_ids": on(pos)},
            "varlen": {"input_ids": on(row), "position_ids": on(pos), "cu_seqlens": cu}}


def padding_removal(model: str = "tiny-llama", batch: int = 8, length_range: tuple[int, int] = (16, 256),
                    lengths: list[int] | None = None, repeat: int = 10, rounds: int = 2,
                    device: str | torch.device = "auto", loaded: tuple | None = None, seed: int = 0) -> Measured:
    """One prefill of a mixed-length batch in three layouts (padded, packed with a mask, varlen), checked and timed.

    Args:
        model: a Llama-architecture labkit model (MODELS). batch, length_range: `batch` prompts with lengths uniform
            in (low, high) inclusive (`draw_lengths`); lengths: the prompt lengths instead (tokens). repeat, rounds:
            timed forwards per layout and the rounds they are split over (`measure.benchmark_rounds`). device:
            where to compute. loaded: a (model, tokenizer) already on `device` (None: load `model`). seed: lengths
            and token ids.
    Returns:
        Measured: one row per layout — tokens (computed by the linear layers), attention_pairs, gflops (predicted,
        `prefill_flops`), time_ms (median), speedup (padded time ÷ this), predicted_speedup (padded FLOPs ÷ these),
        max_abs_diff (of the logits at every real token, vs the padded layout), device. attrs: lengths,
        padding_share, flops_padding_share (1 − varlen ÷ padded FLOPs), model. The figure: time per layout.
    Raises:
        ValueError: a model outside MODELS (or `loaded` not Llama), bad lengths, repeat or rounds < 1 — before
        anything is loaded.
    """
    if loaded is None and model not in MODELS:
        raise ValueError(f"unknown model {model!r}: padding removal runs Llama-architecture models {MODELS}")
    if repeat < 1 or rounds < 1:
        raise ValueError(f"need repeat >= 1 and rounds >= 1, got {repeat} and {rounds}")
    lengths = list(lengths) if lengths is not None else draw_lengths(batch, *length_range, seed=seed)
    share = padding_share(lengths)
    net, tok = loaded if loaded is not None else load_model(model, device=device)
    if net.config.model_type != "llama":
        raise ValueError(f"padding removal needs a Llama-architecture model {MODELS}, got {net.config.model_type!r}")
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(2, net.config.vocab_size, (n,), generator=g).tolist() for n in lengths]
    kw = _inputs(prompts, tok.pad_token_id if tok.pad_token_id is not None else 0, net.device)
    impl = {"padded": net.config._attn_implementation, "packed": net.config._attn_implementation, "varlen": ATTENTION}
    real = kw["padded"]["attention_mask"].bool()

    def stack(layout: str) -> torch.Tensor:  # the decoder stack's last hidden states, (rows, tokens, hidden)
        with torch.inference_mode(), _attention(net, impl[layout]):
            return net.model(**kw[layout], use_cache=False).last_hidden_state

    def real_logits(layout: str) -> torch.Tensor:  # (Σ l, vocab): every real token, in the same order
        h = stack(layout)
        with torch.inference_mode():
            return net.lm_head(h[real] if layout == "padded" else h[0]).float()

    logits = {name: real_logits(name) for name in LAYOUTS}
    stats = benchmark_rounds({name: lambda n=name: stack(n) for name in LAYOUTS}, warmup=1, repeat=repeat,
                             rounds=rounds)  # fmt: skip
    flops = prefill_flops(net.config, lengths)
    b, m, t = len(lengths), max(lengths), sum(lengths)
    tokens = {"padded": b * m, "packed": t, "varlen": t}
    pairs = {"padded": b * m * m, "packed": t * t, "varlen": causal_pairs(lengths)}
    rows = [{"layout": name, "tokens": tokens[name], "attention_pairs": pairs[name], "gflops": flops[name] / 1e9,
             "time_ms": stats[name].median * 1e3, "speedup": stats["padded"].median / stats[name].median,
             "predicted_speedup": flops["padded"] / flops[name],
             "max_abs_diff": float((logits[name] - logits["padded"]).abs().max()), "device": device_label(net.device)}
            for name in LAYOUTS]  # fmt: skip
    df = results_frame(rows, model=model, lengths=lengths, padding_share=share,
                       flops_padding_share=1 - flops["varlen"] / flops["padded"])
    title = f"One prefill, {b} prompts of {min(lengths)}–{m} tokens ({share:.0%} padding) — {model}"
    return Measured(df, bars(df, "layout", "time_ms", title, ylabel="median time (ms)"))
