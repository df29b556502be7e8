"""LLM circuit pruning: strict reply validation, prompt building, hierarchical splitting, verdicts."""

from __future__ import annotations

import json

import networkx as nx
import pytest
from circuit_llm_helpers import listed_ids

from core.circuits.llm_pruning import (
    Decision,
    NodeSuggestion,
    PruneConfig,
    PruneReplyError,
    PruneSuggestion,
    graph_influence,
    parse_prune_reply,
    parse_summary_reply,
    resolve_suggestion,
    single_prompt,
    split_to_fit,
    task_for_graph,
)

TARGET = "logit@5:')'-'.'"


def toy_graph(n_per_layer: int = 2, n_layers: int = 3) -> nx.DiGraph:
    """A layered graph: embed@1 -> layer-0 latents -> ... -> the logit; every latent feeds every latent of the next layer."""
    G = nx.DiGraph()
    G.graph.update({"prompt": "He left (because", "target": {"label": "')' - '.'"}, "target_value": 1.5})
    G.add_node(
        TARGET, kind="logit", layer=n_layers, position=5, latent=None, activation=1.5, is_target=True, token="')'-'.'"
    )
    G.add_node("embed@1", kind="embed", layer=-1, position=1, latent=None, activation=3.0, token=" (")
    below = ["embed@1"]
    for layer in range(n_layers):
        here = []
        for i in range(n_per_layer):
            v = f"transcoder.{layer}/{10 * layer + i}@5"
            G.add_node(
                v,
                kind="transcoder",
                layer=layer,
                position=5,
                latent=10 * layer + i,
                activation=1.0 + i,
                dictionary=f"transcoder:blocks.{layer}.ln2.hook_normalized",
                token=" because",
                feature_key=v.split("@")[0],
            )
            for u in below:
                G.add_edge(u, v, weight=0.5 + 0.1 * i)
            here.append(v)
        below = here
    for u in below:
        G.add_edge(u, TARGET, weight=1.0)
    return G


def reply(keep: dict[str, str], drop: list[str], summary: str = "Copies the open bracket forward.") -> str:
    return json.dumps({"keep": [{"id": k, "role": r} for k, r in keep.items()], "drop": drop, "summary": summary})


NODES = ["a", "b", "c"]


def test_valid_reply_is_parsed_in_order_and_a_fence_is_tolerated():
    text = reply({"b": "detects the bracket", TARGET: "the output"}, ["a", "c"])
    parsed = parse_prune_reply(text, NODES, TARGET)
    assert list(parsed.keep) == ["b", TARGET] and parsed.keep["b"] == "detects the bracket"
    assert parsed.drop == ("a", "c") and parsed.summary.startswith("Copies")
    assert parse_prune_reply(f"```json\n{text}\n```", NODES, TARGET) == parsed


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Sure! Here is the pruning: keep b.", "not valid JSON"),
        ("", "empty"),
        ('["a", "b"]', "not an object"),
        ('{"keep": [], "drop": ["a", "b", "c"]}', "missing 'summary'"),
        ('{"keep": [], "drop": ["a", "b", "c"], "summary": "s", "notes": "x"}', "unexpected 'notes'"),
        ('{"keep": {"a": "x"}, "drop": ["b", "c"], "summary": "s"}', '"keep" must be a list'),
        ('{"keep": ["a"], "drop": ["b", "c"], "summary": "s"}', '"keep"[0] must be an object'),
        ('{"keep": [{"id": "a"}], "drop": ["b", "c"], "summary": "s"}', "missing 'role'"),
        ('{"keep": [{"id": "a", "role": "two\\nlines"}], "drop": ["b", "c"], "summary": "s"}', "must be one line"),
        ('{"keep": [{"id": "a", "role": "  "}], "drop": ["b", "c"], "summary": "s"}', "is empty"),
        ('{"keep": [{"id": 3, "role": "x"}], "drop": ["b", "c"], "summary": "s"}', "must be a string"),
        ('{"keep": [], "drop": ["a", "b", 7], "summary": "s"}', '"drop"[2] must be a node id string'),
        ('{"keep": [], "drop": ["a", "b", "c"], "summary": ""}', '"summary" is empty'),
    ],
)
def test_malformed_replies_are_rejected_with_the_reason(text, reason):
    with pytest.raises(PruneReplyError) as exc:
        parse_prune_reply(text, NODES, TARGET)
    assert reason in exc.value.reason
    assert "nothing was applied" in str(exc.value)


