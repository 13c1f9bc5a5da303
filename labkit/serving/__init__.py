"""An inference server with swappable batching policies, a model repository and a load generator.

request (Request, SamplingParams, status) -> engine (admission, the worker loop) -> batch_engine (labkit's step;
policies: sync | dynamic | continuous; kv_batch: the model runner) and hf_engine (transformers' continuous batching)
-> handlers and app (the OpenAI-compatible HTTP API) -> repository (versions, canary, the device each one computes
on), metrics (Prometheus text), loadgen, cli.
Nothing is imported here: `labkit serve --help` must not import torch.
"""
