"""Kernel injection against Hugging Face eager on the same GPU: time per token, device work per token, first build.

    runs = run_distributed(kernel_inject.injection_rank, "tiny-bloom", world_size=1, backend="nccl")

DeepSpeed-Inference's `replace_with_kernel_inject=True` swaps each transformer block for DeepSpeed's fused CUDA
kernels (Aminabadi et al., "DeepSpeed-Inference", SC'22, §III: Deep-Fusion), JIT-compiled on first use into
TORCH_EXTENSIONS_DIR (labkit's cache, `deepspeed_env.use_extension_cache`). Fusion shows as fewer kernel launches
per generated token, counted here with `torch.profiler`; time per token comes from `decoding.timing` (the device is
synchronised before every clock read). `launches_per_token` (`measure.launches`) runs on the CPU too, where it
counts the aten operators eager PyTorch dispatches per token: the CPU analogue of a launch, with the same code.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import asdict, dataclass

import pandas as pd
import torch

from labkit import devices, models
from labkit.decoding.timing import time_greedy
from labkit.hardware import CapabilityMissing, resolve_device
from labkit.measure import launches
from labkit.parallel import deepspeed_env
from labkit.parallel.deepspeed_inference import example_ids, forward_ids, init_inference, injection_unsupported
from labkit.parallel.launch import rank_device


@dataclass(frozen=True)
class LaunchCount:
    """Device work per decode token of a greedy generation, and where it was counted."""

    device: str  # devices.device_label
    unit: str  # launches.unit
    per_token: float
    tokens: int  # length of the longer profiled generation


def launches_per_token(model, ids: torch.Tensor, new_tokens: int = 8) -> LaunchCount:
    """Kernel launches (GPU) or ATen operators (CPU) per decode token of greedy `generate()` (`launches.per_token`:
    a 2-token and a `new_tokens` generation after a warm-up, their difference ÷ (new_tokens − 2)).

    Args:
        model: a transformers causal LM on its device (HF eager, or DeepSpeed's injected module).
        ids: (batch, seq) prompt on that device. new_tokens: tokens of the longer generation (>= 3).
    Returns:
        LaunchCount on the model's device.
    Raises:
        ValueError: for new_tokens < 3.
    """
    per = launches.per_token(model, ids, new_tokens)
    return LaunchCount(devices.device_label(ids.device), launches.unit(ids.device), per.primary(ids.device),
                       new_tokens)


@dataclass(frozen=True)
class InjectionRun:
    """One GPU rank's `injection_rank`: HF eager fp16 and kernel injection fp16 on the same device.

    tpot_ms / ttft_ms: median time per output token and to the first token (`decoding.timing`). launches: per
    decode token. build: DeepSpeed's InferenceBuilder op (`seconds` = first build, or load when cached). init_s:
    `init_inference` with the op already loaded. max_abs_diff: logits of one forward, injected vs eager.
    """

    model: str
    device: str
    eager_tpot_ms: float
    injected_tpot_ms: float
    eager_ttft_ms: float
    injected_ttft_ms: float
    eager_launches: LaunchCount
    injected_launches: LaunchCount
    build: deepspeed_env.OpBuild
    init_s: float
    max_abs_diff: float
    same_tokens: bool

    def table(self) -> pd.DataFrame:
        """One row per method: tpot_ms, ttft_ms, launches per token (unit column), on `device`."""
        rows = [(m, getattr(self, f"{k}_tpot_ms"), getattr(self, f"{k}_ttft_ms"), getattr(self, f"{k}_launches"))
                for m, k in (("HF eager fp16", "eager"), ("kernel injection fp16", "injected"))]
        return pd.DataFrame([{"method": m, "device": self.device, "tpot_ms": tpot, "ttft_ms": ttft,
                              "launches_per_token": n.per_token, "unit": n.unit} for m, tpot, ttft, n in rows])

    def summary(self) -> dict:
        """JSON-ready: every field, the launch counts and the build as dicts."""
        return asdict(self)


def injection_rank(model_name: str = "tiny-bloom", seq: int = 16, new_tokens: int = 16, repeat: int = 5,
                   device: str | torch.device | None = None) -> InjectionRun:  # fmt: skip
    """Rank function (one GPU, NCCL): HF eager fp16, then DeepSpeed kernel injection fp16 of the same model.

    Args:
        model_name: a BLOOM or Llama model of `deepspeed_inference.MODELS`. seq: prompt length (batch 1).
        new_tokens: tokens per timed generation. repeat: timed generations (after one warm-up).
        device: the GPU (default: this rank's, `launch.rank_device`).
    Returns:
        InjectionRun.
    Raises:
        CapabilityMissing: without a CUDA device, without DeepSpeed (its fused kernels are CUDA-only), or when the
            installed transformers cannot run them (`injection_unsupported`) — before anything is built.
    """
    device = resolve_device(device) if device is not None else rank_device()
    if device.type != "cuda":
        raise CapabilityMissing("kernel injection runs DeepSpeed's fused CUDA kernels: it needs a GPU")
    if injection_unsupported():
        raise CapabilityMissing(injection_unsupported())
    torch.cuda.set_device(device)  # DeepSpeed allocates on the current device
    if importlib.util.find_spec("deepspeed") is None:
        raise CapabilityMissing("kernel injection needs DeepSpeed (pip install 'labkit[parallel]')")
    deepspeed_env.join_deepspeed()
    model, _ = models.load_model(model_name, device="cpu")
    model = model.to(device, torch.float16).eval()
    ids = example_ids(model_name, seq=seq).to(device)
    ref = forward_ids(model, ids)
    eager = time_greedy(model, ids, new_tokens, warmup=1, repeat=repeat)
    eager_launches = launches_per_token(model, ids)
    build = deepspeed_env.op_compile_time(builder="InferenceBuilder")  # the first build, or its cached .so
    start = time.perf_counter()
    injected_model = init_inference(model, torch.float16, kernel_inject=True).module
    init_s = time.perf_counter() - start
    diff = (forward_ids(injected_model, ids).float() - ref.float()).abs().max().item()
    injected = time_greedy(injected_model, ids, new_tokens, warmup=1, repeat=repeat)
    return InjectionRun(model_name, devices.device_label(device), eager.tpot_s * 1e3, injected.tpot_s * 1e3,
                        eager.ttft_s * 1e3, injected.ttft_s * 1e3, eager_launches,
                        launches_per_token(injected_model, ids), build, init_s, diff,
                        injected.tokens == eager.tokens)  # fmt: skip
