"""ZeRO-Inference: ZeRO stage 3 with parameters offloaded to CPU memory, every rank serving its *own* prompts.

    rows = run_distributed(zero_inference.generate_ranks, "tiny-bloom", PROMPTS, world_size=2)

Unlike tensor parallelism (all ranks work on one request), each ZeRO-3 rank runs a whole model forward on
its own batch; the rank only *stores* 1/N of the weights and all-gathers each layer just before using it.
So with N GPUs N request streams run at once and throughput can grow ~N× — as long as fetching the
weights (from CPU memory, over PCIe on a GPU box) keeps up. The configuration follows the BLOOM ds-zero
script (huggingface/transformers-bloom-inference): reduce_bucket_size = h², stage3_prefetch_bucket_size =
0.9 h², stage3_param_persistence_threshold = 0 (no layer is kept whole), offload_param to CPU.
"""

from __future__ import annotations

import time

import pandas as pd
import torch
import torch.distributed as dist

from labkit import models, plots
from labkit.measure import results_frame
from labkit.parallel.deepspeed_inference import disable_shm_allreduce, quiet_deepspeed

PROMPTS = ("ROMEO:\n", "JULIET:\n", "KING HENRY:\nOnce more unto the", "HAMLET:\nTo be, or not", "MACBETH:\n",
           "LADY MACBETH:\n", "OTHELLO:\n", "PORTIA:\nThe quality of mercy")


def ds_zero_config(hidden: int, offload: bool = True) -> dict:
    """The ZeRO-Inference config of the BLOOM ds-zero script, for a model of hidden size h."""
    return {
        "zero_optimization": {
            "stage": 3,
            "offload_param": {"device": "cpu", "pin_memory": torch.cuda.is_available()} if offload else None,
            "overlap_comm": True, "contiguous_gradients": True,
            "reduce_bucket_size": hidden * hidden,
            "stage3_prefetch_bucket_size": int(0.9 * hidden * hidden),
            "stage3_param_persistence_threshold": 0,
        },
        "steps_per_print": 10**9, "train_batch_size": dist.get_world_size(), "train_micro_batch_size_per_gpu": 1,
        "wall_clock_breakdown": False,
    }  # fmt: skip


def _generate(model, tok, prompt: str, new_tokens: int, device, synced: bool) -> tuple[list[int], float]:
    enc = tok(prompt, return_tensors="pt").to(device)
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id or tok.eos_token_id, synced_gpus=synced)
    return out[0, enc["input_ids"].shape[1]:].tolist(), time.perf_counter() - start


def generate_ranks(model_name: str = "tiny-bloom", prompts: tuple[str, ...] = PROMPTS, new_tokens: int = 16,
                   offload: bool = True, reference: bool = True) -> dict:
    """Rank function: ZeRO-3 (+ CPU offload) greedy generation of this rank's prompt; the single-process
    model's tokens for the same prompt alongside (reference=True) to prove the sharded run is exact."""
    import deepspeed

    quiet_deepspeed()
    disable_shm_allreduce()
    deepspeed.init_distributed(dist_backend=dist.get_backend())
    rank, world = dist.get_rank(), dist.get_world_size()
    if len(prompts) < world:
        raise ValueError(f"need a prompt per rank: {len(prompts)} prompts for {world} ranks")
    prompt = prompts[rank]  # a different request on every rank
    model, tok = models.load_model(model_name, device="cpu")
    device = torch.device("cuda", rank) if dist.get_backend() == "nccl" else torch.device("cpu")
    ref_tokens = _generate(model.to(device), tok, prompt, new_tokens, device, synced=False)[0] if reference else None
    # Baseline: one process with the whole model and every core serves one stream, the other ranks idle.
    baseline_s = None
    dist.barrier()
    if rank == 0:
        threads = torch.get_num_threads()
        torch.set_num_threads(threads * world if device.type == "cpu" else threads)
        baseline_s = _generate(model, tok, prompt, new_tokens, device, synced=False)[1]
        torch.set_num_threads(threads)
    dist.barrier()
    full_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    engine = deepspeed.initialize(model=model, config=ds_zero_config(model.config.hidden_size, offload))[0]
    engine.module.eval()
    held = sum(p.ds_tensor.numel() * p.ds_tensor.element_size() for p in engine.module.parameters())
    _generate(engine.module, tok, prompt, 2, device, synced=True)  # warm-up
    dist.barrier()
    tokens, seconds = _generate(engine.module, tok, prompt, new_tokens, device, synced=True)
    return {"rank": rank, "world_size": world, "model": model_name, "prompt": prompt,
            "text": tok.decode(tokens, skip_special_tokens=True), "tokens": tokens, "new_tokens": len(tokens),
            "seconds": seconds, "tokens_per_s": len(tokens) / seconds, "same_as_single_process":
            tokens == ref_tokens if reference else None, "weight_bytes_full": full_bytes,
            "weight_bytes_held": held, "offload": offload, "baseline_seconds": baseline_s}  # fmt: skip


def throughput(ranks: list[dict]) -> plots.Measured:
    """Aggregate tokens/s: one process with the whole model (rank 0, all cores) vs ZeRO-3 with one stream per
    rank (Σ tokens / slowest rank)."""
    n, world = ranks[0]["new_tokens"], len(ranks)
    wall = max(r["seconds"] for r in ranks)
    rows = [{"setup": "1 process, whole model", "streams": 1, "tokens": n, "wall_s": ranks[0]["baseline_seconds"],
             "weights_held_per_rank_MB": ranks[0]["weight_bytes_full"] / 1e6},
            {"setup": f"ZeRO-3 on {world} ranks", "streams": world, "tokens": sum(r["new_tokens"] for r in ranks),
             "wall_s": wall, "weights_held_per_rank_MB": ranks[0]["weight_bytes_held"] / 1e6}]
    df = results_frame(rows)
    df["aggregate_tok_s"] = df.tokens / df.wall_s
    df["per_stream_tok_s"] = df.aggregate_tok_s / df.streams
    df["speedup"] = df.aggregate_tok_s / df.aggregate_tok_s.iloc[0]
    fig = plots.bars(df, "setup", "aggregate_tok_s", "ZeRO-Inference: aggregate tokens/s, one stream per rank",
                     ylabel="tokens/s (all streams)")
    return plots.Measured(df, fig)


def outputs_table(ranks: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{k: r[k] for k in ("rank", "prompt", "text", "tokens_per_s", "same_as_single_process")}
                         for r in ranks])
