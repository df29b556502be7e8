"""Intervention scoring: does the explanation pick out what the subject model writes when the latent is steered?

1. Prompts: `n_prompts` fixed openings of cached contexts (BOS + `prompt_len` tokens, seeded), the
   same for every latent. Clean continuations: `n_new` greedy tokens from each, computed once per run.
2. For each latent, steer: add `scale · d` at the dictionary's `hook_out` at every position, `d` the
   latent's unit decoder direction. The scale is found by bisection (on [0, 64 × mean ‖x‖ at the hook],
   `search_steps` halvings, all latents of a batch at once) so that the mean KL divergence
   KL(clean ‖ steered) of the next-token distribution at the prompts' last position reaches `target_kl` nats.
3. Generate `n_new` greedy tokens from each prompt under that steering: the intervened continuations.
4. Score: the judge's similarity of the explanation to each continuation's text; AUROC of this
   latent's intervened continuations (positives) against negatives: by default another latent's
   intervened continuations (`negatives="other-latent"`: the next latent of the same batch), which
   cancels what all steered text shares (repetition, broken grammar) and leaves what is specific to
   this latent; or the clean continuations (`negatives="clean"`, also used when a batch has one latent).
   Offline the judge is `judge:minilm-similarity`.

Per-example rows: kind 'intervened' (truth 1) or 'clean' / 'other-latent' (truth 0), decile 0, the
continuation in `detail`; the score's params record the target and reached KL, the scale and the negatives used.
"""

from __future__ import annotations

import numpy as np

from core.autointerp.embedder import embed_texts
from core.autointerp.metrics import auroc
from core.autointerp.scorers.base import Outcome, Scorer, ScoreTask, ScoringEnv
from core.autointerp.scorers.detection import shared_judge
from core.autointerp.scorers.surprisal import load_lm, subject_dtype
from core.store.explanations import ScoreExampleRecord

PROMPT_VERSION = "intervention-v1"


