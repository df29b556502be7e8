"""Train the dictionaries of a HookedTransformer: residual and attention-output SAEs and MLP transcoders.

For every layer L:
  resid-L<L>       SAE on `blocks.L.hook_resid_pre`
  attn-L<L>        SAE on `blocks.L.hook_attn_out`
  transcoder-L<L>  `blocks.L.ln2.hook_normalized` -> `blocks.L.hook_mlp_out`

Architecture: BatchTopK (Bussmann et al. 2024) for all three kinds, k latents per token on average
(default 32 of d_sae 2048). During training the k * batch largest pre-activations of a batch are
kept (selection by pre-activation times decoder-row norm, as SAE-Lens does), an AuxK loss revives
dead latents, and a running threshold (EMA of the smallest kept activation) is learned; at
inference the latents are a JumpReLU with that threshold. The SAEs are saved as SAE-Lens
`jumprelu` SAEs and the transcoders as SAE-Lens `jumprelu_transcoder`s, so every folder loads
with `sae_lens.SAE.load_from_disk` and no code of ours. Decoder rows are folded to unit norm, so a
latent's activation is the norm of what it writes.

Steps (each logs its wall time):
1. Wrap the token rows `[n_rows, n_ctx]` as a `datasets.Dataset`; the last `eval_rows` rows are
   held out for the metrics of step 5.
2. SAEs: SAE-Lens's `MultiSAETrainingRunner` (its own runner, optimiser, LR schedule, dead-latent
   tracking and activation-norm scaling) trains the 2 * n_layers SAEs in lockstep from one
   multi-hook `ActivationsStore`: one model forward per batch of prompts caches every SAE hook
   (`run_with_cache(names_filter=hooks, stop_at_layer=...)`) instead of one forward per SAE.
   Why this route: an SAE step (d_in 256, d_sae 2048) costs ~0.2 ms CPU per token and the forward
   to layer 4 ~0.15-0.25 ms, so one `LanguageModelSAETrainingRunner` per SAE (a forward each)
   would cost ~1.8x the CPU; SAE-Lens's cached-activations route caches one hook per
   `CacheActivationsRunner` pass (8 passes, ~1 GB on disk per hook per 1M tokens) and is not
   supported by the multi-SAE runner.
3. Transcoders: SAE-Lens cannot train them (its runner only trains `hook_in == hook_out`), so a
   short torch loop here trains all n_layers BatchTopK transcoders in lockstep, fed by a second
   SAE-Lens multi-hook `ActivationsStore` over the `ln2.hook_normalized`/`hook_mlp_out` pairs of
   every layer (again one forward per batch for all of them), with SAE-Lens's LR scheduler and
   the same hyper-parameters as the SAEs.
4. Convert to SAE-Lens inference classes, fold decoder norms, save with
   `core.subjects.dictionaries.save_dictionary` as `<kind>-L<layer>/` folders.
5. Metrics of each dictionary on the held-out rows (`core.build.dictionary_metrics`).

Measured on the embedded default (4 layers, d_model 256; 1M tokens per dictionary, 2 threads,
machine shared with other jobs): SAEs 1,098 s (911 tokens/s for each of the 8 at once, 1.9 ms
CPU per token for all 8), transcoders 597 s (1,676 tokens/s, 1.0 ms CPU per token for all 4),
metrics 33 s: 29 min in all. Every dictionary: L0 24-41, FVU 0.005-0.09, ce_loss_recovered
0.93-0.998.

Position 0 (BOS in every row) is excluded from training (`seqpos_slice=(1, None)`): its
activations are one constant per hook, with a norm far above the rest in the residual stream.
Everything is seeded by `cfg.seed`.
"""

from __future__ import annotations

import logging
import math
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from core.subjects.dictionaries import Dictionary, DictionaryKind, dictionary_from_sae, hooks_for, save_dictionary

log = logging.getLogger(__name__)

TRAINED_KINDS: tuple[DictionaryKind, ...] = ("resid", "attn", "transcoder")