def test_semantic_errors_are_rejected_with_the_reason():
    cases = [
        (reply({"a": "x", "transcoder.9/999@2": "made up"}, ["b", "c"]), "not in the graph: 'transcoder.9/999@2'"),
        (reply({"a": "x"}, ["b", "c", TARGET]), "drops the target node"),
        (reply({"a": "x", "b": "y"}, ["b", "c"]), "in both keep and drop: 'b'"),
        (reply({"a": "x"}, ["b"]), "neither keep nor drop: 'c'"),
        (reply({"a": "x"}, ["b", "c", "b"]), "lists 'b' twice"),
        (
            '{"keep": [{"id": "a", "role": "x"}, {"id": "a", "role": "y"}], "drop": ["b", "c"], "summary": "s"}',
            "lists 'a' twice",
        ),
        (reply({"a": "x" * 201}, ["b", "c"]), "at most 200"),
    ]
    for text, reason in cases:
        with pytest.raises(PruneReplyError) as exc:
            parse_prune_reply(text, NODES, TARGET)
        assert reason in exc.value.reason, (reason, exc.value.reason)
    # A node of the graph that was not listed in this part is named as such, not as invented.
    with pytest.raises(PruneReplyError, match="not listed in this prompt: 'z'"):
        parse_prune_reply(reply({"a": "x", "z": "y"}, ["b", "c"]), NODES, TARGET, elsewhere={"z"})


def test_summary_reply_schema():
    assert parse_summary_reply('{"summary": "Line one.\\nLine two."}') == "Line one.\nLine two."
    with pytest.raises(PruneReplyError, match="unexpected 'keep'"):
        parse_summary_reply('{"summary": "s", "keep": []}')
    with pytest.raises(PruneReplyError, match="not valid JSON"):
        parse_summary_reply("The circuit copies brackets.")


def test_single_prompt_lists_every_node_with_its_explanation_and_the_rules():
    G = toy_graph()
    target = TARGET
    infl = graph_influence(G, target)
    expl = {"transcoder.2/20@5": "fires inside parentheses\nand on commas"}
    msgs = single_prompt(G, task_for_graph(G, "brackets"), expl, infl, PruneConfig())
    user = msgs[1]["content"]
    for v in G:
        if v != target:
            assert f"\n{v} |" in user
    assert "fires inside parentheses and on commas" in user  # one line
    assert "(no explanation)" in user  # the other latents
    assert f"Never drop the target node ({target})" in user
    assert "He left (because" in user and "Bracket closing" in user


def test_graph_influence_follows_paths_to_the_target():
    G = toy_graph(n_per_layer=1, n_layers=2)
    infl = graph_influence(G, TARGET)
    # A chain with one parent per node: every node's normalised influence is 1 (all of its child's input).
    assert infl["transcoder.1/10@5"] == pytest.approx(1.0)
    assert infl["transcoder.0/0@5"] == pytest.approx(1.0)
    assert infl["embed@1"] == pytest.approx(1.0)
    G.add_node("attn.0/3@2", kind="attn", layer=0, position=2)
    G.add_edge("attn.0/3@2", "transcoder.1/10@5", weight=-1.5)  # |-1.5| against 0.5 from transcoder.0/0: a 3:1 share
    infl = graph_influence(G, TARGET)
    assert infl["attn.0/3@2"] == pytest.approx(0.75) and infl["transcoder.0/0@5"] == pytest.approx(0.25)
    assert infl["embed@1"] == pytest.approx(0.25)


