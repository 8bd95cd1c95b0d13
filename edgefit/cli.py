"""The `edgefit` command line: parse options, call the library, render, map the outcome to an exit code.

Exit codes (a contract): 0 ok / fits, 1 over budget or a gate failed, 2 usage or input error.
Only this module catches EdgefitError; the library raises it with a one-line message.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from edgefit.errors import EdgefitError, ShapeError

app = typer.Typer(
    name="edgefit",
    help="Will this ONNX model fit the device? Footprint analysis, device budgets, and fuse/prune/quantize passes. "
    "Sizes accept units: KB/MB/GB = 1000 bytes, KiB/MiB/GiB = 1024. Exit codes: 0 ok/fits, 1 over budget, 2 error.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

EXIT_OK, EXIT_OVER_BUDGET, EXIT_USAGE = 0, 1, 2

# No emoji codes: a node named "conv:x:" must not print as a cross mark.
console = Console(highlight=False, emoji=False)
err_console = Console(stderr=True, highlight=False, emoji=False)

# Options shared by every command that takes a MODEL (DESIGN.md section 3).
ModelArg = Annotated[Path, typer.Argument(help="Path to an .onnx model file.", show_default=False)]
InputShapeOpt = Annotated[
    Optional[list[str]],
    typer.Option("--input-shape", help="Pin an input's shape: NAME=1x3x224x224 (repeatable; NAME may be omitted "
                 "when the model has one input).", show_default=False),
]
DimOpt = Annotated[
    Optional[list[str]],
    typer.Option("--dim", help="Bind a symbolic dimension: NAME=VALUE, e.g. batch=1 (repeatable).", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]


def parse_input_shapes(specs: list[str] | None) -> dict[str, list[int]]:
    """'x=1x3x224x224' -> {'x': [1, 3, 224, 224]}; a spec without NAME= is keyed '' (the only input)."""
    shapes: dict[str, list[int]] = {}
    for spec in specs or []:
        name, sep, dims = spec.rpartition("=")
        if not sep:
            name, dims = "", spec
        parts = dims.replace(",", "x").split("x") if dims else []
        if not parts or not all(p.strip().isdigit() for p in parts):
            raise ShapeError(f"invalid --input-shape {spec!r}: expected NAME=1x3x224x224 (positive integers)")
        shape = [int(p) for p in parts]
        if shapes.get(name.strip(), shape) != shape:
            raise ShapeError(f"--input-shape {spec!r} conflicts with an earlier --input-shape for the same input")
        shapes[name.strip()] = shape
    return shapes


def parse_dims(specs: list[str] | None) -> dict[str, int]:
    """'batch=1' -> {'batch': 1}."""
    dims: dict[str, int] = {}
    for spec in specs or []:
        name, sep, value = spec.partition("=")
        if not sep or not name.strip() or not value.strip().isdigit():
            raise ShapeError(f"invalid --dim {spec!r}: expected NAME=VALUE with a non-negative integer VALUE")
        if dims.get(name.strip(), int(value)) != int(value):
            raise ShapeError(f"--dim {spec!r} conflicts with an earlier --dim {name.strip()}={dims[name.strip()]}")
        dims[name.strip()] = int(value)
    return dims


@app.callback()
def _root() -> None:
    # A callback makes typer treat `analyze` as a subcommand even while it is the only command registered.
    pass


def print_json(data: object) -> None:
    """One JSON object on stdout; NaN / infinity (not JSON) are written as null."""
    from edgefit.report.json_format import dumps

    sys.stdout.write(dumps(data))


@app.command()
def analyze(
    model: ModelArg,
    input_shape: InputShapeOpt = None,
    dim: DimOpt = None,
    per_layer: Annotated[bool, typer.Option("--per-layer", help="Show every layer, not just the top ones.")] = False,
    top: Annotated[int, typer.Option("--top", help="How many layers to list by MACs and by memory.", min=0)] = 10,
    alignment: Annotated[int, typer.Option("--alignment", help="Arena buffer alignment in bytes.")] = 16,
    json_out: JsonOpt = False,
) -> None:
    """Parameters, weight bytes, MACs/FLOPs and peak activation RAM of an ONNX model."""
    from edgefit import analyze as analyze_model
    from edgefit.report import terminal

    from edgefit.check import tier_summary
    from edgefit.report.check_text import render_tier_line

    footprint = analyze_model(model, input_shapes=parse_input_shapes(input_shape), dims=parse_dims(dim),
                              alignment=alignment)
    # The first command a user runs should already answer the main question: which tiers does it fit?
    tier_line = render_tier_line(tier_summary(footprint))
    if json_out:
        print_json({**footprint.to_dict(), "tier_summary": tier_line})
    else:
        terminal.render_footprint(console, footprint, per_layer=per_layer, top=top, tier_line=tier_line)


def main(argv: list[str] | None = None) -> int:
    """Run the app; EdgefitError and command-line usage errors become one line on stderr and exit 2.
    Returns the exit code."""
    try:   # typer >= 0.20 vendors click as typer._click; older typer uses click itself
        from typer._click import exceptions as click
    except ImportError:
        from click import exceptions as click

    try:
        # Not standalone: click's usage errors (unknown option, value out of range, missing argument) reach us
        # instead of printing a multi-line usage panel; typer.Exit(n) comes back as n.
        result = app(args=argv, prog_name="edgefit", standalone_mode=False)
    except EdgefitError as error:
        err_console.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)
        return EXIT_USAGE
    except click.NoArgsIsHelpError as help_request:   # `edgefit` or `edgefit check` alone: the help
        text = help_request.format_message()   # typer's rich help prints itself while being formatted
        if text.strip():
            sys.stderr.write(text + "\n")
        return EXIT_USAGE
    except click.ClickException as error:
        where = f" (see '{error.ctx.command_path} --help')" if getattr(error, "ctx", None) is not None else ""
        err_console.print(f"[bold red]error:[/] {escape(error.format_message())}{escape(where)}", soft_wrap=True)
        return EXIT_USAGE if isinstance(error, click.UsageError) else error.exit_code
    except (typer.Abort, getattr(click, "Abort", typer.Abort)):   # Ctrl-C at a prompt
        err_console.print("[bold red]error:[/] aborted", soft_wrap=True)
        return 1
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (EXIT_OK if exit_.code is None else EXIT_USAGE)
    return result if isinstance(result, int) else EXIT_OK


def run() -> None:
    sys.exit(main())


# Commands of the other command groups register themselves on `app` when imported.
from edgefit import cli_check, cli_fit, cli_passes  # noqa: E402,F401
