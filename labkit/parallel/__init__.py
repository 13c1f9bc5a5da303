"""Parallelism with real `torch.distributed`: launching ranks, tensor / pipeline parallelism, ZeRO, DeepSpeed.

One module per mode; each runs as 2 gloo ranks on a CPU and unchanged under `torchrun` on GPUs.
"""
