"""`edgefit gate`: every [[gate]] of edgefit.toml against its budgets and baseline; exit 1 on any breach."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgefit.cli.options import (EXIT_OVER_BUDGET, CustomOpOpt, FormatOpt, ProfilesDirOpt, ReportFormat, json_or_format,
                                 parse_custom_ops, write_report)


def gate(
    config: Annotated[Path, typer.Option("--config", "-c", help="Gate configuration file.")] = Path("edgefit.toml"),
    output_format: FormatOpt = ReportFormat.table,
    profiles_dir: ProfilesDirOpt = None,
    custom_op: CustomOpOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
) -> None:
    """Check every \\[\\[gate]] of edgefit.toml against its budgets and baseline; exit 1 on any breach."""
    from edgefit.gate import run_gate
    from edgefit.report.check_terminal import render_gate

    output_format = json_or_format(output_format, json_out)
    report = run_gate(config, profiles_dir, parse_custom_ops(custom_op))
    write_report(report, output_format, render_gate)
    if not report.passed:
        raise typer.Exit(EXIT_OVER_BUDGET)


def register(app: typer.Typer) -> None:
    app.command()(gate)