@dataclass
class DictionaryTrainingConfig:
    """Every knob of dictionary training (stored in the manifest)."""

    seed: int = 0
    d_sae: int = 2048
    k: int = 32  # mean active latents per token (BatchTopK)
    training_tokens: int = 800_000  # per dictionary
    train_batch_size_tokens: int = 2048
    lr: float = 1e-3
    lr_warm_up_steps: int = 20
    lr_decay_fraction: float = 0.25  # linear decay to 0 over the last part of training
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    aux_loss_coefficient: float = 1 / 32
    topk_threshold_lr: float = 0.01
    dead_feature_window: int = 250  # steps without firing before a latent counts as dead (AuxK)
    store_batch_size_prompts: int = 16  # rows per model forward
    n_batches_in_buffer: int = 64  # SAE-Lens mixing buffer: n_batches_in_buffer * (n_ctx - 1) tokens
    n_batches_for_norm_estimate: int = 10
    kinds: tuple[str, ...] = TRAINED_KINDS
    layers: list[int] | None = None  # None: every layer
    eval_rows: int = 64  # rows held out from the end of `tokens` for the metrics
    threads: int = 2
    device: str | None = None

    @property
    def n_steps(self) -> int:
        """Optimiser steps per dictionary."""
        return self.training_tokens // self.train_batch_size_tokens

    @property
    def lr_decay_steps(self) -> int:
        """Steps of the final linear decay."""
        return int(self.n_steps * self.lr_decay_fraction)


def _timed(label: str, t0: float) -> float:
    now = time.time()
    log.info("%s: %.1f s", label, now - t0)
    return now


def _dictionary_seed(seed: int, kind: str, layer: int) -> int:
    return seed * 10_000 + TRAINED_KINDS.index(kind) * 1_000 + layer  # type: ignore[arg-type]


def rows_dataset(tokens: torch.Tensor):
    """Token rows `[n_rows, n_ctx]` (int64, BOS first) as a `datasets.Dataset` with an `input_ids` column."""
    import datasets

    if tokens.ndim != 2:
        raise ValueError(f"tokens must be [n_rows, n_ctx], got shape {tuple(tokens.shape)}")
    return datasets.Dataset.from_dict({"input_ids": tokens.to(torch.int64).cpu().numpy()})


def _restore_signals(saved: dict) -> None:
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def to_inference_sae(training_sae):
    """The SAE-Lens inference SAE (e.g. a BatchTopK training SAE becomes a `JumpReLUSAE`), decoder rows unit-norm."""
    from sae_lens import SAE

    with tempfile.TemporaryDirectory() as tmp:
        training_sae.save_inference_model(tmp)
        sae = SAE.load_from_disk(tmp, device=str(training_sae.W_dec.device), dtype="float32")
    sae.fold_W_dec_norm()
    sae.eval()
    return sae


def rows_needed(cfg: DictionaryTrainingConfig, n_ctx: int) -> int:
    """Token rows `train_all_dictionaries` needs to see `cfg.training_tokens` per dictionary without repeating a row.

    Besides the training tokens (position 0 of each row is not used), SAE-Lens's runner reads
    `n_batches_for_norm_estimate` batches to estimate activation norms and holds back part of its
    mixing buffer; `cfg.eval_rows` more rows are held out for the metrics.
    """
    extra = cfg.n_batches_for_norm_estimate * cfg.train_batch_size_tokens + cfg.n_batches_in_buffer * (n_ctx - 1)
    return math.ceil((cfg.training_tokens + extra) / (n_ctx - 1)) + cfg.eval_rows


# ---------------------------------------------------------------------------------------------
# Step 2: SAEs with SAE-Lens's MultiSAETrainingRunner
# ---------------------------------------------------------------------------------------------


