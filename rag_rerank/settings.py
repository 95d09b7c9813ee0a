"""Each setting declared once, as TEI does: a dataclass field with its default and help gives the
command-line flag (``--max-documents``), the environment variable (``RAG_RERANK_MAX_DOCUMENTS``),
the type, the choices (from a ``Literal``) and the help line.

``setting(default, help)`` declares one; ``add_flags`` adds a dataclass's settings to an argparse
parser; ``from_flags`` builds the dataclass from what was parsed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Iterable
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

ENV_PREFIX = "RAG_RERANK_"
TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}
Config = TypeVar("Config")


def setting(default: Any, help: str, *, flag: str | None = None, env: str | None = None) -> Any:
    """A dataclass field that is also a flag and an environment variable.

    Args:
        default: The value when neither the flag nor the variable is given (a list: a fresh copy each time).
        help: One line for ``--help``; the variable and the default are added to it.
        flag: The flag, when not ``--`` plus the field's name with dashes.
        env: The variable's name after ``RAG_RERANK_``, when not the field's name in capitals.

    Returns:
        A ``dataclasses.field``.
    """
    metadata = {"help": help, "flag": flag, "env": env}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class Flag:
    """One setting as the command line and the environment see it."""

    name: str  # the dataclass field
    flag: str
    env: str
    kind: type  # str, int, float, bool or list (of str)
    choices: tuple[str, ...] | None
    default: Any
    help: str


def flags(config: type, names: Iterable[str] | None = None) -> list[Flag]:
    """The settings of the dataclass ``config`` (only ``names``, in that order, if given)."""
    hints = typing.get_type_hints(config)
    fields = {field.name: field for field in dataclasses.fields(config) if "help" in field.metadata}
    chosen = [fields[name] for name in names] if names is not None else list(fields.values())
    found = []
    for field in chosen:
        kind, choices = _kind(hints[field.name])
        default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        found.append(
            Flag(
                name=field.name,
                flag=field.metadata["flag"] or "--" + field.name.replace("_", "-"),
                env=ENV_PREFIX + (field.metadata["env"] or field.name.upper()),
                kind=kind,
                choices=choices,
                default=default,
                help=field.metadata["help"],
            )
        )
    return found


def add_flags(
    parser: argparse.ArgumentParser | Any, config: type, names: Iterable[str] | None = None, **defaults: Any
) -> None:
    """Add the settings of ``config`` to ``parser`` (or an argument group), each defaulting to its
    environment variable, else to ``defaults[name]`` if given, else to the field's default."""
    for one in flags(config, names):
        default = defaults.get(one.name, one.default)
        value = _from_env(one) if one.env in os.environ else default
        shown = "" if default is None or default == [] or default is False else f"; default {_shown(default)}"
        options: dict[str, Any] = {"dest": one.name, "default": value, "help": f"{one.help} (env {one.env}{shown})"}
        if one.kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif one.kind is list:
            options.update(action="append", metavar=one.name.upper().removesuffix("S"))
            options["default"] = list(value)
        else:
            options.update(type=one.kind, choices=one.choices, metavar=None if one.choices else one.name.upper())
        parser.add_argument(one.flag, **options)


def from_flags(config: type[Config], args: argparse.Namespace, **more: Any) -> Config:
    """``config`` built from the parsed settings it declares (and ``more``); a flag left unset
    where the field has a default of its own keeps that default."""
    values = {}
    for one in flags(config):
        value = getattr(args, one.name, None)
        if value is not None or one.default is None:
            values[one.name] = value
    return config(**values, **more)


def _kind(hint: Any) -> tuple[type, tuple[str, ...] | None]:
    """The plain type of a field (``str | None`` is str) and its choices (a ``Literal``'s values)."""
    if get_origin(hint) in (Union, types.UnionType):
        hint = next(arg for arg in get_args(hint) if arg is not type(None))
    if get_origin(hint) is Literal:
        return str, tuple(get_args(hint))
    if get_origin(hint) is list:
        return list, None
    return hint, None


def _from_env(one: Flag) -> Any:
    """The variable's value as the setting's type, or a clear error naming the variable."""
    raw = os.environ[one.env]
    try:
        if one.kind is bool:
            if raw.strip().lower() not in TRUE | FALSE:
                raise ValueError(f"expected one of {', '.join(sorted(TRUE | FALSE - {''}))}")
            return raw.strip().lower() in TRUE
        if one.kind is list:
            return [item.strip() for item in raw.split(",") if item.strip()]
        value = one.kind(raw)
    except ValueError as error:
        raise SystemExit(f"{one.env}={raw!r}: not a valid {one.kind.__name__} ({error})") from None
    if one.choices and value not in one.choices:
        raise SystemExit(f"{one.env}={raw!r}: must be one of {', '.join(one.choices)}")
    return value


def _shown(value: Any) -> str:
    return ",".join(value) if isinstance(value, list) else str(value)
