"""The six scorers, and optional ones (`OPTIONAL_SCORERS`: intruder) run only when asked for by name. `make_scorer(name, model, **options)` builds one; `OFFLINE_DEFAULTS` says which model
each uses when no LLM is given (judge, embedding model or the subject model as causal LM)."""

from __future__ import annotations

from core.autointerp.scorers.base import JUDGE, Scorer

SCORERS = ("detection", "fuzzing", "simulation", "surprisal", "embedding", "intervention")
OFFLINE_DEFAULTS = {
    "detection": JUDGE,
    "fuzzing": JUDGE,
    "simulation": JUDGE,
    "surprisal": "lm:default",
    "embedding": "embedding:all-MiniLM-L6-v2",
    "intervention": JUDGE,
}
LLM_SCORERS = ("detection", "fuzzing", "simulation")  # the scorers that can call an LLM
OPTIONAL_SCORERS = ("intruder",)  # not in the default sets (app, default job); `--scorers intruder` on the CLI
ALL_SCORERS = SCORERS + OPTIONAL_SCORERS
LLM_CAPABLE = LLM_SCORERS + ("intruder",)  # every scorer that can call an LLM
OFFLINE_DEFAULTS["intruder"] = JUDGE


def make_scorer(name: str, model: str | None = None, **options) -> Scorer:
    """A scorer by name; `model` None (or 'judge') = its offline default; an LLM id only for detection/fuzzing/simulation."""
    if name not in ALL_SCORERS:
        raise ValueError(f"unknown scorer {name!r}; valid: {', '.join(ALL_SCORERS)}")
    if model in (None, "judge", "offline"):
        model = OFFLINE_DEFAULTS[name]
    elif name not in LLM_CAPABLE and not model.startswith(("judge:", "lm:", "embedding:")):
        raise ValueError(f"scorer {name} does not call an LLM; it runs with {OFFLINE_DEFAULTS[name]}")
    if name == "detection":
        from core.autointerp.scorers.detection import DetectionScorer

        return DetectionScorer(model, **options)
    if name == "intruder":
        from core.autointerp.scorers.intruder import IntruderScorer

        return IntruderScorer(model, **options)
    if name == "fuzzing":
        from core.autointerp.scorers.fuzzing import FuzzingScorer

        return FuzzingScorer(model, **options)
    if name == "simulation":
        from core.autointerp.scorers.simulation import SimulationScorer

        return SimulationScorer(model, **options)
    if name == "embedding":
        from core.autointerp.scorers.embedding import EmbeddingScorer

        return EmbeddingScorer(model, **options)
    if name == "surprisal":
        from core.autointerp.scorers.surprisal import SurprisalScorer

        return SurprisalScorer(model, **options)
    from core.autointerp.scorers.intervention import InterventionScorer

    return InterventionScorer(model, **options)
