"""The paged engine's second model runner: decode steps as one ONNX Runtime graph over labkit's paged pool.

    runner = OrtRunner(model, num_blocks=64, block_size=16)   # same interface as ModelRunner
    logits = runner.run(work)

Same pool, same block tables, same packing as `runner.ModelRunner`. A step in which every sequence computes one
token (a decode step: nearly every step of a busy server) goes to ONNX Runtime as one graph
(`onnx_layers.decode_step_graph`): labkit gathers each sequence's cached keys and values of every layer through its
block table (one indexing op per step), the graph attends over [past; new] and returns the new keys and values,
and labkit writes them into their slots. Steps that prefill go through `ModelRunner` (the transformers model with
paged attention). At batch 1 a decode step is a chain of matrix-vector products bound by reading the weights, and
ONNX Runtime's CPU kernels with one call per step read them faster than PyTorch's eager dispatch of the same model
(measured: `benchmarks/serving.py`). CPU and fp32 Llama-layout models only; on a GPU use the torch runner.
"""

from __future__ import annotations

import onnxruntime as ort
import torch

from labkit.serving.paged import onnx_layers
from labkit.serving.paged.attention import context_slots, slot
from labkit.serving.paged.runner import ModelRunner
from labkit.serving.paged.scheduler import Scheduled


class OrtRunner(ModelRunner):
    """ModelRunner whose decode steps run as one ONNX Runtime graph (CPU, fp32, Llama-layout models).

    Args:
        model: a transformers Llama-layout causal LM in fp32 on the CPU (`onnx_layers.check_llama`).
        num_blocks, block_size: the pool's size.
        threads: ONNX Runtime's intra-op threads (default: torch's thread count, so both use the same cores).
    Raises:
        ValueError: a model on another device, or one `onnx_layers.decode_step_graph` refuses (naming why).
    """

    def __init__(self, model, num_blocks: int, block_size: int, threads: int | None = None):
        super().__init__(model, num_blocks, block_size)
        if self.device.type != "cpu":
            raise ValueError(f"the onnxruntime runner runs on the CPU; the model is on {self.device}: "
                             "use runner='torch'")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.log_severity_level = 3
        proto = onnx_layers.decode_step_graph(model)
        self.session = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        self.layers = len(self.k_pool)
        self.decode_steps = 0  # steps run by ONNX Runtime (the others went through the transformers model)

    @torch.no_grad()
    def run(self, work: list[Scheduled]) -> torch.Tensor:
        """One forward over the step's tokens; writes their keys and values into the pool.

        Args:
            work: the scheduler's entries for this step (non-empty).
        Returns:
            (S, vocab) float logits at the last token of each entry that samples, in order.
        """
        if any(w.tokens != 1 for w in work) or max(w.start for w in work) == 0:
            return super().run(work)  # a prefill (or a first token with no past): the transformers model
        before = torch.get_num_threads()
        # PyTorch's few ops here get one thread: its OpenMP threads would fight ONNX Runtime's pool for the cores
        torch.set_num_threads(1)
        try:
            return self._decode(work)
        finally:
            torch.set_num_threads(before)

    def _decode(self, work: list[Scheduled]) -> torch.Tensor:
        size = self.k_pool[0].shape[1]
        past = [context_slots(w.seq.block_table, w.start, size) for w in work]  # slots of the cached tokens
        width = max(len(p) for p in past)
        slots = torch.tensor([p + [0] * (width - len(p)) for p in past], dtype=torch.long)  # (S, P), right-padded
        new = torch.tensor([slot(w.seq.block_table, w.start, size) for w in work])  # (S,) the new tokens' slots
        real = torch.arange(width + 1)[None, :] < torch.tensor([len(p) for p in past])[:, None]
        real[:, -1] = True  # the new token
        bias = torch.zeros(real.shape).masked_fill_(~real, float("-inf"))[:, None, None, :]  # (S, 1, 1, P + 1)
        layers, s, kv = self.layers, len(work), self.k_all.shape[-2:]
        # (layers, blocks × size, kvh·hd) views of the pools; index_select/index_copy_ are one pass each
        k_flat, v_flat = (t.view(layers, -1, kv.numel()) for t in (self.k_all, self.v_all))
        past_k, past_v = (t.index_select(1, slots.flatten()).view(layers, s, width, *kv).numpy()
                          for t in (k_flat, v_flat))  # (layers, S, P, kvh, hd): one gather per step  # fmt: skip
        ids = torch.tensor([[w.seq.token_ids[w.start]] for w in work])  # (S, 1)
        decoder = self.model.model
        x = decoder.embed_tokens(ids)  # (S, 1, H)
        cos, sin = (t[:, 0].numpy() for t in decoder.rotary_emb(x, torch.tensor([[w.start] for w in work])))
        feed = {"x": x[:, 0].numpy(), "cos": cos, "sin": sin, "bias": bias.numpy()}
        for i in range(self.layers):
            feed[f"past_k_{i}"], feed[f"past_v_{i}"] = past_k[i], past_v[i]
        logits, k_new, v_new = self.session.run(None, feed)  # k_new, v_new: (S, layers, kvh, hd)
        for flat, fresh in ((k_flat, k_new), (v_flat, v_new)):  # (S, layers, kvh, hd) into their slots
            flat.index_copy_(1, new, torch.from_numpy(fresh).view(s, layers, -1).transpose(0, 1))
        self.decode_steps += 1
        keep = [i for i, w in enumerate(work) if w.samples]
        return torch.from_numpy(logits)[keep]
