"""The paged engine's second model runner: forward steps as one ONNX Runtime graph over labkit's paged pool.

    runner = OrtRunner(model, num_blocks=64, block_size=16)   # same interface as ModelRunner
    logits = runner.run(work)

Same pool, same block tables as `runner.ModelRunner`. A step's sequences that decode (one new token each) go to
ONNX Runtime together as one call of `onnx_layers.step_graph`; a sequence that prefills (its prompt, a chunk of it,
or the rest after a prefix-cache hit) goes as a call of its own. For a call labkit gathers every sequence's cached
keys and values of every layer through its block table (one indexing op) into one buffer; ONNX Runtime's attention
kernel reads the past there in place and writes the new keys and values after it, and labkit copies those into
their slots of the pool (the pool stays the one true copy). A decode batch keeps its buffer, with room for
HEADROOM more tokens, while the same sequences decode step after step: the kernel has already appended each new
token to it, so nothing is gathered again until a sequence joins, leaves or outgrows the room (ONNX Runtime
GenAI's shared past/present buffer, filled through block tables). Several prompts arriving in one step are packed
into one transformers forward instead (`ModelRunner`: no padding). At batch 1 a decode step is a chain of
matrix-vector products bound by reading the weights; ONNX Runtime's CPU kernels, with one call per step and its
fused attention, read them faster than PyTorch's eager dispatch of the same model (measured:
`benchmarks/serving.py`). CPU and fp32 Llama-layout models only; on a GPU use the torch runner.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
import torch

from labkit.serving.paged import onnx_layers
from labkit.serving.paged.attention import context_slots, slot
from labkit.serving.paged.runner import ModelRunner
from labkit.serving.paged.scheduler import Scheduled

HEADROOM = 64  # tokens a decode batch's buffer has room for before it is gathered again


@dataclass
class _Buffers:
    """One call's gathered K/V buffers, (layers, B, kv_heads, capacity, head_dim) each, the graph's other inputs
    and its logits (B, vocab), all bound to ONNX Runtime once (`io`); `pasts`: each sequence's cached tokens."""

    seq_ids: tuple[int, ...]
    pasts: list[int]
    kv: list[torch.Tensor]
    x: np.ndarray
    seqlens: np.ndarray
    total: np.ndarray
    logits: torch.Tensor
    io: object

    @property
    def capacity(self) -> int:
        return self.kv[0].shape[3]


class OrtRunner(ModelRunner):
    """ModelRunner whose steps run as one ONNX Runtime graph (CPU, fp32, Llama-layout models).

    Args:
        model: a transformers Llama-layout causal LM in fp32 on the CPU (`onnx_layers.check_llama`).
        num_blocks, block_size: the pool's size.
        threads: ONNX Runtime's intra-op threads (default: torch's thread count, so both use the same cores).
    Attributes:
        decode_steps, prefills: graph calls that decoded a batch / prefilled one sequence (the rest went through
            the transformers model). gathers: buffers filled from the pool through the block tables.
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
        self.decode_steps = self.prefills = self.gathers = 0
        self._decoding: _Buffers | None = None  # the last decode batch's buffers

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
        """One graph call for sequences computing the same number T of tokens: (B, vocab) logits at their last."""
        t, pasts = work[0].tokens, [w.start for w in work]  # pasts: cached tokens per sequence
        buf = self._decoding if t == 1 else None
        if (buf is None or buf.seq_ids != tuple(w.seq.seq_id for w in work) or max(pasts) + t > buf.capacity
                or any(p != q + 1 for p, q in zip(pasts, buf.pasts, strict=True))):  # fmt: skip
            buf = self._gather(work, max(pasts) + t + (HEADROOM if t == 1 else 0))
            if t == 1:
                self._decoding = buf
        buf.pasts = pasts
        ids = torch.tensor([w.seq.token_ids[w.start:w.start + t] for w in work])  # (B, T)
        buf.x[...] = self.model.model.embed_tokens(ids).numpy()
        buf.seqlens[...] = [p + t - 1 for p in pasts]
        buf.total[...] = max(pasts) + t
        self.session.run_with_iobinding(buf.io)  # the kernel appends the new K/V at positions past_b .. + T − 1
        size, (kvh, hd) = self.k_pool[0].shape[1], self.k_all.shape[-2:]
        cols = torch.tensor(pasts)[:, None] + torch.arange(t)[None, :]  # (B, T) each new token's buffer position
        new = torch.tensor([slot(w.seq.block_table, w.start + j, size) for w in work for j in range(t)])  # (B·T,)
        for kv, pool in zip(buf.kv, (self.k_all, self.v_all), strict=True):
            fresh = kv[:, torch.arange(len(work))[:, None], :, cols, :]  # (B, T, layers, kvh, hd)
            pool.view(self.layers, -1, kvh * hd).index_copy_(1, new, fresh.permute(2, 0, 1, 3, 4).reshape(
                self.layers, len(work) * t, kvh * hd))  # fmt: skip
        if t == 1:
            self.decode_steps += 1
        else:
            self.prefills += 1
        return buf.logits

    def _gather(self, work: list[Scheduled], capacity: int) -> _Buffers:
        """Fill new buffers from the pool through the block tables (slot 0 pads what no sequence has yet: the
        kernel overwrites a position before it attends to it) and bind them as the graph's past and present."""
        size, layers, b = self.k_pool[0].shape[1], self.layers, len(work)
        (kvh, hd), slots_total = self.k_all.shape[-2:], self.k_all.shape[1] * size
        slots = torch.tensor([context_slots(w.seq.block_table, w.start, size) + [0] * (capacity - w.start)
                              for w in work], dtype=torch.long)  # (B, capacity), right-padded  # fmt: skip
        # one gather per pool, straight into the kernel's (layers, B, kvh, capacity, hd) layout: row r of the pool
        # seen as (layers · slots · kvh, hd) is layer r // (slots·kvh), slot r // kvh % slots, head r % kvh
        rows = ((torch.arange(layers)[:, None, None, None] * slots_total + slots[None, :, None, :]) * kvh
                + torch.arange(kvh)[None, None, :, None])  # (layers, B, kvh, capacity)  # fmt: skip
        kv = [p.view(-1, hd).index_select(0, rows.flatten()).view(layers, b, kvh, capacity, hd)
              for p in (self.k_all, self.v_all)]  # fmt: skip
        t = work[0].tokens
        buf = _Buffers(tuple(w.seq.seq_id for w in work), [w.start for w in work], kv,
                       np.empty((b, t, self.model.config.hidden_size), np.float32), np.empty(b, np.int32),
                       np.empty((), np.int32), torch.empty(b, self.model.config.vocab_size), self.session.io_binding())
        io = buf.io
        for name, arr in (("x", buf.x), ("seqlens_k", buf.seqlens), ("total_len", buf.total)):
            io.bind_input(name, "cpu", 0, arr.dtype, list(arr.shape), arr.ctypes.data)
        io.bind_output("logits", "cpu", 0, np.float32, list(buf.logits.shape), buf.logits.data_ptr())
        for i in range(layers):
            for kind, t_kv in zip("kv", kv, strict=True):
                where = ("cpu", 0, np.float32, list(t_kv.shape[1:]), t_kv[i].data_ptr())
                io.bind_input(f"past_{kind}_{i}", *where)
                io.bind_output(f"present_{kind}_{i}", *where)  # the same memory: read and written in place
        self.gathers += 1
        return buf
