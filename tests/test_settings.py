"""core.settings: dataclass fields declared once with their help become CLI flags and come back as the same dataclass."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Literal

import pytest

from core.settings import add_arguments, from_arguments, setting, setting_help


@dataclass(frozen=True)
class Knobs:
    """Every kind of field the flags support."""

    n: int = setting(help="a required count")
    rate: float = setting(0.5, help="a fraction")
    name: str = setting("abc", help="a name")
    label: str | None = setting(None, help="an optional label")
    verbose: bool = setting(False, help="talk more")
    cache: bool = setting(True, help="use the cache")
    mode: Literal["fast", "slow"] = setting("fast", help="how")
    kind: str = setting("a", help="a kind", choices=["a", "b"])
    layers: list[int] = setting([1, 2], help="layers")
    sizes: tuple[int, ...] = setting((3,), help="sizes")
    renamed: int = setting(7, help="a flag with another name", flag="--other-name")
    internal: int = setting(9, help="not on the command line", flag=False)
    plain: int = 4  # declared without setting(): no flag


def _parser(cls: type = Knobs, prefix: str = "") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_arguments(p, cls, prefix)
    return p


def test_defaults_round_trip() -> None:
    args = _parser().parse_args(["--n", "3"])
    assert from_arguments(Knobs, args) == Knobs(n=3)


def test_every_flag_round_trips() -> None:
    argv = "--n 5 --rate 0.25 --name xyz --label L --verbose --no-cache --mode slow --kind b"
    argv += " --layers 4 5 --sizes 6 7 --other-name 8"
    args = _parser().parse_args(argv.split())
    expected = Knobs(
        n=5,
        rate=0.25,
        name="xyz",
        label="L",
        verbose=True,
        cache=False,
        mode="slow",
        kind="b",
        layers=[4, 5],
        sizes=(6, 7),
        renamed=8,
    )
    assert from_arguments(Knobs, args) == expected


def test_flags_and_their_help() -> None:
    p = _parser()
    flags = {o: a for a in p._actions for o in a.option_strings}
    assert "--internal" not in flags and "--plain" not in flags and "--renamed" not in flags
    assert flags["--n"].required
    assert flags["--rate"].help == "a fraction (default 0.5)" and flags["--rate"].type is float
    assert flags["--label"].help == "an optional label"  # no "(default None)"
    assert flags["--mode"].choices == ["fast", "slow"]
    assert flags["--kind"].choices == ["a", "b"]
    assert flags["--no-cache"].dest == "cache"
    assert setting_help(Knobs, "internal") == "not on the command line"
    with pytest.raises(KeyError):
        setting_help(Knobs, "plain")


def test_prefix_and_overrides() -> None:
    args = _parser(prefix="k-").parse_args(["--k-n", "2", "--k-no-cache"])
    assert from_arguments(Knobs, args, prefix="k-", rate=0.1) == Knobs(n=2, cache=False, rate=0.1)


def test_bad_values_are_argparse_errors(capsys) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["--n", "x"])
    with pytest.raises(SystemExit):
        _parser().parse_args(["--n", "1", "--mode", "medium"])
    assert "invalid choice" in capsys.readouterr().err


def test_an_unsupported_type_asks_for_flag_false() -> None:
    @dataclass
    class Odd:
        d: dict = setting(None, help="a mapping")

    with pytest.raises(TypeError, match="flag=False"):
        _parser(Odd)


def _commands() -> dict[str, argparse.ArgumentParser]:
    from core.cache.commands import register as register_cache
    from core.tracing.commands import register as register_tracing

    sub = argparse.ArgumentParser().add_subparsers()
    register_tracing(sub)
    register_cache(sub)
    return sub.choices


def test_every_trace_param_has_help_and_a_flag() -> None:
    from core.tracing.hierarchical import TraceParams

    commands = _commands()
    for f in dataclasses.fields(TraceParams):
        text = setting_help(TraceParams, f.name)
        assert text
        flag = "--" + f.name.replace("_", "-")
        for command in ("trace", "circuits"):
            action = next(a for a in commands[command]._actions if flag in a.option_strings)
            assert action.default == f.default and action.help.startswith(text)


def test_trace_flags_give_the_trace_params() -> None:
    from core.tracing.hierarchical import TraceParams
    from core.tracing.loading import trace_params

    commands = _commands()
    assert trace_params(commands["trace"].parse_args(["--prompt", "x"])) == TraceParams()
    args = commands["circuits"].parse_args(["--max-depth", "3", "--node-threshold", "0.1", "--batch-size", "4"])
    assert trace_params(args) == TraceParams(max_depth=3, node_threshold=0.1, batch_size=4)


def test_cache_flags_give_the_cache_params() -> None:
    from core.cache.plan import CacheParams

    args = _commands()["cache"].parse_args(["--tokens", "100", "--workspace", "w", "--batch-size", "8"])
    assert args.ctx_len is None  # the command derives it from the model
    assert from_arguments(CacheParams, args, ctx_len=64) == CacheParams(n_tokens=100, ctx_len=64, batch_contexts=8)


def test_prompt_budget_gives_the_prune_config() -> None:
    from core.circuits.llm_pruning import PruneConfig

    commands = _commands()
    assert from_arguments(PruneConfig, commands["circuits"].parse_args([])) == PruneConfig()
    args = commands["circuits"].parse_args(["--prompt-budget", "900"])
    assert from_arguments(PruneConfig, args) == PruneConfig(max_prompt_tokens=900)
