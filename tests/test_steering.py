"""Steering (core.tracing.steering): identity without a change, "before" is the real model, zeroing changes the
output, a last-layer intervention matches a hand computation, frozen and recomputed attention differ, bad input
is refused with a clear message; results saved with a circuit version round-trip; the `steer` command."""

from __future__ import annotations

import json
import math

import pytest
import torch
from tracing_helpers import exact_dictionaries, relu_model

from core import store
from core.circuits import saved as C
from core.circuits.steering_results import CLI, USER, load_steering, save_steering
from core.tracing.replacement import ReplacementModel
from core.tracing.steering import MAX_AMOUNT, Intervention, SteeringError, SteeringResult, steer

PROMPT = "When Mary and John went to the store, John gave a drink to"


@pytest.fixture(scope="module")
def setup(tiny_tokenizer):
    model = relu_model(tiny_tokenizer, n_ctx=96, seed=7)
    dicts = exact_dictionaries(model, seed=7)
    rm = ReplacementModel(model, dicts)
    state = rm.prepare(rm.tokenize(PROMPT))
    return model, dicts, rm, state


def strongest(state, position: int | None = None, layer: int | None = None, kind: str = "transcoder") -> str:
    """Node id of the most active latent of `kind` (at `position` / `layer` if given)."""
    cands = [
        n
        for n in (state.nodes[i] for i in state.latent_node_indices())
        if n.kind == kind and (position is None or n.position == position) and (layer is None or n.layer == layer)
    ]
    return max(cands, key=lambda n: n.activation).node_id


def test_no_change_reproduces_before_exactly(setup):
    model, dicts, rm, state = setup
    node = strongest(state, position=state.n_positions - 1)
    for attention in ("frozen", "recomputed"):
        r = steer(model, rm, PROMPT, [(node, None, "scale", 1.0)], attention=attention, n_tokens=6, state=state)
        assert r.after.logit_diff == r.before.logit_diff
        assert r.after.top == r.before.top and r.after.continuation_ids == r.before.continuation_ids
    # Setting a latent to its own clean activation is no change either (up to float error).
    act = next(n.activation for n in state.nodes if n.node_id == node)
    r = steer(model, rm, PROMPT, [(node, None, "value", act)], n_tokens=3, state=state)
    assert r.after.logit_diff == pytest.approx(r.before.logit_diff, abs=1e-5)
    assert r.warnings == []


def test_before_is_the_real_model_and_its_greedy_continuation(setup):
    model, dicts, rm, state = setup
    node = strongest(state)
    r = steer(model, dicts, PROMPT, [(node, None, "zero", 0)], n_tokens=5, target=" Mary", contrast=" John")
    tokens = state.tokens
    with torch.no_grad():
        logits = model(tokens[None])[0, -1]
        probs = torch.softmax(logits, -1)
        seq = tokens
        greedy = []
        for _ in range(5):
            nxt = int(model(seq[None])[0, -1].argmax())
            greedy.append(nxt)
            seq = torch.cat([seq, seq.new_tensor([nxt])])
    mary, john = rm.token_id(" Mary"), rm.token_id(" John")
    assert r.before.logit_diff == pytest.approx(float(logits[mary] - logits[john]), abs=1e-4)
    top_p, top_i = probs.topk(10)
    assert [i for _, i, _ in r.before.top] == top_i.tolist()
    assert [p for _, _, p in r.before.top] == pytest.approx(top_p.tolist(), abs=1e-5)
    assert r.before.continuation_ids == greedy
    assert r.target == " Mary" and r.contrast == " John" and "logit(' Mary')" in r.metric_label


def test_zeroing_a_latent_changes_the_next_token_probabilities(setup):
    model, dicts, rm, state = setup
    node = strongest(state, position=state.n_positions - 1)
    r = steer(model, rm, PROMPT, [(node, None, "zero", 0)], state=state)
    before = dict((i, p) for _, i, p in r.before.top)
    after = dict((i, p) for _, i, p in r.after.top)
    assert max(abs(before[i] - after.get(i, 0.0)) for i in before) > 1e-3
    assert r.after.logit_diff != r.before.logit_diff
    assert r.interventions == [Intervention(*_ids(rm, node), "zero", 0.0)]


