"""`Contrast.p_value` (was `wilcoxon_p`): results stored under the old key still load."""

from __future__ import annotations

import math

from core.analysis import analyses as an


def test_results_stored_with_the_old_wilcoxon_p_key_still_load():
    old = {"scorer": "detection", "group": "latents", "reference": "neurons", "n": 5}
    old |= {"mean_difference": 0.2, "ci_low": 0.1, "ci_high": 0.3, "wilcoxon_p": None}
    units = an.from_json("units", {"groups": [], "contrasts": [old], "n_latents": {"latents": 5}})
    assert math.isnan(units.contrasts[0].p_value)
    dist = an.from_json(
        "distributions",
        {"groups": [], "contrasts": [old | {"wilcoxon_p": 0.04}], "n_latents": 5, "units": "latents"},
    )
    assert dist.contrasts[0].p_value == 0.04
    assert an.from_json("units", an.to_json(units)).contrasts[0].scorer == "detection"  # new key round-trips
    assert "p_value" in an.to_json(units)["contrasts"][0]
