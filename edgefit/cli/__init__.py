"""The `edgefit` command line: parse options, call the library, render, map the outcome to an exit code.

Exit codes (a contract): 0 ok / fits, 1 over budget or a gate failed, 2 usage or input error, 3 internal error
(a bug in edgefit: an exception it did not expect), 130 interrupted.
Only this package catches EdgefitError (in `main`); the library raises it with a one-line message.

Layout: this root creates the app and registers each command module (a module per command group, each with a
`register(app)`); shared options and parsers live in edgefit.cli.options. Command modules never import this root.
A new command is a new module here plus one line in COMMAND_MODULES.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Annotated

import typer
import typer.main
from rich.markup import escape

from edgefit.cli import analyze, calibrate, check, fit, gate, passes, report
from edgefit.cli.metavars import humanize_metavars
from edgefit.cli.options import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, err_console
from edgefit.errors import EdgefitError

app = typer.Typer(
    name="edgefit",
    help="Will this ONNX model fit the device? Footprint analysis, device budgets, and fuse/prune/quantize passes. "
    "Sizes accept units: KB/MB/GB = 1000 bytes, KiB/MiB/GiB = 1024. Exit codes: 0 ok/fits, 1 over budget, 2 error, "
    "3 internal error (a bug: add --debug anywhere to see its traceback).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

# In the order `edgefit --help` lists their commands.
COMMAND_MODULES = (analyze, check, gate, passes, fit, report, calibrate)
for _module in COMMAND_MODULES:
    _module.register(app)


def _print_version(requested: bool) -> None:
    if requested:
        from edgefit.version import distribution_version

        typer.echo(distribution_version())
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", "-V", callback=_print_version, is_eager=True,
                                          help="Print the distribution name and version, and exit.")] = False,
) -> None:
    # A callback also makes typer treat a lone registered command as a subcommand.
    pass


def main(argv: list[str] | None = None) -> int:
    """Run the app and return the exit code: EdgefitError and command-line usage errors become one `error:` line
    on stderr and exit 2; an exception edgefit did not expect (a bug) one `error:` line and EXIT_INTERNAL, with
    the traceback before it under --debug (accepted anywhere before `--`, or EDGEFIT_DEBUG=1). Output to a
    closed pipe (`edgefit gate | head -1`) is dropped quietly and the command still ends with its own code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = _take_flag(args, "--debug") or os.environ.get("EDGEFIT_DEBUG", "") not in ("", "0")
    stdout = sys.stdout
    sys.stdout = _PipeTolerant(stdout)
    try:
        return _dispatch(args, debug)
    finally:
        sys.stdout = stdout


def _dispatch(args: list[str], debug: bool) -> int:
    try:   # typer >= 0.20 vendors click as typer._click; older typer uses click itself
        from typer._click import exceptions as click
    except ImportError:
        from click import exceptions as click

    try:
        # Not standalone: click's usage errors (unknown option, value out of range, missing argument) reach us
        # instead of printing a multi-line usage panel; typer.Exit(n) comes back as n.
        command = typer.main.get_command(app)
        humanize_metavars(command)
        result = command.main(args=args, prog_name="edgefit", standalone_mode=False)
    except EdgefitError as error:
        _error_line(str(error))
        return EXIT_USAGE
    except click.NoArgsIsHelpError as help_request:   # `edgefit` or `edgefit check` alone: the help
        text = help_request.format_message()   # typer's rich help prints itself while being formatted
        if text.strip():
            sys.stderr.write(text + "\n")
        return EXIT_USAGE
    except click.ClickException as error:
        where = f" (see '{error.ctx.command_path} --help')" if getattr(error, "ctx", None) is not None else ""
        _error_line(error.format_message() + where)
        return EXIT_USAGE if isinstance(error, click.UsageError) else error.exit_code
    except (typer.Abort, getattr(click, "Abort", typer.Abort), KeyboardInterrupt):   # Ctrl-C
        _error_line("interrupted")
        return EXIT_INTERRUPTED
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (EXIT_OK if exit_.code is None else EXIT_USAGE)
    except Exception as error:  # noqa: BLE001 - a bug: one line and its own exit code, never 0, 1 or 2
        if debug:
            traceback.print_exc()
        cause = f"{type(error).__name__}: {str(error).strip()}" if str(error).strip() else type(error).__name__
        _error_line(f"internal error ({cause}); this is a bug in edgefit: please report it to the edgefit "
                    f"maintainers with the command line{'' if debug else ' and the output of --debug'}")
        return EXIT_INTERNAL
    return result if isinstance(result, int) else EXIT_OK


def _error_line(message: str) -> None:
    """One `error:` line: control characters in the message (a newline in a path) are escaped."""
    from edgefit.guard import shown

    text = " ".join(shown(line) for line in message.strip().splitlines()) if message.strip() else "unknown error"
    err_console.print(f"[bold red]error:[/] {escape(shown(text))}", soft_wrap=True)


def _take_flag(args: list[str], flag: str) -> bool:
    """Remove `flag` from `args` (options only: not after `--`); True if it was there."""
    end = args.index("--") if "--" in args else len(args)
    found = flag in args[:end]
    args[:end] = [a for a in args[:end] if a != flag]
    return found


class _PipeTolerant:
    """stdout that stops writing once the reader has gone (a closed pipe), instead of raising BrokenPipeError
    from whatever line happened to print: the command finishes and exits with its own code."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self._closed = False

    def write(self, text: str) -> int:
        if not self._closed:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._close()
        return len(text)

    def flush(self) -> None:
        if not self._closed:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._close()

    def _close(self) -> None:
        self._closed = True
        try:   # the interpreter flushes the real stdout at exit: point it at /dev/null so that cannot fail either
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def run() -> None:
    sys.exit(main())
