"""pages/5_Circuits.py in AppTest: a failed trace is shown plainly and the graph left on the page is marked as
the previous one; target == contrast is refused; a zero-latent circuit warns; messages end their sentences;
a save on a circuit deleted or replaced since it was loaded is refused with the edits kept; user text is
sent to the browser as literal (escaped) Markdown."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from test_circuits_page import PAGE, PROMPT, errors, trace

from core.circuits import saved as C
from ui.text import literal

HOSTILE = "![x](http://evil.example/a.png) **c** _bold_ $x^2$ <b>b</b>"
MARKDOWN_KINDS = ("markdown", "caption", "subheader", "title", "error", "warning", "success", "info")


def page(ws: Path) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=600)
    at.session_state["workspace"] = str(ws)
    return at.run()


def plain(markdown: str) -> str:
    """The text that escaped Markdown (`ui.text.literal`) shows: escapes, hard breaks and word joiners undone."""
    return re.sub(r"\\(.)", r"\1", markdown.replace("  \n", "\n")).replace("\u2060", "")


def top_level(at: AppTest, kind: str) -> list[str]:
    """Values of the `kind` elements ("error", "warning", ...) drawn directly in the main area (not inside a box)."""
    return [el.value for el in at.main.children.values() if getattr(el, "type", None) == kind]


def markdown_bodies(at: AppTest) -> list[str]:
    """The Markdown source of every element Streamlit renders as Markdown, sidebar included."""
    return [str(el.value) for kind in MARKDOWN_KINDS for el in at.get(kind)]


def save(at: AppTest, name: str | None = None) -> AppTest:
    if name is not None:
        at.text_input(key="circ.name").input(name)
    next(b for b in at.button if b.label == "Save").click()
    return at.run()


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("circuits-hardening") / "w.duckdb"


def test_trace_error_is_shown_plainly_and_the_old_graph_is_marked(ws):
    at = trace(page(ws), PROMPT, ")")
    assert not at.exception and not errors(at), errors(at)
    first = at.session_state["circ.original"]

    at = trace(at, "word " * 400, ")")
    assert not at.exception
    shown = top_level(at, "error")  # in the page itself, not inside the collapsed status box
    assert len(shown) == 1 and shown[0] == literal(plain(shown[0]))  # escaped: shown as typed
    assert re.fullmatch(
        r"Trace failed: the prompt is \d+ tokens with BOS; this model's context is 128 tokens: shorten it\.",
        plain(shown[0]),
    ), shown
    assert any(s.value == "Previous circuit (the last trace failed)" for s in at.subheader)
    assert any("not the prompt that failed" in w for w in top_level(at, "warning"))
    assert at.session_state["circ.original"] is first  # the edits on it are kept

    # The mark stays on reruns until a trace succeeds.
    at.slider(key="circ.edge_thr").set_value(0.01)
    at = at.run()
    assert any(s.value == "Previous circuit (the last trace failed)" for s in at.subheader)
    at = trace(at, PROMPT, ")", ".")
    assert not errors(at) and any(s.value == "Circuit" for s in at.subheader)

    # target == contrast: refused with the engine's message, shown plainly.
    at = trace(at, PROMPT, ")", ")")
    assert any("the same token" in e and e.endswith(".") for e in top_level(at, "error")), errors(at)


def test_zero_latent_circuit_warns_and_messages_are_punctuated(ws):
    at = trace(page(ws), PROMPT, ")")
    original = at.session_state["circ.original"]
    latents = [v for v in original if original.nodes[v].get("kind") in ("attn", "transcoder")]
    at.multiselect(key="circ.remove_nodes").set_value(latents)
    at = at.run()
    assert {m.label: m.value for m in at.metric}["latents (the circuit)"] == "0"
    assert any("This pruning keeps no latents" in w for w in top_level(at, "warning"))

    at = save(at, "")  # no name: the error's sentences do not run together
    assert errors(at) == [
        literal("Not saved: a circuit needs a name. Your edits are still on this page. Nothing stored was changed.")
    ]
    at = save(at, "empty circuit")
    assert not errors(at), errors(at)
    assert any("version 2 (0 latents)" in s.value for s in at.success)
    assert any("Version 2 keeps no latents" in w for w in top_level(at, "warning"))
    assert C.load_circuit(ws, "empty circuit").n_latents == 0


def test_a_save_on_a_replaced_circuit_is_refused_and_the_edits_stay(ws):
    a = trace(page(ws), PROMPT, ")")
    a = save(a, "race1")  # version 1, then A goes on editing it
    assert any("Saved 'race1' version 1" in s.value for s in a.success), errors(a)
    original = a.session_state["circ.original"]
    node = next(v for v in original if original.nodes[v].get("kind") in ("attn", "transcoder"))

    # B (another session) deletes 'race1' and saves a different prompt under the same name.
    C.delete_circuit(ws, "race1")
    b_graph = original.copy()
    b_graph.graph["prompt"] = "B's own prompt"
    C.save_circuit(ws, "race1", b_graph)

    a.selectbox(key="circ.ann_node").set_value(node)
    a = a.run()
    a.text_input(key=f"circ.ann.{node}").input("A's note")
    a.text_area(key="circ.note").input("A's summary")
    a = save(a)
    (message,) = errors(a)
    assert "was replaced after these edits were loaded" in message and "Your edits are still on this page" in message
    assert "type a new name and press Save" in message
    assert [v.version for v in C.list_versions(ws, "race1")] == [1]
    assert C.load_circuit(ws, "race1").graph.graph["prompt"] == "B's own prompt"
    assert a.session_state["circ.annotations"] == {node: "A's note"} and a.session_state["circ.note"] == "A's summary"

    # As the message says: a new name keeps A's work as a circuit of its own.
    a = save(a, "race1 (A)")
    assert not errors(a), errors(a)
    saved = C.load_circuit(ws, "race1 (A)")
    assert saved.version == 2 and saved.node_annotations[node].text == "A's note"


def test_a_save_on_a_deleted_circuit_is_refused_then_saved_afresh(ws):
    a = trace(page(ws), PROMPT, ")")
    a = save(a, "gone")
    a.text_area(key="circ.note").input("kept summary")
    C.delete_circuit(ws, "gone")  # another session
    a = save(a)
    (message,) = errors(a)
    assert "'gone' was deleted from the workspace" in message and "Press Save again" in message
    assert "gone" not in [c.name for c in C.list_circuits(ws)]
    a = save(a)  # as the message says
    assert not errors(a), errors(a)
    assert C.load_circuit(ws, "gone").annotation.text == "kept summary"


def test_user_text_is_sent_as_literal_markdown(ws):
    at = trace(page(ws), HOSTILE, "")
    assert not at.exception and not errors(at), errors(at)
    at = save(at, HOSTILE)
    assert not errors(at), errors(at)
    at = page(ws)  # a new session lists it in the sidebar
    at.selectbox(key="circ.pick").set_value(HOSTILE)
    at = at.run()
    next(b for b in at.button if b.label == "Load").click()
    at = at.run()
    assert not errors(at), errors(at)
    bodies = markdown_bodies(at)
    assert any(literal(HOSTILE) in b for b in bodies)  # the prompt, the flash and captions: escaped
    assert not [b for b in bodies if "![x](http" in b or "<b>" in b or "**c**" in b]
