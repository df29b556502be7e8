"""The dataset comparison with hierarchical+QK (`compare_methods(qk=...)`, `circuits --qk`): on the planted
QK model the QK-expanded circuit holds the key-position feature that plain hierarchical tracing misses,
and is the more faithful one, under standard and active-only ablation; attribution patching is measured
at the hierarchical+QK sizes too; the table and JSON carry the new rows; a bad --qk-threshold is one line."""

from __future__ import annotations

import pytest
from qk_helpers import planted_qk_model

from core.tracing.dataset import METHODS, QK_METHODS, PreparedItem, compare_methods
from core.tracing.hierarchical import TraceParams
from core.tracing.qk import QKParams

SWEEP = (TraceParams(node_threshold=0.05), TraceParams(node_threshold=0.02))


@pytest.fixture(scope="module")
def planted_items():
    from core.build.tasks import TaskItem
    from core.tracing.nodes import LogitTarget
    from core.tracing.replacement import ReplacementModel

    model, dicts, tokens, info = planted_qk_model()
    rm = ReplacementModel(model, dicts)
    item = PreparedItem(TaskItem("planted", "A C Q", "x", "y"), rm.prepare(tokens), LogitTarget(info["token"], 3))
    return rm, [item, item], info


@pytest.mark.parametrize("active_only", [False, True])
def test_hierarchical_plus_qk_recovers_the_planted_key_feature(planted_items, active_only):
    rm, items, info = planted_items
    key = ("transcoder:blocks.0.ln2.hook_normalized", 1, 2)  # transcoder.0/2@1 as a circuit feature
    plain, graphs = compare_methods(rm, items, SWEEP, None, "zero", random_seeds=(0,), active_only=active_only)
    assert {r.method for r in plain.rows} == set(METHODS)  # without qk: the three methods as before
    result, graphs_qk = compare_methods(
        rm, items, SWEEP, None, "zero", random_seeds=(0,), active_only=active_only, qk=QKParams(qk_threshold=0.1)
    )
    assert {r.method for r in result.rows} == {*METHODS, *QK_METHODS}
    # The returned graphs are the plain hierarchical ones (expansion works on copies): none holds the feature.
    assert all(info["key_feature"] not in g for row in graphs_qk for g in row)
    from core.tracing.graph import circuit_features

    assert all(key not in circuit_features(g) for row in graphs for g in row)
    for point in range(len(SWEEP)):
        by = {r.method: r for r in result.rows if r.point == point}
        assert by["hierarchical+qk"].size == by["hierarchical"].size + 1  # the key feature joined
        assert by["attribution_patching_at_qk_size"].size == by["hierarchical+qk"].size
        assert by["hierarchical"].faithfulness == pytest.approx(
            next(r for r in plain.rows if r.point == point and r.method == "hierarchical").faithfulness
        )
        assert by["hierarchical+qk"].faithfulness > by["hierarchical"].faithfulness + 0.05
    table = result.table()
    assert "hier.+QK" in table and "AtP at +QK size" in table and "+QK" in table.splitlines()[1]
    assert {r["method"] for r in result.to_json()["rows"]} >= set(QK_METHODS)
    assert "qk_expansion" in result.timings


def test_circuits_command_refuses_a_bad_qk_threshold_before_loading(capsys):
    from core.cli import main

    assert main(["circuits", "--task", "ioi", "--qk", "--qk-threshold", "2"]) != 0
    err = capsys.readouterr().err
    assert "qk_threshold must be in [0, 1)" in err and "Traceback" not in err
