"""Command-line interface: `python -m core COMMAND ...`.

Each engine module that has commands exposes `register(subparsers)`, adding its sub-commands with
`set_defaults(run=function)`; `run(args) -> int` returns the exit code. Errors a user can fix
(bad input, missing artifacts, locked workspace) are printed as one line, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from core.errors import UserError

# Modules with a `register(subparsers)` function, in the order their commands are listed.
COMMAND_MODULES = (
    "core.build.pipeline",
    "core.tracing.commands",
    "core.cache.commands",
    "core.autointerp.commands",
    "core.analysis.commands",
    "core.circuits.example_commands",
    "core.subjects.commands",
    "core.circuits.commands",
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered sub-command."""
    parser = argparse.ArgumentParser(prog="python -m core", description="SAE Circuit Explorer engine")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each phase's timing")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` and run the chosen command; returns the exit code."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(name)s %(message)s"
    )
    from core.subjects.models import ArtifactError, HubUnreachableError

    try:
        return int(args.run(args) or 0)
    except (UserError, ArtifactError, HubUnreachableError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
