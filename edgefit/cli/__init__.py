"""The `edgefit` command line: parse options, call the library, render, map the outcome to an exit code.

Exit codes (a contract): 0 ok / fits, 1 over budget or a gate failed, 2 usage or input error.
Only this package catches EdgefitError (in `main`); the library raises it with a one-line message.

Layout: this root creates the app and registers each command module (a module per command group, each with a
`register(app)`); shared options and parsers live in edgefit.cli.options. Command modules never import this root.
A new command is a new module here plus one line in COMMAND_MODULES.
"""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from edgefit.cli import analyze, check, gate, passes
from edgefit.cli.options import EXIT_OK, EXIT_USAGE, err_console
from edgefit.errors import EdgefitError

app = typer.Typer(
    name="edgefit",
    help="Will this ONNX model fit the device? Footprint analysis, device budgets, and fuse/prune/quantize passes. "
    "Sizes accept units: KB/MB/GB = 1000 bytes, KiB/MiB/GiB = 1024. Exit codes: 0 ok/fits, 1 over budget, 2 error.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

# In the order `edgefit --help` lists their commands.
COMMAND_MODULES = (analyze, check, gate, passes)
for _module in COMMAND_MODULES:
    _module.register(app)


@app.callback()
def _root() -> None:
    # A callback makes typer treat a lone registered command as a subcommand.
    pass


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
