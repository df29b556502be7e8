"""Steering: set chosen latents to a multiple of their activation, to zero or to a value, and see what the model says.

Method, step by step (`steer`):
1. Prepare the prompt ([BOS] + tokens) as tracing does (`ReplacementModel.prepare`): the clean run's
   attention patterns, each latent's clean activation, and at every dictionary site the error
   vector `output - reconstruction` per position.
2. Run the *replacement* model: at every dictionary site (attention-output SAEs, transcoders) the
   site's output at the prompt's positions is `decode(acts) + error`, where `acts` is the dictionary's
   encoding of the site's *current* input (BOS latents zeroed, as in tracing). Without interventions
   this is the model's own output (the error makes up the difference), so "before" is the model.
   Downstream latents are re-encoded, so an intervention propagates through them; the errors stay
   at their clean values (the graph's replacement model, as in circuit-tracer's interventions).
3. Interventions overwrite one latent's activation at given prompt positions before decoding:
   `scale` sets it to `amount` × its clean activation (1.0 leaves it, 0 removes it), `zero` to 0,
   `value` to `amount`. The decoder output changes by `(new - old) * W_dec[latent]`.
4. Attention: `frozen` holds every attention pattern of the prompt's positions at its clean value;
   `recomputed` lets the model recompute them. This is circuit-tracer's
   `feature_intervention(freeze_attention=True/False)`: it freezes the patterns only, LayerNorm
   scales are recomputed in both modes (tracing freezes them too; steering does not).
5. Before and after: the target's logit (minus the contrast's) at the last prompt position, the
   top-10 next-token probabilities, and a greedy continuation of `n_tokens` tokens (stopping at
   end-of-text). As in circuit-tracer's `feature_intervention_generate` with fixed positions, the
   interventions apply at the prompt's positions only: generated positions run the real model
   (no intervention, no frozen pattern of their own), attending to the steered prompt. Each step
   reruns the whole sequence (no KV cache; the default model is small), so a prompt position's
   values are the same at every step.

Bad input raises `SteeringError` (a UserError): no interventions, an unknown dictionary or node, a
latent or position out of range, position 0 (BOS, whose latents are not nodes), a mode that is not
one of the three, an amount that is NaN, infinite or larger than `MAX_AMOUNT` in magnitude, or a
prompt plus continuation longer than the model's context.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch

from core.errors import UserError
from core.subjects.dictionaries import Dictionary
from core.tracing.replacement import PromptState, ReplacementModel

log = logging.getLogger(__name__)

Mode = Literal["scale", "zero", "value"]
Attention = Literal["frozen", "recomputed"]
MODES: tuple[Mode, ...] = ("scale", "zero", "value")
ATTENTION_MODES: tuple[Attention, ...] = ("frozen", "recomputed")
# Latent activations of the default model's dictionaries are O(1-100); one decoder row times 1e4 outweighs
# the whole residual stream (norm O(10-100)) by orders of magnitude, so the softmax saturates and the
# result says nothing about the circuit. Larger factors or values are refused as typos.
MAX_AMOUNT = 1e4
TOP_K = 10
_NODE_ID = re.compile(r"^(attn|transcoder)\.(\d+)/(\d+)@(-?\d+)$")


class SteeringError(UserError, ValueError):
    """Steering input that cannot be run as given (the message says what to change)."""


@dataclass(frozen=True)
class Intervention:
    """Set latent `latent` of dictionary `dictionary` (at `layer`) at prompt `positions` (BOS = 0) by `mode`/`amount`."""

    dictionary: str
    layer: int
    latent: int
    positions: tuple[int, ...]
    mode: Mode
    amount: float = 0.0

    def label(self) -> str:
        """Readable form, e.g. `transcoder:blocks.2.ln2.hook_normalized/88@5,6 scale ×2`."""
        pos = ",".join(str(p) for p in self.positions)
        how = {"scale": f"scale ×{self.amount:g}", "zero": "zero", "value": f"value {self.amount:g}"}[self.mode]
        return f"{self.dictionary}/{self.latent}@{pos} {how}"

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form."""
        d = asdict(self)
        d["positions"] = list(self.positions)
        return d

    @staticmethod
    def from_json(d: dict[str, Any]) -> Intervention:
        """Inverse of `to_json`."""
        return Intervention(
            d["dictionary"],
            int(d["layer"]),
            int(d["latent"]),
            tuple(int(p) for p in d["positions"]),
            d["mode"],
            float(d["amount"]),
        )


