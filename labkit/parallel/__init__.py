"""Parallelism with real `torch.distributed`: launching ranks, tensor / pipeline parallelism, ZeRO, DeepSpeed.

launch (ranks from a notebook or torchrun; `place_ranks`, `time_on_all_ranks`), multinode (the same rank functions
as one torchrun agent per node), comm (the one collective counter), deepspeed_env (DeepSpeed's set-up), then one
module per mode: tp, pp, zero + zero_training, zero_inference, deepspeed_inference, kernel_inject (DeepSpeed's fused
GPU kernels vs eager); costmodel scales the comparison to published GPU clusters. Each mode runs as 2 gloo ranks on
a CPU and unchanged under `torchrun` on GPUs; rank functions return frozen dataclasses (picklable, with a `table()`).
"""
