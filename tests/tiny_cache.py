"""A tiny, deterministic cache setup shared by the cache tests and the subprocesses they start.

`python tests/tiny_cache.py WORKSPACE TOKDIR [--kill-at PHASE:DONE] [--sleep S] [--dicts a,b]` runs one
cache job; `--kill-at caching:300` SIGKILLs the process once 300 tokens are computed (a crash at a
known point), `--sleep` slows every progress step so another process can act meanwhile, and
`--default-root ROOT` builds a default workspace there instead (`ensure_default_workspace`).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

TEXTS = [
    "When Mary and John went to the store, John gave a drink to Mary.",
    "The keys to the old cabinet are here. The key to the cabinets is lost.",
    "He left early (because it was late). She stayed.",
    "Tom and Anna met at the park, and Anna gave a book to Tom.",
]
CTX_LEN = 24
N_TOKENS = 1200


def make_tokenizer(directory: Path) -> None:
    """Train and save the tiny tokenizer (once per test session)."""
    from core.build.tokenizer import save_tokenizer, train_bpe

    save_tokenizer(train_bpe(TEXTS * 20, 300), directory, model_max_length=32)


def docs():
    """A few documents of the tiny text."""
    from core.build.corpus import BrownDocument

    return [BrownDocument(f"doc{i}", "a", " ".join(TEXTS[(i + j) % 4] for j in range(12))) for i in range(30)]


def build(tokdir: Path, model_seed: int = 0):
    """(model, dictionaries by name) built deterministically from seeds."""
    import torch
    from sae_lens import StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from core.build.tokenizer import load_tokenizer
    from core.subjects.dictionaries import dictionary_from_sae, neuron_dictionary

    tok = load_tokenizer(tokdir)
    torch.manual_seed(model_seed)
    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=32,
        n_ctx=32,
        d_head=8,
        n_heads=4,
        d_mlp=64,
        d_vocab=len(tok),
        act_fn="gelu_new",
        normalization_type="LN",
        device="cpu",
        seed=model_seed,
    )
    model = HookedTransformer(cfg, tokenizer=tok)
    model.eval()
    torch.manual_seed(1)
    relu = StandardSAE(StandardSAEConfig(d_in=32, d_sae=96))
    with torch.no_grad():
        relu.b_enc.fill_(-1.0)  # sparser
        relu.b_enc[:4] = -100.0  # dead latents
    topk = TopKSAE(TopKSAEConfig(d_in=32, d_sae=80, k=6))
    dicts = {
        "resid1": dictionary_from_sae(relu, "resid", 1),
        "attn0": dictionary_from_sae(topk, "attn", 0),
        "neurons0": neuron_dictionary(model, 0),
        "neurons0_topk": neuron_dictionary(model, 0, 8),
    }
    return model, dicts


def plan_and_params(model, chunk_contexts: int = 8, batch_contexts: int = 4):
    """The context plan and parameters every tiny run uses."""
    from core.cache.plan import CacheParams, plan_contexts

    plan = plan_contexts(model.tokenizer, docs(), N_TOKENS, CTX_LEN, {"corpus": "tiny", "split": "train"})
    params = CacheParams(
        n_tokens=N_TOKENS, ctx_len=CTX_LEN, batch_contexts=batch_contexts, chunk_contexts=chunk_contexts
    )
    return plan, params


def default_params():
    """Parameters of the tiny default workspace."""
    from core.cache.plan import CacheParams

    return CacheParams(n_tokens=400, ctx_len=CTX_LEN, chunk_contexts=4)


def make_default_root(root: Path, tokdir: Path, model_seed: int = 0) -> None:
    """An embedded-default folder holding the tiny model (no dictionaries: neuron baselines only) and corpus."""
    from core.build.corpus import save_corpus
    from core.paths import default_paths
    from core.subjects.models import save_model

    model, _ = build(tokdir, model_seed)
    paths = default_paths(root)
    save_model(model, paths["model_dir"])
    model.tokenizer.save_pretrained(str(paths["tokenizer_dir"]))
    save_corpus(docs(), paths["corpus"])  # names ending in 0 are validation, the rest train


def main() -> int:
    t0 = time.monotonic()
    import torch

    torch.set_num_threads(1)
    p = argparse.ArgumentParser()
    p.add_argument("workspace")
    p.add_argument("tokdir")
    p.add_argument("--kill-at", help="PHASE:DONE, e.g. caching:300 or finalizing:1")
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--dicts", default="resid1,attn0,neurons0,neurons0_topk")
    p.add_argument(
        "--default-root", help="call ensure_default_workspace with this default folder (see make_default_root)"
    )
    args = p.parse_args()
    from core.cache.run import run_cache
    from core.cache.workspace import ensure_default_workspace

    model, dicts = build(Path(args.tokdir))
    plan, params = plan_and_params(model)
    kill_phase, kill_done = args.kill_at.split(":") if args.kill_at else (None, "0")

    def progress(phase: str, done: int, total: int) -> None:
        if phase == kill_phase and done >= int(kill_done):
            os.kill(os.getpid(), signal.SIGKILL)
        if args.sleep:
            time.sleep(args.sleep)

    print(f"ready to cache after {time.monotonic() - t0:.1f} s", flush=True)
    if args.default_root:
        ensure_default_workspace(
            progress, path=Path(args.workspace), root=Path(args.default_root), params=default_params()
        )
        print(f"done after {time.monotonic() - t0:.1f} s", flush=True)
        return 0
    run_cache(model, [dicts[n] for n in args.dicts.split(",")], Path(args.workspace), plan, params, progress=progress)
    print(f"done after {time.monotonic() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    raise SystemExit(main())
