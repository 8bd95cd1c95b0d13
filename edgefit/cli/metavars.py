"""Metavars a person would write in `--help`, for every parameter of every command.

typer >= 0.20 shows each option's Python type in angle brackets (`<list[str]>`, `<bool>`, `<int>`): internal
names that tell a user nothing about what to type. An option that declares `metavar=` (NAME=AxBxC, SIZE, DEVICE)
keeps it; every other parameter gets one here, from its type, once the click command tree is built:

    flag (--json)            nothing: a flag takes no value
    choice / Enum            table|json|markdown
    Path                     PATH
    int / float              N / NUMBER
    str                      TEXT
    argument                 its name in capitals (MODEL)

Works on click's own parameters (typer < 0.20: `param.type`) and on typer's (`param.type_descriptor`).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any, get_args, get_origin

# click ParamType.name -> metavar, for typer versions that build click types.
_CLICK_TYPE_METAVARS = {"integer": "N", "integer range": "N", "float": "NUMBER", "float range": "NUMBER",
                        "path": "PATH", "text": "TEXT", "filename": "PATH", "file": "PATH"}
_PYTHON_TYPE_METAVARS = {int: "N", float: "NUMBER", str: "TEXT", Path: "PATH"}


def humanize_metavars(command: Any) -> None:
    """Set a metavar on every parameter of `command` and its subcommands that declares none (in place)."""
    params = list(command.params)
    help_option = _help_option(command)
    if help_option is not None:
        params.append(help_option)
    for param in params:
        if param.metavar is None:
            param.metavar = _metavar(param)
        if param.param_type_name == "argument" and hasattr(param, "type_descriptor"):
            # typer >= 0.20 prints an argument's type beside its name and ignores the metavar there; the name
            # column already shows the metavar (MODEL), so the type column stays empty.
            param.display_type_rich = lambda ctx: None
    for subcommand in getattr(command, "commands", {}).values():
        humanize_metavars(subcommand)


def _help_option(command: Any) -> Any:
    """The command's --help option: click builds it on demand (typer >= 0.20 then keeps it), outside `params`."""
    try:
        return command.get_help_option(command.context_class(command))
    except (AttributeError, TypeError):
        return None


def _metavar(param: Any) -> str:
    if param.param_type_name == "argument":
        return param.name.upper()
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return ""
    choices = _choices(param)
    if choices:
        return "|".join(choices)
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is not None:
        annotation = descriptor.annotation
        while get_origin(annotation) in (list, tuple) and get_args(annotation):
            annotation = get_args(annotation)[0]
        if isinstance(annotation, type) and issubclass(annotation, Path):
            return "PATH"
        return _PYTHON_TYPE_METAVARS.get(annotation, "VALUE")
    return _CLICK_TYPE_METAVARS.get(getattr(param.type, "name", ""), "VALUE")


def _choices(param: Any) -> list[str]:
    descriptor = getattr(param, "type_descriptor", None)
    choices = (descriptor.choices if descriptor is not None and descriptor.is_choice
               else getattr(getattr(param, "type", None), "choices", None))
    return [str(c.value if isinstance(c, Enum) else c) for c in choices or ()]
