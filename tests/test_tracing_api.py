"""trace_prompt, its input errors, and the `trace` / `circuits` commands on a tiny default-like build."""

from __future__ import annotations

import argparse
import json
import shutil

import pytest
import torch
from tracing_helpers import exact_dictionaries, relu_model


@pytest.fixture(scope="module")
def tiny(tiny_tokenizer):
    model = relu_model(tiny_tokenizer, n_ctx=96, seed=7)
    return model, exact_dictionaries(model, seed=7)


def test_trace_prompt_end_to_end(tiny):
    from core.tracing.api import trace_prompt
    from core.tracing.hierarchical import TraceParams

    model, dicts = tiny
    steps = []
    res = trace_prompt(
        model,
        dicts,
        "When Mary and John went to the store, John gave a drink to",
        target=" Mary",
        contrast=" John",
        params=TraceParams(node_threshold=0.05),
        ablation="zero",
        progress=lambda m, done, total: steps.append(done / total),
    )
    G = res.graph
    assert G.graph["target"]["node_id"].startswith("logit@") and "' Mary'-' John'" in G.graph["target"]["node_id"]
    assert res.summary()["n_latents"] >= 1
    f = res.faithfulness
    assert f is not None and f.n_prompts == 1 and f.ablation == "zero"
    assert not (f.faithfulness != f.faithfulness)  # not NaN
    assert steps and steps[-1] == 1.0 and steps == sorted(steps)
    json.dumps(res.summary())
    # The default target is the model's top token.
    top = trace_prompt(model, dicts, "Tom and Anna met at the park", faithfulness=False, with_full_graph=True)
    assert top.graph.graph["target"]["kind"] == "logit" and top.full_graph_backward >= top.graph.graph["n_backward"]


def test_bad_input_is_a_clear_error(tiny):
    from core.subjects.tokens import TokenizationError
    from core.tracing.api import trace_prompt

    model, dicts = tiny
    with pytest.raises(ValueError, match="empty"):
        trace_prompt(model, dicts, "   ", target=" Mary", faithfulness=False)
    with pytest.raises(ValueError, match=r"tokens with BOS; this model's context is 96"):
        trace_prompt(model, dicts, "Mary and John " * 60, target=" Mary", faithfulness=False)
    with pytest.raises(TokenizationError, match=r"Zebraquux.* tokens \["):
        trace_prompt(model, dicts, "Mary and John", target=" Zebraquux", faithfulness=False)
    with pytest.raises(TokenizationError, match="Xylophone"):
        trace_prompt(model, dicts, "Mary and John", target=" Mary", contrast=" Xylophone", faithfulness=False)
    tc = next(d for d in dicts if d.kind == "transcoder")
    with pytest.raises(ValueError, match=rf"latent 9999 is out of range: {tc.id} has {tc.d_sae} latents"):
        trace_prompt(model, dicts, "Mary and John", latent=(tc.id, 9999), faithfulness=False)
    with pytest.raises(ValueError, match="unknown dictionary"):
        trace_prompt(model, dicts, "Mary and John", latent=("transcoder:nowhere", 1), faithfulness=False)
    with pytest.raises(ValueError, match="outside the prompt"):
        trace_prompt(model, dicts, "Mary and John", target=" Mary", position=40, faithfulness=False)
    with pytest.raises(ValueError, match="mean ablation needs latent means"):
        trace_prompt(model, dicts, "Mary and John", target=" Mary")


def test_latent_target(tiny):
    from core.tracing.api import trace_prompt

    model, dicts = tiny
    tc = next(d for d in dicts if d.kind == "transcoder" and d.layer == 1)
    res = trace_prompt(model, dicts, "Mary and John went home", latent=(tc.id, 3), position=3, ablation="zero")
    assert res.graph.graph["target"]["node_id"] == "transcoder.1/3@3"
    assert res.faithfulness is not None


