"""Config dataclasses' helpers: a field with a default and a one-line help; CLI flags from them.

Every config (sampling, judging, mining, review, export, training) is a dataclass whose fields
carry their help, like TRL's DPOConfig; the same help labels the UI form and the CLI flag
(`add_flags` / `config_from_args`, below).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any


def option(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with a default (copied when mutable) and its one-line help."""
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kw)
    return dataclasses.field(default=default, metadata={"help": help}, **kw)


def helps(config_cls: type) -> dict[str, str]:
    """Field name -> one-line help, for forms and CLI flags."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(config_cls)}


# --------------------------------------------------------------------------- CLI flags from configs
#
# One generator for every command: `add_flags(parser, Config)` adds a flag per field (help from the
# field's help plus its default, type from the annotation, the dataclass default as argparse's
# default; a nested dataclass field's own fields become top-level flags), and records which dest
# holds which field, so that `config_from_args(Config, args)` builds the config back, nested
# configs included. Booleans follow one convention (`BoolFlag`): `--flag` → True, `--no-flag` →
# False, `--flag VALUE` with VALUE true/false, yes/no, on/off or 1/0.

_TRUE, _FALSE, _NONE = ("1", "true", "yes", "on"), ("0", "false", "no", "off"), ("none", "null", "")


def boolean(value: str) -> bool:
    """Strict boolean for a flag's value: true/false, yes/no, on/off, 1/0 (any case)."""
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {value!r} (use true or false)")


def _converter(base: type, optional: bool) -> Callable[[str], Any]:
    """argparse type for `base`; for an optional field also 'none' / 'null' / '' → None."""
    conv = boolean if base is bool else base
    if not optional:
        return conv

    def opt(value: str) -> Any:
        return None if value.strip().lower() in _NONE else conv(value)

    opt.__name__ = getattr(conv, "__name__", "value")  # argparse names it in "invalid int value: 'x'"
    return opt


_BARE = object()  # a BoolFlag given without a value


class BoolFlag(argparse.Action):
    """`--flag` → True, `--no-flag` → False, `--flag VALUE` with a boolean VALUE (see `boolean`).

    Accepts the old store_true (`--early-stop`), BooleanOptionalAction (`--no-with-greedy`) and
    value (`--merge-lora false`) forms at once. As with any optional-value flag, a positional
    argument right after a bare `--flag` would be read as its value: put it before the flag."""

    def __init__(self, option_strings, dest, default=None, type=None, required=False, help=None, metavar="BOOL", **kw):
        self.negations = [f"--no-{s[2:]}" for s in option_strings if s.startswith("--")]
        super().__init__(list(option_strings) + self.negations, dest, nargs="?", const=_BARE, default=default,
                         type=type or boolean, required=required, help=help, metavar=metavar, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string in self.negations:
            if values is not _BARE:
                raise argparse.ArgumentError(self, f"{option_string} takes no value")
            values = False
        setattr(namespace, self.dest, True if values is _BARE else values)  # `--bf16 none` → None


BOOL_EPILOG = "[BOOL] switches: --flag turns one on, --no-flag turns it off, --flag true|false (yes/no, on/off, 1/0) sets it."


class HelpFormatter(argparse.HelpFormatter):
    """Shows a BoolFlag as `--flag [BOOL], --no-flag` rather than repeating the value on both."""

    def _format_action_invocation(self, action):
        if isinstance(action, BoolFlag):
            positive = [s for s in action.option_strings if s not in action.negations]
            return ", ".join([f"{s} [{action.metavar}]" for s in positive] + action.negations)
        return super()._format_action_invocation(action)


def field_types(config_cls: type) -> dict[str, Any]:
    """Field name -> resolved annotation (the configs use `from __future__ import annotations`)."""
    try:
        hints = typing.get_type_hints(config_cls)
    except (NameError, TypeError, AttributeError):  # an annotation that does not resolve: keep the strings
        hints = {}
    return {f.name: hints.get(f.name, f.type) for f in dataclasses.fields(config_cls)}


def _unwrap(t: Any) -> tuple[Any, bool]:
    """(the annotation without None, whether None is allowed): `int | None` → (int, True)."""
    if isinstance(t, str):  # unresolved: read it as the old `_flag_type` did
        base = next((b for b in (bool, int, float, str) if t.startswith(b.__name__)), str)
        return base, "None" in t
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(t) if a is not type(None)]
        return (rest[0] if len(rest) == 1 else str), len(rest) < len(typing.get_args(t))
    return t, False


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    s = str(value)
    return s if len(s) <= 40 else s[:39] + "…"


def _key(config_cls: type) -> str:
    return f"_flags_{config_cls.__module__}.{config_cls.__qualname__}"


