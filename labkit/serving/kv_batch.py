"""The model runner: sequences of different lengths decoding together, one forward per step.

Each row of the batch is one sequence with its own KV cache, left-padded to a common length; the
attention mask marks real tokens and position ids count only those, so every row computes what it
would compute alone (the tests check token-for-token equality with `generate()`). Rows can join
(`merge`) and leave (`keep`) between steps: that is all continuous batching needs.

    batch, logits = KVBatch.prefill(model, requests)    # logits: (batch, 1, vocab) at each prompt's end
    batch.next_tokens = picked                          # the token each row feeds in next
    logits = batch.decode(model)                        # one step for every row
    batch.keep([0, 2]); batch.merge(other)              # rows leave; rows join
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from labkit.serving.request import Request


def _takes(model, argument: str) -> bool:
    return argument in inspect.signature(model.forward).parameters


class KVBatch:
    """Requests decoding together, with their left-padded KV cache and attention mask.

    Args:
        reqs: one request per row.
        cache: per layer, keys and values of shape (batch, kv_heads, seq, head_dim), left-padded.
        mask: (batch, seq) long tensor, 1 = real token, 0 = padding.
        next_tokens: the token each row feeds into the next decode step.
    """

    def __init__(self, reqs: list[Request], cache: DynamicCache, mask: torch.Tensor, next_tokens: list[int]):
        self.reqs = reqs
        self.cache = cache  # per layer: (batch, kv_heads, seq, head_dim), left-padded
        self.mask = mask  # (batch, seq): 1 = real token, 0 = padding
        self.next_tokens = next_tokens  # the token each row feeds into the next step

    def __len__(self) -> int:
        return len(self.reqs)

    @classmethod
    @torch.no_grad()
    def prefill(cls, model, reqs: list[Request], every_position: bool = False) -> tuple[KVBatch, torch.Tensor]:
        """Run the prompts as one left-padded batch.

        Args:
            model: the causal LM. reqs: one request per row.
            every_position: keep the logits of every position (prompt logprobs), not only the last.
        Returns:
            the batch, and logits (batch, seq, vocab) if every_position, else (batch, 1, vocab). Row i's prompt
            fills its last len(prompt) positions (left padding); position p's logits predict token p + 1.
        """
        longest = max(len(r.prompt_ids) for r in reqs)
        ids = torch.zeros(len(reqs), longest, dtype=torch.long)
        mask = torch.zeros(len(reqs), longest, dtype=torch.long)
        for i, r in enumerate(reqs):
            ids[i, longest - len(r.prompt_ids):] = torch.tensor(r.prompt_ids)
            mask[i, longest - len(r.prompt_ids):] = 1
        kw = cls._inputs(model, ids, mask)
        if not every_position and _takes(model, "logits_to_keep"):
            kw["logits_to_keep"] = 1  # the LM head only where the next token comes from
        out = model(**kw, cache=DynamicCache(config=model.config), use_cache=True)
        return cls(list(reqs), out.cache, mask, []), out.logits if every_position else out.logits[:, -1:]

    @staticmethod
    def _inputs(model, ids: torch.Tensor, mask: torch.Tensor) -> dict:
        dev = model.device
        kw = {"input_ids": ids.to(dev), "attention_mask": mask.to(dev)}
        if _takes(model, "position_ids"):  # RoPE models: positions count real tokens only
            pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1]:]
            kw["position_ids"] = pos.to(dev)
        return kw

    @torch.no_grad()
    def decode(self, model) -> torch.Tensor:
        """One step for every row: feed each row's next token; returns logits (batch, vocab)."""
        self.mask = torch.cat([self.mask, torch.ones(len(self), 1, dtype=torch.long)], dim=1)
        ids = torch.tensor(self.next_tokens).unsqueeze(1)  # (batch, 1)
        out = model(**self._inputs(model, ids, self.mask), cache=self.cache, use_cache=True)
        self.cache = out.cache
        return out.logits[:, -1]

    def keep(self, rows: list[int]) -> None:
        """Drop every row not in `rows` (finished or cancelled sequences leave the batch)."""
        if len(rows) == len(self):
            return
        index = torch.tensor(rows, dtype=torch.long)
        self.reqs = [self.reqs[i] for i in rows]
        self.next_tokens = [self.next_tokens[i] for i in rows]
        self.mask = self.mask[index]
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[index], layer.values[index]
        # Columns that are padding in every remaining row are dead weight: cut them.
        live = int((self.mask.sum(0) > 0).nonzero()[0]) if rows else self.mask.shape[1]
        if live:
            self.mask = self.mask[:, live:]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, live:], layer.values[:, :, live:]

    def merge(self, other: KVBatch) -> None:
        """Append `other`'s rows, left-padding whichever caches are shorter."""
        length = max(self.mask.shape[1], other.mask.shape[1])

        def pad(t: torch.Tensor, dim_from_end: int) -> torch.Tensor:
            missing = length - t.shape[-dim_from_end]
            return t if missing == 0 else F.pad(t, [0, 0] * (dim_from_end - 1) + [missing, 0])

        self.mask = torch.cat([pad(self.mask, 1), pad(other.mask, 1)])
        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            mine.keys = torch.cat([pad(mine.keys, 2), pad(theirs.keys, 2)])  # seq is dim -2
            mine.values = torch.cat([pad(mine.values, 2), pad(theirs.values, 2)])
        self.reqs += other.reqs
        self.next_tokens += other.next_tokens
