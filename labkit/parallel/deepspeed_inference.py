"""DeepSpeed-Inference: `deepspeed.init_inference` tensor parallelism (AutoTP) on real ranks, and kernel injection.

    runs = run_distributed(deepspeed_inference.autotp_ranks, "tiny-llama", world_size=2)   # an AutoTPRun per rank

AutoTP splits every attention and MLP block Megatron-style (column-parallel in, row-parallel out with an
all-reduce) without model-specific code. Kernel injection (`replace_with_kernel_inject=True`) swaps whole
transformer blocks for DeepSpeed's own fused CUDA kernels (Aminabadi et al., "DeepSpeed-Inference: Enabling Efficient
Inference of Transformer Models at Unprecedented Scale", SC'22, §III: Deep-Fusion and custom GeMM kernels): GPU only.

Two CPU caveats, both handled here:
- DeepSpeed all-reduces inference activations through a shared-memory C++ op it compiles on first use;
  on these CPUs it segfaults, so `deepspeed_env.disable_shm_allreduce()` makes it fall back to the process
  group (gloo).
- BLOOM: DeepSpeed slices the ALiBi bias per rank by replacing `transformer.build_alibi_tensor`, but
  transformers 5's `BloomModel.forward` only calls that method when it gets an `attention_mask`; without
  one (and `generate()` drops an all-ones mask) it builds ALiBi for *all* heads inline, and each rank,
  holding half the heads, fails with "The expanded size of the tensor (4) must match the existing size
  (8)". `fix_bloom_alibi()` gives BloomModel an all-ones mask whenever it has none, which routes every
  call through DeepSpeed's sliced builder.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import pandas as pd
import torch
import torch.distributed as dist
import transformers

from labkit import models, plots
from labkit.hardware import CapabilityMissing
from labkit.measure import results_frame
from labkit.memory import model_state_bytes
from labkit.parallel import tp
from labkit.parallel.deepspeed_env import join_deepspeed
from labkit.parallel.launch import rank_device, time_on_all_ranks

MODELS = ("tiny-llama", "smollm2-135m", "tiny-bloom")


def _ones_mask_if_missing(module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    if kwargs.get("attention_mask") is None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        batch, seq = ids.shape if ids is not None else kwargs["inputs_embeds"].shape[:2]
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        past = cache.get_seq_length() if cache is not None else 0
        device = ids.device if ids is not None else kwargs["inputs_embeds"].device
        kwargs["attention_mask"] = torch.ones(batch, past + seq, dtype=torch.long, device=device)  # (batch, keys)
    return args, kwargs


def fix_bloom_alibi(model) -> bool:
    """After AutoTP: make BloomModel always build ALiBi through DeepSpeed's per-rank version. True if applied."""
    body = getattr(model, "transformer", None)
    if body is None or "build_alibi_tensor" not in vars(body):  # not BLOOM, or DeepSpeed did not patch it
        return False
    body.register_forward_pre_hook(_ones_mask_if_missing, with_kwargs=True)
    return True


def forward_ids(model, ids: torch.Tensor) -> torch.Tensor:
    """Logits (batch, seq, vocab) for token ids (batch, seq), always with an explicit attention mask (see above)."""
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


def greedy(model, ids: torch.Tensor, new_tokens: int) -> list[int]:
    """The first sequence's `new_tokens` greedy tokens (an all-ones attention mask, see above)."""
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                             do_sample=False, pad_token_id=0)
    return out[0, ids.shape[1]:].tolist()


def example_ids(model_name: str, batch: int = 1, seq: int = 32, seed: int = 0) -> torch.Tensor:
    """Random token ids of the model's vocabulary, the same on every rank for a seed (ranks must agree on inputs).

    Args:
        model_name: a registry name (its config gives the vocabulary). batch, seq: the shape. seed: the generator's.
    Returns:
        (batch, seq) int64 ids on the CPU, drawn uniformly from [0, vocab_size).
    """
    vocab = models.get_config(model_name).vocab_size
    return torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


def _check_model(model_name: str) -> None:
    if model_name not in MODELS:
        raise ValueError(f"unknown model {model_name!r}; choose from {list(MODELS)}")


def injection_unsupported() -> str | None:
    """Why kernel injection cannot generate with the installed transformers. DeepSpeed's injected BLOOM attention
    unpacks `layer_past` as one (key, value) pair (deepspeed/ops/transformer/inference/ds_attention.py); transformers
    5 hands each block the whole Cache object (modeling_bloom.py), so a cached forward fails ("too many values").

    Returns:
        the reason, naming the installed transformers version, or None where blocks still get (key, value) pairs.
    """
    if int(transformers.__version__.split(".")[0]) >= 5:
        return (f"DeepSpeed's injected BLOOM block expects a (key, value) pair per layer, but transformers "
                f"{transformers.__version__} passes each block the whole Cache object, so generate() fails")
    return None