def _ids(rm, node: str) -> tuple:
    from core.tracing.steering import parse_node_id

    kind, layer, latent, pos = parse_node_id(node)
    d = (rm.transcoders if kind == "transcoder" else rm.attn)[layer]
    return d.id, layer, latent, (pos,)


def test_last_layer_intervention_matches_a_hand_computation(setup):
    """A last-layer transcoder latent at the last position has no latent or attention downstream: the logits must
    move by exactly (new - old) * W_dec[latent] added to the final residual, in both attention modes."""
    model, dicts, rm, state = setup
    last, top_layer = state.n_positions - 1, model.cfg.n_layers - 1
    node = strongest(state, position=last, layer=top_layer)
    _, _, latent, _ = _ids(rm, node)
    d = rm.transcoders[top_layer]
    old = state.nodes[state.latent_index[(d.id, last, latent)]].activation
    _, cache = model.run_with_cache(
        state.tokens[None], names_filter=lambda n: n == f"blocks.{top_layer}.hook_resid_post"
    )
    resid = cache[f"blocks.{top_layer}.hook_resid_post"][0, last]
    with torch.no_grad():
        moved = resid + (2.5 * old - old) * d.W_dec[latent]
        expected = model.unembed(model.ln_final(moved[None, None]))[0, 0]
    for attention in ("frozen", "recomputed"):
        r = steer(model, rm, PROMPT, [(node, None, "scale", 2.5)], attention=attention, n_tokens=1, state=state)
        probs = torch.softmax(expected, -1)
        assert [p for _, _, p in r.after.top] == pytest.approx(probs.topk(10).values.tolist(), abs=1e-5)


def test_frozen_and_recomputed_attention_differ_after_an_early_intervention(setup):
    model, dicts, rm, state = setup
    # The test model's attention is sharp (most weights underflow to 0), so steer where the last token reads.
    node = strongest(state, position=state.n_positions - 1, layer=0, kind="attn")
    frozen = steer(model, rm, PROMPT, [(node, None, "scale", 4.0)], attention="frozen", n_tokens=1, state=state)
    free = steer(model, rm, PROMPT, [(node, None, "scale", 4.0)], attention="recomputed", n_tokens=1, state=state)
    assert frozen.before.logit_diff == pytest.approx(free.before.logit_diff, abs=1e-5)  # the same model before
    assert abs(frozen.after.logit_diff - free.after.logit_diff) > 1e-4


def test_several_positions_and_dictionary_form(setup):
    model, dicts, rm, state = setup
    d = rm.transcoders[0]
    r = steer(model, rm, PROMPT, [((d.id, 0, 3), [1, -1, -1], "value", 5.0)], n_tokens=2, state=state)
    assert r.interventions[0].positions == (1, state.n_positions - 1)
    assert r.after.logit_diff != r.before.logit_diff
    # Scaling a latent that is not active at the position does nothing, and says so.
    inactive = next(i for i in range(d.d_sae) if (d.id, 1, i) not in state.latent_index)
    r = steer(model, rm, PROMPT, [((d.id, None, inactive), [1], "scale", 3.0)], n_tokens=1, state=state)
    assert r.after.top == r.before.top and "not active at position 1" in r.warnings[0]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (("NODE", None, "scale", float("nan")), "finite number"),
        (("NODE", None, "scale", float("inf")), "finite number"),
        (("NODE", None, "value", -float("inf")), "finite number"),
        (("NODE", None, "scale", MAX_AMOUNT * 10), "larger than 10000"),
        (("NODE", None, "scale", "two"), "not a number"),
        (("NODE", None, "double", 2.0), "not one of scale, zero, value"),
        (("NODE", [99], "zero", 0), "outside the prompt"),
        (("NODE", [0], "zero", 0), "BOS"),
        (("NODE", [], "zero", 0), "no position"),
        (("mlp_error.0@3", None, "zero", 0), "not a latent node id"),
        (("transcoder.9/1@3", None, "zero", 0), "no transcoder dictionary at layer 9"),
        ((("nope:blocks.0", None, 1), [1], "zero", 0), "unknown dictionary 'nope:blocks.0'"),
        ((("TC0", None, 10**6), [1], "zero", 0), "out of range"),
    ],
)
def test_bad_interventions_are_refused(setup, spec, message):
    model, dicts, rm, state = setup
    node = strongest(state)
    where = node if spec[0] == "NODE" else spec[0]
    if isinstance(where, tuple) and where[0] == "TC0":
        where = (rm.transcoders[0].id, *where[1:])
    with pytest.raises(SteeringError, match=message):
        steer(model, rm, PROMPT, [(where, *spec[1:])], state=state)


