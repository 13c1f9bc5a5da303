"""ZeRO-Inference: ZeRO stage 3 with parameters offloaded to CPU memory, every rank serving its *own* prompts.

    runs = run_distributed(zero_inference.generate_ranks, "tiny-bloom", PROMPTS, world_size=2)

Unlike tensor parallelism (all ranks work on one request), each ZeRO-3 rank runs a whole model forward on
its own batch; the rank only *stores* 1/N of the weights and all-gathers each layer just before using it.
So with N GPUs N request streams run at once and throughput can grow ~N× — as long as fetching the
weights (from CPU memory, over PCIe on a GPU box) keeps up. The configuration follows the BLOOM ds-zero
script (huggingface/transformers-bloom-inference): reduce_bucket_size = h², stage3_prefetch_bucket_size =
0.9 h², stage3_param_persistence_threshold = 0 (no layer is kept whole), offload_param to CPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd
import torch
import torch.distributed as dist

from labkit import models, plots
from labkit.decoding.timing import DecodeRun, time_greedy
from labkit.measure import results_frame
from labkit.memory import model_state_bytes
from labkit.parallel.deepspeed_env import join_deepspeed
from labkit.parallel.launch import rank_device

PROMPTS = ("ROMEO:\n", "JULIET:\n", "KING HENRY:\nOnce more unto the", "HAMLET:\nTo be, or not", "MACBETH:\n",
           "LADY MACBETH:\n", "OTHELLO:\n", "PORTIA:\nThe quality of mercy")


def ds_zero_config(hidden: int, offload: bool = True) -> dict:
    """The ZeRO-Inference config of the BLOOM ds-zero script (huggingface/transformers-bloom-inference).

    Args:
        hidden: the model's hidden size h (bucket sizes are h² and 0.9 h²). offload: parameters in CPU memory
            (pinned when this rank computes on a GPU: page-locked memory speeds host→GPU copies only; a gloo rank
            on a GPU machine has no GPU of its own).
    Returns:
        a DeepSpeed config dict (stage 3, one sequence per rank).
    """
    return {
        "zero_optimization": {
            "stage": 3,
            "offload_param": {"device": "cpu", "pin_memory": rank_device().type == "cuda"} if offload else None,
            "overlap_comm": True, "contiguous_gradients": True,
            "reduce_bucket_size": hidden * hidden,
            "stage3_prefetch_bucket_size": int(0.9 * hidden * hidden),
            "stage3_param_persistence_threshold": 0,
        },
        "steps_per_print": 10**9, "train_batch_size": dist.get_world_size(), "train_micro_batch_size_per_gpu": 1,
        "wall_clock_breakdown": False,
    }  # fmt: skip


@dataclass(frozen=True)
class ZeroInferenceRun:
    """One rank's `generate_ranks`: its prompt and greedy tokens, the ZeRO-3 decode (DecodeRun, seconds), the
    single-process baseline's (rank 0 only, else None), and the weight bytes of the whole model and of its shard."""

    rank: int
    world_size: int
    model: str
    prompt: str
    text: str
    tokens: tuple[int, ...]
    decode: DecodeRun
    baseline: DecodeRun | None
    same_as_single_process: bool | None
    weight_bytes_full: int
    weight_bytes_held: int  # this rank's shards (in CPU memory with offload)
    weight_bytes_gathered: int  # the most whole parameters held at once while a layer ran (its own + prefetched)
    offload: bool

    @property
    def new_tokens(self) -> int:
        return len(self.tokens)

    @property
    def seconds(self) -> float:
        """Wall time of the timed generation (prefill + every step), seconds."""
        return self.decode.total_s

    def table(self) -> pd.DataFrame:
        """One row: the scalar fields, with the decode's ttft_ms, tpot_ms and decode_tok_s."""
        row = {k: v for k, v in asdict(self).items() if k not in ("tokens", "decode", "baseline")}
        return pd.DataFrame([{**row, **self.decode.row()}])


