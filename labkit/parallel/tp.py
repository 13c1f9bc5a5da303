"""Tensor parallelism (Megatron, Shoeybi et al. 2019): every rank holds a slice of every layer, all work at once.

From scratch: `ColumnParallelLinear` (split output features, no communication), `RowParallelLinear`
(split input features, one all-reduce of the partial sums), `VocabParallelEmbedding`, head-split
attention and the Megatron MLP (column then row: one all-reduce per block). `TPLlama` stacks them
into a tensor-parallel copy of a Llama-architecture model. The library path shards the same model
with DTensor's `parallelize_module`. Rank functions (run them with `run_distributed`):

    tp_forward(model_name, input_ids, mode="scratch" | "dtensor" | "single") -> TPRun (logits, latency, comms)
    layer_parity()          every layer against its unsharded original

Only Llama-architecture models are supported (BLOOM's ALiBi slopes would need splitting per head too).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Replicate
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module
from transformers import LlamaConfig
from transformers.models.llama import modeling_llama as llama

from labkit import models
from labkit.measure import Stats
from labkit.parallel import comm
from labkit.parallel.launch import rank_device, time_on_all_ranks

MODES = ("scratch", "dtensor", "single")


def _rank_world() -> tuple[int, int]:
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _shard(t: torch.Tensor, dim: int) -> torch.Tensor:
    rank, world = _rank_world()
    if t.shape[dim] % world:
        raise ValueError(f"dimension {dim} of size {t.shape[dim]} does not split over {world} ranks")
    return t.detach().chunk(world, dim)[rank].clone()


class ColumnParallelLinear(nn.Module):
    """y = x Aᵀ with A's rows (output features) split: rank i computes y[..., slice i]. No communication,
    unless `gather_output` concatenates the slices (an all-gather)."""

    def __init__(self, full: nn.Linear, gather_output: bool = False, tag: str = "column"):
        super().__init__()
        self.weight = nn.Parameter(_shard(full.weight, 0), requires_grad=False)  # (out/world, in)
        self.bias = None if full.bias is None else nn.Parameter(_shard(full.bias, 0), requires_grad=False)
        self.gather_output, self.tag = gather_output, tag

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out/world) or (..., out)
        y = F.linear(x, self.weight, self.bias)
        return comm.all_gather(y, -1, self.tag) if self.gather_output else y


class RowParallelLinear(nn.Module):
    """y = Σᵢ xᵢ Bᵢᵀ with B's columns (input features) split: each rank multiplies its slice of x, then
    one all-reduce sums the partial results. The bias is added once, after the sum."""

    def __init__(self, full: nn.Linear, tag: str = "row"):
        super().__init__()
        self.weight = nn.Parameter(_shard(full.weight, 1), requires_grad=False)  # (out, in/world)
        self.bias = None if full.bias is None else nn.Parameter(full.bias.detach().clone(), requires_grad=False)
        self.tag = tag

    def forward(self, x_local: torch.Tensor) -> torch.Tensor:  # (..., in/world) -> (..., out)
        y = comm.all_reduce(F.linear(x_local, self.weight), self.tag)
        return y if self.bias is None else y + self.bias


class VocabParallelEmbedding(nn.Module):
    """Rank i holds vocabulary rows [i·V/p, (i+1)·V/p); ids outside its range give zeros; an all-reduce
    fills each position from the rank that owns its id."""

    def __init__(self, full: nn.Embedding, tag: str = "embedding"):
        super().__init__()
        rank, _ = _rank_world()
        self.weight = nn.Parameter(_shard(full.weight, 0), requires_grad=False)  # (vocab/world, hidden)
        self.start = rank * self.weight.shape[0]
        self.tag = tag

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (batch, seq) -> (batch, seq, hidden)
        local = ids - self.start
        outside = (local < 0) | (local >= self.weight.shape[0])
        out = F.embedding(local.masked_fill(outside, 0), self.weight)
        return comm.all_reduce(out.masked_fill(outside[..., None], 0.0), self.tag)


class ParallelMLP(nn.Module):
    """Megatron's MLP (Llama's SwiGLU): gate and up are column-parallel, so the activation needs no
    communication; down is row-parallel: one all-reduce per MLP."""

    def __init__(self, mlp: nn.Module):
        super().__init__()
        self.gate = ColumnParallelLinear(mlp.gate_proj)
        self.up = ColumnParallelLinear(mlp.up_proj)
        self.down = RowParallelLinear(mlp.down_proj, tag="mlp")
        self.act = mlp.act_fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, seq, hidden)
        return self.down(self.act(self.gate(x)) * self.up(x))  # local (batch, seq, inter/world) inside


class ParallelAttention(nn.Module):
    """Head-split attention: each rank owns heads/p query heads and kv_heads/p key/value heads (q, k, v
    column-parallel), attends locally, and the row-parallel output projection all-reduces once."""

    def __init__(self, attn: nn.Module, config):
        super().__init__()
        _, world = _rank_world()
        heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
        if heads % world or kv_heads % world:
            raise ValueError(f"{heads} query / {kv_heads} key-value heads do not split over {world} ranks")
        self.head_dim = attn.head_dim
        self.q, self.k, self.v = (ColumnParallelLinear(p) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
        self.o = RowParallelLinear(attn.o_proj, tag="attention")

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q, k, v = (p(x).view(b, s, -1, self.head_dim).transpose(1, 2) for p in (self.q, self.k, self.v))
        q, k = llama.apply_rotary_pos_emb(q, k, cos, sin)  # (batch, local heads, seq, head_dim)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return self.o(out.transpose(1, 2).reshape(b, s, -1))  # (batch, seq, hidden) after the all-reduce


class TPLlama(nn.Module):
    """A tensor-parallel copy of a Llama-architecture `*ForCausalLM` (full logits on every rank)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        inner, config = model.model, model.config
        self.embed = VocabParallelEmbedding(inner.embed_tokens)
        self.rotary = copy.deepcopy(inner.rotary_emb)  # replicated: no parameters to split
        self.attn = nn.ModuleList(ParallelAttention(layer.self_attn, config) for layer in inner.layers)
        self.mlp = nn.ModuleList(ParallelMLP(layer.mlp) for layer in inner.layers)
        self.norms = nn.ModuleList(copy.deepcopy(nn.ModuleList([layer.input_layernorm, layer.post_attention_layernorm]))
                                   for layer in inner.layers)  # fmt: skip
        self.norm = copy.deepcopy(inner.norm)
        self.lm_head = ColumnParallelLinear(model.lm_head, gather_output=True, tag="lm_head")

    @torch.no_grad()
    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (batch, seq) -> (batch, seq, vocab)
        x = self.embed(ids)
        cos, sin = self.rotary(x, torch.arange(ids.shape[1], device=ids.device)[None])
        for attn, mlp, (norm1, norm2) in zip(self.attn, self.mlp, self.norms, strict=True):
            x = x + attn(norm1(x), cos, sin)
            x = x + mlp(norm2(x))
        return self.lm_head(self.norm(x))