def test_bad_runs_are_refused(setup):
    model, dicts, rm, state = setup
    node = strongest(state)
    with pytest.raises(SteeringError, match="no latent chosen"):
        steer(model, rm, PROMPT, [])
    with pytest.raises(SteeringError, match="attention must be"):
        steer(model, rm, PROMPT, [(node, None, "zero", 0)], attention="sometimes")
    with pytest.raises(SteeringError, match="context of 96"):
        steer(model, rm, PROMPT, [(node, None, "zero", 0)], n_tokens=95)
    with pytest.raises(SteeringError, match="0..100"):
        steer(model, rm, PROMPT, [(node, None, "zero", 0)], n_tokens=-1)
    with pytest.raises(SteeringError, match="same token"):
        steer(model, rm, PROMPT, [(node, None, "zero", 0)], target=" Mary", contrast=" Mary")
    with pytest.raises(SteeringError, match="prompt is empty"):
        steer(model, rm, "   ", [(node, None, "zero", 0)])


def test_result_json_round_trip(setup):
    model, dicts, rm, state = setup
    r = steer(model, rm, PROMPT, [(strongest(state), None, "scale", -2.0)], n_tokens=3, state=state)
    back = SteeringResult.from_json(json.loads(json.dumps(r.to_json())))
    assert back.to_json() == r.to_json() and back.interventions == r.interventions


@pytest.fixture(scope="module")
def saved_circuit(setup, tmp_path_factory):
    from core.tracing.api import trace_prompt
    from core.tracing.hierarchical import TraceParams

    model, dicts, rm, state = setup
    res = trace_prompt(
        model, dicts, PROMPT, target=" Mary", contrast=" John", params=TraceParams(max_latents=5), faithfulness=False
    )
    ws = tmp_path_factory.mktemp("steer-ws") / "w.duckdb"
    v1 = C.save_circuit(ws, "ioi", res.graph, res.target)
    return ws, v1, res


def test_steering_saved_with_a_circuit_version_round_trips(setup, saved_circuit):
    model, dicts, rm, state = setup
    ws, v1, res = saved_circuit
    r = steer(model, rm, PROMPT, [(strongest(state), None, "zero", 0)], n_tokens=4, target=" Mary", contrast=" John")
    s1 = save_steering(ws, "ioi", 1, r, USER, circuit_id=v1.circuit_id)
    s2 = save_steering(ws, "ioi", 1, r, CLI)
    assert (s1.steering_id, s2.steering_id) == (1, 2)
    loaded = load_steering(ws, "ioi", 1)
    assert [s.created_by for s in loaded] == ["user", "cli"] and all(s.created_at is not None for s in loaded)
    assert loaded[0].result.to_json() == r.to_json()
    assert load_steering(ws, "ioi", 2) == [] and load_steering(ws.parent / "none.duckdb", "ioi") == []
    with pytest.raises(C.CircuitError, match="has no version 7"):
        save_steering(ws, "ioi", 7, r, USER)
    with pytest.raises(C.CircuitError, match="deleted or replaced"):
        save_steering(ws, "ioi", 1, r, USER, circuit_id="something else")
    with pytest.raises(C.CircuitError, match="who made"):
        save_steering(ws, "ioi", 1, r, "  ")
    assert len(load_steering(ws, "ioi")) == 2  # refused saves stored nothing


def test_deleting_a_circuit_deletes_its_steering(setup, saved_circuit, tmp_path):
    model, dicts, rm, state = setup
    _, _, res = saved_circuit
    ws = tmp_path / "d.duckdb"
    C.save_circuit(ws, "gone", res.graph, res.target)
    r = steer(model, rm, PROMPT, [(strongest(state), None, "zero", 0)], n_tokens=1, state=state)
    save_steering(ws, "gone", 1, r, USER)
    C.delete_circuit(ws, "gone")
    C.save_circuit(ws, "gone", res.graph, res.target)  # a new circuit under the old name starts without steering
    assert load_steering(ws, "gone") == []