def train_saes(
    model, dataset, cfg: DictionaryTrainingConfig, specs: list[tuple[DictionaryKind, int]], device: str
) -> dict:
    """Train one SAE per (kind, layer) in `specs` with SAE-Lens's `MultiSAETrainingRunner`; returns {(kind, layer): SAE}."""
    from sae_lens import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig, LoggingConfig
    from sae_lens.multi_sae_training_runner import MultiSAETrainingRunner, MultiSAETrainingRunnerConfig
    from sae_lens.training._interruption import InterruptedException

    d_model = model.cfg.d_model
    saes, hook_names = {}, {}
    for kind, layer in specs:
        name = f"{kind}-L{layer}"
        hook_names[name] = hooks_for(kind, layer)[0]
        saes[name] = BatchTopKTrainingSAEConfig(
            d_in=d_model,
            d_sae=cfg.d_sae,
            k=cfg.k,
            topk_threshold_lr=cfg.topk_threshold_lr,
            aux_loss_coefficient=cfg.aux_loss_coefficient,
            normalize_activations="expected_average_only_in",
            device=device,
            dtype="float32",
        )
    runner_cfg = MultiSAETrainingRunnerConfig(
        saes=saes,
        hook_names=hook_names,
        model_name="default",
        dataset_path="token rows passed by core.build.train_dictionaries",
        streaming=False,
        context_size=model.cfg.n_ctx,
        prepend_bos=False,  # the rows already begin with BOS
        seqpos_slice=(1, None),
        training_tokens=cfg.training_tokens,
        train_batch_size_tokens=cfg.train_batch_size_tokens,
        store_batch_size_prompts=cfg.store_batch_size_prompts,
        n_batches_in_buffer=cfg.n_batches_in_buffer,
        n_batches_for_norm_estimate=cfg.n_batches_for_norm_estimate,
        lr=cfg.lr,
        lr_warm_up_steps=cfg.lr_warm_up_steps,
        lr_decay_steps=cfg.lr_decay_steps,
        adam_beta1=cfg.adam_beta1,
        adam_beta2=cfg.adam_beta2,
        dead_feature_window=cfg.dead_feature_window,
        feature_sampling_window=max(cfg.dead_feature_window, 1),
        logger=LoggingConfig(log_to_wandb=False),
        checkpoint_path=None,
        output_path=None,
        seed=cfg.seed,
        device=device,
    )
    # Each SAE's init is seeded by its own (kind, layer), so training a subset gives the same SAEs.
    override = {}
    for kind, layer in specs:
        with torch.random.fork_rng():
            torch.manual_seed(_dictionary_seed(cfg.seed, kind, layer))
            override[f"{kind}-L{layer}"] = BatchTopKTrainingSAE(saes[f"{kind}-L{layer}"])
    torch.manual_seed(cfg.seed)  # the activation store's shuffles
    runner = MultiSAETrainingRunner(runner_cfg, override_dataset=dataset, override_model=model, override_saes=override)
    # The runner installs SIGINT/SIGTERM handlers that raise its own exception; restore ours after.
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        trained = runner.run()
    except InterruptedException as exc:
        raise KeyboardInterrupt from exc
    finally:
        _restore_signals(saved)
    return {(kind, layer): to_inference_sae(trained[f"{kind}-L{layer}"]) for kind, layer in specs}


# ---------------------------------------------------------------------------------------------
# Step 3: transcoders with a short torch loop
# ---------------------------------------------------------------------------------------------