@dataclass
class SteeringOutcome:
    """One side (before or after) of a steering run."""

    logit_diff: float  # logit(target) - logit(contrast) at the last prompt position (no contrast: logit(target))
    top: list[tuple[str, int, float]]  # top-10 next tokens: (text, id, probability), most probable first
    continuation: str  # greedy continuation, decoded
    continuation_ids: list[int]

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "logit_diff": self.logit_diff,
            "top": [{"token": t, "id": i, "p": p} for t, i, p in self.top],
            "continuation": self.continuation,
            "continuation_ids": list(self.continuation_ids),
        }

    @staticmethod
    def from_json(d: dict[str, Any]) -> SteeringOutcome:
        """Inverse of `to_json`."""
        return SteeringOutcome(
            float(d["logit_diff"]),
            [(r["token"], int(r["id"]), float(r["p"])) for r in d["top"]],
            d["continuation"],
            [int(i) for i in d["continuation_ids"]],
        )


@dataclass
class SteeringResult:
    """A steering run: what was done, and the model's outputs before and after."""

    prompt_tokens: list[str]  # [BOS] + prompt, as token texts
    interventions: list[Intervention]
    attention: Attention
    n_tokens: int
    target: str  # target token text (the model's top token before steering when none was given)
    contrast: str | None
    before: SteeringOutcome
    after: SteeringOutcome
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def metric_label(self) -> str:
        """What `logit_diff` measures, e.g. `logit(' Mary') − logit(' John')`."""
        return f"logit({self.target!r})" + (f" − logit({self.contrast!r})" if self.contrast is not None else "")

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form (what is stored with a circuit version)."""
        return {
            "prompt_tokens": list(self.prompt_tokens),
            "interventions": [i.to_json() for i in self.interventions],
            "attention": self.attention,
            "n_tokens": self.n_tokens,
            "target": self.target,
            "contrast": self.contrast,
            "before": self.before.to_json(),
            "after": self.after.to_json(),
            "seconds": round(self.seconds, 4),
            "warnings": list(self.warnings),
        }

    @staticmethod
    def from_json(d: dict[str, Any]) -> SteeringResult:
        """Inverse of `to_json`."""
        return SteeringResult(
            list(d["prompt_tokens"]),
            [Intervention.from_json(i) for i in d["interventions"]],
            d["attention"],
            int(d["n_tokens"]),
            d["target"],
            d.get("contrast"),
            SteeringOutcome.from_json(d["before"]),
            SteeringOutcome.from_json(d["after"]),
            float(d.get("seconds", 0.0)),
            list(d.get("warnings", [])),
        )


# ---------------------------------------------------------------------------------------------
# Input


InterventionSpec = Intervention | tuple  # (node id | (dictionary id, layer, latent), positions | None, mode, amount)


def parse_node_id(node: str) -> tuple[str, int, int, int]:
    """(kind, layer, latent, position) of a latent node id such as `transcoder.2/88@5`; SteeringError otherwise."""
    m = _NODE_ID.match(node.strip())
    if not m:
        raise SteeringError(
            f"{node!r} is not a latent node id; steer latents such as transcoder.2/88@5 or attn.1/417@3 "
            "(errors, embeddings and logits cannot be steered)"
        )
    return m[1], int(m[2]), int(m[3]), int(m[4])


def check_amount(mode: str, amount: float) -> float:
    """`amount` as a float if it is usable for `mode`; SteeringError for an unknown mode or a NaN/inf/absurd amount."""
    if mode not in MODES:
        raise SteeringError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    try:
        a = float(amount)
    except (TypeError, ValueError):
        raise SteeringError(f"the amount {amount!r} is not a number") from None
    if math.isnan(a) or math.isinf(a):
        raise SteeringError(f"the amount is {a}; give a finite number (e.g. 0, 2 or -1)")
    if abs(a) > MAX_AMOUNT:
        raise SteeringError(
            f"the amount {a:g} is larger than {MAX_AMOUNT:g} in magnitude: such a latent would swamp the residual "
            "stream and the result would say nothing about the circuit; use a smaller factor or value"
        )
    return 0.0 if mode == "zero" else a


def resolve_interventions(
    rm: ReplacementModel, n_positions: int, specs: Sequence[InterventionSpec]
) -> list[Intervention]:
    """Checked `Intervention`s from specs: Interventions, or tuples (node id or (dictionary id, layer, latent),
    positions or None (= the node's position), mode, amount). Positions may be negative (from the end)."""
    if not specs:
        raise SteeringError("no latent chosen to steer; pick at least one latent (a node of the graph)")
    out = []
    for spec in specs:
        if isinstance(spec, Intervention):
            where, positions, mode, amount = (
                (spec.dictionary, spec.layer, spec.latent),
                spec.positions,
                spec.mode,
                spec.amount,
            )
        else:
            if len(spec) != 4:
                raise SteeringError(f"an intervention is (latent, positions, mode, amount); got {spec!r}")
            where, positions, mode, amount = spec
        if isinstance(where, str):
            kind, layer, latent, node_pos = parse_node_id(where)
            table = rm.attn if kind == "attn" else rm.transcoders
            if layer not in table:
                raise SteeringError(f"{where!r}: the model has no {kind} dictionary at layer {layer}")
            d = table[layer]
            if positions is None:
                positions = (node_pos,)
        else:
            dict_id, layer, latent = where
            d = rm.by_id.get(dict_id)
            if d is None:
                raise SteeringError(f"unknown dictionary {dict_id!r}; steerable ones: {', '.join(rm.by_id) or 'none'}")
            if layer is not None and int(layer) != d.layer:
                raise SteeringError(f"{dict_id} is at layer {d.layer}, not {layer}")
        latent = int(latent)
        if not 0 <= latent < d.d_sae:
            raise SteeringError(f"latent {latent} is out of range: {d.id} has {d.d_sae} latents (0..{d.d_sae - 1})")
        if positions is None or len(positions) == 0:
            raise SteeringError(f"no position given for {d.id}/{latent}; give prompt positions 1..{n_positions - 1}")
        pos = []
        for p in positions:
            p = int(p)
            q = p + n_positions if p < 0 else p
            if not 0 <= q < n_positions:
                raise SteeringError(
                    f"position {p} is outside the prompt: it has {n_positions} tokens with BOS (positions 1..{n_positions - 1})"
                )
            if q == 0:
                raise SteeringError("position 0 is the BOS token; its latents are not nodes and cannot be steered")
            pos.append(q)
        a = check_amount(mode, amount)
        out.append(Intervention(d.id, d.layer, latent, tuple(sorted(set(pos))), mode, a))
    return out


# ---------------------------------------------------------------------------------------------
# The steered forward


def _plan(
    rm: ReplacementModel, state: PromptState, interventions: Sequence[Intervention]
) -> tuple[dict[str, list[tuple[int, int, float]]], list[str]]:
    """{site hook: [(position, latent, new activation)]} and warnings (scaling a latent that is not active)."""
    plan: dict[str, list[tuple[int, int, float]]] = {}
    warnings = []
    for iv in interventions:
        d = rm.by_id[iv.dictionary]
        for p in iv.positions:
            if iv.mode == "scale":
                idx = state.latent_index.get((d.id, p, iv.latent))
                clean = state.nodes[idx].activation if idx is not None else 0.0
                if clean == 0.0 and iv.amount != 1.0:
                    warnings.append(
                        f"{d.id}/{iv.latent} is not active at position {p} ({state.token_strs[p]!r}): scaling leaves it "
                        "at 0; use mode 'value' to set it"
                    )
                new = iv.amount * clean
            else:
                new = iv.amount
            plan.setdefault(d.hook_out, []).append((p, iv.latent, new))
    return plan, warnings


def _forward(
    rm: ReplacementModel,
    state: PromptState,
    tokens: torch.Tensor,
    plan: dict[str, list[tuple[int, int, float]]],
    attention: Attention,
) -> torch.Tensor:
    """Logits `[seq, d_vocab]` of the replacement model on `tokens: [seq]` (the prompt, maybe with generated
    tokens after it) with the planned latent values at the prompt's positions (module docstring, steps 2-4)."""
    n = state.n_positions
    errors = {s.hook: s.residual for s in state.sites if s.dictionary is not None}
    sites = {s.hook: s.dictionary for s in state.sites if s.dictionary is not None}
    inputs: dict[str, torch.Tensor] = {}

    def read_in(value: torch.Tensor, hook) -> torch.Tensor:
        inputs[hook.name] = value
        return value

    def write_out(value: torch.Tensor, hook) -> torch.Tensor:
        d: Dictionary = sites[hook.name]
        x = inputs.get(d.hook_in, value)[:, :n]  # [1, n, d_in]
        acts = d.encode(x)  # [1, n, d_sae]
        acts[:, 0] = 0.0  # BOS latents live in the BOS error (as in tracing)
        for p, latent, new in plan.get(hook.name, ()):
            acts[0, p, latent] = new
        out = value.clone()
        out[:, :n] = d.decode(acts) + errors[hook.name][None].to(value.dtype)
        return out

    def freeze(value: torch.Tensor, hook) -> torch.Tensor:
        out = value.clone()
        out[:, :, :n, :n] = state.frozen[hook.name]
        return out

    hooks = [(d.hook_in, read_in) for d in rm.transcoders.values()]
    hooks += [(h, write_out) for h in sites]
    if attention == "frozen":
        hooks += [(h, freeze) for h in state.frozen if h.endswith("attn.hook_pattern")]
    with torch.no_grad():
        return rm.model.run_with_hooks(tokens[None], fwd_hooks=hooks)[0].float()


def _outcome(
    rm: ReplacementModel,
    state: PromptState,
    plan: dict[str, list[tuple[int, int, float]]],
    attention: Attention,
    n_tokens: int,
    target: int | None,
    contrast: int | None,
) -> tuple[SteeringOutcome, int]:
    """One side of a steering run; also returns the target token id (the top token when `target` is None)."""
    tok = rm.model.tokenizer
    text = (lambda ids: tok.decode(ids)) if tok is not None else (lambda ids: " ".join(str(i) for i in ids))
    eos = getattr(tok, "eos_token_id", None)
    seq = state.tokens
    logits = _forward(rm, state, seq, plan, attention)  # [n, vocab]
    last = logits[-1]
    if not torch.isfinite(last).all():
        raise SteeringError("the steered model's logits are not finite; use a smaller amount")
    probs = torch.softmax(last, -1)
    p, ids = probs.topk(min(TOP_K, probs.numel()))
    top = [(text([int(i)]), int(i), float(q)) for q, i in zip(p, ids, strict=True)]
    t = int(last.argmax()) if target is None else target
    diff = float(last[t] - (last[contrast] if contrast is not None else 0.0))
    generated: list[int] = []
    nxt = int(last.argmax())
    for step in range(n_tokens):
        if eos is not None and nxt == eos:
            break
        generated.append(nxt)
        if step == n_tokens - 1:
            break
        seq = torch.cat([seq, seq.new_tensor([nxt])])
        nxt = int(_forward(rm, state, seq, plan, attention)[-1].argmax())
    return SteeringOutcome(diff, top, text(generated), generated), t


def steer(
    model,
    dictionaries: Sequence[Dictionary] | ReplacementModel,
    prompt_or_tokens: str | torch.Tensor,
    interventions: Sequence[InterventionSpec],
    *,
    attention: Attention = "frozen",
    n_tokens: int = 10,
    target: str | None = None,
    contrast: str | None = None,
    state: PromptState | None = None,
) -> SteeringResult:
    """Run the prompt with `interventions` and without, and compare (see the module docstring).

    `prompt_or_tokens`: text (BOS is prepended) or token ids `[pos]` with BOS first. `interventions`:
    `Intervention`s or tuples (node id such as `transcoder.2/88@5` or (dictionary id, layer, latent),
    positions (None: the node's position), mode in {scale, zero, value}, amount). `target`/`contrast`:
    token texts for the logit difference at the last position (default: the model's top token before
    steering, no contrast). `state`: a prepared prompt to reuse (from `ReplacementModel.prepare`).
    """
    t0 = time.perf_counter()
    if attention not in ATTENTION_MODES:
        raise SteeringError(f"attention must be one of {', '.join(ATTENTION_MODES)}, got {attention!r}")
    if isinstance(n_tokens, bool) or not isinstance(n_tokens, int) or not 0 <= n_tokens <= 100:
        raise SteeringError(f"the number of tokens to generate must be 0..100, got {n_tokens!r}")
    rm = dictionaries if isinstance(dictionaries, ReplacementModel) else ReplacementModel(model, dictionaries)
    try:
        if isinstance(prompt_or_tokens, str):
            tokens = rm.tokenize(prompt_or_tokens)
        else:
            tokens = torch.as_tensor(prompt_or_tokens, dtype=torch.long).flatten()
        n_ctx = rm.model.cfg.n_ctx
        if tokens.numel() + max(n_tokens - 1, 0) > n_ctx:
            raise SteeringError(
                f"the prompt is {tokens.numel()} tokens with BOS; with {n_tokens} generated tokens it would pass "
                f"this model's context of {n_ctx}: shorten the prompt or generate fewer tokens"
            )
        target_id = rm.token_id(target) if target else None
        contrast_id = rm.token_id(contrast) if contrast else None
        if target_id is not None and target_id == contrast_id:
            raise SteeringError(f"the target and the contrast are the same token ({target!r}); give another contrast")
    except UserError:
        raise
    except ValueError as exc:  # empty or over-long prompt, a target that is not one token
        raise SteeringError(str(exc)) from exc
    ivs = resolve_interventions(rm, int(tokens.numel()), interventions)
    if state is None or not torch.equal(state.tokens.cpu(), tokens.cpu()):
        state = rm.prepare(tokens)
    plan, warnings = _plan(rm, state, ivs)
    before, t_id = _outcome(rm, state, {}, attention, n_tokens, target_id, contrast_id)
    after, _ = _outcome(rm, state, plan, attention, n_tokens, t_id, contrast_id)
    tok = rm.model.tokenizer
    target_text = target if target else (tok.decode([t_id]) if tok is not None else str(t_id))
    result = SteeringResult(
        list(state.token_strs),
        ivs,
        attention,
        n_tokens,
        target_text,
        contrast or None,
        before,
        after,
        time.perf_counter() - t0,
        warnings,
    )
    log.info("steer: %.3f s (%d interventions, %s attention)", result.seconds, len(ivs), attention)
    return result


def bench_steer(model=None, dictionaries=None, repeats: int = 3, threads: int = 1) -> float:
    """Seconds of one steering run on the default model: the IOI prompt, its most active latent at the last
    position zeroed, a 10-token continuation before and after, frozen attention; median of `repeats` runs after
    a warm-up, each preparing the prompt itself. Loads the default model when none is given. Runs with
    `threads` torch threads (restored after): on 2 busy cores two OpenMP threads oversubscribe them (measured
    0.7-1.2 s with 1 thread, 9-13 s with 2, while other jobs ran), as the Circuits page found for tracing."""
    import statistics

    if model is None:
        from core.subjects.dictionaries import load_default_dictionaries
        from core.subjects.models import load_model
        from core.tracing.loading import tracing_dictionaries

        model = load_model("default")
        dictionaries = tracing_dictionaries(load_default_dictionaries().values())
    before_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rm = ReplacementModel(model, dictionaries)
        prompt = "When Mary and John went to the store, John gave a drink to"
        state = rm.prepare(rm.tokenize(prompt))
        last = state.n_positions - 1
        best = max(
            (i for i in state.latent_node_indices() if state.nodes[i].position == last),
            key=lambda i: state.nodes[i].activation,
        )
        node = state.nodes[best].node_id
        times = []
        for _ in range(repeats + 1):
            r = steer(model, rm, prompt, [(node, None, "zero", 0.0)], n_tokens=10, target=" Mary", contrast=" John")
            times.append(r.seconds)
    finally:
        torch.set_num_threads(before_threads)
    return statistics.median(times[1:])
