"""What every command shares: the consoles, exit codes, common options and their parsers, JSON output.

Command modules import from here, never from the root `edgefit.cli` (which imports them to register them).
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from edgefit.errors import ConfigError

# The parsers live in the library (edgefit.units, light to import) so library callers get the same checks.
from edgefit.units import parse_assume_dims, parse_dims, parse_input_shapes, parse_input_values  # noqa: F401 - re-exported

EXIT_OK, EXIT_OVER_BUDGET, EXIT_USAGE = 0, 1, 2
# An exception edgefit did not expect (a bug), never confused with a verdict; Ctrl-C, as shells report SIGINT.
EXIT_INTERNAL, EXIT_INTERRUPTED = 3, 130

# No emoji codes: a node named "conv:x:" must not print as a cross mark.
console = Console(highlight=False, emoji=False)
err_console = Console(stderr=True, highlight=False, emoji=False)

# Options shared by every command that takes a MODEL (DESIGN.md section 3).
def _readable_model(path: Path | None) -> Path | None:
    """A missing model file, a folder or a FIFO is refused while the options are parsed, before the command
    imports onnx and numpy (about a second): an input error comes back as fast as --help (issue 19)."""
    from edgefit.errors import ModelError
    from edgefit.guard import regular_file

    return None if path is None else regular_file(path, "model file", ModelError)


ModelArg = Annotated[Path, typer.Argument(help="Path to an .onnx model file.", show_default=False,
                                          callback=_readable_model)]
InputShapeOpt = Annotated[
    Optional[list[str]],
    typer.Option("--input-shape", metavar="NAME=AxBxC", help="Pin an input's shape: NAME=1x3x224x224 (repeatable; NAME may be omitted "
                 "when the model has one input).", show_default=False),
]
DimOpt = Annotated[
    Optional[list[str]],
    typer.Option("--dim", metavar="NAME=VALUE", help="Bind a symbolic dimension: NAME=VALUE, e.g. batch=1 (repeatable).", show_default=False),
]
AssumeDimsOpt = Annotated[Optional[str], typer.Option(
    "--assume-dims", metavar="N", help="Give every dimension nothing else binds this size (e.g. 1), with a warning. Without it "
    "a batch-like leading dimension is 1, image sizes come from the exporter's metadata, and any other unbound "
    "dimension is an error naming the --input-shape / --dim to pass.", show_default=False)]
InputValueOpt = Annotated[Optional[list[str]], typer.Option(
    "--input-value", help="Give a scalar (or short 1-D) input's value: NAME=VALUE, e.g. sr=16000, or NAME=1,2,3 "
    "(repeatable). An If whose condition follows from it is then counted for the branch it takes.",
    show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]
class Precision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"


TargetsOpt = Annotated[Optional[list[str]], typer.Option(
    "--target", "-t", metavar="DEVICE", help="Device profile name, alias or .toml path (repeatable); see 'edgefit profiles list'.",
    show_default=False)]
AllTargetsOpt = Annotated[bool, typer.Option("--all", help="Every known device instead of --target.")]
PrecisionOpt = Annotated[Optional[Precision], typer.Option(
    "--precision", help="Precision the model is deployed in. Default: the model's own (from its weights).",
    show_default=False)]
# Budgets and the runtime stack, as check, gate and fit take them.
MaxRamOpt = Annotated[Optional[str], typer.Option(
    "--max-ram", metavar="SIZE", help="Tighten the RAM limit, e.g. 200KiB (KB = 1000 bytes, KiB = 1024).", show_default=False)]
MaxFlashOpt = Annotated[Optional[str], typer.Option(
    "--max-flash", metavar="SIZE", help="Tighten the flash limit, e.g. 1MB.", show_default=False)]
MaxLatencyOpt = Annotated[Optional[str], typer.Option(
    "--max-latency", metavar="DURATION", help="Latency budget, e.g. 20ms (replaces one the profile declares). Without a budget "
    "latency is reported against the tier's typical band (tiny 1-10 ms, ...) and does not decide the fit.",
    show_default=False)]
RateOpt = Annotated[Optional[float], typer.Option(
    "--rate", metavar="RATE", help="Inferences per second, for average power and battery life (default: back to back). "
    "Also a latency budget: the device must keep up, so latency must stay under 1/rate.", show_default=False)]
MaxPowerOpt = Annotated[Optional[str], typer.Option(
    "--max-power", metavar="POWER", help="Average power budget at --rate, e.g. 50mW.", show_default=False)]
RuntimeOpt = Annotated[Optional[str], typer.Option(
    "--runtime", metavar="STACK", help="Runtime stack of the targets' profiles, e.g. stm32cube-ai-8.1 (default: each profile's "
    "default_runtime); 'edgefit profiles show NAME' lists them.", show_default=False)]
CustomOpOpt = Annotated[Optional[list[str]], typer.Option(
    "--custom-op", help="An op you wrote a kernel for, as DOMAIN.NAME (e.g. com.example.Frobnicate; repeatable): "
    "judged supported on every target's operator list instead of refused.", show_default=False)]
ProfilesDirOpt = Annotated[Optional[list[Path]], typer.Option(
    "--profiles-dir", metavar="DIR", help="Directory of extra device profiles (*.toml), searched before EDGEFIT_PROFILES and the "
    "built-ins; a profile there overrides a built-in of the same name (repeatable).", show_default=False)]


def parse_custom_ops(values: list[str] | None) -> tuple[str, ...]:
    """--custom-op values as judging keys them; a malformed one is a usage error."""
    from edgefit.devices.fields import custom_op_name

    try:
        return tuple(custom_op_name(value) for value in values or ())
    except ValueError as error:
        raise ConfigError(f"--custom-op: {error}") from None


def _report_formats() -> type[Enum]:
    from edgefit.report.formats import format_names

    return Enum("ReportFormat", {name: name for name in ("table", *format_names())}, type=str)


# `table` is the terminal rendering; the others are the files of edgefit/report/*_format.py.
ReportFormat = _report_formats()
FormatOpt = Annotated[ReportFormat, typer.Option(
    "--format", "-f", help="table, json, markdown (PR comment), junit (XML test report), github "
    "(workflow annotations) or html (a standalone page for CI artifacts).")]


def targets_or_all(target: list[str] | None, all_targets: bool, *, required: bool,
                   profiles_dir: list[Path] | None = None) -> list[str] | None:
    """--target names (an empty list when none and not `required`), or None for --all; both is a usage error.
    Each name is looked up now, so an unknown device is refused before the model is read."""
    if target and all_targets:
        raise ConfigError("give either --target or --all, not both")
    if required and not target and not all_targets:
        raise ConfigError("no target given: name one with --target NAME (see 'edgefit profiles list') or use --all")
    known_targets(target, profiles_dir)
    return None if all_targets else list(target or ())


def known_targets(names: list[str] | None, profiles_dir: list[Path] | None = None) -> None:
    """Refuse an unknown device name (with its "did you mean") before a command imports onnx and numpy: reading
    the profiles takes milliseconds, the model's analysis a second or more."""
    from edgefit.devices.profiles import load_profile

    for name in names or ():
        load_profile(name, profiles_dir)


def json_or_format(output_format: Enum, json_out: bool) -> Enum:
    """--json is --format json; with another --format it asks for two formats."""
    if not json_out:
        return output_format
    if output_format.value not in ("table", "json"):
        raise ConfigError(f"--json and --format {output_format.value} ask for two formats; give one")
    return type(output_format)("json")


def print_json(data: object) -> None:
    """One JSON object on stdout; NaN / infinity (not JSON) are written as null."""
    from edgefit.report.json_format import dumps

    sys.stdout.write(dumps(data))


def write_report(report, output_format: Enum, render_table) -> None:
    """The report in `output_format`: `render_table(console, report)` for the table, else the registered format
    (a CheckReport is rendered as a gate report, one result per target)."""
    if output_format.value == "table":
        render_table(console, report)
        return
    from edgefit.devices.check import CheckReport
    from edgefit.report.formats import get_format

    if isinstance(report, CheckReport) and output_format.value != "json":
        from edgefit.gate import check_as_gate_report

        report = check_as_gate_report(report)
    sys.stdout.write(get_format(output_format.value).render(report))