@pytest.fixture(scope="module")
def build_root(tmp_path_factory, tiny, tiny_tokenizer_dir):
    """A folder laid out like data/default: model, tokenizer, dictionaries, corpus, manifest."""
    from core.build.corpus import BrownDocument, save_corpus
    from core.build.tasks import TaskSplit
    from core.paths import default_paths
    from core.subjects.dictionaries import save_dictionary
    from core.subjects.models import save_model

    model, dicts = tiny
    root = tmp_path_factory.mktemp("default")
    paths = default_paths(root)
    save_model(model, paths["model_dir"])
    shutil.copytree(tiny_tokenizer_dir, paths["tokenizer_dir"])
    for d in dicts:
        save_dictionary(d, paths["dictionaries_dir"])
    text = "When Mary and John went to the store, John gave a drink to Mary. He left early (because it was late). " * 30
    save_corpus([BrownDocument("ca10", "a", text)], paths["corpus"])
    split = TaskSplit(
        ("Mary", "John"),
        ("Tom", "Anna", "Mary", "John"),
        (("key", "keys"),),
        (("key", "keys"), ("cabinet", "cabinets")),
    )
    paths["manifest"].write_text(json.dumps({"model_training": {}, "task_split": split.to_json()}))
    return root


def _run(argv: list[str]) -> int:
    from core.tracing import commands

    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.run(args)


def test_trace_command_json(build_root, capsys, tmp_path):
    code = _run(
        [
            "trace",
            "--root",
            str(build_root),
            "--prompt",
            "When Mary and John went to the store, John gave a drink to",
            "--target",
            " Mary",
            "--contrast",
            " John",
            "--json",
            "--threads",
            "1",
            "--means-windows",
            "4",
            "--out",
            str(tmp_path / "g.json"),
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["n_nodes"] >= 2 and out["n_backward"] >= 1
    assert out["faithfulness"]["ablation"] == "mean" and out["faithfulness"]["n_prompts"] == 1
    assert (tmp_path / "g.json").exists()


def test_circuits_command(build_root, capsys):
    code = _run(
        [
            "circuits",
            "--root",
            str(build_root),
            "--task",
            "ioi",
            "--n",
            "3",
            "--json",
            "--threads",
            "1",
            "--means-windows",
            "4",
            "--thresholds",
            "0.2,0.05",
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["task"] == "ioi" and out["n_prompts"] == 3
    methods = {(r["method"], r["point"]) for r in out["rows"]}
    assert methods == {(m, p) for m in ("hierarchical", "attribution_patching", "random") for p in (0, 1)}
    sizes = {(r["method"], r["point"]): r["size"] for r in out["rows"]}
    assert sizes[("hierarchical", 0)] == sizes[("attribution_patching", 0)] == sizes[("random", 0)]
    assert sizes[("hierarchical", 0)] <= sizes[("hierarchical", 1)]


def test_metric_positions_follow_each_prompt(tiny):
    """Prompts of different lengths are padded; each target is read at its own last position."""
    from core.build.tasks import TaskItem
    from core.tracing.ablation import metric_values
    from core.tracing.dataset import padded_tokens, prepare_items
    from core.tracing.replacement import ReplacementModel

    model, dicts = tiny
    rm = ReplacementModel(model, dicts)
    items = [
        TaskItem("ioi", "Mary and John went to the store", " Mary", " John"),
        TaskItem("ioi", "Tom gave a drink to", " Anna", " Tom"),
    ]
    prepared, skipped = prepare_items(rm, items)
    assert skipped == 0
    tokens = padded_tokens(prepared)
    got = metric_values(model, dicts, tokens, [p.target for p in prepared], None, "ablate", None, "zero")
    for p, v in zip(prepared, got, strict=True):
        with torch.no_grad():
            logits = model(p.state.tokens[None])[0, -1]
        assert float(v) == pytest.approx(float(logits[p.target.token] - logits[p.target.contrast]), abs=1e-4)


def test_latent_argument_parsing():
    from core.tracing.commands import _parse_latent

    assert _parse_latent("transcoder:blocks.1.ln2.hook_normalized:42") == (
        "transcoder:blocks.1.ln2.hook_normalized",
        42,
    )
    assert _parse_latent(None) is None
    with pytest.raises(ValueError, match="DICTIONARY_ID:LATENT"):
        _parse_latent("transcoder:blocks.1.ln2.hook_normalized:x")
