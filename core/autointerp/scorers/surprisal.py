"""Surprisal scoring: does prompting a causal LM with the explanation make the activating examples less surprising?

For every scoring example window, the mean loss (nats per token) of its tokens under a causal LM is
computed twice: after the prompt `Text about {explanation}:` and after the generic prompt
`Text about anything:`. The example's prediction is the drop in loss the explanation buys
(generic − explained); the score is the AUROC of that drop for activating windows against
non-activating ones (delphi's surprisal scorer, seed paper §3).

The LM is `lm:<name>`, a model loadable by `core.subjects.models.load_model` — by default `lm:default`, the
workspace's own subject model. That tiny model was never taught to read instructions, so what this
measures offline is mostly lexical priming: whether words of the explanation make the window's
tokens more predictable (e.g. an explanation quoting the activating token makes that token cheaper).
Each window's generic loss is computed once per run and shared by every latent.
"""

from __future__ import annotations

import itertools

import numpy as np

from core.autointerp.metrics import auroc
from core.autointerp.scorers.base import Outcome, Scorer, ScoreTask, ScoringEnv, example_record

PROMPT_VERSION = "surprisal-v1"
TEMPLATE = "Text about {explanation}:\n"
GENERIC = "anything"
MAX_PREFIX_TOKENS = 48


_LMS: dict[str, object] = {}


def _lm_key(name: str) -> str:
    """`lm:<name>`; the default read from another root than `data/default` (`core.paths.default_root_at`) is
    `lm:default@<root>`, so a build elsewhere never gets the shipped model from this memo, nor the reverse."""
    from core.paths import default_root, is_shipped_default

    name, root = name.removeprefix("lm:"), default_root()
    if name == "default" and not is_shipped_default(root):
        return f"lm:default@{root.resolve()}"
    return f"lm:{name}"


def register_lm(name: str, model) -> None:
    """Make `model` (a HookedTransformer with a tokenizer) available as `lm:<name>` (tests, notebooks)."""
    _LMS[f"lm:{name.removeprefix('lm:')}"] = model


def subject_dtype(name: str) -> dict:
    """`{"dtype": "bfloat16"}` (say) when the `lm:` model registered as `name` computes in another dtype than
    float32, else `{}`: merged into the params of scorers that run it, so a score records the precision it was
    made in and a float32 score's id stays what it was."""
    model = _LMS.get(_lm_key(name))
    dtype = str(getattr(getattr(model, "cfg", None), "dtype", "float32")).removeprefix("torch.")
    return {} if dtype == "float32" else {"dtype": dtype}


def load_lm(name: str):
    """A causal LM by `lm:` name (`lm:default`, `lm:gpt2`, or one given to `register_lm`), loaded once per process, in eval mode."""
    key = _lm_key(name)
    if key not in _LMS:
        from core.subjects.models import load_model

        model = load_model(name.removeprefix("lm:"), device="cpu")
        model.eval()
        _LMS[key] = model
    return _LMS[key]