def test_a_workspace_from_before_steering_is_migrated_on_read(tmp_path, monkeypatch):
    ws = tmp_path / "old.duckdb"
    monkeypatch.setattr(store.schema, "MIGRATIONS", tuple(m for m in store.MIGRATIONS if m.version != 5))
    with store.session(ws, write=True) as con:
        store.set_info(con, "model", {"name": "default"})
    monkeypatch.undo()
    assert load_steering(ws, "ioi") == []
    with store.session(ws) as con:
        assert store.get_info(con, "model") == {"name": "default"}


# ---------------------------------------------------------------------------------------------
# CLI on the embedded default model


@pytest.fixture(scope="module")
def default_node():
    """The most active latent at the last position of PROMPT on the default model (node id)."""
    from core.subjects.dictionaries import load_default_dictionaries
    from core.subjects.models import load_model
    from core.tracing.loading import tracing_dictionaries

    model = load_model("default")
    rm = ReplacementModel(model, tracing_dictionaries(load_default_dictionaries().values()))
    state = rm.prepare(rm.tokenize(PROMPT))
    return strongest(state, position=state.n_positions - 1)


def test_cli_steer_prints_before_and_after_and_saves(default_node, saved_circuit, capsys):
    from core.cli import main

    argv = ["steer", "--prompt", PROMPT, "--latent", f"{default_node}=zero", "--target", " Mary", "--contrast", " John"]
    assert main([*argv, "--tokens", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["interventions"][0]["mode"] == "zero" and out["attention"] == "frozen"
    assert out["before"]["top"][0]["p"] != out["after"]["top"][0]["p"]
    assert len(out["before"]["continuation_ids"]) <= 3

    assert main([*argv, "--tokens", "2", "--attention", "recomputed"]) == 0
    text = capsys.readouterr().out
    assert "attention recomputed; logit(' Mary') − logit(' John')" in text and "continuation after:" in text


def test_cli_steer_saves_with_a_circuit(default_node, saved_circuit, tmp_path, capsys):
    from core.cli import main

    _, _, res = saved_circuit
    ws = tmp_path / "cli.duckdb"
    C.save_circuit(ws, "c", res.graph, res.target)  # traced on PROMPT with target ' Mary', contrast ' John'
    argv = ["steer", "--latent", f"{default_node}=scale:0.5", "--workspace", str(ws), "--circuit", "c"]
    assert main([*argv, "--tokens", "1"]) == 0
    assert "saved with circuit 'c' version 1 as steering run 1" in capsys.readouterr().out
    (s,) = load_steering(ws, "c", 1)
    assert s.created_by == "cli" and (s.result.target, s.result.contrast) == (" Mary", " John")
    assert s.result.interventions[0].amount == 0.5
    assert main([*argv, "--version", "3"]) == 2
    assert "has versions 1..1, not 3" in capsys.readouterr().err
    assert main([*argv, "--prompt", "Another prompt"]) == 2
    assert "differs from circuit 'c'" in capsys.readouterr().err
    assert len(load_steering(ws, "c")) == 1


@pytest.mark.parametrize(
    ("latent", "message"),
    [
        ("transcoder.0/5@3=scale:nan", "finite number"),
        ("transcoder.0/5@3=scale:1e9", "larger than 10000"),
        ("transcoder.0/5@99=zero", "outside the prompt"),
        ("transcoder.0/999999@3=zero", "out of range"),
        ("transcoder.0/5@3=boost:2", "--latent must be"),
        ("transcoder.0/5@3=scale", "--latent must be"),
        ("nope:blocks.1:5@3=zero", "unknown dictionary"),
    ],
)
def test_cli_steer_bad_input_is_one_line(latent, message, capsys):
    from core.cli import main

    assert main(["steer", "--prompt", PROMPT, "--latent", latent, "--tokens", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err and "Traceback" not in err


def test_steering_is_fast_enough_on_the_default_model():
    """The issue's figure: a steering run (10-token continuation, before and after) under 2 s on 2 cores; allow
    slack for a loaded test machine, the benchmark reports the real figure."""
    from core.tracing.steering import bench_steer

    seconds = bench_steer(repeats=1)
    assert math.isfinite(seconds) and seconds < 6.0


# ---------------------------------------------------------------------------------------------
# The panel (ui.steering_view) through AppTest, on tests/browser/steering_app.py


STEERING_APP = str(__import__("pathlib").Path(__file__).resolve().parent / "browser" / "steering_app.py")


def panel(monkeypatch, ws=None, circuit: str | None = None):
    from streamlit.testing.v1 import AppTest

    if ws is not None:
        monkeypatch.setenv("STEER_WS", str(ws))
        monkeypatch.setenv("STEER_CIRCUIT", circuit or "")
    else:
        monkeypatch.delenv("STEER_WS", raising=False)
    at = AppTest.from_file(STEERING_APP, default_timeout=120)
    at.run()
    assert not at.exception
    return at


def _node_key(at) -> str:
    (chosen,) = at.multiselect(key="steer.latents").value
    return "steer." + __import__("re").sub(r"\W", "_", chosen)


def test_panel_steers_the_selected_latent_to_zero(monkeypatch):
    at = panel(monkeypatch)
    assert at.radio(key="steer.attention").value == "frozen" and at.text_input(key="steer.target").value == " Mary"
    k = _node_key(at)
    assert at.selectbox(key=f"{k}.mode").value == "zero" and at.text_input(key=f"{k}.positions").value == "14"
    assert any("1 'When' · 2 ' Mary'" in c.value and "14 ' to'" in c.value for c in at.caption)
    at.button(key="steer.run").click().run()
    assert not at.exception and not at.error
    before, after = (m.value for m in at.metric)
    assert float(before) == pytest.approx(9.728, abs=0.01) and float(after) != float(before)
    result = at.session_state["steer.result"]
    assert result.before.top != result.after.top and result.interventions[0].mode == "zero"
    assert "Save the circuit to keep steering runs" in at.caption[-1].value


@pytest.mark.parametrize(
    ("mode", "amount", "positions", "message"),
    [
        ("scale", "nan", "14", "finite number"),
        ("scale", "inf", "14", "finite number"),
        ("value", "1e9", "14", "larger than 10000"),
        ("scale", "two", "14", "is not a number"),
        ("zero", "0", "99", "outside the prompt"),
        ("zero", "0", "a,b", "whole numbers"),
        ("zero", "0", "", "no position"),
    ],
)
def test_panel_bad_input_is_an_error_and_changes_nothing(monkeypatch, mode, amount, positions, message):
    at = panel(monkeypatch)
    k = _node_key(at)
    at.button(key="steer.run").click().run()
    shown = at.session_state["steer.result"]
    at.selectbox(key=f"{k}.mode").set_value(mode)
    at.text_input(key=f"{k}.amount").set_value(amount)
    at.text_input(key=f"{k}.positions").set_value(positions)
    at.button(key="steer.run").click().run()
    assert not at.exception
    assert len(at.error) == 1 and message in at.error[0].value and at.error[0].value.startswith("Not steered")
    assert at.session_state["steer.result"] is shown  # the last result stays on screen


def test_panel_with_no_latent_chosen_says_so(monkeypatch):
    at = panel(monkeypatch)
    at.multiselect(key="steer.latents").set_value([]).run()
    at.button(key="steer.run").click().run()
    assert "no latent chosen" in at.error[0].value and "steer.result" not in at.session_state


def test_panel_saves_with_the_circuit_version(monkeypatch, tmp_path):
    from core.subjects.dictionaries import load_default_dictionaries
    from core.subjects.models import load_model
    from core.tracing.api import trace_prompt
    from core.tracing.hierarchical import TraceParams
    from core.tracing.loading import tracing_dictionaries

    model = load_model("default")
    res = trace_prompt(
        model,
        tracing_dictionaries(load_default_dictionaries().values()),
        PROMPT,
        target=" Mary",
        contrast=" John",
        params=TraceParams(max_latents=3),
        faithfulness=False,
    )
    ws = tmp_path / "panel.duckdb"
    C.save_circuit(ws, "ioi <b>", res.graph, res.target)
    at = panel(monkeypatch, ws, "ioi <b>")
    at.button(key="steer.run").click().run()
    at.button(key="steer.save").click().run()
    assert not at.exception and not at.error
    assert "Saved with 'ioi <b>' version 1 as run 1" in at.success[0].value.replace("\\", "")
    (run,) = load_steering(ws, "ioi <b>", 1)
    assert run.created_by == "user" and run.result.to_json() == at.session_state["steer.result"].to_json()
    assert "Steering runs saved with this version (1)" in at.expander[0].label
