"""A decile's accuracy is the recall on activating examples for every scorer; fuzzing's mis-marked
windows (activating windows shown with wrong marks, truth 0) are reported apart, not mixed in."""

from __future__ import annotations

import math

import pandas as pd

from core.analysis import analyses as an


def _fuzzing_frame(n_expl: int = 6) -> pd.DataFrame:
    """Per decile and explanation: 2 correctly marked windows accepted (truth 1, predicted 1), 2
    mis-marked windows also accepted (truth 0, predicted 1: not rejected), and 2 non-activating
    windows rejected (decile 0, truth 0, predicted 0): recall 1, mis-marked rejection 0, specificity 1."""
    rows = []
    for e in range(n_expl):
        for d in range(11):
            cases = [(0.0, 0.0)] * 2 if d == 0 else [(1.0, 1.0)] * 2 + [(0.0, 1.0)] * 2  # (truth, prediction)
            for i, (truth, pred) in enumerate(cases):
                rows.append(
                    {
                        "dictionary": "resid:blocks.2.hook_resid_pre",
                        "latent": e,
                        "baseline": None,
                        "strategy": "top",
                        "scorer": "fuzzing",
                        "scorer_model": "judge:x",
                        "score_id": f"fuzz{e}",
                        "example": 10 * d + i,
                        "decile": d,
                        "kind": "activating" if d else "random-negative",
                        "prediction": pred,
                        "truth": truth,
                    }
                )
    return pd.DataFrame(rows)


def test_fuzzing_decile_accuracy_is_recall_and_mismarked_rejection_is_apart():
    (curve,) = an.decile_curves(_fuzzing_frame()).curves
    # the mixed definition gave 0.5 in every decile 1..10 (all correct marks accepted, no wrong one rejected)
    assert curve.accuracy == [1.0] * 11
    assert curve.n_examples == [12] * 11 and curve.n_explanations == [6] * 11
    assert math.isnan(curve.mismarked_rejection[0]) and curve.mismarked_rejection[1:] == [0.0] * 10
    assert curve.n_mismarked == [0] + [12] * 10


def test_detection_curves_are_unchanged_and_results_round_trip():
    frame = _fuzzing_frame()
    detection = frame[(frame["decile"] == 0) | (frame["truth"] == 1.0)].assign(scorer="detection")
    (curve,) = an.decile_curves(detection).curves
    assert curve.accuracy == [1.0] * 11 and curve.n_mismarked == [0] * 11
    assert all(math.isnan(v) for v in curve.mismarked_rejection)
    result = an.decile_curves(frame)
    back = an.from_json("deciles", an.to_json(result))
    assert back.curves[0].mismarked_rejection[1:] == result.curves[0].mismarked_rejection[1:]
    # a result stored before the split loads, without the new measure
    old = an.to_json(result)
    for c in old["curves"]:
        del c["mismarked_rejection"], c["n_mismarked"]
    assert an.from_json("deciles", old).curves[0].n_mismarked == [0] * 11


def test_real_fuzzing_rows_of_a_judge_that_accepts_everything():
    """Rows stored by FuzzingScorer itself: a judge saying yes to every window has recall 1 in each
    decile (the mixed definition said about 0.5) and rejects none of the mis-marked windows."""
    import re

    from core.autointerp.scorers import make_scorer
    from core.llm import client as llm
    from tests.autointerp_helpers import task_and_env
    from tests.llm_helpers import scripted_llm

    task, env = task_and_env(client=llm.LLMClient(None))
    scorer = make_scorer("fuzzing", "scripted/judge", n_per_prompt=5)

    def yes_to_all(messages, params):
        n = len(re.findall(r"^Example \d+: ", messages[-1]["content"], re.MULTILINE))
        return "[" + ", ".join(["1"] * n) + "]"

    with scripted_llm(yes_to_all):
        ((rec, rows),) = llm.run_sync(scorer.score([task], env))
    frame = pd.DataFrame(
        [
            {
                "dictionary": "resid:blocks.2.hook_resid_pre",
                "latent": 5,
                "baseline": None,
                "strategy": "top",
                "scorer": "fuzzing",
                "scorer_model": rec.scorer_model,
                "score_id": rec.score_id,
                "decile": r.decile,
                "kind": r.kind,
                "prediction": r.prediction,
                "truth": r.truth,
            }
            for r in rows
        ]
    )
    activating = frame[frame["kind"] == "activating"]
    assert 0 < (activating["truth"] == 0).sum() < len(activating)  # fuzzing mis-marks some activating windows
    (curve,) = an.decile_curves(frame, min_latents=1).curves
    present = sorted(set(activating["decile"]))
    assert [curve.accuracy[d] for d in present] == [1.0] * len(present)
    assert curve.accuracy[0] == 0.0  # every non-activating window was accepted too
    mismarked = sorted(set(activating.loc[activating["truth"] == 0, "decile"]))
    assert [curve.mismarked_rejection[d] for d in mismarked] == [0.0] * len(mismarked)


def test_deciles_page_keeps_mismarked_windows_apart(tmp_path):
    """The Deciles page shows fuzzing's recall per decile and its mis-marked windows' rejection apart."""
    import analysis_workspace
    from streamlit.testing.v1 import AppTest

    from core import store
    from tests.test_pages_analysis import DECILES, _texts

    ws = analysis_workspace.build(tmp_path / "ws.duckdb")
    result = an.decile_curves(_fuzzing_frame())
    fp = an.inputs_fingerprint(store.scores_frame(ws, status=None))
    store.write_analysis(ws, store.AnalysisRecord("deciles", "latents", {}, an.to_json(result), 6, fp))
    at = AppTest.from_file(DECILES, default_timeout=120)
    at.session_state["workspace"] = str(ws)
    at.run()
    assert not at.exception and at.selectbox[0].options == ["fuzzing"]
    assert list(at.dataframe[0].value.set_index("group").loc["top"]) == [1.0] * 11
    assert "Windows shown with wrong marks, share rejected: top 0.00" in _texts(at)