def sequence_losses(
    model, prefixes: list[list[int]], windows: list[np.ndarray], batch_tokens: int = 8192
) -> np.ndarray:
    """Mean loss (nats/token) of each `windows[i]: [L_i]` after `prefixes[i]` (ids, BOS first) under `model`: `[n]`.

    Sequences are right-padded within a batch (a causal model never sees padding to the right), so
    padding never changes a loss; batches are cut to about `batch_tokens` tokens.
    """
    import torch

    n = len(windows)
    out = np.zeros(n, dtype=np.float64)
    lengths = np.asarray([len(p) + len(w) for p, w in zip(prefixes, windows, strict=True)])
    order = np.argsort(-lengths, kind="stable")
    i = 0
    while i < n:
        t_max = int(lengths[order[i]])
        bsz = max(1, batch_tokens // t_max)
        idx = order[i : i + bsz]
        seq = np.zeros((len(idx), t_max), dtype=np.int64)
        for r, k in enumerate(idx):
            s = list(prefixes[k]) + [int(t) for t in windows[k]]
            seq[r, : len(s)] = s
        with torch.inference_mode():
            logits = model(torch.from_numpy(seq), return_type="logits")  # [b, t, vocab]
            logp = torch.log_softmax(logits.float(), dim=-1)
        for r, k in enumerate(idx):
            p, L = len(prefixes[k]), len(windows[k])
            targets = torch.from_numpy(seq[r, p : p + L])
            lp = logp[r, p - 1 : p + L - 1].gather(-1, targets[:, None])[:, 0]
            out[k] = float(-lp.mean())
        i += bsz
    return out


def subset_examples(exs: list, n_per_decile: int, n_negatives: int) -> list:
    """At most `n_per_decile` activating examples per decile, then `n_negatives` non-activating ones alternating between kinds."""
    seen: dict[int, int] = {}
    chosen = []
    for ex, kind in exs:
        if kind == "activating" and seen.get(ex.decile, 0) < n_per_decile:
            seen[ex.decile] = seen.get(ex.decile, 0) + 1
            chosen.append((ex, kind))
    by_kind: dict[str, list] = {}
    for ex, kind in exs:
        if kind != "activating":
            by_kind.setdefault(kind, []).append((ex, kind))
    negs = [x for group in itertools.zip_longest(*by_kind.values()) for x in group if x is not None]
    return chosen + negs[:n_negatives]


class SurprisalScorer(Scorer):
    """AUROC of the loss drop (generic prompt − explanation prompt) for activating vs non-activating windows."""

    name = "surprisal"
    prompt_version = PROMPT_VERSION

    def __init__(self, model: str, n_per_decile: int = 1, n_negatives: int = 10):
        super().__init__(model)
        self.n_per_decile = n_per_decile
        self.n_negatives = n_negatives

    def params(self) -> dict:
        """The prompt template, generic explanation and how many examples are run through the LM."""
        return {
            "template": TEMPLATE,
            "generic": GENERIC,
            "n_per_decile": self.n_per_decile,
            "n_negatives": self.n_negatives,
            **subject_dtype(self.model),
        }

    def examples(self, task: ScoreTask) -> list:
        """`n_per_decile` activating windows per decile and `n_negatives` negatives (random and hard, alternating)."""
        return subset_examples(task.sets.scoring_examples(), self.n_per_decile, self.n_negatives)

    def _prefix(self, model, explanation: str, window: int) -> list[int]:
        """BOS + the prompt's tokens, cut so that prompt and window fit the model's context."""
        limit = max(1, min(MAX_PREFIX_TOKENS, model.cfg.n_ctx - window - 1))
        ids = model.tokenizer.encode(TEMPLATE.format(explanation=explanation), add_special_tokens=False)[:limit]
        bos = model.tokenizer.bos_token_id
        return ([bos] if bos is not None else []) + list(ids)

    async def score(self, tasks: list[ScoreTask], env: ScoringEnv) -> list[Outcome]:
        """Losses of every example under both prompts (generic ones shared across latents), then AUROC per task."""
        model = load_lm(self.model)
        generic_cache: dict = env.shared(f"{self.model}:generic-losses", dict)
        examples = [self.examples(t) for t in tasks]
        window = max((len(ex.tokens) for exs in examples for ex, _ in exs), default=1)
        generic_prefix = self._prefix(model, GENERIC, window)

        need = {}
        for exs in examples:
            for ex, _ in exs:
                key = (int(ex.context), int(ex.start), len(ex.tokens))
                if key not in generic_cache:
                    need[key] = ex.tokens
        if need:
            keys = list(need)
            losses = sequence_losses(model, [generic_prefix] * len(keys), [need[k] for k in keys])
            generic_cache.update(zip(keys, losses, strict=True))

        prefixes, windows, owner = [], [], []
        for ti, (task, exs) in enumerate(zip(tasks, examples, strict=True)):
            pre = self._prefix(model, task.explanation.text or "", window)
            for ex, _ in exs:
                prefixes.append(pre)
                windows.append(ex.tokens)
                owner.append(ti)
        explained = sequence_losses(model, prefixes, windows) if windows else np.zeros(0)

        out, k = [], 0
        for task, exs in zip(tasks, examples, strict=True):
            drops, rows = [], []
            for j, (ex, kind) in enumerate(exs):
                g = generic_cache[(int(ex.context), int(ex.start), len(ex.tokens))]
                drop = g - explained[k]
                k += 1
                drops.append(drop)
                rows.append(
                    example_record(
                        j,
                        ex,
                        kind,
                        drop,
                        float(kind == "activating"),
                        {"loss_generic": round(float(g), 4), "loss_explained": round(float(g - drop), 4)},
                    )
                )
            truth = np.asarray([kind == "activating" for _, kind in exs])
            out.append(self.outcome(task, auroc(np.asarray(drops), truth) if exs else None, rows))
        return out