def init_inference(model, dtype: torch.dtype = torch.float32, kernel_inject: bool = False):
    """`deepspeed.init_inference` over this process group (tp = world size): AutoTP, or fused kernels when
    `kernel_inject` (CUDA only). Returns DeepSpeed's InferenceEngine (`.module` is the model)."""
    import deepspeed  # optional extra (labkit[parallel]), slow to import

    return deepspeed.init_inference(model, tensor_parallel={"tp_size": dist.get_world_size()}, dtype=dtype,
                                    replace_with_kernel_inject=kernel_inject)


@dataclass(frozen=True)
class AutoTPRun:
    """One rank's `autotp_ranks`: parity with the unsplit model, latencies (ms, slowest rank), bytes of weights."""

    model: str
    rank: int
    tp: int
    kernel_inject: bool
    max_abs_diff: float
    alibi_fixed: bool
    same_tokens: bool
    tokens: tuple[int, ...]
    init_s: float
    single_ms: float
    autotp_ms: float
    param_bytes_full: int
    param_bytes_rank: int

    def table(self) -> pd.DataFrame:
        """One row with every field."""
        return pd.DataFrame([asdict(self)])


def autotp_ranks(model_name: str = "tiny-llama", seq: int = 32, new_tokens: int = 8, repeat: int = 10,
                 kernel_inject: bool = False, fix_alibi: bool = True) -> AutoTPRun:
    """Rank function: the same model single-process and under AutoTP (tp = world size); parity and latency.

    Args:
        model_name: one of MODELS. seq: prompt length (batch 1). new_tokens: greedy tokens compared.
        repeat: timed forwards (`time_on_all_ranks`, after 2 warm-ups).
        kernel_inject: DeepSpeed's fused CUDA kernels, fp16 (needs a GPU per rank); else fp32 on the CPU.
        fix_alibi: apply `fix_bloom_alibi` after AutoTP.
    Returns:
        AutoTPRun for this rank.
    Raises:
        ValueError: for a model not in MODELS.
        CapabilityMissing: for kernel_inject without a GPU per rank (NCCL), or with a transformers it cannot run
            with (`injection_unsupported`).
    """
    _check_model(model_name)
    device = rank_device() if kernel_inject else torch.device("cpu")
    if device.type != "cuda" and kernel_inject:
        raise CapabilityMissing("kernel injection runs DeepSpeed's fused CUDA kernels: it needs a GPU per rank "
                                "(backend='nccl'); use kernel_inject=False on the CPU")
    if kernel_inject and injection_unsupported():
        raise CapabilityMissing(injection_unsupported())
    join_deepspeed()
    dtype = torch.float16 if kernel_inject else torch.float32
    model, _ = models.load_model(model_name, device="cpu")
    model = model.to(device, dtype)
    ids = example_ids(model_name, seq=seq).to(device)
    ref_logits, ref_tokens = forward_ids(model, ids), greedy(model, ids, new_tokens)
    single = time_on_all_ranks(lambda: forward_ids(model, ids), warmup=2, repeat=repeat)
    full_bytes = model_state_bytes(model)["weights"]
    start = time.perf_counter()
    tp_model = init_inference(model, dtype, kernel_inject).module
    init_s = time.perf_counter() - start
    fixed = fix_bloom_alibi(tp_model) if fix_alibi else False
    logits = forward_ids(tp_model, ids)
    tokens = greedy(tp_model, ids, new_tokens)
    autotp = time_on_all_ranks(lambda: forward_ids(tp_model, ids), warmup=2, repeat=repeat)
    return AutoTPRun(model_name, dist.get_rank(), dist.get_world_size(), kernel_inject,
                     (logits.float() - ref_logits.float()).abs().max().item(), fixed, tokens == ref_tokens,
                     tuple(tokens), init_s, single.median * 1e3, autotp.median * 1e3, full_bytes,
                     model_state_bytes(tp_model)["weights"])  # fmt: skip


@dataclass(frozen=True)
class MethodTiming:
    """One way to run a forward: median ms (`time_on_all_ranks`) and max |logits − single process|."""

    method: str
    ms: float
    max_abs_diff: float


@dataclass(frozen=True)
class TPComparison:
    """One rank's `compare_tp_ranks`: the same batch through each method."""

    rank: int
    model: str
    batch: int
    seq: int
    rows: tuple[MethodTiming, ...]

    def table(self) -> pd.DataFrame:
        """One row per method: method, ms, max_abs_diff (this rank's)."""
        return pd.DataFrame([asdict(r) for r in self.rows])