def test_split_to_fit_halves_until_each_part_fits():
    nodes = [f"n{i}" for i in range(10)]

    def build(chunk):
        return [{"role": "user", "content": "x" * (400 * len(chunk))}]  # 100 tokens a node

    parts = split_to_fit(nodes, build, budget=320)
    assert [len(p) for p in parts] == [2, 3, 2, 3]
    assert [v for p in parts for v in p] == nodes
    assert split_to_fit(nodes, build, budget=10_000) == [nodes]
    assert split_to_fit(["only"], build, budget=1) == [["only"]]  # cannot split further


def suggestion() -> PruneSuggestion:
    return PruneSuggestion(
        model="openai/scripted",
        prompt_version="circuit-prune-v1",
        target_id=TARGET,
        mode="single prompt",
        nodes=[
            NodeSuggestion("a", "keep", "reads the bracket"),
            NodeSuggestion("b", "drop"),
            NodeSuggestion("c", "keep", "writes ')'"),
        ],
        summary="a then c.",
        target_role="the output",
    )


def test_verdicts_accept_edit_reject():
    s = suggestion()
    all_accepted = resolve_suggestion(s)
    assert all_accepted.removed_nodes == ["b"]
    assert all_accepted.node_annotations == {
        "a": {"text": "reads the bracket", "author": "openai/scripted"},
        "c": {"text": "writes ')'", "author": "openai/scripted"},
        TARGET: {"text": "the output", "author": "openai/scripted"},
    }
    assert all_accepted.summary == {"text": "a then c.", "author": "openai/scripted"}
    assert all_accepted.created_by == "openai/scripted"

    mixed = resolve_suggestion(
        s,
        {"a": Decision("edit", "  reads the\nopen bracket "), "b": Decision("reject"), "c": Decision("reject")},
        Decision("edit", "Hand-written summary."),
    )
    assert mixed.removed_nodes == []  # rejecting the drop keeps b
    assert mixed.node_annotations["a"] == {"text": "reads the open bracket", "author": "hand"}
    assert "c" not in mixed.node_annotations
    assert mixed.summary == {"text": "Hand-written summary.", "author": "hand"}
    assert mixed.provenance["verdicts"] == {"accept": 1, "edit": 1, "reject": 2}  # the target's role was accepted
    assert (
        "1 of 3 nodes suggested for dropping; suggestions 1 accepted, 1 edited, 2 rejected; summary edited"
        in mixed.note()
    )

    none = resolve_suggestion(s, {v: Decision("reject") for v in ["a", "b", "c", TARGET]}, Decision("reject"))
    assert (
        none.removed_nodes == [] and none.node_annotations == {} and none.summary is None and none.created_by == "hand"
    )

    with pytest.raises(ValueError, match="no role to edit"):
        resolve_suggestion(s, {"b": Decision("edit", "x")})
    with pytest.raises(ValueError, match="does not cover: 'zzz'"):
        resolve_suggestion(s, {"zzz": Decision("accept")})
    with pytest.raises(ValueError, match="edited to nothing"):
        resolve_suggestion(s, {"a": Decision("edit", " ")})


def test_suggestion_round_trips_through_json():
    s = suggestion()
    assert PruneSuggestion.from_json(json.loads(json.dumps(s.to_json()))) == s


# ---------------------------------------------------------------------------------------------
# Through core.llm.client with a scripted in-process provider


def keep_top_layers(messages, params) -> str:
    """A scripted pruner: keeps the latents of layers 1 and up and the target, drops the rest."""
    user = messages[-1]["content"]
    if "Summarise the algorithm" in user:
        return json.dumps({"summary": "Layer-2 latents read the bracket state from layer 1."})
    ids = listed_ids(user)
    keep = {v: f"carries the bracket state ({v})" for v in ids if v.startswith(("transcoder.1", "transcoder.2"))}
    keep[TARGET] = "the traced logit difference"
    return reply(keep, [v for v in ids if v not in keep], "Layer-1 and layer-2 latents carry the open bracket.")


