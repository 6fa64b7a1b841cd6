"""Config dataclasses' one helper: a field with a default and a one-line help.

Every config (sampling, judging, mining, review, export, training) is a dataclass whose fields
carry their help, like TRL's DPOConfig; the same help labels the UI form and the CLI flag.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def option(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with a default (copied when mutable) and its one-line help."""
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kw)
    return dataclasses.field(default=default, metadata={"help": help}, **kw)


def helps(config_cls: type) -> dict[str, str]:
    """Field name -> one-line help, for forms and CLI flags."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(config_cls)}
