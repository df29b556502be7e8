"""CLI: `python -m core make-hub-fixture --out DIR [--reduced]`."""

from __future__ import annotations

import json
from pathlib import Path


def _run_make_hub_fixture(args) -> int:
    from core.subjects.hub_fixture import DEFAULT_RELEASES, default_fixture_dir, make_hub_fixture

    scale = "reduced" if args.reduced else "full"
    out = Path(args.out) if args.out else default_fixture_dir(scale)
    releases = tuple(args.releases) if args.releases else DEFAULT_RELEASES
    make_hub_fixture(out, scale=scale, seed=args.seed, releases=releases, transcoders=not args.no_transcoders)
    print(
        json.dumps(
            {
                "hf_home": str(out),
                "transcoder_dir": None if args.no_transcoders else str(out / "transcoders"),
                "releases": list(releases),
                "scale": scale,
                "use": f"HF_HOME={out} HF_HUB_OFFLINE=1 python -m core cache --model gpt2 --releases "
                f"{' '.join(releases)}"
                + ("" if args.no_transcoders else f" --transcoder-dir {out / 'transcoders'}")
                + " --workspace WS --tokens N",
            }
        )
    )
    return 0


def register(sub) -> None:
    """Add the `make-hub-fixture` command."""
    p = sub.add_parser(
        "make-hub-fixture",
        help="write a GPT-2-small fixture (random weights, GPT-2's tokenizer, SAE-Lens releases) as a local HF cache",
    )
    p.add_argument("--out", help="the cache folder, used as HF_HOME (default: data/_build/hf-gpt2[-reduced])")
    p.add_argument("--reduced", action="store_true", help="d_model 64 and 256 latents per dictionary (for tests)")
    p.add_argument("--seed", type=int, default=0, help="seed of every weight (same seed, same bytes)")
    p.add_argument(
        "--releases", nargs="+", help="SAE-Lens releases to write (default: res-jb, attn-out and mlp-out v5-32k)"
    )
    p.add_argument("--no-transcoders", action="store_true", help="do not write the per-layer transcoder folders")
    p.set_defaults(run=_run_make_hub_fixture)
