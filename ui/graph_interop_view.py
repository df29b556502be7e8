"""Circuits page: download the graph on screen as Neuronpedia / circuit-tracer graph JSON, and import one.

    render_export_button(G, slug=..., model_id=..., ...) -> bool     a download button (True when clicked)
    render_import_uploader(key=...) -> (graph, ImportInfo) | None     an uploader; the imported graph or None

The import shows, in the page, what it read and, when faithfulness and steering cannot run on the
graph (not our export, or of a model this app cannot load), says so in a warning (`ImportInfo.reason`).
Bad files (not JSON, not a graph, a link to a node that does not exist...) show one error naming what
is wrong; nothing else on the page changes. The engine is `core.circuits.interop`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import networkx as nx
import streamlit as st

from core.circuits.interop import (
    GraphImportError,
    ImportInfo,
    check_exportable,
    dumps,
    from_graph_json,
    to_graph_json,
)
from ui.text import literal

MAX_UPLOAD_BYTES = 100 * 1024 * 1024  # Neuronpedia's own limit on uploaded graphs


def export_text(
    G: nx.DiGraph,
    *,
    slug: str,
    model_id: str,
    pinned: Iterable[str] = (),
    supernodes: Iterable[Any] = (),
    labels: Mapping[str, str] | None = None,
    node_threshold: float | None = None,
    target_prob: float | None = None,
) -> str:
    """The graph JSON text of `G` (`core.circuits.interop.to_graph_json`; ValueError if it cannot be written)."""
    return dumps(
        to_graph_json(
            G,
            slug=slug,
            model_id=model_id,
            pinned=pinned,
            supernodes=supernodes,
            labels=labels,
            node_threshold=node_threshold,
            target_prob=target_prob,
        )
    )


def render_export_button(
    G: nx.DiGraph,
    *,
    slug: str,
    model_id: str,
    pinned: Iterable[str] = (),
    supernodes: Iterable[Any] = (),
    labels: Mapping[str, str] | None = None,
    node_threshold: float | None = None,
    target_prob: float | None = None,
    key: str = "circ.export_graph_json",
    label: str = "Download graph JSON (Neuronpedia, circuit-tracer)",
) -> bool:
    """A download button for `G` (the pruned graph on screen) as graph JSON, file `<slug>.json`.

    `pinned`, `supernodes` (Supernode records or `[label, node id, ...]`) and `labels` ({node id: text},
    e.g. annotations, else explanations) use our node ids. Returns True on the run the button was
    clicked; an export that cannot be written shows an error instead and returns False. The JSON is
    built when the button is clicked, from a copy of `G` as it was on this run."""
    pinned, supernodes = list(pinned), list(supernodes)
    try:
        check_exportable(G, pinned, supernodes, node_threshold)
    except ValueError as exc:
        st.error(literal(f"Cannot export this graph: {exc}"))
        return False

    snapshot = G.copy()  # what is on screen now, even if the page changes G later

    def text() -> str:  # built on click only (influence over a large graph takes a moment)
        return export_text(
            snapshot,
            slug=slug,
            model_id=model_id,
            pinned=pinned,
            supernodes=supernodes,
            labels=labels,
            node_threshold=node_threshold,
            target_prob=target_prob,
        )

    return bool(
        st.download_button(
            label,
            data=text,
            file_name=f"{slug}.json",
            mime="application/json",
            key=key,
            help="Graph JSON in Neuronpedia's schema; circuit-tracer's local viewer and Neuronpedia open it. "
            "Pinned nodes and supernodes are in its qParams.",
        )
    )


def import_summary(G: nx.DiGraph, info: ImportInfo) -> str:
    """One line: what was imported, from where, of which model."""
    return (
        f"Imported {G.number_of_nodes()} nodes and {G.number_of_edges()} links from {info.source} "
        f"(graph {info.slug!r}, model {info.model_id!r}), prompt {info.prompt!r}; "
        f"{len(info.pinned)} pinned, {len(info.supernodes)} supernodes."
    )


def read_upload(raw: bytes) -> tuple[nx.DiGraph, ImportInfo]:
    """The graph and ImportInfo of an uploaded file's bytes; GraphImportError if it cannot be imported."""
    if len(raw) > MAX_UPLOAD_BYTES:
        raise GraphImportError(
            f"the file is {len(raw) / 2**20:.0f} MiB; graph JSON up to {MAX_UPLOAD_BYTES // 2**20} MiB is imported"
        )
    return from_graph_json(raw)


def render_import_uploader(
    key: str = "circ.import_graph_json",
    label: str = "Import graph JSON (ours, circuit-tracer's or Neuronpedia's)",
) -> tuple[nx.DiGraph, ImportInfo] | None:
    """An uploader for graph JSON. Returns (graph, info) for a file that imports, else None.

    The graph has our node kinds and ids, ready to view, prune, group and annotate; `info.loadable`
    says whether faithfulness and steering can run on it (a warning in the page says why not);
    `info.pinned` and `info.supernodes` come from the file's qParams. A file is parsed once per upload
    (kept in `st.session_state[key + ".parsed"]`); treat the returned graph as read-only."""
    upload = st.file_uploader(label, type=["json"], key=key)
    cache_key = f"{key}.parsed"
    if upload is None:
        st.session_state.pop(cache_key, None)
        return None
    file_id = getattr(upload, "file_id", None) or (upload.name, upload.size)
    cached = st.session_state.get(cache_key)
    if cached is None or cached[0] != file_id:
        try:
            result: tuple[nx.DiGraph, ImportInfo] | str = read_upload(upload.getvalue())
        except GraphImportError as exc:
            result = f"Could not import {upload.name}: {exc}"
        cached = (file_id, result)
        st.session_state[cache_key] = cached
    result = cached[1]
    if isinstance(result, str):
        st.error(literal(result))
        return None
    G, info = result
    st.caption(literal(import_summary(G, info)))
    if not info.loadable:
        st.warning(literal(f"Faithfulness and steering are off for this graph: {info.reason}."))
    for w in info.warnings:
        st.info(literal(w))
    return G, info