def generate_ranks(model_name: str = "tiny-bloom", prompts: tuple[str, ...] = PROMPTS, new_tokens: int = 16,
                   offload: bool = True, reference: bool = True, repeat: int = 3) -> ZeroInferenceRun:
    """Rank function: ZeRO-3 (+ CPU offload) greedy generation of this rank's own prompt.

    Timing goes through `decoding.timing.time_greedy`: after a 2-token warm-up, `repeat` timed generations, each
    statistic a median. Before the sharded run, rank 0 times the whole model alone with every core (the baseline,
    the same number of repeats) while the other ranks wait.

    Args:
        model_name: a registry name. prompts: one per rank at least (rank i takes prompts[i]).
        new_tokens: tokens generated (exactly this many). offload: ZeRO-3 parameters in CPU memory.
        reference: also generate with the unsplit model, to prove the sharded run gives the same tokens.
        repeat: timed generations per setup (>= 1).
    Returns:
        ZeroInferenceRun for this rank.
    Raises:
        ValueError: with fewer prompts than ranks, or repeat < 1.
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    if len(prompts) < world:
        raise ValueError(f"need a prompt per rank: {len(prompts)} prompts for {world} ranks")
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    join_deepspeed()
    import deepspeed  # optional extra (labkit[parallel]), slow to import: only these ranks pay for it

    prompt = prompts[rank]  # a different request on every rank
    model, tok = models.load_model(model_name, device="cpu")
    device = rank_device()
    model = model.to(device)
    ids = tok(prompt, return_tensors="pt")["input_ids"].to(device)
    ref = time_greedy(model, ids, new_tokens, warmup=0, repeat=1) if reference else None  # also warms up
    baseline = None
    dist.barrier()
    if rank == 0:  # one process with the whole model and every core serves one stream; the other ranks idle
        threads = torch.get_num_threads()
        torch.set_num_threads(threads * world if device.type == "cpu" else threads)
        baseline = time_greedy(model, ids, new_tokens, warmup=0 if reference else 1, repeat=repeat)
        torch.set_num_threads(threads)
    dist.barrier()
    full_bytes = model_state_bytes(model)["weights"]
    engine = deepspeed.initialize(model=model, config=ds_zero_config(model.config.hidden_size, offload))[0]
    engine.module.eval()
    held = sum(p.ds_tensor.numel() * p.ds_tensor.element_size() for p in engine.module.parameters())  # the shards
    peak = _GatheredPeak(engine.module)
    with torch.no_grad(), peak:  # warm-up: 2 tokens gather every layer once; the peak is read on the way
        engine.module.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=2, do_sample=False,
                               pad_token_id=model.generation_config.pad_token_id or 0, synced_gpus=True)
    dist.barrier()
    run = time_greedy(engine.module, ids, new_tokens, warmup=0, repeat=repeat, synced_gpus=True)
    tokens = run.tokens[0]
    return ZeroInferenceRun(rank, world, model_name, prompt, tok.decode(tokens, skip_special_tokens=True),
                            tuple(tokens), run, baseline, tokens == ref.tokens[0] if reference else None,
                            full_bytes, held, peak.bytes, offload)  # fmt: skip


class _GatheredPeak:
    """Context manager: the most bytes of whole (gathered) ZeRO-3 parameters alive at once, read just before every
    module runs. A pre-hook registered after DeepSpeed's fetch hook sees the module's own parameters gathered, plus
    whatever the prefetch bucket already brought in (`stage3_prefetch_bucket_size`)."""

    def __init__(self, module: torch.nn.Module):
        self.module, self.bytes, self._hooks = module, 0, []

    def _note(self, *_args) -> None:
        now = sum(p.data.numel() * p.data.element_size() for p in self.module.parameters() if p.data.numel() > 0)
        self.bytes = max(self.bytes, now)

    def __enter__(self) -> _GatheredPeak:
        self._hooks = [m.register_forward_pre_hook(self._note) for m in self.module.modules()]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._hooks:
            h.remove()


def throughput(ranks: list[ZeroInferenceRun]) -> plots.Measured:
    """Aggregate tokens/s: one process with the whole model (rank 0, all cores) vs ZeRO-3, one stream per rank.

    Args:
        ranks: every rank's ZeroInferenceRun, rank order.
    Returns:
        Measured: per setup streams, tokens, wall_s (DecodeRun.total_s; ZeRO-3: the slowest rank),
        weights stored per rank (MB: ZeRO-3's shard, in CPU memory with offload), the most whole weights a rank
        held at once while running (MB: the gathered layer and the prefetch bucket),
        aggregate_tok_s = tokens / wall_s, per_stream_tok_s, speedup over one process.
    """
    n, world = ranks[0].new_tokens, len(ranks)
    rows = [{"setup": "1 process, whole model", "streams": 1, "tokens": n, "wall_s": ranks[0].baseline.total_s,
             "weights_held_per_rank_MB": ranks[0].weight_bytes_full / 1e6,
             "gathered_peak_per_rank_MB": 0.0},
            {"setup": f"ZeRO-3 on {world} ranks", "streams": world, "tokens": sum(r.new_tokens for r in ranks),
             "wall_s": max(r.seconds for r in ranks), "weights_held_per_rank_MB": ranks[0].weight_bytes_held / 1e6,
             "gathered_peak_per_rank_MB": max(r.weight_bytes_gathered for r in ranks) / 1e6}]
    df = results_frame(rows)
    df["aggregate_tok_s"] = df.tokens / df.wall_s
    df["per_stream_tok_s"] = df.aggregate_tok_s / df.streams
    df["speedup"] = df.aggregate_tok_s / df.aggregate_tok_s.iloc[0]
    fig = plots.bars(df, "setup", "aggregate_tok_s", "ZeRO-Inference: aggregate tokens/s, one stream per rank",
                     ylabel="tokens/s (all streams)")
    return plots.Measured(df, fig)


def outputs_table(ranks: list[ZeroInferenceRun]) -> pd.DataFrame:
    """Per rank: its prompt, the generated text, its decode speed and whether it equals one process's tokens.

    Args:
        ranks: every rank's ZeroInferenceRun, rank order.
    Returns:
        DataFrame with rank, prompt, text, decode_tok_s (DecodeRun: 1 / median decode step), same_as_single_process.
    """
    return pd.DataFrame([{"rank": r.rank, "prompt": r.prompt, "text": r.text, "decode_tok_s": r.decode.decode_tok_s,
                          "same_as_single_process": r.same_as_single_process} for r in ranks])
