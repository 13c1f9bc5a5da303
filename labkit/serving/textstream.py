"""Token ids in, text deltas out: incremental detokenization with stop strings and special tokens.

    stream = TextStream(tokenizer, stops=["<|im_start|>", "\\n\\n"])
    delta, stopped = stream.add(token_id)     # the text now safe to send; True once a stop string ended it
    stream.flush()                            # the rest, when generation has ended
    stream.text, stream.consumed              # the final text; tokens consumed (up to the one that stopped it)

The generated tokens are kept as *segments*: runs of ordinary tokens, decoded together (incrementally: each new
token decodes a short window with the tokens before it, so a character split over several byte tokens comes out
whole and a long run costs O(1) per token), and special tokens (`all_special_ids` and the added tokens marked
special), each rendered as its own content. Two texts follow:

- the raw text, special tokens rendered (``"<|im_start|>user"``): stop strings are matched in it, so a stop string
  that is a special token is seen;
- the output text, the raw text without the special tokens (what `decode(..., skip_special_tokens=True)` gives),
  cut where the first stop string starts.

A delta is held back while it could still change: trailing U+FFFD of the last run (half a UTF-8 character:
byte-level BPE gives one, byte-fallback tokenizers one per byte) and the end of the raw text that could be the
start of a stop string. So the deltas always add up to the final text, and no delta carries a U+FFFD that the final
text does not have. One caveat: a run is decoded on its own, so a decoder that strips the first token's leading
space (SentencePiece's Metaspace) strips it after each special token too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

REPLACEMENT = "\ufffd"


def special_ids(tokenizer) -> dict[int, str]:
    """The tokenizer's special tokens: {id: content} for `all_special_ids` and the added tokens marked special."""
    out = {i: t.content for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if t.special}
    for i in getattr(tokenizer, "all_special_ids", []):
        out.setdefault(i, tokenizer.convert_ids_to_tokens(i))
    return out


def _trailing(text: str, char: str = REPLACEMENT) -> int:
    return len(text) - len(text.rstrip(char))


@dataclass
class _Segment:
    special: str | None = None  # the content of a special token; None for a run of ordinary tokens
    ids: list[int] = field(default_factory=list)
    done: str = ""  # the run's text that can no longer change (or the special token's content)
    pending: str = ""  # the run's text after it, still open: it ends in U+FFFD, or is empty
    prefix: int = 0  # ids[prefix:read] are decoded again with each new token, as context for it
    read: int = 0  # ids[:read] are in `done`

    @property
    def text(self) -> str:
        return self.done + self.pending

    def add(self, tokenizer, token: int) -> None:
        """Incremental detokenization (TGI's and vLLM's): decode a short window, keep what it adds to its start.

        The window starts at the tokens committed last (context), so that a decoder which treats the first token
        of a decode call differently (a leading space stripped) gives the same text as decoding the whole run; it
        only moves on when the text ends in whole characters.
        """
        self.ids.append(token)

        def decode(ids):
            return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

        before, after = decode(self.ids[self.prefix: self.read]), decode(self.ids[self.prefix:])
        if len(after) > len(before) and not after.endswith(REPLACEMENT):  # whole characters: commit them
            self.done, self.pending = self.done + after[len(before):], ""
            self.prefix, self.read = self.read, len(self.ids)
        else:
            self.pending = after[len(before):]


