"""The pruning comparison: circuits at the LLM's size and their four measures, on small models with known answers."""

from __future__ import annotations

import pytest
import torch
from circuit_llm_helpers import listed_ids
from tracing_helpers import exact_dictionaries, planted_model, relu_model


@pytest.fixture(scope="module")
def planted():
    from core.build.tasks import TaskItem
    from core.tracing.dataset import PreparedItem
    from core.tracing.hierarchical import TraceParams, hierarchical_trace
    from core.tracing.nodes import LogitTarget
    from core.tracing.replacement import ReplacementModel

    model, dicts, tokens, info = planted_model()
    rm = ReplacementModel(model, dicts)
    state = rm.prepare(tokens)
    target = LogitTarget(info["token"], info["position"])
    # A loose trace, so the graph holds distractors besides the planted path.
    G = hierarchical_trace(rm, state, target, TraceParams(node_threshold=0.001, max_parents=8))
    item = PreparedItem(TaskItem("planted", "<planted>", "7", "-"), state, target)
    return rm, item, G, info


def test_known_pruning_gets_the_faithfulness_of_its_circuit(planted):
    """Keeping the planted path: the LLM row equals the formulas applied to direct ablation runs of that circuit."""
    from core.circuits.pruning_comparison import compare_pruning
    from core.tracing.ablation import metric_values

    rm, item, G, info = planted
    p = info["position"]
    # The weak side path is in the graph, besides the planted path.
    assert "transcoder.1/1" in {a.get("feature_key") for _, a in G.nodes(data=True)}
    kept = {f"transcoder.0/{info['layer0_latent']}", f"transcoder.1/{info['layer1_latent']}", "embed:'3'"}
    res = compare_pruning(rm, [item], [G], kept, means=None, ablation="zero", random_seeds=(0, 1))
    rows = {r.method: r for r in res.rows}
    assert list(rows) == ["llm", "threshold", "attribution_patching", "random", "traced"]
    tc0, tc1 = (d.id for d in rm.dictionaries)
    circuit = [frozenset({(tc0, p, info["layer0_latent"]), (tc1, p, info["layer1_latent"])})]
    tokens, targets = item.state.tokens[None], [item.target]
    m_full = float(metric_values(rm.model, rm.dictionaries, tokens, targets, None, "ablate", None, "zero")[0])
    m_empty = float(metric_values(rm.model, rm.dictionaries, tokens, targets, None, "keep", None, "zero")[0])
    m_c = float(metric_values(rm.model, rm.dictionaries, tokens, targets, circuit, "keep", None, "zero")[0])
    m_mc = float(metric_values(rm.model, rm.dictionaries, tokens, targets, circuit, "ablate", None, "zero")[0])
    llm = rows["llm"]
    assert llm.size == 2
    assert res.metric_full == pytest.approx(m_full) and res.metric_empty == pytest.approx(m_empty)
    assert llm.faithfulness == pytest.approx((m_c - m_empty) / (m_full - m_empty), rel=1e-5)
    assert llm.completeness == pytest.approx((m_mc - m_empty) / (m_full - m_empty), rel=1e-5, abs=1e-6)
    assert llm.sufficiency == pytest.approx(m_c / m_full, rel=1e-5)
    assert llm.necessity == pytest.approx(1 - m_mc / m_full, rel=1e-5)
    # The planted path carries the output: sufficient, and nothing is left without it.
    assert llm.faithfulness > 0.9 and abs(llm.completeness) < 0.1
    # Influence on the same graph also ranks the planted path first, so threshold pruning agrees.
    assert rows["threshold"].size == 2
    assert rows["threshold"].faithfulness == pytest.approx(llm.faithfulness)
    # Every method is compared at the LLM's size; the unpruned graph keeps all its latents.
    assert rows["attribution_patching"].size == 2 and rows["random"].size == 2
    assert rows["traced"].size == sum(1 for _, a in G.nodes(data=True) if a["kind"] == "transcoder") > 2
    assert "LLM pruning" in res.table() and "| threshold (influence) | 2.0 |" in res.markdown()


def test_keeping_only_the_side_path_is_neither_sufficient_nor_complete(planted):
    from core.circuits.pruning_comparison import compare_pruning

    rm, item, G, info = planted
    res = compare_pruning(rm, [item], [G], {"transcoder.1/1", "transcoder.0/3"}, ablation="zero", random_seeds=(0,))
    llm = res.rows[0]
    assert llm.method == "llm" and llm.size == 1  # transcoder.0/3 (a dead end) is not in this prompt's graph
    assert llm.faithfulness < 0.1 and llm.completeness > 0.9 and llm.necessity < 0.1


