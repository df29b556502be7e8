"""pages/5_Circuits.py driven by Streamlit's AppTest on the embedded default model (real traces, real ablations):
trace, bad input, prune, annotate, recompute faithfulness, save, reload in a new session, locked workspace."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import store
from core.circuits import saved as C
from ui import graph_view

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "pages" / "5_Circuits.py")
PROMPT = "The old man said that the new plan (which the city council had approved last year"
PROBE = "<img src=x onerror=alert(1)>"


def page(ws: Path) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=600)
    at.session_state["workspace"] = str(ws)
    return at.run()


def graph_spec(at: AppTest) -> dict:
    """What the page sent to the graph component (ui.graph_view.graph_spec)."""
    components = at.get("component_instance")
    assert components, "no graph was rendered"
    return json.loads(components[0].proto.json_args)["spec"]


def node_ids(at: AppTest) -> set[str]:
    return {n["id"] for n in graph_spec(at)["nodes"]}


def trace(at: AppTest, prompt: str, target: str, contrast: str = "") -> AppTest:
    at.text_area(key="circ.prompt").input(prompt)
    at.text_input(key="circ.target_text").input(target)
    at.text_input(key="circ.contrast_text").input(contrast)
    next(b for b in at.button if b.label == "Trace").click()
    return at.run()


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("circuits-page") / "w.duckdb"


def test_bad_input_is_a_clear_message(ws):
    at = page(ws)
    assert not at.exception and any("Trace a prompt" in i.value for i in at.info)
    at = trace(at, "   ", ")")
    assert not at.exception and any("empty" in e for e in errors(at))
    at = trace(at, "word " * 400, ")")
    assert not at.exception and any("context is 128" in e for e in errors(at))
    at = trace(at, PROMPT, " councilplanxyz")
    assert not at.exception and any("not one" in e for e in errors(at)), errors(at)
    assert "circ.original" not in at.session_state


def test_trace_prune_annotate_save_and_reload(ws):
    at = trace(page(ws), PROMPT, ")", ".")
    assert not at.exception and not errors(at), errors(at)
    original = at.session_state["circ.original"]
    assert original.graph["target"]["node_id"].startswith("logit@") and original.number_of_nodes() > 5
    spec = graph_spec(at)
    assert graph_view.external_urls(json.dumps(spec)) == [] and len(spec["nodes"]) == original.number_of_nodes()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["faithfulness F(C)"] != "n/a"  # the trace's own measurement is shown at once
    # the LLM pruning section is on the page; offline, with no model chosen, it says so and offers no button
    assert any("No LLM is chosen" in i.value for i in at.info)
    assert not any(b.key == "llmp.ask" for b in at.button)

    # Prune: remove the most influential latent, pin the second; threshold the edges.
    influence = C.graph_influence(original)
    latents = sorted(
        (v for v in original if original.nodes[v].get("kind") in ("attn", "transcoder")), key=lambda v: -influence[v]
    )
    at.multiselect(key="circ.remove_nodes").select(latents[0])
    at.multiselect(key="circ.pinned").select(latents[1])
    at.slider(key="circ.edge_thr").set_value(0.02)
    at = at.run()
    pruning = C.Pruning(removed_nodes=(latents[0],), edge_threshold=0.02, pinned=(latents[1],))
    expected = C.prune_graph(original, pruning)
    n_latents = len([v for v in expected if expected.nodes[v].get("kind") in ("attn", "transcoder")])
    assert {m.label: m.value for m in at.metric}["latents (the circuit)"] == str(n_latents)
    assert latents[0] not in node_ids(at)

    # Recompute faithfulness of the pruned circuit: agrees with the engine called directly.
    next(b for b in at.button if b.label == "Recompute faithfulness").click()
    at = at.run()
    assert not errors(at), errors(at)
    shown = at.session_state["circ.faith"][pruning.key()]
    from core.paths import BUILD_CACHE_DIR, default_paths
    from core.subjects.dictionaries import load_default_dictionaries
    from core.subjects.models import load_default_model
    from core.tracing.ablation import load_or_compute_means

    model = load_default_model(device="cpu")
    dicts = [d for d in load_default_dictionaries().values() if d.kind in ("attn", "transcoder")]
    means = load_or_compute_means(model, dicts, default_paths()["corpus"], BUILD_CACHE_DIR / "tracing", n_windows=64)
    direct = C.measure_faithfulness(model, dicts, expected, means, "mean")
    assert shown["faithfulness"] == pytest.approx(direct.faithfulness, abs=1e-4)

    # Annotate a node (the XSS probe) and the circuit.
    at.selectbox(key="circ.ann_node").set_value(latents[1])
    at = at.run()
    at.text_input(key=f"circ.ann.{latents[1]}").input(PROBE)
    at.text_area(key="circ.note").input("closes the bracket")
    at = at.run()
    assert at.session_state["circ.annotations"] == {latents[1]: PROBE}
    # The annotation reaches the graph as data (a plain-text tooltip, a canvas label), never as HTML:
    # tests/test_circuit_component.py checks that the component sets no text as HTML.
    titles = {n["id"]: n["title"] for n in graph_spec(at)["nodes"]}
    assert f"annotation: {PROBE}" in titles[latents[1]]

    at.text_input(key="circ.name").input("bracket closer")
    next(b for b in at.button if b.label == "Save").click()
    at = at.run()
    assert not errors(at), errors(at)
    assert any("version 2" in s.value for s in at.success)
    assert [v.version for v in C.list_versions(ws, "bracket closer")] == [1, 2]
    assert C.load_circuit(ws, "bracket closer", 1).node_annotations == {}

    # A new session (a reload): the circuit is listed; loading it brings back pruning and annotations.
    at2 = page(ws)
    assert not at2.exception
    assert "bracket closer" in at2.selectbox(key="circ.pick").options[0]
    next(b for b in at2.button if b.label == "Load").click()
    at2 = at2.run()
    assert not at2.exception and not errors(at2), errors(at2)
    assert at2.session_state["circ.annotations"] == {latents[1]: PROBE}
    assert at2.session_state["circ.note"] == "closes the bracket"
    assert at2.multiselect(key="circ.remove_nodes").value == [latents[0]]
    assert at2.slider(key="circ.edge_thr").value == pytest.approx(0.02)
    assert {m.label: m.value for m in at2.metric}["faithfulness F(C)"] == f"{direct.faithfulness:.3f}"
    assert f"annotation: {PROBE}" in {n["id"]: n["title"] for n in graph_spec(at2)["nodes"]}[latents[1]]

    # Saving again from the loaded circuit adds version 3; the name of another circuit is refused.
    at2.slider(key="circ.node_thr").set_value(0.005)
    at2 = at2.run()
    next(b for b in at2.button if b.label == "Save").click()
    at2 = at2.run()
    assert any("version 3" in s.value for s in at2.success), [s.value for s in at2.success] + errors(at2)


def test_locked_workspace_keeps_the_edits(ws, tmp_path):
    locked = tmp_path / "locked.duckdb"
    with store.session(locked, write=True):
        pass  # an empty workspace
    at = trace(page(locked), PROMPT, ")")
    assert not errors(at)
    at.text_area(key="circ.note").input("my note")
    at.text_input(key="circ.name").input("kept")
    at = at.run()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, duckdb; c = duckdb.connect(sys.argv[1]); print('held', flush=True); time.sleep(60)",
            str(locked),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        next(b for b in at.button if b.label == "Save").click()
        at = at.run()
        assert time.monotonic() - t0 < 60
    finally:
        holder.kill()
        holder.wait()
    assert not at.exception
    assert any("locked" in e and "nothing stored was changed" in e.lower() for e in errors(at)), errors(at)
    assert at.session_state["circ.note"] == "my note" and at.session_state["circ.original"] is not None
    # Once the lock is gone the same click saves.
    next(b for b in at.button if b.label == "Save").click()
    at = at.run()
    assert not errors(at), errors(at)
    assert [c.name for c in C.list_circuits(locked)] == ["kept"]