# --- the library path: DTensor ----------------------------------------------------------------
def dtensor_plan() -> dict:
    """The same split as TPLlama, written as a DTensor plan for a Hugging Face Llama (module name -> style)."""
    return {
        "model.embed_tokens": RowwiseParallel(input_layouts=Replicate()),  # vocab rows split, partial sums
        **{f"model.layers.*.self_attn.{p}_proj": ColwiseParallel() for p in "qkv"},
        "model.layers.*.self_attn.o_proj": RowwiseParallel(),
        "model.layers.*.mlp.gate_proj": ColwiseParallel(),
        "model.layers.*.mlp.up_proj": ColwiseParallel(),
        "model.layers.*.mlp.down_proj": RowwiseParallel(),
        "lm_head": ColwiseParallel(output_layouts=Replicate()),
    }


def dtensor_model(model: nn.Module) -> nn.Module:
    """A copy of `model` sharded over all ranks with `parallelize_module` (1-D mesh)."""
    mesh = init_device_mesh(rank_device().type, (dist.get_world_size(),))
    return parallelize_module(copy.deepcopy(model), mesh, dtensor_plan())


# --- rank functions ---------------------------------------------------------------------------
def load_llama(model_name: str = "tiny-llama") -> nn.Module:
    """A registered Llama-architecture model, on this rank's device, in fp32 eval mode.

    Args:
        model_name: a registry name whose config has model_type "llama" (e.g. "tiny-llama", "smollm2-135m").
    Returns:
        the `*ForCausalLM` model on `rank_device()`.
    Raises:
        ValueError: for a model of another architecture.
    """
    model_type = getattr(models.get_config(model_name), "model_type", "")
    if model_type != "llama":
        raise ValueError(f"tensor parallelism here needs a Llama-architecture model; {model_name!r} is "
                         f"{model_type!r}; choose e.g. 'tiny-llama'")  # fmt: skip
    model, _ = models.load_model(model_name, device="cpu")
    return model.to(rank_device())