def test_missing_key_fails_before_any_call(tmp_path, monkeypatch):
    import litellm

    from core.circuits.llm_pruning import suggest_pruning
    from core.llm.client import MissingCredentialsError

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)

    def forbidden(*args, **kwargs):
        raise AssertionError("no call may be made without credentials")

    monkeypatch.setattr(litellm, "acompletion", forbidden)
    monkeypatch.setattr(litellm, "completion", forbidden)
    ws = tmp_path / "ws.duckdb"
    with pytest.raises(MissingCredentialsError, match="OPENAI_API_KEY"):
        suggest_pruning(ws, toy_graph(), "openai/gpt-4o-mini")
    assert not ws.exists()  # nothing was written either


def test_single_prompt_suggestion_is_validated_and_cached(tmp_path):
    from core.circuits.llm_pruning import suggest_pruning
    from tests.llm_helpers import scripted_llm

    G = toy_graph()
    ws = tmp_path / "ws.duckdb"
    with scripted_llm(keep_top_layers) as calls:
        s = suggest_pruning(
            ws, G, "scripted/pruner", task_for_graph(G, "brackets"), {"transcoder.2/20@5": "open bracket"}
        )
        again = suggest_pruning(
            ws, G, "scripted/pruner", task_for_graph(G, "brackets"), {"transcoder.2/20@5": "open bracket"}
        )
    assert len(calls) == 1 and again.n_cached == 1 and s.n_cached == 0
    assert s.mode == "single prompt" and s.n_calls == 1 and s.prompt_version == "circuit-prune-v1"
    assert set(s.kept_ids) == {"transcoder.2/20@5", "transcoder.2/21@5", "transcoder.1/10@5", "transcoder.1/11@5"}
    assert set(s.dropped_ids) == {"transcoder.0/0@5", "transcoder.0/1@5", "embed@1"}
    assert s.target_role == "the traced logit difference" and s.summary.startswith("Layer-1 and layer-2")
    assert again.nodes == s.nodes
    sent = calls.requests[0][1][-1]["content"]
    assert "open bracket" in sent and calls.requests[0][2].get("temperature") == 0.0


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (lambda ids: "I would keep the layer-2 latents.", "not valid JSON"),
        (
            lambda ids: reply({ids[0]: "x", "transcoder.7/7@5": "invented"}, ids[1:]),
            "not in the graph: 'transcoder.7/7@5'",
        ),
        (lambda ids: reply({ids[0]: "x"}, [*ids[1:], TARGET]), "drops the target node"),
    ],
)
def test_bad_replies_are_rejected_with_the_reason(tmp_path, bad, reason):
    from core.circuits.llm_pruning import suggest_pruning
    from tests.llm_helpers import scripted_llm

    G = toy_graph()
    before = nx.node_link_data(G, edges="links")
    with scripted_llm(lambda m, p: bad(listed_ids(m[-1]["content"]))):
        with pytest.raises(PruneReplyError, match="nothing was applied") as exc:
            suggest_pruning(tmp_path / "ws.duckdb", G, "scripted/pruner")
    assert reason in exc.value.reason
    assert nx.node_link_data(G, edges="links") == before  # the graph was not touched


