"""Mixture of experts: total vs active parameters, by formula and on the meta device, and a tiny random Mixtral
decoding next to dense Llamas of its active and of its total size (bytes read per step, tokens/s, the roofline).

    count = param_count(MIXTRAL_8X7B)         # the formula: count.total, count.active, count.read_per_step(2)
    mixtral_sizing().table                    # formula vs meta device vs the published 46.7 B / 12.9 B
    moe_vs_dense(bandwidth_gbps=..., flops=...)   # the tiny MoE and its two dense twins, timed side by side

A Mixtral layer replaces the MLP by E experts and a router that sends each token to its top k (Jiang et al.,
"Mixtral of Experts", 2024, arXiv:2401.04088, §2.1): all E are held, k are used, so a batch-1 decode step reads the
bytes of a much smaller dense model; with B sequences a layer runs up to B·k experts and reads climb to the total.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import nan

import pandas as pd
import plotly.graph_objects as go
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, MixtralConfig, PretrainedConfig

from labkit import anatomy, hardware, measure, plots
from labkit.decoding import timing
from labkit.decoding.lm import next_logits
from labkit.experiments import roofline
from labkit.precision import FLOAT_PRECISIONS, bytes_per_value, canonical, torch_dtype

# mistralai/Mixtral-8x7B-v0.1, config.json on the Hugging Face Hub (the keys that size it; no biases, untied head).
MIXTRAL_8X7B = {"model_type": "mixtral", "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336,
                "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                "num_local_experts": 8, "num_experts_per_tok": 2, "max_position_embeddings": 32768,
                "tie_word_embeddings": False}  # fmt: skip
# "Mixtral has 46.7B total parameters but only uses 12.9B parameters per token" (Mistral AI, "Mixtral of experts",
# 2023-12-11); the paper (Jiang et al., 2024, arXiv:2401.04088) rounds them to 47B and 13B. Billions.
MIXTRAL_PUBLISHED_B = {"total": 46.7, "active": 12.9}
MIXTRAL_SOURCE = "Mistral AI, 'Mixtral of experts' (2023-12-11); Jiang et al. 2024 (arXiv:2401.04088): 47B / 13B"


@dataclass(frozen=True)
class ParamCount:
    """A decoder's parameters by part, from its config (`param_count`); a dense model has experts = top_k = 1.

    embedding: the input table (vocab × hidden); lm_head: 0 when tied to it. Per layer: attention (q, k, v, o),
    expert (one expert's gate, up, down = 3 × hidden × intermediate; a dense model's MLP), router (hidden × experts,
    0 when dense), norms (2 × hidden); the final norm: hidden.
    """

    embedding: int
    lm_head: int
    layers: int
    attention: int
    expert: int
    router: int
    norms: int
    experts: int
    top_k: int
    hidden: int

    def with_experts(self, per_layer: float) -> float:
        """Parameters with `per_layer` experts in every layer (the rest counted in full)."""
        return (self.embedding + self.lm_head + self.hidden
                + self.layers * (self.attention + per_layer * self.expert + self.router + self.norms))

    @property
    def total(self) -> int:
        """Every parameter held: L × (attention + experts × expert + router + norms) + embeddings + final norm."""
        return int(self.with_experts(self.experts))

    @property
    def active(self) -> int:
        """Parameters one token uses, the published convention (embeddings included): top_k experts per layer."""
        return int(self.with_experts(self.top_k))

    def read_per_step(self, experts_per_layer: float, batch: int = 1) -> float:
        """Parameters one decode step reads: `experts_per_layer` experts in each layer, and of an untied embedding
        table only the `batch` rows looked up (a tied table is read whole as the LM head)."""
        unread = 0 if self.lm_head == 0 else self.embedding - batch * self.hidden
        return self.with_experts(experts_per_layer) - unread

    def matmul_params(self, experts_per_layer: float) -> float:
        """Weights one token multiplies (2 FLOPs each): attention, router and `experts_per_layer` experts per layer,
        and the LM head (no norms, no embedding lookup)."""
        return (self.layers * (self.attention + experts_per_layer * self.expert + self.router)
                + (self.lm_head or self.embedding))


def param_count(model_or_config) -> ParamCount:
    """The parameter formula of a Llama-style decoder (Llama, Mistral, Mixtral: no biases, RMSNorm, SwiGLU MLP).

    Args:
        model_or_config: a model name, a transformers config or a config dict with "model_type" (`anatomy.config_of`).
    Returns:
        ParamCount. Sources: the layer shapes of transformers' LlamaForCausalLM / MixtralForCausalLM (q: h × heads·d,
        k and v: h × kv_heads·d, o: heads·d × h; an expert's gate_up_proj 2I × h and down_proj h × I; the router
        experts × h) and Jiang et al. 2024, §2.1.
    Raises:
        ValueError: an unknown name; a config with biases (attention_bias / mlp_bias), which the formula leaves out.
    """
    cfg = anatomy.config_of(model_or_config)
    if getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False):
        raise ValueError("param_count covers bias-free Llama-style decoders; this config has biases")
    d = anatomy.dims(cfg)
    experts = getattr(cfg, "num_local_experts", None) or 1
    top_k = (getattr(cfg, "num_experts_per_tok", None) or 1) if experts > 1 else 1
    embedding = d.vocab * d.hidden
    attention = 2 * d.hidden * d.heads * d.head_dim + 2 * d.hidden * d.kv_heads * d.head_dim
    return ParamCount(embedding, 0 if cfg.tie_word_embeddings else embedding, d.layers, attention,
                      3 * d.hidden * d.intermediate, d.hidden * experts if experts > 1 else 0, 2 * d.hidden, experts,
                      top_k, d.hidden)  # fmt: skip


def meta_count(model_or_config) -> tuple[int, int]:
    """Total and active parameters of the model transformers builds, counted on the meta device (nothing allocated).

    Returns:
        (total: every parameter, tied ones once; active: total minus the (experts − top_k) / experts share of the
        tensors named `.experts.`, the expert weights a token does not use).
    """
    cfg = anatomy.config_of(model_or_config)
    with torch.device("meta"):
        net = AutoModelForCausalLM.from_config(cfg)
    total = sum(p.numel() for p in net.parameters())
    experts, top_k = getattr(cfg, "num_local_experts", 1) or 1, getattr(cfg, "num_experts_per_tok", 1) or 1
    expert_params = sum(p.numel() for n, p in net.named_parameters() if ".experts." in n)
    return total, total - expert_params * (experts - top_k) // experts


@dataclass(frozen=True)
class Sizing:
    """table: a row per quantity (total, active); figure: grouped bars; count: the formula; meta: `meta_count`."""

    table: pd.DataFrame
    figure: go.Figure
    count: ParamCount
    meta: tuple[int, int]


def mixtral_sizing(config: dict | PretrainedConfig | None = None, published_b: dict | None = None) -> Sizing:
    """Total vs active parameters of a published MoE: the formula (`param_count`), the meta-device count
    (`meta_count`) and the published figures, with the bf16 bytes each means.

    Args:
        config: a MoE config (dict with "model_type" or a transformers config); None: MIXTRAL_8X7B.
        published_b: {"total": B, "active": B}; None: MIXTRAL_PUBLISHED_B (for MIXTRAL_8X7B).
    Returns:
        Sizing; table columns quantity, formula_B, meta_B, published_B, bf16_GB (meta count × 2 bytes, 1e9 bytes);
        attrs: read_per_token_B (a batch-1 decode step's parameters: top_k experts, one embedding row), source.
    """
    config = MIXTRAL_8X7B if config is None else config
    published_b = published_b or (MIXTRAL_PUBLISHED_B if config is MIXTRAL_8X7B else {})
    count, meta = param_count(config), meta_count(config)
    rows = [{"quantity": q, "formula_B": f / 1e9, "meta_B": m / 1e9, "published_B": published_b.get(q),
             "bf16_GB": m * bytes_per_value("bf16") / 1e9}
            for q, f, m in (("total", count.total, meta[0]), ("active", count.active, meta[1]))]  # fmt: skip
    table = pd.DataFrame(rows)
    table.attrs.update(read_per_token_B=count.read_per_step(count.top_k) / 1e9,
                       source=MIXTRAL_SOURCE if published_b is MIXTRAL_PUBLISHED_B else None)
    long = table.melt(id_vars="quantity", value_vars=["formula_B", "meta_B", "published_B"], var_name="source",
                      value_name="params_B").dropna()  # fmt: skip
    fig = plots.bars(long, "quantity", "params_B", color="source", ylabel="parameters (billions)",
                     title=f"{count.experts} experts, top-{count.top_k}: every expert is held, {count.top_k} are used")
    return Sizing(table, fig, count, meta)


def tiny_configs(hidden: int = 512, intermediate: int = 1024, layers: int = 4, experts: int = 8, top_k: int = 2,
                 vocab: int = 2048, heads: int = 8, kv_heads: int = 4) -> dict[str, PretrainedConfig]:
    """A tiny Mixtral and two dense Llamas with the same attention and embeddings: one whose MLP is top_k experts wide
    (its active size) and one experts wide (its total size); each differs from the MoE by the router alone.

    Args:
        hidden, intermediate (one expert's), layers, experts, top_k, vocab, heads, kv_heads: the dimensions.
    Returns:
        {"MoE": MixtralConfig, "dense, same active": LlamaConfig, "dense, same total": LlamaConfig}.
    Raises:
        ValueError: a size < 1, experts < 2, top_k outside 1..experts, heads not dividing hidden or kv_heads not
            dividing heads.
    """
    sizes = dict(hidden=hidden, intermediate=intermediate, layers=layers, vocab=vocab, heads=heads, kv_heads=kv_heads)
    if min(sizes.values()) < 1 or experts < 2 or not 1 <= top_k <= experts:
        raise ValueError(f"need sizes >= 1, experts >= 2 and 1 <= top_k <= experts; got {sizes}, experts={experts}, "
                         f"top_k={top_k}")
    if hidden % heads or heads % kv_heads:
        raise ValueError(f"heads ({heads}) must divide hidden ({hidden}) and kv_heads ({kv_heads}) divide heads")
    common = dict(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                  num_key_value_heads=kv_heads, max_position_embeddings=1024, tie_word_embeddings=False)
    moe = MixtralConfig(intermediate_size=intermediate, num_local_experts=experts, num_experts_per_tok=top_k, **common)
    return {"MoE": moe,
            "dense, same active": LlamaConfig(intermediate_size=top_k * intermediate, **common),
            "dense, same total": LlamaConfig(intermediate_size=experts * intermediate, **common)}  # fmt: skip


def expected_experts(experts: int, top_k: int, batch: int) -> float:
    """Distinct experts a layer runs for `batch` tokens routed uniformly at random: E × (1 − (1 − k/E)^B).

    Args:
        experts: E, the experts per layer. top_k: k, the experts each token picks. batch: B, tokens in the step.
    Returns:
        the expected count (each expert is missed by one token with probability (E − k)/E); exactly k at batch 1.
    """
    return experts * (1 - (1 - top_k / experts) ** batch)


@dataclass(frozen=True)
class MoEVsDense:
    """table: a row per model and batch (`moe_vs_dense`); figure: the points on the roofline; counts: ParamCounts."""

    table: pd.DataFrame
    figure: go.Figure
    counts: dict


def _build(config: PretrainedConfig, dtype: str, device: torch.device) -> torch.nn.Module:
    extra = {"experts_implementation": "eager"} if isinstance(config, MixtralConfig) else {}  # runs only hit experts
    with torch.random.fork_rng(devices=[]):  # the same random weights every run, the caller's RNG untouched
        torch.manual_seed(0)
        net = AutoModelForCausalLM.from_config(config, dtype=torch.float32, **extra)
    return net.to(device=device, dtype=torch_dtype(dtype)).eval()


def moe_vs_dense(configs: dict | None = None, batch_sizes=(1, 8), prompt_tokens: int = 16, repeat: int = 20,
                 precision: str = "fp32", bandwidth_gbps: float | None = None, flops: float | None = None,
                 device: str = "cpu") -> MoEVsDense:
    """Decode steps of the tiny MoE and its dense twins (`tiny_configs`), timed side by side, with the bytes each
    step reads counted from the experts the router really picked.

    One decode step (one new token per sequence, KV cache of `prompt_tokens` + the steps before) of every model is
    timed with `measure.benchmark_rounds` (a warm-up step per round, `repeat` timed steps over 5 rounds; medians). A
    forward hook on every MoE router records the experts it picked in each step; bytes read per step = (attention,
    router, norms, LM head, one embedding row per sequence + experts hit per layer × one expert) × bytes per value
    (`ParamCount.read_per_step`; the KV cache, a few hundred KB here, is left out). The roofline (Williams, Waterman
    & Patterson, 2009): a step takes at least bytes ÷ bandwidth; FLOPs per step = 2 × batch × the weights one token
    multiplies (`ParamCount.matmul_params` with top_k experts).

    Args:
        configs: {name: config} with an "MoE" entry (a MixtralConfig); None: `tiny_configs()`.
        batch_sizes: sequences per step. prompt_tokens: random prompt length. repeat: timed steps per model and batch.
        precision: fp32 | bf16 | fp16. bandwidth_gbps, flops: the device's read GB/s and FLOP/s (None: measured on
            `device` with `measure.memory_bandwidth` / `measure.matmul_flops`). device: "cpu", "cuda", "cuda:N", "auto".
    Returns:
        MoEVsDense; table columns engine (the model), batch, params_M (formula), params_counted (the built model's
        parameters), active_params_M, experts_per_layer (measured mean; NaN for dense), expected_experts_per_layer
        (`expected_experts`), read_per_step_MB (measured routing), ms_per_step, decode_tok_s (batch ÷ ms_per_step),
        bandwidth_bound_tok_s (batch × bandwidth ÷ bytes read), pct_of_bound, speed_vs_moe (tokens/s ÷ the MoE's at
        that batch), intensity_flop_per_byte, achieved_gflops; attrs: bandwidth_GBps, flops, measured_on, precision.
    Raises:
        ValueError: no "MoE" config, a batch or prompt_tokens < 1, repeat < 1, or a precision that is not a float —
            before anything is built.
    """
    configs = configs or tiny_configs()
    name = canonical(precision)
    if name not in FLOAT_PRECISIONS:
        raise ValueError(f"the models run in {list(FLOAT_PRECISIONS)}, not {name}")
    if not isinstance(configs.get("MoE"), MixtralConfig):
        raise ValueError(f"configs needs an 'MoE' MixtralConfig; got {list(configs)}")
    if not batch_sizes or min(batch_sizes) < 1 or prompt_tokens < 1 or repeat < 1:
        raise ValueError(f"need batch sizes, prompt_tokens and repeat >= 1; got {list(batch_sizes)}, {prompt_tokens}, "
                         f"{repeat}")
    dev = hardware.resolve_device(device)
    counts = {k: param_count(c) for k, c in configs.items()}
    nets = {k: _build(c, name, dev) for k, c in configs.items()}
    bw = bandwidth_gbps or measure.memory_bandwidth(device=dev)
    fl = flops or measure.matmul_flops(precision=name, device=dev)
    picked: list[torch.Tensor] = []
    hooks = [layer.mlp.gate.register_forward_hook(lambda _m, _i, out: picked.append(out[2]))
             for layer in nets["MoE"].model.layers]  # out = (logits, top-k weights, top-k indices (tokens, k))
    per_value, moe, rows = bytes_per_value(name), counts["MoE"], []
    try:
        for b in batch_sizes:
            steps = {}
            with torch.inference_mode():
                for k, net in nets.items():
                    ids = timing.random_prompt(b, prompt_tokens, configs[k].vocab_size, seed=b).to(dev)
                    logits, cache = next_logits(net, ids)  # prefill; each timed step then appends one token
                    token = logits.argmax(-1, keepdim=True)
                    steps[k] = (lambda n=net, t=token, c=cache: next_logits(n, t, c))
                picked.clear()
                stats = measure.benchmark_rounds(steps, warmup=1, repeat=repeat, rounds=min(5, repeat))
            hit = sum(len(torch.unique(p)) for p in picked) / len(picked)  # distinct experts per layer and step
            expect = expected_experts(moe.experts, moe.top_k, b)
            for k, count in counts.items():
                is_moe, s = k == "MoE", stats[k].median
                read = count.read_per_step(hit if is_moe else 1, b) * per_value
                used = count.matmul_params(count.top_k)  # per token: its own top_k experts, whatever the batch
                rows.append({"engine": k, "batch": b, "params_M": count.total / 1e6,
                             "params_counted": sum(p.numel() for p in nets[k].parameters()),
                             "active_params_M": count.active / 1e6, "experts_per_layer": hit if is_moe else nan,
                             "expected_experts_per_layer": expect if is_moe else nan,
                             "read_per_step_MB": read / 1e6, "ms_per_step": s * 1e3, "decode_tok_s": b / s,
                             "bandwidth_bound_tok_s": b * bw * 1e9 / read, "pct_of_bound": 100 * read / (bw * 1e9) / s,
                             "intensity_flop_per_byte": 2 * b * used / read, "achieved_gflops": 2 * b * used / s / 1e9})
    finally:
        for h in hooks:
            h.remove()
    table = measure.results_frame(rows, bandwidth_GBps=float(bw), flops=float(fl), precision=name,
                                  measured_on=getattr(bw, "device_name", "(bandwidth given)"))
    moe_speed = table[table.engine == "MoE"].set_index("batch").decode_tok_s
    table["speed_vs_moe"] = table.decode_tok_s / table.batch.map(moe_speed)
    title = f"A {moe.experts}-expert top-{moe.top_k} MoE and its dense twins on the roofline ({name})"
    return MoEVsDense(table, roofline.roofline_figure(table, title), counts)
