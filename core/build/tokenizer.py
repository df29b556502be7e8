"""Byte-level BPE for the embedded default, trained on its own corpus with HF `tokenizers`.

GPT-2's pre-tokenisation regex, except that punctuation is split one character at a time: GPT-2's
` ?[^\\s\\p{L}\\p{N}]+` lets ")." become one token, which would hide the bracket task's ")".

From v15 the tokenizer also puts a space before a text's first word (`add_prefix_space`), as RoBERTa's does:
a prompt's first word is then the token the same word is everywhere else. Without it "Mary" opening a prompt
is another token than " Mary" later in it, and a name the model never saw opening a text cannot be copied
(v12: held-out IOI 0.96 with no name first, 0.16 with the answer's name first).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

END_OF_TEXT = "<|endoftext|>"
_PRETOKENIZE = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]|\s+(?!\S)|\s+"""


def train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train a byte-level BPE of `vocab_size` tokens (id 0 = `<|endoftext|>`) on `texts`."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_PRETOKENIZE), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def add_prefix_space(tok: Tokenizer) -> None:
    """Make `tok` encode a text that starts with a non-space as if a space came first ("Mary and" as
    " Mary and"; offsets still index the text given); a text that starts with whitespace is left as it is.
    The vocabulary is unchanged (in place)."""
    tok.normalizer = normalizers.Sequence(
        [normalizers.Prepend(" "), normalizers.Replace(Regex(r"^ (?=\s)"), "")]  # no space added before one
    )


def save_tokenizer(tok: Tokenizer, directory: Path, model_max_length: int) -> None:
    """Save `tok` as a `transformers` fast tokenizer folder that `AutoTokenizer.from_pretrained` loads."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        pad_token=END_OF_TEXT,
        unk_token=END_OF_TEXT,
        model_max_length=model_max_length,
    )
    directory.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(directory))


def _tokenizer_file(directory: Path) -> Path:
    path = directory / "tokenizer.json"
    if not path.exists():
        raise FileNotFoundError(f"tokenizer file {path} is missing; rebuild with `python -m core build-default`")
    return path


def load_tokenizer(directory: Path):  # -> transformers.PreTrainedTokenizerFast
    """Load a tokenizer folder written by `save_tokenizer` as a transformers fast tokenizer."""
    from transformers import AutoTokenizer

    _tokenizer_file(directory)
    return AutoTokenizer.from_pretrained(str(directory))


def load_bpe(directory: Path) -> Tokenizer:
    """Load the raw `tokenizers` BPE of a folder written by `save_tokenizer` (fast batch encoding)."""
    return Tokenizer.from_file(str(_tokenizer_file(directory)))


def single_token_words(tok: Tokenizer, words: Iterable[str]) -> list[str]:
    """The words that encode as exactly one token when preceded by a space."""
    return [w for w in words if len(tok.encode(" " + w).ids) == 1]