def test_large_graph_is_pruned_layer_by_layer_then_summarised(tmp_path):
    from core.circuits.llm_pruning import estimate_tokens, suggest_pruning
    from tests.llm_helpers import scripted_llm

    G = toy_graph(n_per_layer=6, n_layers=3)
    expl = {v: "fires on tokens inside an open parenthesis, " * 3 for v in G if v.startswith("transcoder")}
    task = task_for_graph(G, "brackets")
    whole = estimate_tokens(single_prompt(G, task, expl, graph_influence(G, TARGET), PruneConfig()))
    config = PruneConfig(max_prompt_tokens=whole - 1)
    with scripted_llm(keep_top_layers) as calls:
        s = suggest_pruning(tmp_path / "ws.duckdb", G, "scripted/pruner", task, expl, config)
    users = [r[1][-1]["content"] for r in calls.requests]
    # One call per layer, from the output down (layers 2, 1, 0, embeddings), then the summary.
    assert s.n_calls == len(users) == 5 and "Summarise the algorithm" in users[-1]
    assert [listed_ids(u, "NODES OF THIS PART")[0].split("/")[0] for u in users[:3]] == [
        "transcoder.2",
        "transcoder.1",
        "transcoder.0",
    ]
    assert listed_ids(users[3], "NODES OF THIS PART") == ["embed@1"]
    assert all(estimate_tokens(r[1]) <= config.max_prompt_tokens for r in calls.requests)
    # Later parts see what was kept downstream, with its role.
    assert "transcoder.2/20@5 | transcoder | L2 | pos 5 ' because' | carries the bracket state" in users[1]
    assert s.mode == "hierarchical: layer by layer"
    assert s.summary.startswith("Pruned hierarchically, layer by layer, in 4 parts")
    assert s.summary.endswith("Layer-2 latents read the bracket state from layer 1.")
    assert len(s.kept_ids) == 12 and len(s.dropped_ids) == 7

    # A budget too small for one layer splits the layers into subgraphs, and the summary says so.
    small = PruneConfig(max_prompt_tokens=max(500, estimate_tokens(calls.requests[0][1]) - 150))
    with scripted_llm(keep_top_layers) as calls2:
        s2 = suggest_pruning(tmp_path / "ws.duckdb", G, "scripted/pruner", task, expl, small)
    assert s2.n_calls > 5 and "split into subgraphs" in s2.mode and "split into subgraphs" in s2.summary
    assert set(s2.kept_ids) == set(s.kept_ids)
    assert all(estimate_tokens(r[1]) <= small.max_prompt_tokens for r in calls2.requests)


def test_a_rejected_part_rejects_the_whole_pruning(tmp_path):
    from core.circuits.llm_pruning import estimate_tokens, suggest_pruning
    from tests.llm_helpers import scripted_llm

    G = toy_graph(n_per_layer=6, n_layers=3)
    task = task_for_graph(G, "brackets")
    whole = estimate_tokens(single_prompt(G, task, {}, graph_influence(G, TARGET), PruneConfig()))

    def second_part_invents(messages, params):
        user = messages[-1]["content"]
        if "This is part 2:" in user:
            ids = listed_ids(user, "NODES OF THIS PART")
            return reply({"transcoder.2/20@5": "already decided"}, ids)  # a node of part 1
        return keep_top_layers(messages, params)

    with scripted_llm(second_part_invents), pytest.raises(PruneReplyError) as exc:
        suggest_pruning(
            tmp_path / "ws.duckdb", G, "scripted/pruner", task, {}, PruneConfig(max_prompt_tokens=whole - 1)
        )
    assert (
        exc.value.part.startswith("part 2, layer 1")
        and "not listed in this prompt: 'transcoder.2/20@5'" in exc.value.reason
    )


def test_node_explanations_prefer_an_llm_explainer_over_a_baseline(tmp_path):
    from core import store
    from core.circuits.saved import node_explanations

    ws = tmp_path / "ws.duckdb"
    d2 = "transcoder:blocks.2.ln2.hook_normalized"

    def rec(i, latent, explainer, is_baseline, text, baseline=None):
        return store.ExplanationRecord(f"e{i}", d2, latent, explainer, is_baseline, baseline, "top", text, "v1", {})

    store.write_explanations(
        ws,
        [
            rec(1, 20, "baseline:token-stats", True, "tokens: ' ('"),
            rec(2, 20, "openai/gpt-4o", False, "inside\nparentheses"),
            rec(3, 21, "baseline:token-stats", True, "tokens: ','"),
            rec(4, 21, "openai/gpt-4o", False, "another latent's text", baseline="random-explanation"),
        ],
    )
    G = toy_graph()
    assert {v: e.label for v, e in node_explanations(ws, G).items()} == {
        "transcoder.2/20@5": "inside parentheses [openai/gpt-4o]",
        "transcoder.2/21@5": "tokens: ',' [baseline:token-stats]",
    }
    assert (
        node_explanations(ws, G, explainer="baseline:token-stats")["transcoder.2/20@5"].label
        == "tokens: ' (' [baseline:token-stats]"
    )


# ---------------------------------------------------------------------------------------------
# Saved circuits: the accepted suggestion is a new version, the original is kept