def test_kept_keys_map_to_each_prompts_own_positions():
    """Position-free keys select, per prompt, the latents of that prompt's graph, wherever they sit."""
    from core.build.tasks import TaskItem
    from core.circuits.pruning_comparison import circuits_from_keys, compare_pruning, influence_circuit
    from core.tracing.dataset import PreparedItem, aggregate_graphs
    from core.tracing.hierarchical import TraceParams, hierarchical_trace
    from core.tracing.nodes import LogitTarget
    from core.tracing.replacement import ReplacementModel

    model = relu_model(d_vocab=64, seed=2)
    rm = ReplacementModel(model, exact_dictionaries(model, seed=2))
    g = torch.Generator().manual_seed(6)
    prepared, graphs = [], []
    for length in (9, 11):
        tokens = torch.tensor([0] + torch.randint(1, 64, (length - 1,), generator=g).tolist())
        state = rm.prepare(tokens)
        target = LogitTarget(4, length - 1, 9)
        prepared.append(PreparedItem(TaskItem("t", "p", "a", "b"), state, target))
        graphs.append(hierarchical_trace(rm, state, target, TraceParams(node_threshold=0.05, max_parents=4)))
    assert all(any(a["kind"] in ("attn", "transcoder") for _, a in G.nodes(data=True)) for G in graphs)
    agg = aggregate_graphs(graphs)
    keys = sorted(v for v, a in agg.nodes(data=True) if a["kind"] in ("attn", "transcoder"))[::2]
    circuits = circuits_from_keys(graphs, keys)
    for G, c in zip(graphs, circuits, strict=True):
        expected = set()
        for v, a in G.nodes(data=True):
            key, _, pos = v.rpartition("@")  # ids read 'transcoder.1/17@5': the key, then the position
            if key in keys:
                expected.add((a["dictionary"], int(pos), a["latent"]))
        assert c == expected
    sizes = [len(c) for c in circuits]
    assert [len(influence_circuit(G, n)) for G, n in zip(graphs, sizes, strict=True)] == sizes
    res = compare_pruning(rm, prepared, graphs, keys, ablation="zero", random_seeds=(0,))
    assert all(r.size == pytest.approx(sum(sizes) / 2) for r in res.rows if r.method != "traced")


def test_command_fails_clearly_without_an_llm(monkeypatch, capsys):
    """Offline there is no LLM: the command stops before loading anything, naming what is missing."""
    from core.cli import main

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert main(["circuits", "--compare-pruning", "--task", "brackets"]) == 2
    assert "--compare-pruning needs --llm MODEL" in capsys.readouterr().err
    assert main(["circuits", "--compare-pruning", "--task", "sva", "--llm", "openai/gpt-4o-mini"]) == 2
    err = capsys.readouterr().err
    assert "OPENAI_API_KEY" in err and "Traceback" not in err


@pytest.mark.slow
def test_command_runs_end_to_end_on_the_default_with_a_scripted_llm(tmp_path, capsys):
    """The whole command on the embedded default, with a scripted LLM that keeps every other listed latent."""
    import json

    from core import store
    from core.cli import main
    from tests.llm_helpers import scripted_llm

    def every_other_latent(messages, params):
        user = messages[-1]["content"]
        if "Summarise the algorithm" in user:
            return json.dumps({"summary": "scripted summary"})
        ids = listed_ids(user)
        keep = [v for v in ids if v.startswith(("attn.", "transcoder."))][::2]
        return json.dumps(
            {
                "keep": [{"id": v, "role": "scripted role"} for v in keep],
                "drop": [v for v in ids if v not in keep],
                "summary": "part",
            }
        )

    ws = tmp_path / "ws.duckdb"
    with store.session(ws, write=True):  # an empty workspace: no explanations, the response cache only
        pass
    out = tmp_path / "out"
    with scripted_llm(every_other_latent):
        code = main(
            [
                "circuits",
                "--compare-pruning",
                "--task",
                "brackets",
                "--n",
                "2",
                "--llm",
                "scripted/pruner",
                "--workspace",
                str(ws),
                "--out",
                str(out),
                "--json",
                "--threads",
                "1",
            ]
        )
    assert code == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = {r["method"]: r for r in record["rows"]}
    assert list(rows) == ["llm", "threshold", "attribution_patching", "random", "traced"]
    assert rows["llm"]["size"] > 0
    assert (
        rows["threshold"]["size"]
        == rows["attribution_patching"]["size"]
        == rows["random"]["size"]
        == rows["llm"]["size"]
    )
    assert rows["traced"]["size"] > rows["llm"]["size"]
    assert record["llm"]["model"] == "scripted/pruner" and record["llm"]["n_calls"] >= 1
    assert (out / "brackets-pruning-comparison.json").exists() and (out / "brackets-pruning-suggestion.json").exists()
