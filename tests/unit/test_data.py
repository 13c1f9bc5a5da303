import json

import pytest
import torch

from labkit import data


def test_all_plays_found():
    plays = data.list_plays()
    assert len(plays) == 38
    assert plays["hamlet"] == "tragedies"


def test_splits_are_disjoint_cover_everything_and_fixed():
    splits = {s: set(data.split_plays(s)) for s in data.SPLITS}
    assert not splits["train"] & splits["validation"]
    assert not splits["train"] & splits["test"]
    assert not splits["validation"] & splits["test"]
    assert set().union(*splits.values()) == set(data.list_plays())
    assert splits["validation"] == {"julius-caesar", "twelfth-night"}
    assert data.split_plays("train") == data.split_plays("train")


def test_no_text_leaks_from_held_out_plays():
    train = data.shakespeare("train")
    line = "Friends, Romans, countrymen, lend me your ears;"
    assert line in data.shakespeare("validation")
    assert line not in train


def test_markdown_is_stripped_to_speaker_and_lines():
    text = data.load_play("macbeth")
    assert text.startswith("First Witch:\nWhen shall we three meet again\n")
    for marker in ("**", "# ", "_Exeunt", "\\["):
        assert marker not in text
    assert "Thunder and lightning" not in text  # stage directions dropped, even multi-line ones


def test_markdown_to_text_handles_multiline_directions():
    md = "# T\n\n_Enter A,\nand B_\n\n**A**  \nHello,  \nworld.\n\n**B**  \n_Aside_\nBye.\n"
    assert data.markdown_to_text(md) == "A:\nHello,\nworld.\n\nB:\nBye.\n"


def test_max_chars_and_bad_input():
    assert len(data.shakespeare("validation", max_chars=1000)) == 1000
    with pytest.raises(ValueError, match="choose from"):
        data.shakespeare("dev")
    with pytest.raises(ValueError, match="positive"):
        data.shakespeare("train", max_chars=0)
    with pytest.raises(ValueError, match="choose from"):
        data.load_play("hamlet-2")


def test_shipped_tokenizer_is_what_training_produces():
    assert data.SHIPPED_TOKENIZER.exists()
    assert json.loads(data.train_tokenizer().to_str()) == json.loads(data.SHIPPED_TOKENIZER.read_text())


def test_tokenizer_round_trips_text():
    tok = data.shakespeare_tokenizer()
    text = "ROMEO:\nBut soft, what light through yonder window breaks?"
    ids = tok(text)["input_ids"]
    assert len(tok) == data.TOKENIZER_VOCAB
    assert len(ids) < len(text) / 2  # BPE compresses Shakespeare
    assert tok.decode(ids) == text
    assert tok.pad_token != tok.eos_token


def test_demo_prompts():
    assert len(data.DEMO_PROMPTS) >= 3 and "What is the capital of France?" in data.DEMO_PROMPTS


def test_eval_tokens_are_fixed_windows_of_the_test_plays():
    tok = data.shakespeare_tokenizer()
    windows = data.eval_tokens(tok, budget=1000, window=256)
    assert windows.shape == (3, 256) and windows.dtype == torch.long  # 1000 rounded down to whole windows
    assert torch.equal(windows, data.eval_tokens(tok, budget=1000, window=256))
    start = tok.decode(windows[0, :20].tolist())
    assert start and start in data.shakespeare("test") and start not in data.shakespeare("train")
    with pytest.raises(ValueError, match="at least one window"):
        data.eval_tokens(tok, budget=100, window=256)
