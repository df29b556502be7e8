"""The circuits page's steering panel: set chosen latents to a multiple of their activation, to zero or to a
value, run the model (`core.tracing.steering.steer`) and show before and after side by side.

`render_steering(model, dicts, prompt, graph, selected_nodes, ws=None, circuit=None)` draws the panel:
- the latents to steer (a multiselect over the graph's latent nodes, defaulting to `selected_nodes`, and
  following them when the selection on the graph changes), and per latent a mode (scale / zero / value),
  an amount (typed as text, so NaN, inf or 1e9 can be refused with a message) and its positions (default
  the node's own position);
- the attention mode (frozen / recomputed), the continuation length, the target and contrast tokens (default
  the graph's logit target) and a "Steer" button;
- the result: the logit difference, the top-10 next-token probabilities and the greedy continuation, before
  and after, side by side; warnings (e.g. scaling an inactive latent);
- with a saved circuit (`circuit` = {"name", "version", "circuit_id"}, the page's `circ.source`) and a
  workspace: a "Save with this circuit version" button and the runs already saved with that version.
Bad input shows st.error and changes nothing (the last result stays). Token texts are shown literally
(`st.code`, HTML-escaped table cells, `ui.text.literal` in Markdown). Session state keys start with `key` + ".".
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import networkx as nx
import streamlit as st

from core.circuits.steering_results import USER, load_steering, save_steering
from core.tracing.steering import MODES, SteeringError, SteeringOutcome, SteeringResult, parse_node_id, steer
from ui.text import literal

S = st.session_state
MODE_HELP = {
    "scale": "multiply its activation on this prompt by the amount (0 removes it, 2 doubles it, -1 flips it)",
    "zero": "set it to 0 (the amount is ignored)",
    "value": "set its activation to the amount",
}


def _slug(node: str) -> str:
    return re.sub(r"\W", "_", node)


def _latent_options(graph: nx.DiGraph | None, selected: Sequence[str]) -> list[str]:
    """Latent node ids of the graph (most active first), then any selected latent not in it."""
    out: list[str] = []
    if graph is not None:
        latents = [(v, a) for v, a in graph.nodes(data=True) if a.get("kind") in ("attn", "transcoder")]
        out = [v for v, _ in sorted(latents, key=lambda t: -abs(float(t[1].get("activation") or 0.0)))]
    for v in selected:
        if v not in out:
            try:
                parse_node_id(v)
            except SteeringError:
                continue  # errors, embeddings and logits cannot be steered
            out.append(v)
    return out


def _graph_target(graph: nx.DiGraph | None) -> tuple[str, str]:
    """(target, contrast) token texts of the graph's logit target, or ("", "")."""
    spec = (graph.graph.get("target_spec") if graph is not None else None) or {}
    if spec.get("type") == "logit":
        return spec.get("token_str") or "", spec.get("contrast_str") or ""
    t = (graph.graph.get("target") if graph is not None else None) or {}
    return t.get("token_str") or "", t.get("contrast_str") or ""


def _parse_positions(text: str) -> list[int]:
    try:
        return [int(p) for p in text.replace(" ", "").split(",") if p]
    except ValueError:
        raise SteeringError(f"positions must be whole numbers separated by commas, got {text!r}") from None


def _top_table(result_side: SteeringOutcome) -> str:
    """HTML table of the top-10 next tokens: rank, token (repr, HTML-escaped), id, probability."""
    rows = []
    for rank, (tok, tid, p) in enumerate(result_side.top, 1):
        rows.append(
            f"<tr><td>{rank}</td><td><code>{html.escape(repr(tok))}</code></td><td>{tid}</td>"
            f"<td class='p'>{p:.4f}</td></tr>"
        )
    head = "<tr><th>#</th><th>token</th><th>id</th><th>p</th></tr>"
    return f"<table class='steer-top'>{head}{''.join(rows)}</table>"


