"""Nodes of an attribution graph and the targets a trace can start from.

Node kinds (the `kind` field of every node, in graphs, JSON and the store):
    embed        token embedding at a position (hook_embed)                       source
    pos_embed    position embedding at a position (hook_pos_embed)                source
    attn         attention-output SAE latent at (layer, position)                 source and target
    transcoder   transcoder latent at (layer, position) (reads ln2.hook_normalized) source and target
    attn_error   what the attention SAE of a layer leaves unexplained at a position source
    mlp_error    what the transcoder of a layer leaves unexplained at a position  source
    logit        the traced output: one token's logit, or the difference of two   target only

Node ids are readable and stable across runs of the same prompt:
    embed@3, pos_embed@3, attn.1/417@3, transcoder.2/88@5, attn_error.1@3, mlp_error.2@5,
    logit@7:' Mary', or logit@7:' Mary'-' John' for a contrast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

NodeKind = Literal["embed", "pos_embed", "attn", "transcoder", "attn_error", "mlp_error", "logit"]
LATENT_KINDS: tuple[NodeKind, ...] = ("attn", "transcoder")
ERROR_KINDS: tuple[NodeKind, ...] = ("attn_error", "mlp_error")
EMBED_KINDS: tuple[NodeKind, ...] = ("embed", "pos_embed")


@dataclass(frozen=True)
class LogitTarget:
    """Trace the logit of `token` at `position`, minus the logit of `contrast` when given."""

    token: int
    position: int
    contrast: int | None = None
    token_str: str = ""
    contrast_str: str = ""

    @property
    def node_id(self) -> str:
        """The id of this target's node in a graph."""
        label = repr(self.token_str) if self.token_str else str(self.token)
        if self.contrast is not None:
            other = repr(self.contrast_str) if self.contrast_str else str(self.contrast)
            label += f"-{other}"
        return f"logit@{self.position}:{label}"


@dataclass(frozen=True)
class LatentTarget:
    """Trace the pre-activation of latent `latent` of dictionary `dictionary` (an id) at `position`."""

    dictionary: str
    position: int
    latent: int


Target = LogitTarget | LatentTarget


@dataclass(frozen=True)
class NodeInfo:
    """One node of a prompt's replacement model.

    `layer` is -1 for embeddings and n_layers for logits; `latent` is the latent index for latent
    nodes and None otherwise; `activation` is the latent's activation, the norm of an error or
    embedding vector, or the target's value for a logit node.
    """

    kind: NodeKind
    layer: int
    position: int
    latent: int | None
    activation: float
    dictionary: str | None = None
    token: str = ""

    @property
    def node_id(self) -> str:
        """Readable unique id within one prompt's graph (see the module docstring)."""
        if self.kind in EMBED_KINDS:
            return f"{self.kind}@{self.position}"
        if self.kind in LATENT_KINDS:
            return f"{self.kind}.{self.layer}/{self.latent}@{self.position}"
        if self.kind in ERROR_KINDS:
            return f"{self.kind}.{self.layer}@{self.position}"
        return f"logit@{self.position}:{self.token}"

    @property
    def feature_key(self) -> str:
        """Position-free identity used to aggregate graphs over prompts (latents; error by layer; embeddings by token)."""
        if self.kind in LATENT_KINDS:
            return f"{self.kind}.{self.layer}/{self.latent}"
        if self.kind in ERROR_KINDS:
            return f"{self.kind}.{self.layer}"
        if self.kind == "embed":
            return f"embed:{self.token!r}"
        if self.kind == "pos_embed":
            return "pos_embed"
        return "logit"

    @property
    def is_latent(self) -> bool:
        """True for dictionary latents (the nodes a circuit is made of and that a trace expands)."""
        return self.kind in LATENT_KINDS
