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
        """One graph call for sequences computing the same number T of tokens: (B, vocab) logits at their last."""
        size, t = self.k_pool[0].shape[1], work[0].tokens
        pasts = [w.start for w in work]  # cached tokens per sequence
        width = max(pasts)
        slots = torch.tensor([context_slots(w.seq.block_table, w.start, size) + [0] * (width - w.start)
                              for w in work], dtype=torch.long)  # (B, W), right-padded  # fmt: skip
        layers, b, (kvh, hd) = self.layers, len(work), self.k_all.shape[-2:]
        slots_total = self.k_all.shape[1] * size
        # one gather per pool, straight into the kernel's (layers, B, kvh, W, hd) layout: row r of the pool seen as
        # (layers · slots · kvh, hd) is layer r // (slots·kvh), slot r // kvh % slots, head r % kvh
        rows = ((torch.arange(layers)[:, None, None, None] * slots_total + slots[None, :, None, :]) * kvh
                + torch.arange(kvh)[None, None, :, None])  # (layers, B, kvh, W)  # fmt: skip
        past_k, past_v = (p.view(-1, hd).index_select(0, rows.flatten()).view(layers, b, kvh, width, hd).numpy()
                          for p in (self.k_all, self.v_all))  # fmt: skip
        k_flat, v_flat = (p.view(layers, slots_total, kvh * hd) for p in (self.k_all, self.v_all))
        ids = torch.tensor([w.seq.token_ids[w.start:w.start + t] for w in work])  # (B, T)
        feed = {"x": self.model.model.embed_tokens(ids).numpy(),
                "seqlens_k": np.array([p + t - 1 for p in pasts], np.int32), "total_len": np.array(width + t, np.int32)}
        for i in range(layers):
            feed[f"past_k_{i}"], feed[f"past_v_{i}"] = past_k[i], past_v[i]
        logits, *present = self.session.run(None, feed)  # present: k_0, v_0, k_1, ... (B, kvh, W + T, hd)
        seq_of = np.arange(b)[:, None]
        cols = np.array(pasts)[:, None] + np.arange(t)[None, :]  # (B, T) each new token's position in present
        new = torch.tensor([slot(w.seq.block_table, w.start + j, size) for w in work for j in range(t)])  # (B·T,)
        for kind, flat in enumerate((k_flat, v_flat)):
            fresh = np.stack([p[seq_of, :, cols, :] for p in present[kind::2]])  # (layers, B, T, kvh, hd)
            flat.index_copy_(1, new, torch.from_numpy(fresh).view(layers, b * t, -1))
        if t == 1:
            self.decode_steps += 1
        else:
            self.prefills += 1
        return torch.from_numpy(logits)
