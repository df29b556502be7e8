"""Settings declared once: dataclass fields carry their help, and the CLI flags are derived from them.

    @dataclass(frozen=True)
    class TraceParams:
        node_threshold: float = setting(0.02, help="keep parents with a larger share of |direct effect|")

    add_arguments(parser, TraceParams)           # --node-threshold FLOAT (default 0.02)
    params = from_arguments(TraceParams, args)   # TraceParams(node_threshold=args.node_threshold)

A field's flag is `--` + its name with dashes (or `flag=`); its type comes from the annotation:
int / float / str, `X | None` (the flag may be left out), bool (`--x` when the default is False,
`--no-x` when it is True), `Literal[...]` or `choices=` (a choice), `list[X]` / `tuple[X, ...]`
(one or more values). A field without a default is a required flag. Fields declared without
`setting(...)`, or with `flag=False`, get no flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Sequence
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

T = TypeVar("T")

_KEY = "setting"


@dataclasses.dataclass(frozen=True)
class _Meta:
    help: str
    flag: str | bool | None
    choices: tuple | None
    cli_default: Any


def setting(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    flag: str | bool | None = None,
    choices: Sequence | None = None,
    cli_default: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with its help text; `flag` overrides the `--field-name` flag (False: no flag).

    `cli_default` is the flag's default when it differs from the field's (e.g. None for "derived
    from the model", which the command then passes to `from_arguments`). A list default is wrapped
    in a default factory (so the dataclass stays valid)."""
    meta = {_KEY: _Meta(help, flag, tuple(choices) if choices is not None else None, cli_default)}
    if isinstance(default, list):
        value = list(default)
        return dataclasses.field(default_factory=lambda: list(value), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def setting_help(cls: type, name: str) -> str:
    """The help text of field `name` of the settings dataclass `cls` (KeyError when it has none)."""
    for f in dataclasses.fields(cls):
        if f.name == name and _KEY in f.metadata:
            return f.metadata[_KEY].help
    raise KeyError(f"{cls.__name__}.{name} is not declared with setting(...)")


def _default(f: dataclasses.Field) -> Any:
    meta = f.metadata.get(_KEY)
    if meta is not None and meta.cli_default is not dataclasses.MISSING:
        return meta.cli_default
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


@dataclasses.dataclass(frozen=True)
class _Flag:
    field: dataclasses.Field
    meta: _Meta
    name: str  # flag name without dashes and prefix: "max-depth", "no-neurons"
    dest: str  # namespace attribute without prefix: "max_depth"; the field's name for a --no-x flag


def _flags(cls: type) -> list[_Flag]:
    """The fields of `cls` that have a flag."""
    out = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get(_KEY)
        if meta is None or meta.flag is False:
            continue
        if isinstance(meta.flag, str):
            name = meta.flag.lstrip("-")
            dest = name.replace("-", "_")
        elif _default(f) is True:
            name, dest = "no-" + f.name.replace("_", "-"), f.name
        else:
            name, dest = f.name.replace("_", "-"), f.name
        out.append(_Flag(f, meta, name, dest))
    return out


def _dest(prefix: str, flag: _Flag) -> str:
    return prefix.replace("-", "_") + flag.dest


def _unwrap_optional(tp: Any) -> Any:
    if get_origin(tp) in (Union, types.UnionType):
        rest = [a for a in get_args(tp) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return tp


def _argument(tp: Any, meta: _Meta, default: Any) -> dict[str, Any]:
    """argparse keyword arguments for a field of annotation `tp`."""
    tp = _unwrap_optional(tp)
    origin = get_origin(tp)
    if tp is bool:
        return {"action": "store_false" if default is True else "store_true"}
    if origin is Literal:
        values = get_args(tp)
        return {"type": type(values[0]), "choices": list(meta.choices or values)}
    kwargs: dict[str, Any] = {}
    if origin in (list, tuple, Sequence):
        args = [a for a in get_args(tp) if a is not Ellipsis]
        tp = args[0] if args else str
        kwargs["nargs"] = "+"
    if tp not in (int, float, str):
        raise TypeError(f"no CLI flag for a field of type {tp!r}; pass flag=False")
    kwargs["type"] = tp
    if meta.choices is not None:
        kwargs["choices"] = list(meta.choices)
    return kwargs


def add_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, prefix: str = "") -> None:
    """Add one flag per setting of dataclass `cls` to `parser`, with the field's help and default.

    `prefix` is put before every flag name (`prefix="trace-"`: `--trace-max-depth`)."""
    hints = typing.get_type_hints(cls)
    for flag in _flags(cls):
        default = _default(flag.field)
        kwargs = _argument(hints[flag.field.name], flag.meta, default)
        help_text = flag.meta.help
        if default is dataclasses.MISSING:
            kwargs["required"] = True
        elif kwargs.get("action") is None:
            kwargs["default"] = default
            if default is not None and "default" not in help_text:
                help_text = f"{help_text} (default {default})"
        parser.add_argument(f"--{prefix}{flag.name}", dest=_dest(prefix, flag), help=help_text, **kwargs)


def from_arguments(cls: type[T], namespace: argparse.Namespace, prefix: str = "", **overrides: Any) -> T:
    """The `cls` built from the flags `add_arguments(parser, cls, prefix)` added, parsed into `namespace`;
    `overrides` set fields directly (for a value the command derives, e.g. from the model)."""
    hints = typing.get_type_hints(cls)
    values = {flag.field.name: getattr(namespace, _dest(prefix, flag)) for flag in _flags(cls)}
    for name, value in values.items():
        if isinstance(value, list) and get_origin(_unwrap_optional(hints[name])) is tuple:
            values[name] = tuple(value)
    values.update(overrides)
    return cls(**values)
