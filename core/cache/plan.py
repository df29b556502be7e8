"""Step 1 of the cache: what to run (parameters, contexts, fingerprints, dictionaries).

The context plan cut from the corpus, fingerprints of the model and dictionaries, and the
dictionaries a model's cache covers."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from core.build.corpus import BrownDocument, read_corpus
from core.cache.stats import HIST_BINS, N_OUTPUT_TOKENS, TOP_ROWS
from core.settings import setting
from core.store.schema import WorkspaceError
from core.subjects.dictionaries import Dictionary, neuron_dictionary

log = logging.getLogger(__name__)


# The cache's phases of core.progress.Progress: 'caching' counts tokens, 'finalizing' counts dictionaries;
# `ensure_default_workspace` adds 'loading' (0/1, 1/1) and 'waiting' (another process builds the
# default workspace: its committed chunks / all chunks, or 0/0 before it has started).


class WorkspaceMismatchError(WorkspaceError):
    """The workspace was built from another model, corpus slice or dictionary weights, or has another unfinished run."""


DEFAULT_NEURON_TOPK = 32


@dataclass(frozen=True)
class CacheParams:
    """Everything besides model, dictionaries and corpus text that determines a cache run's rows.
    The fields with a flag are flags of the `cache` command (`core.settings`)."""

    n_tokens: int = setting(help="corpus tokens to cache (BOS excluded)", flag="--tokens")
    ctx_len: int = setting(128, help="tokens per context incl. BOS (default min(128, model n_ctx))", cli_default=None)
    batch_contexts: int = setting(16, help="contexts per forward pass", flag="--batch-size")
    chunk_contexts: int = setting(64, help="contexts per resumable chunk")
    hist_bins: int = setting(
        HIST_BINS, help="bins of each latent's activation histogram (equal width over (0, max])", flag=False
    )
    top_rows: int = setting(
        TOP_ROWS, help="highest activations per latent whose tokens are counted as its top tokens", flag=False
    )
    n_output_tokens: int = setting(
        N_OUTPUT_TOKENS, help="tokens each latent's decoder promotes and suppresses most, listed per latent", flag=False
    )

    def __post_init__(self) -> None:
        for name in ("n_tokens", "ctx_len", "batch_contexts", "chunk_contexts", "hist_bins", "top_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


@dataclass(frozen=True)
class ContextPlan:
    """The contexts a run caches: `tokens: [n_contexts, ctx_len]` int32 (BOS first), their documents and stream offsets."""

    tokens: np.ndarray
    docs: list[str]
    offsets: np.ndarray
    source: dict  # corpus path, split, tokens available ...

    @property
    def n_contexts(self) -> int:
        """Number of contexts."""
        return self.tokens.shape[0]

    @property
    def ctx_len(self) -> int:
        """Tokens per context, BOS included."""
        return self.tokens.shape[1]

    @property
    def n_cached_tokens(self) -> int:
        """Token positions whose activations are cached (BOS excluded)."""
        return self.n_contexts * (self.ctx_len - 1)

    def fingerprint(self) -> str:
        """Hash of the token ids."""
        return hashlib.blake2b(np.ascontiguousarray(self.tokens, dtype=np.int32).tobytes(), digest_size=16).hexdigest()


def _encode_ids(tokenizer, text: str) -> list[int]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return backend.encode(text, add_special_tokens=False).ids
    return tokenizer.encode(text, add_special_tokens=False)


def bos_token_id(tokenizer) -> int:
    """The id used as BOS and document separator (the tokenizer's BOS, else its EOS)."""
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if bos is None:
        raise ValueError("the tokenizer has neither a BOS nor an EOS token")
    return int(bos)


def plan_contexts(
    tokenizer, docs: list[BrownDocument], n_tokens: int, ctx_len: int, source: dict | None = None
) -> ContextPlan:
    """Cut the first `n_tokens` corpus tokens of `docs` into contexts `[n, ctx_len]` (BOS + ctx_len - 1 tokens each).

    The count is rounded up to whole contexts when the corpus has enough tokens, else down.
    """
    if ctx_len < 2:
        raise ValueError(f"--ctx-len must be at least 2 (BOS + one token), got {ctx_len}")
    if n_tokens < 1:
        raise ValueError(f"--tokens must be positive, got {n_tokens}")
    bos = bos_token_id(tokenizer)
    per = ctx_len - 1
    want = math.ceil(n_tokens / per) * per
    pieces: list[np.ndarray] = []
    starts: list[int] = []
    names: list[str] = []
    total = 0
    for doc in docs:
        if total >= want:
            break
        ids = np.asarray(_encode_ids(tokenizer, doc.text) + [bos], dtype=np.int32)
        starts.append(total)
        names.append(doc.name)
        pieces.append(ids)
        total += len(ids)
    if total < n_tokens:
        raise ValueError(
            f"--tokens {n_tokens:,} is larger than the corpus: it has {total:,} tokens "
            f"({len(docs)} documents); ask for at most {total:,}"
        )
    stream = np.concatenate(pieces)
    n_contexts = min(want, total) // per
    tokens = np.empty((n_contexts, ctx_len), dtype=np.int32)
    tokens[:, 0] = bos
    tokens[:, 1:] = stream[: n_contexts * per].reshape(n_contexts, per)
    offsets = np.arange(n_contexts, dtype=np.int64) * per
    doc_idx = np.searchsorted(np.asarray(starts), offsets, side="right") - 1
    src = dict(source or {})
    src.update({"documents_used": len(names)})
    return ContextPlan(tokens, [names[i] for i in doc_idx], offsets, src)


def plan_corpus_contexts(tokenizer, n_tokens: int, ctx_len: int, corpus: Path, split: str = "train") -> ContextPlan:
    """`plan_contexts` over a corpus file written by `core.build.corpus.save_corpus`."""
    docs = read_corpus(corpus, split)
    if not docs:
        raise ValueError(f"corpus {corpus} has no documents in split {split!r}")
    return plan_contexts(tokenizer, docs, n_tokens, ctx_len, {"corpus": str(corpus), "split": split})


# ---------------------------------------------------------------------------------------------
# Fingerprints
#
# A fingerprint names its algorithm: "xxh3:<32 hex digits>" (xxHash's XXH3-128, some 20 times faster than
# blake2b over the gigabytes of a model's dictionaries). One without a prefix is a blake2b-128 digest, as
# workspaces (and the shipped seed) written before the prefix store it; `same_weights` recomputes that
# algorithm only for such a stored fingerprint, so those workspaces still match without being cached again.

FINGERPRINT_ALGORITHM = "xxh3"
LEGACY_FINGERPRINT_ALGORITHM = "blake2b"  # stored without a prefix
_HASHERS: dict[str, Callable[[], Any]] = {
    "xxh3": xxhash.xxh3_128,
    "blake2b": lambda: hashlib.blake2b(digest_size=16),
}


def fingerprint_algorithm(fingerprint: str) -> str:
    """The algorithm of a fingerprint: its prefix ("xxh3:..."), or blake2b for one without a prefix."""
    algorithm, sep, _ = fingerprint.partition(":")
    return algorithm if sep else LEGACY_FINGERPRINT_ALGORITHM


def _float32_buffer(t) -> np.ndarray:
    """`t`'s values as a C-contiguous float32 array: its own buffer when it already is one on the CPU, else a copy."""
    import torch

    return t.detach().to("cpu", torch.float32).contiguous().numpy()  # no-ops for a contiguous float32 CPU tensor


def weights_fingerprint(header: str, tensors: Iterable[tuple[str, Any]], algorithm: str = FINGERPRINT_ALGORITHM) -> str:
    """Hash of `header` and each named tensor (name, shape and float32 values), in the given order.

    `algorithm` is "xxh3" (the default; returned as "xxh3:<hex>") or "blake2b" (legacy; bare hex, the
    bytes hashed as before prefixes existed). Non-tensors in `tensors` are skipped.
    """
    import torch

    if algorithm not in _HASHERS:
        raise ValueError(
            f"unknown fingerprint algorithm {algorithm!r} (known: {', '.join(_HASHERS)}); "
            "was the workspace written by a newer version of this project?"
        )
    h = _HASHERS[algorithm]()
    h.update(header.encode())
    for name, t in tensors:
        if not isinstance(t, torch.Tensor):
            continue
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(_float32_buffer(t))
    digest = h.hexdigest()
    return digest if algorithm == LEGACY_FINGERPRINT_ALGORITHM else f"{algorithm}:{digest}"


def model_fingerprint(model, algorithm: str = FINGERPRINT_ALGORITHM) -> str:
    """Hash of a HookedTransformer's config-relevant shape and all its weights (see `weights_fingerprint`)."""
    from core.subjects.models import model_config_fields

    header = json.dumps(model_config_fields(model.cfg), sort_keys=True, default=str)
    weights = {k: v for k, v in model.state_dict().items() if not k.endswith((".IGNORE", ".mask"))}
    return weights_fingerprint(header, sorted(weights.items()), algorithm)


def dictionary_fingerprint(d: Dictionary, algorithm: str = FINGERPRINT_ALGORITHM) -> str:
    """Hash of a dictionary's id, top-k and weights (for neurons: the MLP's weights); see `weights_fingerprint`."""
    tensors = sorted(d.module.state_dict().items())
    if d.ln is not None:  # neurons also depend on the LayerNorm before the MLP
        tensors += sorted((f"ln.{k}", v) for k, v in d.ln.state_dict().items())
    return weights_fingerprint(f"{d.id}|{d.topk}|{d.d_sae}", tensors, algorithm)


def same_weights(stored: str, fresh: str, compute: Callable[[str], str]) -> bool:
    """Whether fingerprint `stored` is of the weights whose fingerprint is `fresh`.

    Equal strings match; a stored fingerprint of another algorithm (a legacy blake2b one) is compared
    with `compute(its algorithm)`, which is called only then.
    """
    if stored == fresh:
        return True
    algorithm = fingerprint_algorithm(stored)
    if algorithm == fingerprint_algorithm(fresh):
        return False
    return compute(algorithm) == stored


def matching_fingerprint(stored: str | None, fresh: str, compute: Callable[[str], str]) -> str:
    """The fingerprint to record for weights with fingerprint `fresh`: `stored` where it is of the same
    weights (`same_weights`; a legacy workspace keeps its fingerprints, hence its run keys), else `fresh`."""
    if stored is not None and same_weights(stored, fresh, compute):
        return stored
    return fresh


def dictionary_matches(d: Dictionary, stored: str) -> bool:
    """Whether `d` has the weights of the stored fingerprint `stored` (of any algorithm)."""
    return same_weights(stored, dictionary_fingerprint(d), lambda algorithm: dictionary_fingerprint(d, algorithm))


def _layer_of_hook(hook: str) -> int:
    m = re.match(r"blocks\.(\d+)\.", hook)
    if not m:
        raise ValueError(f"cannot tell the layer of hook {hook!r}")
    return int(m.group(1))


def check_dictionaries(model, dictionaries: list[Dictionary]) -> None:
    """Raise a clear error if a dictionary reads a hook the model lacks or has the wrong width."""
    seen = set()
    for d in dictionaries:
        if d.id in seen:
            raise ValueError(f"dictionary {d.id} is listed twice")
        seen.add(d.id)
        if d.is_baseline and _neuron_hook(d) not in model.hook_dict:
            raise ValueError(
                f"dictionary {d.id} reads hook {_neuron_hook(d)}, which this model ({model.cfg.n_layers} layers) does not have"
            )
        if d.hook_in not in model.hook_dict:
            raise ValueError(
                f"dictionary {d.id} reads hook {d.hook_in}, which this model ({model.cfg.n_layers} layers) does not have"
            )
        width = model.cfg.d_model
        if d.hook_in.endswith("hook_z"):
            width = model.cfg.n_heads * model.cfg.d_head
        if d.d_in != width:
            raise ValueError(f"dictionary {d.id} expects d_in {d.d_in} but {d.hook_in} has width {width}")


# ---------------------------------------------------------------------------------------------
# The computing side


def _neuron_hook(d: Dictionary) -> str:
    return f"blocks.{d.layer}.mlp.hook_post"


# ---------------------------------------------------------------------------------------------
# Choosing dictionaries


_NEURON_ID = re.compile(r"^neurons(?:_topk(\d+))?:blocks\.(\d+)\.mlp\.hook_post$")


def resolve_dictionaries(
    model,
    model_name: str,
    ids: list[str] | None,
    neurons: bool = True,
    neuron_topk: int = DEFAULT_NEURON_TOPK,
    neuron_layers: list[int] | None = None,
    root: Path | None = None,
    device: str | None = None,
    releases: list[str] | None = None,
    transcoder_dir: Path | None = None,
) -> list[Dictionary]:
    """The dictionaries a cache command asks for, plus MLP-neuron baselines (raw and top-k) unless `neurons` is False.

    `ids` None means every dictionary of the model: the embedded default's, or for 'gpt2' those of the
    SAE-Lens `releases` and the SAE-Lens folders in `transcoder_dir` (none when neither is given:
    neuron baselines only). Everything is loaded through `core.subjects.dictionaries.load_dictionaries`.
    Neuron baselines go to `neuron_layers`, by default the layers of the chosen dictionaries (all layers if none).
    """
    from core.subjects.dictionaries import load_default_dictionaries, load_dictionaries
    from core.subjects.models import ArtifactError

    out: list[Dictionary] = []
    sae_ids: list[str] = []
    for i in ids or []:
        m = _NEURON_ID.match(i)
        if m:
            layer = int(m.group(2))
            if layer >= model.cfg.n_layers:
                raise ValueError(
                    f"hook blocks.{layer}.mlp.hook_post does not exist: model {model_name} has {model.cfg.n_layers} layers (0..{model.cfg.n_layers - 1})"
                )
            out.append(neuron_dictionary(model, layer, int(m.group(1)) if m.group(1) else None))
        elif i.startswith("neurons"):
            raise ValueError(
                f"unknown dictionary {i!r}: neuron ids look like neurons:blocks.0.mlp.hook_post or neurons_topk32:blocks.0.mlp.hook_post"
            )
        else:
            sae_ids.append(i)
    if sae_ids or ids is None:
        if model_name != "default":
            if releases or transcoder_dir is not None:
                loaded = load_dictionaries(
                    model_name,
                    releases=list(releases or []),
                    transcoder_dir=transcoder_dir,
                    ids=sae_ids or None,
                    device=device,
                )
                out = list(loaded.values()) + out
            elif sae_ids:
                raise ValueError(
                    f"dictionaries {', '.join(sae_ids)}: model {model_name} needs --releases (SAE-Lens releases, "
                    f"e.g. gpt2-small-res-jb) or --transcoder-dir (a folder of SAE-Lens folders) to find them"
                )
        else:
            if releases:
                raise ValueError(
                    "--releases are SAE-Lens releases for model gpt2; the default's dictionaries come from data/default"
                )
            try:
                loaded = load_default_dictionaries(root=root, ids=sae_ids or None, device=device)
            except ArtifactError:
                if sae_ids:
                    raise
                log.warning("the embedded default has no dictionaries yet; caching neuron baselines only")
                loaded = {}
            out = list(loaded.values()) + out
    if neurons:
        layers = (
            neuron_layers
            if neuron_layers is not None
            else sorted({d.layer for d in out}) or list(range(model.cfg.n_layers))
        )
        have = {d.id for d in out}
        for layer in layers:
            if not 0 <= layer < model.cfg.n_layers:
                raise ValueError(f"--neuron-layers {layer}: model {model_name} has layers 0..{model.cfg.n_layers - 1}")
            for topk in (None, neuron_topk):
                nd = neuron_dictionary(model, layer, topk)
                if nd.id not in have:
                    out.append(nd)
                    have.add(nd.id)
    if not out:
        raise ValueError("no dictionaries to cache")
    return out