def compare_tp_ranks(model_name: str = "tiny-llama", batch: int = 2, seq: int = 16, repeat: int = 5) -> TPComparison:
    """Rank function: one batch through single-process, labkit's own TP, DTensor and DeepSpeed AutoTP.

    AutoTP runs last: it rewrites the model in place.

    Args:
        model_name: a Llama-architecture model of MODELS (labkit's TP supports Llama only). batch, seq: the ids.
        repeat: timed forwards per method, after one warm-up.
    Returns:
        TPComparison for this rank.
    Raises:
        ValueError: for a model not in MODELS or not a Llama.
    """
    _check_model(model_name)
    join_deepspeed()
    model, _ = models.load_model(model_name, device="cpu")
    ids = example_ids(model_name, batch, seq)
    ref = forward_ids(model, ids)
    rows = [MethodTiming("single process", time_on_all_ranks(lambda: forward_ids(model, ids), 1, repeat).median * 1e3,
                         0.0)]  # fmt: skip
    for mode, label in (("scratch", "labkit TP (from scratch)"), ("dtensor", "DTensor parallelize_module")):
        out = tp.tp_forward(model_name, ids, mode, warmup=1, repeat=repeat, model=model)
        rows.append(MethodTiming(label, out.latency_ms, (out.logits - ref).abs().max().item()))
    engine = init_inference(model)
    fix_bloom_alibi(engine.module)
    out = forward_ids(engine.module, ids)
    ms = time_on_all_ranks(lambda: forward_ids(engine.module, ids), 1, repeat).median * 1e3
    rows.append(MethodTiming("DeepSpeed AutoTP", ms, (out - ref).abs().max().item()))
    return TPComparison(dist.get_rank(), model_name, batch, seq, tuple(rows))


def tp_table(ranks: list[TPComparison]) -> plots.Measured:
    """Rank results of `compare_tp_ranks` -> a table and bars.

    Args:
        ranks: every rank's TPComparison, rank order.
    Returns:
        Measured: per method the slowest rank's ms, the largest difference over ranks, vs_single (ms ÷ single's).
    """
    rows = []
    for per_rank in zip(*(r.rows for r in ranks), strict=True):
        rows.append({"method": per_rank[0].method, "ms": max(r.ms for r in per_rank),
                     "max_abs_diff": max(r.max_abs_diff for r in per_rank)})
    first = ranks[0]
    df = results_frame(rows, model=first.model, tp=len(ranks))
    df["vs_single"] = df.ms / df.ms.iloc[0]
    fig = plots.bars(df, "method", "ms", f"{first.model} forward, batch {first.batch} × {first.seq} tokens, "
                     f"tp={len(ranks)}", ylabel="ms (median, slowest rank)")  # fmt: skip
    return plots.Measured(df, fig)


@dataclass(frozen=True)
class AlibiDemo:
    """One rank's `bloom_alibi_demo`: the error without the fix (None if none), and parity with it."""

    rank: int
    error_without_fix: str | None
    fixed: bool
    same_tokens: bool
    max_abs_diff: float

    def table(self) -> pd.DataFrame:
        """One row with every field."""
        return pd.DataFrame([asdict(self)])


def bloom_alibi_demo(model_name: str = "tiny-bloom", seq: int = 8, new_tokens: int = 4) -> AlibiDemo:
    """Rank function: BLOOM under AutoTP generates once as DeepSpeed leaves it (fails on CPU), then with
    `fix_bloom_alibi` (matches the single-process model).

    Args:
        model_name: a BLOOM-architecture model of MODELS. seq: prompt length. new_tokens: greedy tokens compared.
    Returns:
        AlibiDemo for this rank.
    Raises:
        ValueError: for a model not in MODELS.
    """
    _check_model(model_name)
    join_deepspeed()
    model, _ = models.load_model(model_name, device="cpu")
    ids = example_ids(model_name, seq=seq)
    ref_logits, ref_tokens = forward_ids(model, ids), greedy(model, ids, new_tokens)
    tp_model = init_inference(model).module
    try:
        greedy(tp_model, ids, new_tokens)
        error = None
    except RuntimeError as err:  # the failure this demo shows (a shape mismatch in the ALiBi bias)
        error = str(err).splitlines()[0]
    fixed = fix_bloom_alibi(tp_model)
    tokens = greedy(tp_model, ids, new_tokens)
    return AlibiDemo(dist.get_rank(), error, fixed, tokens == ref_tokens,
                     (forward_ids(tp_model, ids) - ref_logits).abs().max().item())
