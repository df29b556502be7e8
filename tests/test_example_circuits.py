"""core.circuits.examples on the embedded default: three example circuits traced on held-out prompts the model
gets right, pruned, annotated and measured; a second call changes nothing; a user's circuit of an example's
name is never touched; stored explanations become annotations; the `example-circuits` command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from core import store
from core.circuits import examples as E
from core.circuits import saved as C

NAMES = [s.name for s in E.EXAMPLES]


@pytest.fixture(scope="module")
def engine():
    """The default model and its traced dictionaries, loaded once."""
    from core.subjects.dictionaries import load_default_dictionaries
    from core.subjects.models import load_default_model
    from core.tracing.loading import tracing_dictionaries

    torch.set_num_threads(1)
    model = load_default_model(device="cpu")
    return model, tracing_dictionaries(load_default_dictionaries().values())


@pytest.fixture(scope="module")
def built(engine, tmp_path_factory):
    """A fresh workspace with the examples built in it, and what the call returned."""
    ws = tmp_path_factory.mktemp("examples") / "ws.duckdb"
    names = E.build_example_circuits(ws, *engine)
    return ws, names


def test_three_examples_with_faithfulness_annotations_and_provenance(built):
    ws, names = built
    assert names == NAMES
    assert {c.name for c in C.list_circuits(ws)} == set(NAMES)
    for name in NAMES:
        versions = C.list_versions(ws, name)
        assert [v.created_by for v in versions] == [E.MADE_BY, E.MADE_BY]
        latest = C.load_circuit(ws, name)
        assert latest.version == 2 and not latest.pruning.is_empty
        f = latest.faithfulness
        assert f and f["ablation"] == "mean" and math.isfinite(f["faithfulness"])
        assert 1 <= len(latest.node_annotations) <= E.N_ANNOTATED
        assert all(a.author == E.MADE_BY and a.text.strip() for a in latest.node_annotations.values())
        assert latest.annotation.author == E.MADE_BY and "held-out" in latest.annotation.text
        assert 0 < latest.n_latents <= max(E.SIZES)
    assert E.example_circuit_to_open(ws) == ("Example: IOI", 2)


def test_each_example_prompt_is_answered_right_by_the_model(built, engine):
    from core.build.tasks import IOI_INTROS_HELDOUT

    model, _ = engine
    ws, _ = built
    for name in NAMES:
        G = C.load_circuit(ws, name, 1).graph
        target = C.graph_target(G)
        logits = model(torch.tensor([G.graph["prompt_token_ids"]]))[0, target.position]  # [vocab]
        assert int(logits.argmax()) == target.token, name
        assert logits[target.token] > logits[target.contrast]
    # IOI is one of the held-out templates, not a training one.
    prompt = C.load_circuit(ws, "Example: IOI", 1).graph.graph["prompt"]
    assert any(prompt.startswith(t.split("{")[0]) for t in IOI_INTROS_HELDOUT)


def test_a_second_call_keeps_everything_and_loads_nothing(built, monkeypatch):
    ws, _ = built
    # A user's edit of an example stays, as every stored version does.
    C.save_version(ws, "Example: agreement", C.Pruning(node_threshold=0.05), note="mine")
    before = {n: [(v.version, v.created_by, v.created_at) for v in C.list_versions(ws, n)] for n in NAMES}

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded although every example exists")

    monkeypatch.setattr(E, "_engine", no_model)
    assert E.build_example_circuits(ws) == NAMES
    assert {n: [(v.version, v.created_by, v.created_at) for v in C.list_versions(ws, n)] for n in NAMES} == before
    assert E.example_circuit_to_open(ws) == ("Example: IOI", 2)


def test_a_user_circuit_of_the_same_name_is_never_touched_and_explanations_annotate(built, engine, tmp_path):
    src, _ = built
    ws = tmp_path / "user.duckdb"
    # The user's own "Example: IOI" (another graph: the agreement example's).
    user_graph = C.load_circuit(src, "Example: agreement", 1).graph
    C.save_circuit(ws, "Example: IOI", user_graph, note="my circuit")
    # An explanation of a latent the brackets example annotates.
    node = sorted(C.load_circuit(src, "Example: brackets").node_annotations)[0]
    a = C.load_circuit(src, "Example: brackets").graph.nodes[node]
    rec = store.ExplanationRecord(
        "e1", a["dictionary"], int(a["latent"]), "openai/gpt-4o-mini", False, None, "top", "closes ( with )", "v1", {}
    )
    store.write_explanations(ws, [rec])

    names = E.build_example_circuits(ws, *engine)
    assert names == ["Example: agreement", "Example: brackets"]
    mine = C.list_versions(ws, "Example: IOI")
    assert [(v.version, v.created_by, v.note) for v in mine] == [(1, C.HAND, "my circuit")]
    assert C.load_circuit(ws, "Example: IOI").graph.graph["prompt"] == user_graph.graph["prompt"]
    assert E.example_circuit_to_open(ws) == ("Example: agreement", 2)
    note = C.load_circuit(ws, "Example: brackets").node_annotations[node]
    assert (note.text, note.author) == ("closes ( with )", "openai/gpt-4o-mini")
    # The same choice as in the other workspace: deterministic.
    assert (
        C.load_circuit(ws, "Example: brackets").graph.graph["prompt"]
        == C.load_circuit(src, "Example: brackets").graph.graph["prompt"]
    )


def test_nothing_to_open_in_an_empty_or_missing_workspace(tmp_path):
    assert E.example_circuit_to_open(tmp_path / "missing.duckdb") is None
    with store.session(tmp_path / "empty.duckdb", write=True):
        pass
    assert E.example_circuit_to_open(tmp_path / "empty.duckdb") is None


def test_the_command_lists_the_examples(built, capsys):
    from core.cli import main

    ws, _ = built
    assert main(["example-circuits", "--workspace", str(ws), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["name"] for r in out["circuits"]] == NAMES and out["skipped"] == []
    assert all(r["n_latents"] > 0 and r["prompt"] for r in out["circuits"])
    # Each one's latest version is listed (with who made it: a user may have added one to an example).
    latest = [C.list_versions(ws, n)[-1] for n in NAMES]
    assert [(r["version"], r["created_by"]) for r in out["circuits"]] == [(v.version, v.created_by) for v in latest]
    assert out["circuits"][0]["created_by"] == E.MADE_BY


def test_the_circuits_page_opens_an_example_on_first_visit(built):
    """A first visit to the Circuits page of a workspace with examples shows one, with who made it, instead of
    an empty form; a circuit already on screen is not replaced."""
    from streamlit.testing.v1 import AppTest

    ws, _ = built
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "pages" / "5_Circuits.py"), default_timeout=180)
    at.session_state["workspace"] = str(ws)
    at.run()
    assert not at.exception, at.exception
    opened = [i.value for i in at.info if "Opened the example circuit" in i.value]
    assert opened and E.MADE_BY in opened[0], [i.value for i in at.info]
    name, version = E.example_circuit_to_open(ws)
    assert at.session_state["circ.source"]["name"] == name and at.session_state["circ.source"]["version"] == version
    assert any(m.value.startswith("**Prompt:**") for m in at.markdown)
    at.run()  # a rerun keeps the circuit on screen and says nothing again
    assert not [i.value for i in at.info if "Opened the example circuit" in i.value]