@dataclass(frozen=True, eq=False)
class TPRun:
    """One rank's tensor-parallel forward (mode "single": the unsplit one). logits: (batch, seq, vocab) on the CPU,
    full on every rank; latency: seconds per forward (`time_on_all_ranks`); comm: one more forward's collectives."""

    mode: str
    rank: int
    logits: torch.Tensor
    latency: Stats
    comm: comm.CommLog
    layers: int
    hidden: int

    @property
    def latency_ms(self) -> float:
        """Median forward latency, ms."""
        return self.latency.median * 1e3

    def table(self, reference: torch.Tensor | None = None) -> pd.DataFrame:
        """One row: mode, (max |logits − reference| if given), all-reduces and MB, all-gathers, median ms."""
        diff = {} if reference is None else {"max |logits − single|": float((self.logits - reference).abs().max())}
        return pd.DataFrame([{"mode": self.mode, **diff, "all-reduces": self.comm.count("all_reduce"),
                              "all-reduce MB": self.comm.nbytes("all_reduce") / 1e6,
                              "all-gathers": self.comm.count("all_gather"), "forward ms (median)": self.latency_ms}])


def tp_forward(model_name: str = "tiny-llama", input_ids: torch.Tensor | None = None, mode: str = "scratch",
               warmup: int = 1, repeat: int = 3, model: nn.Module | None = None) -> TPRun:
    """Rank function: one rank's part of a tensor-parallel forward (the whole forward with mode="single").

    Args:
        model_name: a Llama-architecture registry name (ignored when `model` is given).
        input_ids: (batch, seq) ids, the same on every rank; default (2, 16) ids from a fixed seed.
        mode: "scratch" (TPLlama), "dtensor" (parallelize_module) or "single" (the unsplit model).
        warmup, repeat: untimed and timed forwards (`time_on_all_ranks`).
        model: an already loaded model (it is copied, not changed).
    Returns:
        TPRun with the full logits, the latency and the collectives one forward issued.
    Raises:
        ValueError: for an unknown mode (naming the choices) or a model that is not a Llama.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose from {list(MODES)}")
    model = model if model is not None else load_llama(model_name)
    ids = input_ids if input_ids is not None else torch.randint(0, model.config.vocab_size, (2, 16),
                                                                generator=torch.Generator().manual_seed(0))
    ids = ids.to(model.device)
    if mode == "single":
        net = lambda x: model(input_ids=x).logits  # noqa: E731
    elif mode == "scratch":
        net = TPLlama(model)
    else:
        dmodel = dtensor_model(model)
        net = lambda x: dmodel(input_ids=x).logits  # noqa: E731
    counter = comm.CommCounter()
    with warnings.catch_warnings(), torch.no_grad():  # DTensor's module hooks warn about backward hooks
        warnings.filterwarnings("ignore", message="For backward hooks to be called")
        latency = time_on_all_ranks(lambda: net(ids), warmup, repeat)
        with counter:  # one more forward, counted on its own
            logits = net(ids)
    return TPRun(mode, _rank_world()[0], logits.float().cpu(), latency, counter.log,
                 model.config.num_hidden_layers, model.config.hidden_size)


def layer_parity(seed: int = 0) -> dict[str, float]:
    """Rank function: max |sharded − unsharded| for each from-scratch layer (all ranks must agree).

    Args:
        seed: weights and inputs (the same on every rank).
    Returns:
        {"column" | "row" | "embedding" | "mlp" | "attention": max absolute difference} on this rank.
    """
    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
                      vocab_size=96, attention_bias=True)  # fmt: skip
    cfg._attn_implementation = "sdpa"  # causal when no mask is given, as in the full model
    x = torch.randn(2, 5, 64)  # (batch, seq, hidden)
    lin, emb, ids = nn.Linear(64, 96), nn.Embedding(96, 64), torch.randint(0, 96, (2, 5))
    mlp, attn = llama.LlamaMLP(cfg), llama.LlamaAttention(cfg, layer_idx=0).eval()
    cos, sin = llama.LlamaRotaryEmbedding(cfg)(x, torch.arange(5)[None])
    col = ColumnParallelLinear(lin, gather_output=True)
    row_in = x.chunk(_rank_world()[1], -1)[_rank_world()[0]]  # this rank's slice of the input features
    lin_row = nn.Linear(64, 32)
    dev = rank_device()  # NCCL reduces GPU tensors only
    lin, emb, mlp, attn, lin_row, col = (mod.to(dev) for mod in (lin, emb, mlp, attn, lin_row, col))
    x, ids, cos, sin, row_in = (t.to(dev) for t in (x, ids, cos, sin, row_in))
    with torch.no_grad():
        ref_attn, _ = attn(x, (cos, sin), attention_mask=None)
        diffs = {
            "column": col(x) - lin(x),
            "row": RowParallelLinear(lin_row)(row_in) - lin_row(x),
            "embedding": VocabParallelEmbedding(emb)(ids) - emb(ids),
            "mlp": ParallelMLP(mlp)(x) - mlp(x),
            "attention": ParallelAttention(attn, cfg)(x, cos, sin) - ref_attn,
        }
    return {k: float(v.abs().max()) for k, v in diffs.items()}