def add_flags(
    parser: argparse.ArgumentParser,
    config_cls: type,
    *,
    flags: dict[str, list[str]] | None = None,
    aliases: dict[str, list[str]] | None = None,
    choices: dict[str, Any] | None = None,
    extra: dict[str, dict] | None = None,
    skip: tuple[str, ...] = (),
    dest_prefix: str = "",
    sparse: bool = False,
) -> dict:
    """Add one flag per field of the dataclass `config_cls` to `parser`; returns {field: dest}.

    A field `top_p` gets `--top-p`; `flags` replaces a field's option strings, `aliases` adds some;
    `choices` (field → names, e.g. a dict of backends), `extra` (field → add_argument keywords:
    required, help, metavar, action...) and `skip` (fields that are no flags) adjust it. Types
    come from the annotation: bool → BoolFlag, int/float/str (optional ones also take `none`),
    list[X] → a repeatable flag; a field of another type (a dict) is left out. A nested dataclass
    field's fields are flags of their own, at the top level. The argparse default is the
    dataclass default (None for a required or repeatable flag); with `sparse` it is None for every
    flag, and `config_from_args` passes on only the flags given (defaults stay the config's).
    The help is the field's help plus its default."""
    flags, aliases, choices, extra = flags or {}, aliases or {}, choices or {}, extra or {}
    mapping: dict = {}
    hints = field_types(config_cls)
    for f in dataclasses.fields(config_cls):
        if f.name in skip:
            continue
        base, optional = _unwrap(hints[f.name])
        if dataclasses.is_dataclass(base):
            mapping[f.name] = add_flags(parser, base, flags=flags, aliases=aliases, choices=choices, extra=extra,
                                        skip=skip, dest_prefix=dest_prefix, sparse=sparse)
            continue
        element = typing.get_args(base)[0] if typing.get_origin(base) is list and typing.get_args(base) else None
        options = flags.get(f.name) or [f"--{f.name.replace('_', '-')}"]
        options = list(options) + list(aliases.get(f.name, []))
        default = _default_of(f)
        kw: dict[str, Any] = {"dest": dest_prefix + f.name, "default": default}
        if base is bool:
            kw.update(action=BoolFlag, type=_converter(bool, optional))
        elif base in (int, float, str):
            kw.update(type=_converter(base, optional), metavar=base.__name__.upper() if base is not str else None)
        elif element in (int, float, str):
            kw.update(action="append", type=element, default=None, metavar=element.__name__.upper())
        else:
            continue  # not a flag (e.g. a dict): special-cased by the command, or the config's default
        if f.name in choices:
            kw.update(choices=list(choices[f.name]), metavar=None)
        elif kw.get("metavar", "") is None:  # str: argparse's own metavar, from the flag's name
            long = next((o for o in options if o.startswith("--")), options[0])
            kw["metavar"] = long.lstrip("-").replace("-", "_").upper()
        help_ = f.metadata.get("help", "").strip()
        if default not in (None, "", [], {}):  # None / empty: the help says what it means
            help_ = f"{help_} (default {_shown(default)})".strip()
        kw["help"] = help_.replace("%", "%%")
        kw.update(extra.get(f.name, {}))
        if sparse or (kw.get("required") and "default" not in extra.get(f.name, {})):
            kw["default"] = None
        parser.add_argument(*options, **kw)
        mapping[f.name] = kw["dest"]
        if kw.get("action") is BoolFlag and parser.epilog is None:
            parser.epilog = BOOL_EPILOG
    parser.set_defaults(**{_key(config_cls): {"fields": mapping, "sparse": sparse}})
    return mapping


def _values(config_cls: type, args: argparse.Namespace, mapping: dict, sparse: bool) -> dict:
    out: dict = {}
    hints = field_types(config_cls)
    for f in dataclasses.fields(config_cls):
        dest = mapping.get(f.name)
        if dest is None:
            continue
        base, optional = _unwrap(hints[f.name])
        if isinstance(dest, dict):
            out[f.name] = base(**_values(base, args, dest, sparse))
            continue
        value = getattr(args, dest, None)
        if value is None and (sparse or not optional):
            continue  # not given: the config's own default
        out[f.name] = value
    return out


def args_values(config_cls: type, args: argparse.Namespace) -> dict:
    """Field name -> value from args parsed by a parser that `add_flags(parser, config_cls)`
    filled (with `sparse`, only the flags given); nested configs come built."""
    spec = getattr(args, _key(config_cls), None)
    if spec is None:
        raise ValueError(f"this command has no flags for {config_cls.__name__}")
    return _values(config_cls, args, spec["fields"], spec["sparse"])


def config_from_args(config_cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """The config the parsed flags describe; `overrides` set the fields no flag gives."""
    return config_cls(**{**args_values(config_cls, args), **overrides})