class BatchTopKTranscoder(nn.Module):
    """A training-time BatchTopK transcoder from `d_in` to `d_out` with `d_sae` latents.

    On inputs and targets rescaled so their mean norms are sqrt(d) (`scale_in`, `scale_out`):
    `pre = x @ W_enc + b_enc`, `acts = BatchTopK(pre * |W_dec rows|)`, `y_hat = acts / |W_dec rows| @ W_dec + b_dec`.
    `to_sae_lens` folds the scales and decoder norms into a `JumpReLUTranscoder` on raw activations.
    """

    def __init__(
        self, d_in: int, d_sae: int, d_out: int, k: int, generator: torch.Generator, decoder_init_norm: float = 0.1
    ):
        super().__init__()
        self.k = k
        w_dec = torch.randn(d_sae, d_out, generator=generator)
        w_enc = torch.randn(d_in, d_sae, generator=generator)
        self.W_enc = nn.Parameter(
            w_enc / w_enc.norm(dim=0, keepdim=True)
        )  # unit columns: pre ~ N(0, 1) for |x| ~ sqrt(d_in)
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.W_dec = nn.Parameter(w_dec / w_dec.norm(dim=1, keepdim=True) * decoder_init_norm)
        self.b_dec = nn.Parameter(torch.zeros(d_out))
        self.register_buffer("threshold", torch.tensor(0.0, dtype=torch.float64))
        self.register_buffer("scale_in", torch.tensor(1.0))
        self.register_buffer("scale_out", torch.tensor(1.0))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(y_hat `[n, d_out]`, acts `[n, d_sae]`, scaled pre-activations `[n, d_sae]`) of scaled inputs `x: [n, d_in]`."""
        norms = self.W_dec.norm(dim=1)  # [d_sae]
        pre = (x @ self.W_enc + self.b_enc) * norms  # [n, d_sae]
        flat = pre.relu().flatten()
        top = flat.topk(self.k * x.shape[0], sorted=False)
        acts = torch.zeros_like(flat).scatter(0, top.indices, top.values).view_as(pre)
        y_hat = (acts / norms) @ self.W_dec + self.b_dec
        return y_hat, acts, pre

    def loss(
        self, x: torch.Tensor, y: torch.Tensor, dead: torch.Tensor, aux_coefficient: float
    ) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(loss, acts `[n, d_sae]`, logs) for scaled `x: [n, d_in]`, `y: [n, d_out]`; `dead: [d_sae]` bool."""
        from sae_lens.saes.topk_sae import calculate_topk_aux_acts

        y_hat, acts, pre = self(x)
        mse = (y_hat - y).pow(2).sum(-1).mean()
        aux = mse.new_tensor(0.0)
        n_dead = int(dead.sum())
        if n_dead > 0 and aux_coefficient > 0:
            # AuxK (Gao et al. 2024): the top dead latents reconstruct what the live ones missed.
            k_aux = min(y.shape[-1] // 2, n_dead)
            aux_acts = calculate_topk_aux_acts(k_aux=k_aux, hidden_pre=pre, dead_neuron_mask=dead)
            residual = (y - y_hat).detach()
            recon = (aux_acts / self.W_dec.norm(dim=1)) @ self.W_dec
            aux = aux_coefficient * min(n_dead / (y.shape[-1] // 2), 1.0) * (recon - residual).pow(2).sum(-1).mean()
        return mse + aux, acts, {"mse": float(mse.detach()), "aux": float(aux.detach())}

    @torch.no_grad()
    def update_threshold(self, acts: torch.Tensor, lr: float) -> None:
        """EMA of the smallest kept activation: the JumpReLU threshold used at inference."""
        kept = acts[acts > 0]
        if kept.numel():
            self.threshold.mul_(1 - lr).add_(lr * kept.min().double())

    @torch.no_grad()
    def to_sae_lens(self, hook_in: str, hook_out: str, metadata: dict):
        """This transcoder as an SAE-Lens `JumpReLUTranscoder` on raw activations, decoder rows unit-norm."""
        from sae_lens import JumpReLUTranscoder, JumpReLUTranscoderConfig
        from sae_lens.saes.sae import SAEMetadata

        norms = self.W_dec.norm(dim=1)  # [d_sae]
        s_in, s_out = float(self.scale_in), float(self.scale_out)
        # Raw-space latent = scaled-space latent / s_out, so that unit decoder rows write y_raw directly.
        w_enc = self.W_enc * norms * s_in / s_out
        b_enc = self.b_enc * norms / s_out
        threshold = torch.full_like(self.b_enc, float(self.threshold) / s_out)
        w_dec = self.W_dec / norms[:, None]
        b_dec = self.b_dec / s_out
        d_in, d_sae = self.W_enc.shape
        tc_cfg = JumpReLUTranscoderConfig(
            d_in=d_in,
            d_sae=d_sae,
            d_out=self.W_dec.shape[1],
            dtype="float32",
            device=str(self.W_dec.device),
            apply_b_dec_to_input=False,
            metadata=SAEMetadata(hook_name=hook_in, hook_name_out=hook_out, **metadata),
        )
        tc = JumpReLUTranscoder(tc_cfg)
        tc.load_state_dict({"W_enc": w_enc, "b_enc": b_enc, "W_dec": w_dec, "b_dec": b_dec, "threshold": threshold})
        tc.eval()
        return tc


def train_transcoders(
    model, dataset, cfg: DictionaryTrainingConfig, layers: list[int], device: str, progress: bool = True
) -> dict:
    """Train one BatchTopK transcoder per layer in lockstep; returns {layer: SAE-Lens JumpReLUTranscoder}."""
    from tqdm import tqdm

    d_model = model.cfg.d_model
    pairs = {layer: hooks_for("transcoder", layer) for layer in layers}
    torch.manual_seed(cfg.seed + 1)
    batches = _transcoder_batches(model, dataset, cfg, [h for pair in pairs.values() for h in pair], device)
    tcs = {}
    for layer in layers:
        gen = torch.Generator().manual_seed(_dictionary_seed(cfg.seed, "transcoder", layer))
        tcs[layer] = BatchTopKTranscoder(d_model, cfg.d_sae, d_model, cfg.k, gen).to(device)
    opts = {
        layer: torch.optim.Adam(tc.parameters(), lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2))
        for layer, tc in tcs.items()
    }
    scheds = {layer: _constant_lr(opt, cfg) for layer, opt in opts.items()}
    since_fired = {layer: torch.zeros(cfg.d_sae, device=device) for layer in layers}
    first = [next(batches) for _ in range(max(1, cfg.n_batches_for_norm_estimate))]
    _set_scales(tcs, pairs, first, d_model, device)

    logs: dict[int, dict] = {}
    bar = tqdm(range(cfg.n_steps), desc="train transcoders", disable=not progress)
    for step in bar:
        batch = first[step] if step < len(first) else next(batches)
        for layer, (h_in, h_out) in pairs.items():
            tc = tcs[layer]
            x = batch[h_in].to(device) * tc.scale_in
            y = batch[h_out].to(device) * tc.scale_out
            loss, acts, logs[layer] = tc.loss(
                x, y, since_fired[layer] > cfg.dead_feature_window, cfg.aux_loss_coefficient
            )
            opts[layer].zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(tc.parameters(), 1.0)
            opts[layer].step()
            scheds[layer].step()
            tc.update_threshold(acts.detach(), cfg.topk_threshold_lr)
            fired = (acts > 0).any(0)
            since_fired[layer] += 1
            since_fired[layer][fired] = 0
        if step % 20 == 0:
            bar.set_postfix({f"L{layer}": f"{v['mse']:.1f}" for layer, v in logs.items()})
    metadata = _transcoder_metadata(cfg, model.cfg.n_ctx)
    return {layer: tcs[layer].to_sae_lens(*pairs[layer], metadata=metadata) for layer in layers}


def _transcoder_batches(model, dataset, cfg: DictionaryTrainingConfig, hook_list: list[str], device: str):
    """SAE-Lens batches `{hook: [train_batch_size_tokens, d_model]}` of every hook in `hook_list` (BOS dropped)."""
    from sae_lens.training.activations_store import ActivationsStore

    d_model = model.cfg.d_model
    store = ActivationsStore.from_config_multi_hook(
        model=model,
        dataset=dataset,
        hook_names=hook_list,
        hook_d_ins={h: d_model for h in hook_list},
        streaming=False,
        context_size=model.cfg.n_ctx,
        n_batches_in_buffer=cfg.n_batches_in_buffer,
        total_training_tokens=cfg.training_tokens,
        store_batch_size_prompts=cfg.store_batch_size_prompts,
        train_batch_size_tokens=cfg.train_batch_size_tokens,
        prepend_bos=False,
        device=torch.device(device),
        seqpos_slice=(1, None),
    )
    return store.get_multi_hook_data_loader()


def _constant_lr(opt: torch.optim.Optimizer, cfg: DictionaryTrainingConfig):
    """SAE-Lens's constant learning-rate schedule (with its warm-up and decay steps) for `opt`."""
    from sae_lens.training.optim import get_lr_scheduler

    return get_lr_scheduler(
        "constant",
        optimizer=opt,
        training_steps=cfg.n_steps,
        lr=cfg.lr,
        warm_up_steps=cfg.lr_warm_up_steps,
        decay_steps=cfg.lr_decay_steps,
        lr_end=cfg.lr,
        num_cycles=1,
    )


def _set_scales(tcs: dict, pairs: dict, first: list[dict], d_model: int, device: str) -> None:
    """Scales from the first batches (which are also trained on): mean norms -> sqrt(d); b_dec the mean output."""
    with torch.no_grad():
        for layer, (h_in, h_out) in pairs.items():
            x = torch.cat([b[h_in] for b in first]).to(device)  # [n, d_model]
            y = torch.cat([b[h_out] for b in first]).to(device)
            tcs[layer].scale_in.fill_(math.sqrt(d_model) / float(x.norm(dim=-1).mean()))
            tcs[layer].scale_out.fill_(math.sqrt(d_model) / float(y.norm(dim=-1).mean()))
            tcs[layer].b_dec.copy_(y.mean(0) * tcs[layer].scale_out)


def _transcoder_metadata(cfg: DictionaryTrainingConfig, n_ctx: int) -> dict:
    """SAE-Lens metadata saved with every transcoder: how it was trained."""
    return {
        "model_name": "default",
        "context_size": n_ctx,
        "seqpos_slice": [1, None],
        "prepend_bos": False,
        "training_architecture": "batchtopk",
        "training_architecture_details": {
            "k": cfg.k,
            "aux_loss_coefficient": cfg.aux_loss_coefficient,
            "topk_threshold_lr": cfg.topk_threshold_lr,
        },
        "trainer": "core.build.train_dictionaries.train_transcoders",
    }


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def train_all_dictionaries(
    model, tokens: torch.Tensor, out_dir: Path, cfg: DictionaryTrainingConfig, progress: bool = True
) -> list[dict]:
    """Train, save (`out_dir/<kind>-L<layer>/`, SAE-Lens format) and evaluate every dictionary of `model`.

    `tokens: [n_rows, n_ctx]` int64 rows, each beginning with BOS; the last `cfg.eval_rows` rows
    are held out for the metrics. Returns one info dict per dictionary: id, kind, layer, hooks,
    folder, architecture, training figures and metrics (l0, fvu, ce_loss_recovered, ...).
    """
    from core.build.dictionary_metrics import evaluate_dictionaries

    torch.set_num_threads(cfg.threads)
    device = cfg.device or str(next(model.parameters()).device)
    layers = _check_inputs(model, tokens, cfg)
    train_rows, eval_rows = tokens[: len(tokens) - cfg.eval_rows], tokens[len(tokens) - cfg.eval_rows :]
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)

    t0 = time.time()
    dataset = rows_dataset(train_rows)
    t1 = _timed("dataset", t0)
    trained, phase_seconds, phase_cpu, t1 = _train_phases(model, dataset, cfg, layers, device, progress, t1)

    dictionaries: list[Dictionary] = []
    folders: dict[str, Path] = {}
    for (kind, layer), sae in sorted(trained.items(), key=lambda kv: (TRAINED_KINDS.index(kv[0][0]), kv[0][1])):
        d = dictionary_from_sae(sae, kind, layer)
        folders[d.id] = save_dictionary(d, out_dir)
        d.source = str(folders[d.id])
        dictionaries.append(d)
    t2 = _timed("save", t1)

    metrics = evaluate_dictionaries(model, dictionaries, eval_rows, progress=progress)
    _timed("metrics", t2)
    infos = [
        _dictionary_info(d, m, folders[d.id], cfg, phase_seconds, phase_cpu)
        for d, m in zip(dictionaries, metrics, strict=True)
    ]
    log.info("all dictionaries: %.1f s", time.time() - t0)
    return infos


def _check_inputs(model, tokens: torch.Tensor, cfg: DictionaryTrainingConfig) -> list[int]:
    """The layers to train; raises ValueError on tokens of the wrong shape, unknown kinds or no training rows."""
    n_ctx = model.cfg.n_ctx
    if tokens.ndim != 2 or tokens.shape[1] != n_ctx:
        raise ValueError(f"tokens must be [n_rows, {n_ctx}] (the model's context), got shape {tuple(tokens.shape)}")
    unknown = set(cfg.kinds) - set(TRAINED_KINDS)
    if unknown:
        raise ValueError(f"unknown dictionary kinds {sorted(unknown)}; valid kinds: {', '.join(TRAINED_KINDS)}")
    layers = list(range(model.cfg.n_layers)) if cfg.layers is None else list(cfg.layers)
    if cfg.eval_rows >= len(tokens):
        raise ValueError(
            f"{len(tokens)} token rows leave none for training after holding out eval_rows={cfg.eval_rows}"
        )
    if len(tokens) < rows_needed(cfg, n_ctx):
        log.warning(
            "%d token rows for %d training tokens per dictionary: some rows will be seen twice (%d rows would avoid it)",
            len(tokens),
            cfg.training_tokens,
            rows_needed(cfg, n_ctx),
        )
    return layers


def _train_phases(
    model, dataset, cfg: DictionaryTrainingConfig, layers: list[int], device: str, progress: bool, t1: float
) -> tuple[dict[tuple[DictionaryKind, int], object], dict[str, float], dict[str, float], float]:
    """Train the SAEs, then the transcoders, of `cfg.kinds`; returns (trained by (kind, layer), wall and CPU
    seconds per phase, the time the last phase ended)."""
    trained: dict[tuple[DictionaryKind, int], object] = {}
    phase_seconds: dict[str, float] = {}
    phase_cpu: dict[str, float] = {}  # process CPU seconds: projects wall time on a quiet machine
    sae_specs = [(kind, layer) for layer in layers for kind in ("resid", "attn") if kind in cfg.kinds]
    if sae_specs:
        c0 = time.process_time()
        trained.update(train_saes(model, dataset, cfg, sae_specs, device))
        phase_cpu["saes"] = time.process_time() - c0
        t2 = _timed(f"SAEs ({len(sae_specs)}, SAE-Lens MultiSAETrainingRunner)", t1)
        phase_seconds["saes"] = t2 - t1
        t1 = t2
    if "transcoder" in cfg.kinds:
        c0 = time.process_time()
        for layer, tc in train_transcoders(model, dataset, cfg, layers, device, progress).items():
            trained[("transcoder", layer)] = tc
        phase_cpu["transcoders"] = time.process_time() - c0
        t2 = _timed(f"transcoders ({len(layers)})", t1)
        phase_seconds["transcoders"] = t2 - t1
        t1 = t2
    for phase, seconds in phase_seconds.items():
        log.info(
            "%s: %.0f tokens/s per dictionary (%.2f ms CPU per token)",
            phase,
            cfg.training_tokens / seconds,
            1000 * phase_cpu[phase] / cfg.training_tokens,
        )
    return trained, phase_seconds, phase_cpu, t1


def _dictionary_info(
    d: Dictionary,
    m: dict,
    folder: Path,
    cfg: DictionaryTrainingConfig,
    phase_seconds: dict[str, float],
    phase_cpu: dict[str, float],
) -> dict:
    """The build info of one trained dictionary `d` with its metrics `m` (logged too)."""
    phase = "transcoders" if d.kind == "transcoder" else "saes"
    seconds = phase_seconds[phase]
    info = {
        "id": d.id,
        "kind": d.kind,
        "layer": d.layer,
        "hook_in": d.hook_in,
        "hook_out": d.hook_out,
        "folder": folder.name,
        "architecture": d.module.cfg.architecture(),
        "trained_as": "batchtopk",
        "k": cfg.k,
        "d_sae": d.d_sae,
        "training_tokens": cfg.training_tokens,
        "trainer": "sae_lens.MultiSAETrainingRunner"
        if phase == "saes"
        else "core.build.train_dictionaries.train_transcoders",
        "phase_seconds": round(seconds, 1),
        "phase_cpu_seconds": round(phase_cpu[phase], 1),
        "phase_tokens_per_s": round(cfg.training_tokens / seconds, 1),
        "metrics": {k: v for k, v in m.items() if k not in ("id", "kind", "layer", "d_sae", "hook", "hook_in")},
    }
    log.info("%s: l0 %.1f, fvu %.3f, ce_loss_recovered %.3f", d.id, m["l0"], m["fvu"], m["ce_loss_recovered"])
    return info
