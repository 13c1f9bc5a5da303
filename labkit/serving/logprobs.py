"""Log-probabilities: computed on the engine's worker thread, written in OpenAI's two formats by the handlers.

Which numbers: log_softmax of the model's raw logits, in fp32, before temperature, top-p or any other processing of
the sampler (vLLM's default, its "raw logprobs"; transformers' `generate(output_logits=True)` gives the same
logits). A greedy token's logprob is therefore the largest of its row whatever the temperature. Values are clamped
at -9999.0, as vLLM does, so that JSON never holds -Infinity.

    entries = step_logprobs(logits, tokens, reqs)      # engine: one TokenLogprob (or None) per batch row
    completion_logprobs(TokenText(tok), ids, entries, offsets)   # {"tokens", "token_logprobs", "top_logprobs",
                                                                 #  "text_offset"}  (/v1/completions)
    chat_logprobs(TokenText(tok), ids, entries)        # [{"token", "logprob", "bytes", "top_logprobs"}]  (chat)

A token's string is its own text: its true bytes (byte-level BPE: GPT-2's bytes_to_unicode inverted over the
token's piece; byte-fallback pieces such as ``<0xE2>``: that byte; special tokens: their content) decoded as UTF-8.
A token that is only part of a UTF-8 character is written ``bytes:\\xe2\\x82`` (backslash escapes), as OpenAI
does; `bytes` always carries the true bytes.
"""

from __future__ import annotations

import json
import re

import torch
from transformers.convert_slow_tokenizer import bytes_to_unicode

from labkit.serving.request import Request, TokenLogprob
from labkit.serving.textstream import special_ids

FLOOR = -9999.0  # the lowest logprob written (vLLM's choice): JSON has no -Infinity
_UNBYTE = {c: b for b, c in bytes_to_unicode().items()}  # byte-level BPE's printable character -> its byte
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _entries(lp: torch.Tensor, chosen: torch.Tensor, k: int) -> list[TokenLogprob]:
    """TokenLogprob per row of `lp` (rows, vocab) for the `chosen` ids (rows,), with the top `k` alternatives."""
    picked = lp.gather(1, chosen.to(lp.device).unsqueeze(1)).squeeze(1).tolist()
    if k == 0:
        return [TokenLogprob(max(p, FLOOR)) for p in picked]
    values, ids = lp.topk(min(k, lp.shape[-1]), dim=-1)
    return [TokenLogprob(max(p, FLOOR), tuple(zip(i, (max(v, FLOOR) for v in vs), strict=True)))
            for p, i, vs in zip(picked, ids.tolist(), values.tolist(), strict=True)]


def step_logprobs(logits: torch.Tensor, tokens: list[int], reqs: list[Request]) -> list[TokenLogprob | None]:
    """The logprobs of each row's new token, for the rows whose request asks (`params.logprobs` is not None).

    Args:
        logits: (batch, vocab) raw next-token logits, one row per request.
        tokens: the token each row picked. reqs: the requests, in row order.
    Returns:
        per row, a TokenLogprob with `params.logprobs` alternatives, or None (not asked, or the row is finished).
    """
    rows = [i for i, r in enumerate(reqs) if r.params.logprobs is not None and r.finish_reason is None]
    out: list[TokenLogprob | None] = [None] * len(reqs)
    if rows:
        lp = logits[rows].float().log_softmax(-1)
        k = max(reqs[i].params.logprobs for i in rows)
        for row, entry in zip(rows, _entries(lp, torch.tensor([tokens[i] for i in rows]), k), strict=True):
            keep = reqs[row].params.logprobs
            out[row] = TokenLogprob(entry.logprob, entry.top[:keep])
    return out