def _show_side(title: str, side: SteeringOutcome, label: str, key: str, delta: float | None = None) -> None:
    with st.container(key=key):
        st.markdown(f"**{title}**")
        st.metric(literal(label), f"{side.logit_diff:.3f}", delta=None if delta is None else f"{delta:+.3f}")
        st.html(_top_table(side))
        st.caption("Greedy continuation")
        st.code(side.continuation or "(end of text)", language=None, wrap_lines=True)


def show_result(result: SteeringResult, key: str = "steer") -> None:
    """Before and after of `result`, side by side (also used for saved runs)."""
    st.caption(
        literal(
            f"{result.attention} attention · "
            + "; ".join(iv.label() for iv in result.interventions)
            + f" · {result.seconds:.2f} s"
        )
    )
    for w in result.warnings:
        st.warning(literal(w))
    left, right = st.columns(2)
    with left:
        _show_side("Before", result.before, result.metric_label, f"{key}_before")
    with right:
        _show_side(
            "After",
            result.after,
            result.metric_label,
            f"{key}_after",
            result.after.logit_diff - result.before.logit_diff,
        )


def _interventions(chosen: Sequence[str], key: str) -> list[tuple]:
    """The intervention tuples of the widgets of each chosen latent; SteeringError for unusable text."""
    out = []
    for node in chosen:
        k = f"{key}.{_slug(node)}"
        mode = S.get(f"{k}.mode", "zero")
        amount_text = str(S.get(f"{k}.amount", "0")).strip()
        if mode == "zero":
            amount: Any = 0.0
        else:
            try:
                amount = float(amount_text)
            except ValueError:
                raise SteeringError(f"{node}: the amount {amount_text!r} is not a number") from None
        out.append((node, _parse_positions(str(S.get(f"{k}.positions", ""))), mode, amount))
    return out


def render_steering(
    model,
    dicts: Sequence,
    prompt: str,
    graph: nx.DiGraph | None,
    selected_nodes: Sequence[str] = (),
    ws: Path | None = None,
    circuit: Mapping[str, Any] | None = None,
    key: str = "steer",
) -> SteeringResult | None:
    """Draw the steering panel (module docstring) and return the result on screen, if any.

    `model`/`dicts`: the loaded model and its attention SAEs and transcoders (None: steering is unavailable,
    e.g. for an imported graph of another model, and the panel says so). `prompt`: the graph's prompt.
    `selected_nodes`: node ids chosen on the graph (non-latent ones are ignored). `ws`/`circuit`: the workspace
    and {"name", "version", "circuit_id"} of the saved circuit version on screen, to save runs with it.
    """
    if model is None or not dicts:
        st.info("Steering needs the model this graph was traced on; it is not loaded here.")
        return None
    options = _latent_options(graph, selected_nodes)
    wanted = [v for v in selected_nodes if v in options]
    if S.get(f"{key}.last_selected") != list(selected_nodes):  # the selection on the graph changed: follow it
        S[f"{key}.last_selected"] = list(selected_nodes)
        S[f"{key}.latents"] = wanted
    elif any(v not in options for v in S.get(f"{key}.latents", [])):  # the graph changed under the choice
        S[f"{key}.latents"] = [v for v in S[f"{key}.latents"] if v in options]
    chosen = st.multiselect(
        "Latents to steer",
        options,
        key=f"{key}.latents",
        help="nodes of the graph; the ones selected on the graph are chosen first",
    )
    for node in chosen:
        k = f"{key}.{_slug(node)}"
        S.setdefault(f"{k}.positions", str(parse_node_id(node)[3]))
        S.setdefault(f"{k}.amount", "0")
        c1, c2, c3 = st.columns([2, 1, 1])
        c1.selectbox(
            literal(node),
            MODES,
            index=MODES.index("zero"),
            key=f"{k}.mode",
            format_func=lambda m: m,
            help="; ".join(f"{m}: {h}" for m, h in MODE_HELP.items()),
        )
        c2.text_input("Amount", key=f"{k}.amount", help="a factor for scale, an activation for value")
        c3.text_input("Positions", key=f"{k}.positions", help="prompt positions, comma-separated (BOS is 0)")
    if chosen:
        tokens = graph.graph.get("prompt_tokens") if graph is not None else None
        if tokens:
            st.caption(literal("Positions: " + " · ".join(f"{i} {t!r}" for i, t in enumerate(tokens) if i > 0)))
    default_target, default_contrast = _graph_target(graph)
    S.setdefault(f"{key}.target", default_target)
    S.setdefault(f"{key}.contrast", default_contrast)
    a, b, c, d = st.columns(4)
    attention = a.radio(
        "Attention",
        ["frozen", "recomputed"],
        key=f"{key}.attention",
        horizontal=True,
        help="frozen: attention patterns held at their values on the unsteered prompt (circuit-tracer's "
        "freeze_attention); recomputed: the model recomputes them",
    )
    n_tokens = b.number_input("Tokens to generate", 0, 50, 10, key=f"{key}.n_tokens")
    c.text_input("Target token", key=f"{key}.target", help="empty: the top token before steering")
    d.text_input("Contrast token", key=f"{key}.contrast", help="logit difference = logit(target) − logit(contrast)")
    if st.button("Steer", key=f"{key}.run", type="primary"):
        from ui.state import CORE_ERRORS

        try:
            result = steer(
                model,
                dicts,
                prompt,
                _interventions(chosen, key),
                attention=attention,
                n_tokens=int(n_tokens),
                target=S.get(f"{key}.target") or None,
                contrast=S.get(f"{key}.contrast") or None,
            )
        except CORE_ERRORS as exc:
            st.error(literal(f"Not steered: {exc}"))
        else:
            S[f"{key}.result"] = result
            S.pop(f"{key}.saved_as", None)
    result = S.get(f"{key}.result")
    if result is not None:
        show_result(result, key)
        _save_controls(result, ws, circuit, key)
    _saved_runs(ws, circuit, key)
    return result


