"""The paged engine's second model runner: forward steps as one ONNX Runtime graph over labkit's paged pool.

    runner = OrtRunner(model, num_blocks=64, block_size=16)   # same interface as ModelRunner
    logits = runner.run(work)

Same pool, same block tables as `runner.ModelRunner`. A step's sequences that decode (one new token each) go to
ONNX Runtime together as one call of `onnx_layers.step_graph`; a sequence that prefills (its prompt, a chunk of it,
or the rest after a prefix-cache hit) goes as a call of its own. For each call labkit gathers every sequence's
cached keys and values of every layer through its block table (one indexing op), the graph attends over
[past; new] and returns the present keys and values, and labkit writes the new ones into their slots. Several
prompts arriving in one step are packed into one transformers forward instead (`ModelRunner`: no padding).
At batch 1 a decode step is a chain of matrix-vector products bound by reading the weights; ONNX Runtime's CPU
kernels, with one call per step and its fused attention, read them faster than PyTorch's eager dispatch of the
same model (measured: `benchmarks/serving.py`). CPU and fp32 Llama-layout models only; on a GPU use the torch runner.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch

from labkit.serving.paged import onnx_layers
from labkit.serving.paged.attention import context_slots, slot
from labkit.serving.paged.runner import ModelRunner
from labkit.serving.paged.scheduler import Scheduled


class OrtRunner(ModelRunner):
    """ModelRunner whose steps run as one ONNX Runtime graph (CPU, fp32, Llama-layout models).

    Args:
        model: a transformers Llama-layout causal LM in fp32 on the CPU (`onnx_layers.check_llama`).
        num_blocks, block_size: the pool's size.
        threads: ONNX Runtime's intra-op threads (default: torch's thread count, so both use the same cores).
    Attributes:
        decode_steps, prefills: graph calls that decoded a batch / prefilled one sequence (the rest went through
            the transformers model).
    Raises:
        ValueError: a model on another device, or one `onnx_layers.step_graph` refuses (naming why).
    """

    def __init__(self, model, num_blocks: int, block_size: int, threads: int | None = None):
        super().__init__(model, num_blocks, block_size)
        if self.device.type != "cpu":
            raise ValueError(f"the onnxruntime runner runs on the CPU; the model is on {self.device}: "
                             "use runner='torch'")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.log_severity_level = 3
        proto = onnx_layers.step_graph(model)
        self.session = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        self.layers = len(self.k_pool)
        self.decode_steps = self.prefills = 0

    @torch.no_grad()
    def run(self, work: list[Scheduled]) -> torch.Tensor:
        """One step over the scheduled tokens; writes their keys and values into the pool.

        Args:
            work: the scheduler's entries for this step (non-empty).
        Returns:
            (S, vocab) float logits at the last token of each entry that samples, in order.
        """
        decode = [w for w in work if w.tokens == 1]
        prefill = [w for w in work if w.tokens > 1]
        rows = {}  # id(entry) -> its logits (vocab,)
        if len(prefill) > 1:  # several prompts: one packed transformers forward (no padding)
            packed = super().run(prefill)
            rows.update(zip(map(id, [w for w in prefill if w.samples]), packed, strict=True))
            prefill = []
        before = torch.get_num_threads()
        # PyTorch's few ops here get one thread: its OpenMP threads would fight ONNX Runtime's pool for the cores
        torch.set_num_threads(1)
        try:
            for group in ([decode] if decode else []) + [[w] for w in prefill]:
                rows.update(zip(map(id, group), self._forward(group), strict=True))
            kept = [rows[id(w)] for w in work if w.samples]
            return torch.stack(kept) if kept else torch.empty(0, self.model.config.vocab_size)
        finally:  # (the stack above is on one thread too: waking PyTorch's pool for it costs milliseconds)
            torch.set_num_threads(before)

    def _forward(self, work: list[Scheduled]) -> torch.Tensor:
        """One graph call for sequences computing the same number T of tokens: (B, vocab) logits at their last.

        Each layer's keys and values are gathered into one (B, kv_heads, W + T, head_dim) buffer that is both the
        kernel's past and its present (ONNX Runtime's shared past/present buffer): the kernel reads the past in
        place and writes the T new keys/values at positions past_b .. past_b + T − 1, from where they go to their
        slots. The buffer's tail holds the gather's padding (slot 0) until the kernel overwrites what it attends.
        """
        size, t = self.k_pool[0].shape[1], work[0].tokens
        pasts = [w.start for w in work]  # cached tokens per sequence
        span = max(pasts) + t
        slots = torch.tensor([context_slots(w.seq.block_table, w.start, size) + [0] * (span - w.start)
                              for w in work], dtype=torch.long)  # (B, W + T), right-padded  # fmt: skip
        layers, b, (kvh, hd) = self.layers, len(work), self.k_all.shape[-2:]
        slots_total = self.k_all.shape[1] * size
        # one gather per pool, straight into the kernel's (layers, B, kvh, W + T, hd) layout: row r of the pool seen
        # as (layers · slots · kvh, hd) is layer r // (slots·kvh), slot r // kvh % slots, head r % kvh
        rows = ((torch.arange(layers)[:, None, None, None] * slots_total + slots[None, :, None, :]) * kvh
                + torch.arange(kvh)[None, None, :, None])  # (layers, B, kvh, W + T)  # fmt: skip
        bufs = [p.view(-1, hd).index_select(0, rows.flatten()).view(layers, b, kvh, span, hd)
                for p in (self.k_all, self.v_all)]  # fmt: skip
        ids = torch.tensor([w.seq.token_ids[w.start:w.start + t] for w in work])  # (B, T)
        io = self.session.io_binding()
        io.bind_cpu_input("x", self.model.model.embed_tokens(ids).numpy())
        io.bind_cpu_input("seqlens_k", np.array([p + t - 1 for p in pasts], np.int32))
        io.bind_cpu_input("total_len", np.array(span, np.int32))
        logits = torch.empty(b, self.model.config.vocab_size)  # (B, vocab): the kernel writes into it
        io.bind_output("logits", "cpu", 0, np.float32, list(logits.shape), logits.data_ptr())
        for i in range(layers):
            for kind, buf in zip("kv", bufs, strict=True):
                where = ("cpu", 0, np.float32, list(buf.shape[1:]), buf[i].data_ptr())
                io.bind_input(f"past_{kind}_{i}", *where)
                io.bind_output(f"present_{kind}_{i}", *where)  # the same memory: written in place
        self.session.run_with_iobinding(io)
        cols = torch.tensor(pasts)[:, None] + torch.arange(t)[None, :]  # (B, T) each new token's buffer position
        new = torch.tensor([slot(w.seq.block_table, w.start + j, size) for w in work for j in range(t)])  # (B·T,)
        for buf, pool in zip(bufs, (self.k_all, self.v_all), strict=True):
            fresh = buf[:, torch.arange(b)[:, None], :, cols, :]  # (B, T, layers, kvh, hd)
            pool.view(layers, slots_total, kvh * hd).index_copy_(1, new, fresh.permute(2, 0, 1, 3, 4).reshape(
                layers, b * t, kvh * hd))  # fmt: skip
        if t == 1:
            self.decode_steps += 1
        else:
            self.prefills += 1
        return logits
