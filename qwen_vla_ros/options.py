"""One source for a command's options: a dataclass whose fields carry their CLI help, from
which the argparse arguments are made and back into which the parsed arguments go."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

_MISSING = dataclasses.MISSING


def opt(default: Any = _MISSING, help: str = "", *, flag: str | None = None,
        type: Callable | None = None, choices: list | None = None, positional: bool = False,
        mapping: bool = False, negate: str | None = None, cli: bool = True) -> Any:
    """A dataclass field with its CLI form. ``mapping``: repeated KEY=VALUE into a dict;
    ``negate``: a store_true flag that sets the (bool) field to False; ``cli=False``: not on
    the command line."""
    meta = {"help": help, "flag": flag, "type": type, "choices": choices,
            "positional": positional, "mapping": mapping, "negate": negate, "cli": cli}
    if mapping:
        return dataclasses.field(default_factory=dict, metadata=meta)
    if default is _MISSING:
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def add_arguments(parser: argparse.ArgumentParser, cls) -> None:
    for f in dataclasses.fields(cls):
        m = f.metadata
        if not m.get("cli", False):
            continue
        if m["negate"]:
            parser.add_argument(m["negate"], action="store_true", help=m["help"])
            continue
        flag = m["flag"] or "--" + f.name.replace("_", "-")
        if m["mapping"]:
            parser.add_argument(flag, action="append", dest=f.name, metavar="KEY=VALUE",
                                help=m["help"])
            continue
        kw: dict[str, Any] = {"help": m["help"]}
        if m["type"] is not None:
            kw["type"] = m["type"]
        if m["choices"]:
            kw["choices"] = m["choices"]
        if m["positional"]:
            parser.add_argument(f.name, **kw)
            continue
        if f.default is _MISSING and f.default_factory is _MISSING:
            kw["required"] = True
        else:
            kw["default"] = f.default
        parser.add_argument(flag, dest=f.name, **kw)


def from_args(cls, args: argparse.Namespace):
    """The dataclass from parsed arguments (KEY=VALUE lists checked here)."""
    values = {}
    for f in dataclasses.fields(cls):
        m = f.metadata
        if not m.get("cli", False):
            continue
        if m["negate"]:
            values[f.name] = not getattr(args, m["negate"].lstrip("-").replace("-", "_"))
        elif m["mapping"]:
            values[f.name] = {}
            for item in getattr(args, f.name) or []:
                if "=" not in item:
                    raise ValueError(f"{m['flag'] or f.name}: '{item}' is not KEY=VALUE")
                k, v = item.split("=", 1)
                values[f.name][k] = v
        else:
            values[f.name] = getattr(args, f.name)
    return cls(**values)


__all__ = ["Path", "add_arguments", "from_args", "opt"]
