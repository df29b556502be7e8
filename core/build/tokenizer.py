"""Byte-level BPE for the embedded default, trained on its own corpus with HF `tokenizers`.

GPT-2's pre-tokenisation regex, except that punctuation is split one character at a time: GPT-2's
` ?[^\\s\\p{L}\\p{N}]+` lets ")." become one token, which would hide the bracket task's ")".
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

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