def _save_controls(result: SteeringResult, ws: Path | None, circuit: Mapping[str, Any] | None, key: str) -> None:
    if ws is None or not circuit:
        st.caption("Save the circuit to keep steering runs with it.")
        return
    from ui.state import CORE_ERRORS

    name, version = circuit["name"], int(circuit["version"])
    if S.get(f"{key}.saved_as") is not None:
        st.success(literal(f"Saved with {name!r} version {version} as run {S[f'{key}.saved_as']}."))
        return
    if st.button(literal(f"Save with this circuit version ({name} v{version})"), key=f"{key}.save"):
        try:
            saved = save_steering(ws, name, version, result, USER, circuit_id=circuit.get("circuit_id"), timeout=5.0)
        except CORE_ERRORS as exc:
            st.error(literal(f"Not saved: {exc}"))
        else:
            S[f"{key}.saved_as"] = saved.steering_id
            st.success(literal(f"Saved with {name!r} version {version} as run {saved.steering_id}."))


def _saved_runs(ws: Path | None, circuit: Mapping[str, Any] | None, key: str) -> None:
    if ws is None or not circuit:
        return
    from ui.state import CORE_ERRORS

    try:
        runs = load_steering(ws, circuit["name"], int(circuit["version"]), timeout=5.0)
    except CORE_ERRORS as exc:
        st.error(literal(f"Could not read the saved steering runs: {exc}"))
        return
    if not runs:
        return
    with st.expander(f"Steering runs saved with this version ({len(runs)})"):
        for run in runs:
            r = run.result
            st.markdown(
                literal(
                    f"Run {run.steering_id} by {run.created_by}, {run.created_at:%Y-%m-%d %H:%M}: "
                    f"{r.metric_label} {r.before.logit_diff:.3f} → {r.after.logit_diff:.3f}"
                )
            )
            show_result(r, f"{key}_saved{run.steering_id}")