def steering_prompts(
    tokens, n_contexts: int, n_prompts: int, prompt_len: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(context ids `[n_prompts]`, token ids `[n_prompts, prompt_len + 1]` with BOS first) of the fixed prompts."""
    rng = np.random.default_rng([seed, 5])
    ctx = np.sort(rng.choice(n_contexts, size=min(n_prompts, n_contexts), replace=False))
    rows = tokens.get(ctx)
    return ctx, np.asarray(rows[:, : prompt_len + 1], dtype=np.int64)


def hook_layer(hook: str) -> int:
    """The block index of a TransformerLens hook name (`blocks.2.hook_mlp_out` -> 2)."""
    return int(hook.split(".")[1])


def on_model_device(model, t):
    """`t` moved to the device of `model`'s weights (CPU tensors from numpy would not run on a GPU model)."""
    return t.to(model.cfg.device)


def last_logits(model, x, hook: str | None, dirs=None, scales=None, start_layer: int | None = None):
    """Logits at the last position `[b, vocab]` of `x` (tokens `[b, t]`, or the residual `[b, t, d]` before
    `start_layer`), with `scales[b] · dirs[b]` added at `hook` on every position when `dirs` is given.
    Only the last position is unembedded (the unembedding is most of a tiny model's cost)."""
    import torch

    hooks = []
    if dirs is not None:

        def add(act, hook=None):  # act: [b, t, d]
            return act + (scales[:, None, None] * dirs[:, None, :]).to(act.dtype)

        hooks = [(hook, add)]
    with torch.inference_mode(), model.hooks(fwd_hooks=hooks):
        resid = model(x, start_at_layer=start_layer, stop_at_layer=model.cfg.n_layers)  # [b, t, d_model]
        return model.unembed(model.ln_final(resid[:, -1:]))[:, 0]  # [b, vocab]


def find_scales(
    model,
    hook: str,
    prompts: np.ndarray,
    dirs: np.ndarray,
    target_kl: float,
    steps: int,
    clean_logp,
    hi: float,
    resid_in=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per direction `dirs: [m, d]`: the steering scale whose mean last-position KL(clean ‖ steered) over the prompts is
    closest to `target_kl` by bisection on [0, hi] (`steps` halvings), and the KL reached. Returns (`[m]`, `[m]`).

    `resid_in: [p, t, d_model]`, the prompts' clean residual before the hook's block, lets every step skip
    the earlier blocks (steering cannot change them)."""
    import torch

    m, p = len(dirs), len(prompts)
    layer = hook_layer(hook)
    if resid_in is not None:
        x, start = resid_in.repeat(m, 1, 1), layer  # [m*p, t, d_model]
    else:
        x, start = on_model_device(model, torch.from_numpy(np.tile(prompts, (m, 1)))), None  # [m*p, t]
    d = on_model_device(model, torch.from_numpy(np.repeat(dirs, p, axis=0)).float())  # [m*p, d]
    lo = np.zeros(m)
    up = np.full(m, hi)
    clean = clean_logp.repeat(m, 1)

    def kl_at(scales: np.ndarray) -> np.ndarray:
        s = on_model_device(model, torch.from_numpy(np.repeat(scales, p)).float())
        logp = torch.log_softmax(last_logits(model, x, hook, d, s, start).float(), dim=-1)  # [m*p, vocab]
        kl = (clean.exp() * (clean - logp)).sum(-1).reshape(m, p).mean(-1)
        return kl.cpu().numpy()

    for _ in range(steps):
        mid = (lo + up) / 2
        kl = kl_at(mid)
        below = kl < target_kl
        lo = np.where(below, mid, lo)
        up = np.where(below, up, mid)
    scales = (lo + up) / 2
    return scales, kl_at(scales)


def generate(
    model, hook: str, prompts: np.ndarray, dirs: np.ndarray | None, scales: np.ndarray | None, n_new: int
) -> np.ndarray:
    """Greedy continuations `[m, p, n_new]` of every prompt under each steering (or clean, `[1, p, n_new]`, when `dirs` is None)."""
    import torch

    p = len(prompts)
    m = 1 if dirs is None else len(dirs)
    seqs = on_model_device(model, torch.from_numpy(np.tile(prompts, (m, 1))))
    d = s = None
    if dirs is not None:
        d = on_model_device(model, torch.from_numpy(np.repeat(dirs, p, axis=0)).float())
        s = on_model_device(model, torch.from_numpy(np.repeat(scales, p)).float())
    for _ in range(n_new):
        nxt = last_logits(model, seqs, hook, d, s).argmax(-1, keepdim=True)
        seqs = torch.cat([seqs, nxt], dim=1)
    return seqs[:, prompts.shape[1] :].cpu().numpy().reshape(m, p, n_new)


class InterventionScorer(Scorer):
    """AUROC of judge similarity for steered against clean continuations."""

    name = "intervention"
    prompt_version = PROMPT_VERSION
    uses_negatives = False  # its negatives are other continuations, not the latent's windows

    def __init__(
        self,
        model: str,
        target_kl: float = 1.0,
        n_prompts: int = 4,
        prompt_len: int = 12,
        n_new: int = 6,
        search_steps: int = 10,
        seed: int = 0,
        negatives: str = "other-latent",
        lm: str = "lm:default",
        batch_latents: int = 32,
    ):
        super().__init__(model)
        self.target_kl = target_kl
        self.n_prompts = n_prompts
        self.prompt_len = prompt_len
        self.n_new = n_new
        self.search_steps = search_steps
        self.seed = seed
        if negatives not in ("other-latent", "clean"):
            raise ValueError("negatives must be 'other-latent' or 'clean'")
        self.negatives = negatives
        self.lm = lm
        self.batch_latents = batch_latents

    def params(self) -> dict:
        """Everything that fixes the interventions."""
        return {
            "target_kl": self.target_kl,
            "n_prompts": self.n_prompts,
            "prompt_len": self.prompt_len,
            "n_new": self.n_new,
            "search_steps": self.search_steps,
            "seed": self.seed,
            "subject": self.lm,
            "negatives": self.negatives,
            **subject_dtype(self.lm),
        }

    def _setup(self, env: ScoringEnv):
        import torch

        model = load_lm(self.lm)
        ctx, prompts = steering_prompts(
            env.tokens, env.n_contexts, self.n_prompts, min(self.prompt_len, env.ctx_len - 1), self.seed
        )
        with torch.inference_mode():
            prompt_ids = on_model_device(model, torch.from_numpy(prompts))
            _, cache = model.run_with_cache(prompt_ids, return_type="logits")
            clean_logp = torch.log_softmax(model(prompt_ids, return_type="logits")[:, -1].float(), dim=-1)
        norms = {
            name: float(cache[name][:, 1:].norm(dim=-1).mean())
            for name in cache.keys()
            if name.endswith(("hook_resid_pre", "hook_attn_out", "hook_mlp_out"))
        }
        clean = generate(model, "", prompts, None, None, self.n_new)[0]  # [p, n_new]
        clean_text = ["".join(env.texts[int(t)] for t in row) for row in clean]
        resid_pre = {hook_layer(n): cache[n].float() for n in cache.keys() if n.endswith("hook_resid_pre")}
        return {
            "model": model,
            "resid_pre": resid_pre,
            "ctx": ctx,
            "prompts": prompts,
            "clean_logp": clean_logp,
            "norms": norms,
            "clean_text": clean_text,
            "clean_vec": embed_texts(clean_text),
        }

    async def score(self, tasks: list[ScoreTask], env: ScoringEnv) -> list[Outcome]:
        """Steer every task's latent (batched), generate, and score the continuations with the judge."""
        setup = env.shared(f"intervention:{self.lm}:{self.params()}", lambda: self._setup(env))
        judge = shared_judge(env)
        out: list[Outcome | None] = [None] * len(tasks)
        by_hook: dict[str, list[int]] = {}
        for i, t in enumerate(tasks):
            if (
                t.decoder is None
                or t.hook_out is None
                or not np.isfinite(t.decoder).all()
                or np.linalg.norm(t.decoder) == 0
            ):
                out[i] = self.outcome(t, None, [], error="no decoder direction for this latent")
                continue
            by_hook.setdefault(t.hook_out, []).append(i)
        e = judge.explanation_vectors([t.explanation.text or "" for t in tasks])
        steered: dict[
            int, tuple[np.ndarray, list[str], float, float]
        ] = {}  # task -> (vectors [p, 384], texts, scale, kl)
        for hook, idx in by_hook.items():
            hi = 64.0 * setup["norms"].get(hook, 1.0)
            for a in range(0, len(idx), self.batch_latents):
                chunk = idx[a : a + self.batch_latents]
                dirs = np.stack([tasks[i].decoder / np.linalg.norm(tasks[i].decoder) for i in chunk]).astype(np.float32)
                scales, kls = find_scales(
                    setup["model"],
                    hook,
                    setup["prompts"],
                    dirs,
                    self.target_kl,
                    self.search_steps,
                    setup["clean_logp"],
                    hi,
                    setup["resid_pre"].get(hook_layer(hook)),
                )
                cont = generate(setup["model"], hook, setup["prompts"], dirs, scales, self.n_new)  # [m, p, n_new]
                texts = [["".join(env.texts[int(t)] for t in row) for row in c] for c in cont]
                vecs = embed_texts([s for ts in texts for s in ts]).reshape(len(chunk), len(setup["prompts"]), -1)
                for j, i in enumerate(chunk):
                    steered[i] = (vecs[j], texts[j], float(scales[j]), float(kls[j]))
        order = sorted(steered)
        for k, i in enumerate(order):
            if self.negatives == "other-latent" and len(order) > 1:
                other = order[(k + 1) % len(order)]
                neg_vec, neg_text, neg_kind = steered[other][0], steered[other][1], "other-latent"
            else:
                neg_vec, neg_text, neg_kind = setup["clean_vec"], setup["clean_text"], "clean"
            vec, text, scale, kl = steered[i]
            out[i] = self._finish(tasks[i], e[i], vec, text, neg_vec, neg_text, neg_kind, setup, scale, kl)
        return out  # type: ignore[return-value]

    def _finish(
        self,
        task: ScoreTask,
        e: np.ndarray,
        vecs: np.ndarray,
        texts: list[str],
        neg_vecs: np.ndarray,
        neg_texts: list[str],
        neg_kind: str,
        setup: dict,
        scale: float,
        kl: float,
    ) -> Outcome:
        pos = vecs @ e
        neg = neg_vecs @ e
        span = setup["prompts"].shape[1] - 1
        rows = [
            ScoreExampleRecord(j, 0, "intervened", float(s), 1.0, int(setup["ctx"][j]), 1, span, None, {"text": t})
            for j, (s, t) in enumerate(zip(pos, texts, strict=True))
        ]
        rows += [
            ScoreExampleRecord(
                len(texts) + j, 0, neg_kind, float(s), 0.0, int(setup["ctx"][j]), 1, span, None, {"text": t}
            )
            for j, (s, t) in enumerate(zip(neg, neg_texts, strict=True))
        ]
        value = auroc(np.concatenate([pos, neg]), np.concatenate([np.ones(len(pos), bool), np.zeros(len(neg), bool)]))
        return self.outcome(
            task,
            value,
            rows,
            extra_params={"scale": round(scale, 4), "kl_reached": round(kl, 4), "negatives_used": neg_kind},
        )