def prompt_logprobs(logits: torch.Tensor, prompt_ids: list[int], k: int) -> list[TokenLogprob | None]:
    """Each prompt token's logprob given the tokens before it, from one row of a prefill's logits.

    Args:
        logits: (seq, vocab) the row's logits at every position; the prompt is left-padded to `seq`, so it
            occupies the last len(prompt_ids) positions, and the logits at position p predict token p + 1.
        prompt_ids: the prompt's token ids. k: top alternatives per token.
    Returns:
        one entry per prompt token; the first is None (nothing comes before it).
    """
    n, seq = len(prompt_ids), logits.shape[0]
    if n < 2:
        return [None] * n
    lp = logits[seq - n: seq - 1].float().log_softmax(-1)  # (n - 1, vocab): predictions of tokens 1..n-1
    return [None, *_entries(lp, torch.tensor(prompt_ids[1:]), k)]


class TokenText:
    """A tokenizer's tokens as OpenAI writes them: their true bytes, and their text.

    Args:
        tokenizer: a transformers tokenizer (fast: its decoder tells byte-level BPE from byte fallback).
    """

    def __init__(self, tokenizer):
        self.tokenizer, self.special = tokenizer, special_ids(tokenizer)
        decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
        spec = json.loads(decoder.__getstate__()) if decoder is not None else {}
        self.decoders, stack = set(), [spec]
        while stack:
            d = stack.pop()
            self.decoders.add(d.get("type"))
            stack += d.get("decoders", [])

    def bytes(self, token: int) -> bytes:
        """The token's true UTF-8 bytes (possibly part of one character)."""
        if token in self.special:
            return self.special[token].encode()
        piece = self.tokenizer.convert_ids_to_tokens(token)
        if "ByteLevel" in self.decoders and all(c in _UNBYTE for c in piece):
            return bytes(_UNBYTE[c] for c in piece)
        if "ByteFallback" in self.decoders and (m := _BYTE_PIECE.fullmatch(piece)):
            return bytes([int(m.group(1), 16)])
        if self.decoders & {"Metaspace", "Replace"}:
            return piece.replace("\u2581", " ").encode()
        return self.tokenizer.decode([token]).encode()

    def text(self, token: int) -> str:
        """The token's text; ``bytes:\\xe2\\x82`` for bytes that are not valid UTF-8 on their own."""
        raw = self.bytes(token)
        try:
            return raw.decode()
        except UnicodeDecodeError:
            return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)


def completion_logprobs(tt: TokenText, ids: list[int], entries: list[TokenLogprob | None],
                        offsets: list[int]) -> dict:
    """/v1/completions' `logprobs` object for some tokens.

    Args:
        tt: the tokenizer's TokenText. ids: the tokens. entries: their TokenLogprob (None: the first prompt token).
        offsets: each token's character offset in the prompt + completion text.
    Returns:
        {"tokens", "token_logprobs", "top_logprobs", "text_offset"}: top_logprobs maps token text to logprob for
        the top alternatives and the chosen token (up to logprobs + 1 entries, as OpenAI says), best first.
    """
    tops = []
    for token, e in zip(ids, entries, strict=True):
        if e is None:
            tops.append(None)
            continue
        pairs = sorted({**dict(e.top), token: e.logprob}.items(), key=lambda kv: -kv[1])
        tops.append({tt.text(t): lp for t, lp in pairs})
    return {"tokens": [tt.text(t) for t in ids], "token_logprobs": [e and e.logprob for e in entries],
            "top_logprobs": tops, "text_offset": list(offsets)}


def chat_logprobs(tt: TokenText, ids: list[int], entries: list[TokenLogprob]) -> list[dict]:
    """The chat `logprobs.content` list for some tokens: token, logprob, bytes and top_logprobs (best first)."""
    def one(token: int, logprob: float) -> dict:
        return {"token": tt.text(token), "logprob": logprob, "bytes": list(tt.bytes(token))}

    return [{**one(t, e.logprob), "top_logprobs": [one(i, lp) for i, lp in e.top]}
            for t, e in zip(ids, entries, strict=True)]
