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


def _prefix_space_pair(tmp_path):
    """(plain, prefix-space) transformers tokenizers of one BPE trained on `TEXT`, saved and loaded."""
    from core.build.tokenizer import add_prefix_space, load_tokenizer, save_tokenizer

    bpe = train_bpe(TEXT, 300)
    save_tokenizer(bpe, tmp_path / "plain", model_max_length=32)
    add_prefix_space(bpe)
    save_tokenizer(bpe, tmp_path / "prefixed", model_max_length=32)
    return load_tokenizer(tmp_path / "plain"), load_tokenizer(tmp_path / "prefixed")


def test_a_prefix_space_tokenizer_encodes_a_first_word_as_it_does_after_a_space(tmp_path):
    plain, prefixed = _prefix_space_pair(tmp_path)

    def ids(tok, text):
        return tok.encode(text, add_special_tokens=False)

    assert plain.get_vocab() == prefixed.get_vocab()  # the vocabulary is unchanged
    assert ids(plain, "Mary and John") != ids(plain, " Mary and John")  # "Mary" first is another token
    assert ids(prefixed, "Mary and John") == ids(plain, " Mary and John")  # the space saved with the folder
    for text in (" Mary and John", "\nMary went", "  two spaces", ""):  # whitespace first: as it is
        assert ids(prefixed, text) == ids(plain, text), text
    offsets = prefixed("Mary left.", add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    assert offsets[0] == (0, 4)  # offsets index the text given


def test_target_tokens_are_the_continuation_tokens_with_a_prefix_space_tokenizer(tmp_path):
    """A task's answer ")" or "." is the token that continues the prompt: a prefix-space tokenizer encodes ")"
    alone as " )", which a model predicting a close bracket after a word never outputs."""
    from core.build.bracket_init import bracket_token_ids
    from core.subjects.tokens import single_token_id

    plain, prefixed = _prefix_space_pair(tmp_path)
    for text in (")", ".", "(", " Mary", " John"):
        assert single_token_id(prefixed, text) == single_token_id(plain, text), text
    assert single_token_id(prefixed, ")") == plain.convert_tokens_to_ids(")")
    assert bracket_token_ids(prefixed) == bracket_token_ids(plain)
    opens, closes = bracket_token_ids(plain)
    assert plain.convert_tokens_to_ids(")") in closes and plain.convert_tokens_to_ids("(") in opens


def test_v15_is_v14_with_a_prefix_space_tokenizer():
    from dataclasses import asdict

    from core.build.train_model import training_config

    assert asdict(training_config("v15")) == {
        **asdict(training_config("v14")),
        "task_text": "v15",
        "prefix_space": True,
    }
