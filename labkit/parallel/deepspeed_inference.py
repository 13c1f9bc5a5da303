"""DeepSpeed-Inference: `deepspeed.init_inference` tensor parallelism (AutoTP) on real ranks, and kernel injection.

    rows = run_distributed(deepspeed_inference.autotp_ranks, "tiny-llama", world_size=2)

AutoTP splits every attention and MLP block Megatron-style (column-parallel in, row-parallel out with an
all-reduce) without model-specific code. Kernel injection (`replace_with_kernel_inject=True`) swaps whole
transformer blocks for DeepSpeed's fused CUDA kernels: GPU only.

Two CPU caveats, both handled here:
- DeepSpeed all-reduces inference activations through a shared-memory C++ op it compiles on first use;
  on these CPUs it segfaults, so `disable_shm_allreduce()` makes it fall back to the process group (gloo).
- BLOOM: DeepSpeed slices the ALiBi bias per rank by replacing `transformer.build_alibi_tensor`, but
  transformers 5's `BloomModel.forward` only calls that method when it gets an `attention_mask`; without
  one (and `generate()` drops an all-ones mask) it builds ALiBi for *all* heads inline, and each rank,
  holding half the heads, fails with "The expanded size of the tensor (4) must match the existing size
  (8)". `fix_bloom_alibi()` gives BloomModel an all-ones mask whenever it has none, which routes every
  call through DeepSpeed's sliced builder.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time
import warnings

import torch
import torch.distributed as dist

from labkit import models
from labkit.measure import benchmark

MODELS = ("tiny-llama", "smollm2-135m", "tiny-bloom")


def disable_shm_allreduce() -> None:
    """Make DeepSpeed skip building its CPU shared-memory all-reduce op (it falls back to torch.distributed).

    `import deepspeed.comm.torch as m` would bind `deepspeed.comm.torch` the *function table* that
    deepspeed.comm re-exports, so the module is patched through sys.modules.
    """
    importlib.import_module("deepspeed.comm.torch")
    sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None


def quiet_deepspeed() -> None:
    """DeepSpeed logs its whole config at INFO and calls collectives torch has renamed (FutureWarning)."""
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)


def op_compile_time(compile_if_missing: bool = True, load: bool = True) -> dict:
    """Build (or load from TORCH_EXTENSIONS_DIR) DeepSpeed's CPU op, timed: the first use compiles C++ (~50 s
    on 2 cores), later uses load the cached .so. With compile_if_missing=False an uncached op is not built;
    with load=False nothing is loaded, only whether a build is cached is reported (ninja sometimes decides
    to rebuild a cached op, ~30 s here: a smoke run should not pay for that)."""
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    from labkit.parallel.zero_training import use_extension_cache

    root = use_extension_cache()
    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    cached = any(f.endswith(".so") for _, _, files in os.walk(os.path.join(root, builder.NAME)) for f in files)
    info = {"deepspeed": deepspeed.__version__, "op": builder.absolute_name(), "was_cached": cached,
            "extensions_dir": root, "seconds": None}
    if load and (cached or compile_if_missing):
        start = time.perf_counter()
        builder.load(verbose=False)
        info["seconds"] = time.perf_counter() - start
    return info


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
    """Logits for token ids, always with an explicit attention mask (see the BLOOM note above)."""
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits  # (batch, seq, vocab)


def greedy(model, ids: torch.Tensor, new_tokens: int) -> list[int]:
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                             do_sample=False, pad_token_id=0)
    return out[0, ids.shape[1]:].tolist()


def example_ids(model_name: str, batch: int = 1, seq: int = 32, seed: int = 0) -> torch.Tensor:
    vocab = models.get_config(model_name).vocab_size
    return torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


def autotp_ranks(model_name: str = "tiny-llama", seq: int = 32, new_tokens: int = 8, repeat: int = 10,
                 kernel_inject: bool = False, fix_alibi: bool = True) -> dict:
    """Rank function: the same model single-process and under AutoTP (tp = world size); parity and latency."""
    if model_name not in MODELS:
        raise ValueError(f"unknown model {model_name!r}; choose from {list(MODELS)}")
    import deepspeed

    quiet_deepspeed()
    disable_shm_allreduce()
    deepspeed.init_distributed(dist_backend=dist.get_backend())  # joins the existing process group
    device = torch.device("cuda", dist.get_rank()) if kernel_inject else torch.device("cpu")
    dtype = torch.float16 if kernel_inject else torch.float32
    model, _ = models.load_model(model_name, device="cpu")
    model = model.to(device, dtype)
    ids = example_ids(model_name, seq=seq).to(device)
    ref_logits, ref_tokens = forward_ids(model, ids), greedy(model, ids, new_tokens)
    single = benchmark(lambda: forward_ids(model, ids), warmup=2, repeat=repeat)
    full_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    start = time.perf_counter()
    engine = deepspeed.init_inference(model, tensor_parallel={"tp_size": dist.get_world_size()}, dtype=dtype,
                                      replace_with_kernel_inject=kernel_inject)
    init_s = time.perf_counter() - start
    tp_model = engine.module
    fixed = fix_bloom_alibi(tp_model) if fix_alibi else False
    logits = forward_ids(tp_model, ids)
    tokens = greedy(tp_model, ids, new_tokens)
    tp = benchmark(lambda: forward_ids(tp_model, ids), warmup=2, repeat=repeat)
    return {
        "model": model_name, "rank": dist.get_rank(), "tp": dist.get_world_size(), "kernel_inject": kernel_inject,
        "max_abs_diff": (logits.float() - ref_logits.float()).abs().max().item(),
        "alibi_fixed": fixed, "same_tokens": tokens == ref_tokens, "tokens": tokens, "init_s": init_s,
        "single_ms": single.median * 1e3, "autotp_ms": tp.median * 1e3,
        "param_bytes_full": full_bytes,
        "param_bytes_rank": sum(p.numel() * p.element_size() for p in tp_model.parameters()),
    }  # fmt: skip


def _median_ms(fn, warmup: int, repeat: int) -> float:
    times = []
    for i in range(warmup + repeat):
        dist.barrier()  # all ranks start together: a TP forward is as slow as its slowest rank
        start = time.perf_counter()
        fn()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1e3


def compare_tp_ranks(model_name: str = "tiny-llama", batch: int = 2, seq: int = 16, repeat: int = 5) -> dict:
    """Rank function: one batch through single-process, labkit's own TP, DTensor and DeepSpeed AutoTP.

    labkit's TP and DTensor come from `labkit.parallel.tp` (issue 7); if that module is missing, those rows
    carry the reason instead of numbers. AutoTP runs last: it rewrites the model in place.
    """
    import deepspeed

    quiet_deepspeed()
    disable_shm_allreduce()
    deepspeed.init_distributed(dist_backend=dist.get_backend())
    model, _ = models.load_model(model_name, device="cpu")
    ids = example_ids(model_name, batch, seq)
    ref = forward_ids(model, ids)
    rows = [{"method": "single process", "ms": _median_ms(lambda: forward_ids(model, ids), 1, repeat),
             "max_abs_diff": 0.0}]
    try:
        from labkit.parallel import tp

        for mode, label in (("scratch", "labkit TP (from scratch)"), ("dtensor", "DTensor parallelize_module")):
            out = tp.tp_forward(model_name, ids, mode, warmup=1, repeat=repeat, model=model)
            rows.append({"method": label, "ms": out["latency_ms"],
                         "max_abs_diff": (out["logits"] - ref).abs().max().item()})
    except (ImportError, AttributeError, TypeError) as err:  # issue 7's module not there (or not yet this API)
        rows.append({"method": "labkit TP / DTensor", "ms": float("nan"), "max_abs_diff": float("nan"),
                     "error": f"labkit.parallel.tp unavailable: {type(err).__name__}: {err}"})
    engine = deepspeed.init_inference(model, tensor_parallel={"tp_size": dist.get_world_size()}, dtype=torch.float32)
    fix_bloom_alibi(engine.module)
    out = forward_ids(engine.module, ids)
    rows.append({"method": "DeepSpeed AutoTP", "ms": _median_ms(lambda: forward_ids(engine.module, ids), 1, repeat),
                 "max_abs_diff": (out - ref).abs().max().item()})
    return {"rank": dist.get_rank(), "model": model_name, "batch": batch, "seq": seq, "rows": rows}


def tp_table(ranks: list[dict]):
    """Rank results of `compare_tp_ranks` -> a table (slowest rank's latency) and bars."""
    from labkit import plots
    from labkit.measure import results_frame

    rows = []
    for per_rank in zip(*(r["rows"] for r in ranks), strict=True):
        row = dict(per_rank[0])
        row["ms"] = max(r["ms"] for r in per_rank)
        row["max_abs_diff"] = max(r["max_abs_diff"] for r in per_rank)
        rows.append(row)
    df = results_frame(rows, model=ranks[0]["model"], tp=len(ranks))
    df["vs_single"] = df.ms / df.ms.iloc[0]
    fig = plots.bars(df, "method", "ms", f"{ranks[0]['model']} forward, batch {ranks[0]['batch']} × "
                     f"{ranks[0]['seq']} tokens, tp={len(ranks)}", ylabel="ms (median, slowest rank)")
    return plots.Measured(df, fig)


def bloom_alibi_demo(model_name: str = "tiny-bloom", seq: int = 8, new_tokens: int = 4) -> dict:
    """Rank function: BLOOM under AutoTP generates once as DeepSpeed leaves it (fails on CPU), then with
    `fix_bloom_alibi` (matches the single-process model)."""
    import deepspeed

    quiet_deepspeed()
    disable_shm_allreduce()
    deepspeed.init_distributed(dist_backend=dist.get_backend())
    model, _ = models.load_model(model_name, device="cpu")
    ids = example_ids(model_name, seq=seq)
    ref_logits, ref_tokens = forward_ids(model, ids), greedy(model, ids, new_tokens)
    tp_model = deepspeed.init_inference(model, tensor_parallel={"tp_size": dist.get_world_size()},
                                       dtype=torch.float32).module
    try:
        greedy(tp_model, ids, new_tokens)
        error = None
    except RuntimeError as err:
        error = str(err).splitlines()[0]
    fixed = fix_bloom_alibi(tp_model)
    tokens = greedy(tp_model, ids, new_tokens)
    return {"rank": dist.get_rank(), "error_without_fix": error, "fixed": fixed, "same_tokens": tokens == ref_tokens,
            "max_abs_diff": (forward_ids(tp_model, ids) - ref_logits).abs().max().item()}
