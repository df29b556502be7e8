"""The BPE tokenizer: round trip, punctuation kept apart, saved folder loads."""

from __future__ import annotations

from core.build.tokenizer import END_OF_TEXT, single_token_words, train_bpe

TEXT = ["He left early (see page 12). Mary's book)."] * 50 + ["When Mary and John went to the store."] * 50


def test_round_trip(tiny_tokenizer):
    text = "When Mary and John went to the store, John gave a drink to Mary. (Really!) Zebra-quux 42."
    ids = tiny_tokenizer.encode(text, add_special_tokens=False)
    assert tiny_tokenizer.decode(ids) == text


def test_close_bracket_never_merges_with_period():
    tok = train_bpe(TEXT, 300)
    pieces = tok.encode("the book).").tokens
    assert ")" in pieces and "." in pieces


def test_end_of_text_is_bos_eos_pad(tiny_tokenizer):
    assert tiny_tokenizer.bos_token == tiny_tokenizer.eos_token == tiny_tokenizer.pad_token == END_OF_TEXT
    assert tiny_tokenizer.convert_tokens_to_ids(END_OF_TEXT) == 0


def test_single_token_words():
    tok = train_bpe(TEXT, 300)
    assert "Mary" in single_token_words(tok, ["Mary", "Bartholomew"])
    assert "Bartholomew" not in single_token_words(tok, ["Mary", "Bartholomew"])


def test_hooked_transformer_to_tokens_and_back(tiny_model):
    tokens = tiny_model.to_tokens("John gave a drink to Mary.")
    assert tokens[0, 0].item() == tiny_model.tokenizer.bos_token_id
    assert tiny_model.to_string(tokens[0, 1:]) == "John gave a drink to Mary."


def test_raw_bpe_and_transformers_tokenizer_agree(tiny_tokenizer, tiny_tokenizer_dir):
    from core.build.tokenizer import load_bpe

    text = "When Mary and John went to the store (late), John gave a drink to Mary."
    assert load_bpe(tiny_tokenizer_dir).encode(text).ids == tiny_tokenizer.encode(text, add_special_tokens=False)


def test_missing_tokenizer_names_file_and_rebuild_command(tmp_path):
    import pytest

    from core.build.tokenizer import load_bpe, load_tokenizer

    for load in (load_bpe, load_tokenizer):
        with pytest.raises(FileNotFoundError, match=r"tokenizer\.json.*python -m core build-default"):
            load(tmp_path)