def saved_toy(ws):
    """The toy graph saved as version 1 of circuit 'brackets' (skips until core.circuits.saved, helper `circuits`, lands)."""
    C = pytest.importorskip("core.circuits.saved")
    from core.tracing.nodes import LogitTarget

    C.save_circuit(ws, "brackets", toy_graph(), target=LogitTarget(1, 5, 2, ")", "."))
    return C.load_circuit(ws, "brackets", 1)


def test_accepted_suggestion_becomes_a_new_version_and_the_original_is_kept(tmp_path):
    from core.circuits.llm_pruning import save_pruned_version, suggest_pruning
    from tests.llm_helpers import scripted_llm

    ws = tmp_path / "ws.duckdb"
    v1 = saved_toy(ws)
    from core.circuits import saved as C

    with scripted_llm(keep_top_layers):
        s = suggest_pruning(ws, v1.graph, "scripted/pruner")
    applied = resolve_suggestion(
        s, {"transcoder.2/21@5": Decision("edit", "a hand-written role"), "transcoder.1/11@5": Decision("reject")}
    )
    v2 = save_pruned_version(ws, "brackets", applied)
    assert v2.version == 2 and v2.parent_version == 1 and v2.created_by == "scripted/pruner"
    assert set(v2.graph) == {TARGET, "transcoder.2/20@5", "transcoder.2/21@5", "transcoder.1/10@5", "transcoder.1/11@5"}
    assert v2.pruning.removed_nodes == ("embed@1", "transcoder.0/0@5", "transcoder.0/1@5")
    notes = v2.node_annotations
    assert notes["transcoder.2/20@5"] == C.Annotation(
        "carries the bracket state (transcoder.2/20@5)", "scripted/pruner"
    )
    assert notes["transcoder.2/21@5"] == C.Annotation("a hand-written role", "hand")
    assert "transcoder.1/11@5" not in notes  # rejected: left as it was
    assert v2.annotation == C.Annotation(s.summary, "scripted/pruner")
    assert "LLM pruning by scripted/pruner" in v2.note
    # Version 1 is untouched, and both are listed.
    again = C.load_circuit(ws, "brackets", 1)
    assert set(again.graph) == set(v1.graph) and set(again.graph.edges) == set(v1.graph.edges)
    assert again.node_annotations == {} and again.annotation is None
    assert sorted(v.version for v in C.list_versions(ws, "brackets")) == [1, 2]


def test_rejected_reply_saves_nothing(tmp_path):
    from core.circuits.llm_pruning import suggest_pruning
    from tests.llm_helpers import scripted_llm

    ws = tmp_path / "ws.duckdb"
    v1 = saved_toy(ws)
    from core.circuits import saved as C

    invented = reply({"transcoder.9/9@5": "made up"}, [v for v in v1.graph if v != TARGET])
    with scripted_llm(lambda m, p: invented), pytest.raises(PruneReplyError, match="not in the graph"):
        suggest_pruning(ws, v1.graph, "scripted/pruner")
    assert [v.version for v in C.list_versions(ws, "brackets")] == [1]


def test_kept_nodes_cut_off_from_the_target_leave_with_a_note(tmp_path):
    from core.circuits.llm_pruning import save_pruned_version

    ws = tmp_path / "ws.duckdb"
    v1 = saved_toy(ws)
    nodes = [
        NodeSuggestion(v, "drop" if v.startswith("transcoder.1") else "keep", "role") for v in v1.graph if v != TARGET
    ]
    s = PruneSuggestion("scripted/pruner", "circuit-prune-v1", TARGET, "single prompt", nodes, "summary")
    v2 = save_pruned_version(ws, "brackets", resolve_suggestion(s))
    # Without layer 1 nothing below it reaches the target: layer 0 and the embedding go too.
    assert set(v2.graph) == {TARGET, "transcoder.2/20@5", "transcoder.2/21@5"}
    assert set(v2.node_annotations) == {"transcoder.2/20@5", "transcoder.2/21@5"}
    assert "3 kept node(s) lost their last path to the target" in v2.note