class TextStream:
    """Generated token ids in, text deltas out, cut at the first stop string (see the module docstring).

    Args:
        tokenizer: a transformers tokenizer (`decode`; `all_special_ids` and `added_tokens_decoder` if it has them).
        stops: stop strings (empty ones are ignored), matched in the text with special tokens rendered.

    Attributes:
        text: the output text so far (the final text once `flush()` ran or a stop string was hit).
        offsets: per consumed token, the length of the output text before it (a token inside a multi-byte
            character gets the offset of that character). raw_offsets: the same in the raw text.
        stopped: a stop string ended the text.
    """

    def __init__(self, tokenizer, stops: list[str]):
        self.tokenizer, self.stops = tokenizer, [s for s in stops if s]
        self.special = special_ids(tokenizer)
        self.segments: list[_Segment] = []
        self.offsets: list[int] = []
        self.raw_offsets: list[int] = []
        self.text, self.sent, self.stopped = "", 0, False
        self._done_raw = self._done_out = ""  # the text of every segment but the last
        self._checked = 0  # how much of the raw text has been searched for stop strings

    @property
    def consumed(self) -> int:
        """Tokens consumed: every one added, up to and including the one that completed a stop string."""
        return len(self.offsets)

    @property
    def raw(self) -> str:
        """The text of every consumed token, special tokens rendered (not cut at a stop string)."""
        return self._texts()[0]

    def add(self, token: int) -> tuple[str, bool]:
        """Consume one generated token.

        Args:
            token: its id.
        Returns:
            (new text safe to send, whether a stop string ended the text). After a stop, later tokens are ignored.
        """
        if self.stopped:
            return "", True
        raw, out = self._texts()
        held = self._held_bytes()
        self.offsets.append(len(out) - held)
        self.raw_offsets.append(len(raw) - held)
        self._append(token)
        return self._advance(final=False)

    def flush(self) -> str:
        """Generation ended: the text not sent yet (stop strings are checked one last time)."""
        if self.stopped:
            return self._take(len(self.text))
        return self._advance(final=True)[0]

    # --- internals ---------------------------------------------------------------------------------------------
    def _append(self, token: int) -> None:
        last = self.segments[-1] if self.segments else None
        starts = last is None or last.special is not None or token in self.special  # a new segment
        if starts and last is not None:  # the last segment is complete: its text can no longer change
            self._done_raw += last.text
            self._done_out += "" if last.special is not None else last.text
        if token in self.special:
            self.segments.append(_Segment(self.special[token], [token], self.special[token]))
            return
        if starts:
            last = _Segment()
            self.segments.append(last)
        last.add(self.tokenizer, token)

    def _texts(self) -> tuple[str, str]:
        """(raw text, output text) of everything consumed so far."""
        if not self.segments:
            return "", ""
        last = self.segments[-1]
        return self._done_raw + last.text, self._done_out + ("" if last.special is not None else last.text)

    def _held_bytes(self) -> int:
        """Trailing U+FFFD of the last run: a character still being completed by later byte tokens."""
        last = self.segments[-1] if self.segments else None
        return _trailing(last.text) if last is not None and last.special is None else 0

    def _to_out(self, raw_pos: int) -> int:
        """Map a position in the raw text to the output text (inside a special token: where it would have been)."""
        raw_at = out_at = 0
        for seg in self.segments:
            if raw_pos < raw_at + len(seg.text):
                return out_at + (0 if seg.special is not None else raw_pos - raw_at)
            raw_at += len(seg.text)
            out_at += 0 if seg.special is not None else len(seg.text)
        return out_at

    def _partial_stop(self, raw: str) -> int:
        """Length of the longest end of `raw` that is the start of a stop string (it may still become one)."""
        best = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(raw)), best, -1):
                if raw.endswith(s[:k]):
                    best = k
                    break
        return best

    def _advance(self, final: bool) -> tuple[str, bool]:
        raw, out = self._texts()
        stable = raw if final else raw[: len(raw) - self._held_bytes()]
        hits = [i for i in (stable.find(s, max(0, self._checked - len(s) + 1)) for s in self.stops) if i >= 0]
        self._checked = len(stable)  # the stable text only grows: earlier text was searched already
        if hits:
            self.text, self.stopped = out[: self._to_out(min(hits))], True
            return self._take(len(self.text)), True
        self.text = out
        if final:
            return self._take(len(out)), False
        return self._take(self._to_out(len(stable) - self._partial_stop(stable))), False

    def _take(self, upto: int) -> str:
        delta = self.text[self.sent: max(self.sent, upto)]
        self.sent += len(delta)
        return delta
