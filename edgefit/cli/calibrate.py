"""CLI command `edgefit calibrate`: fit a device profile to measured latencies and write it."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgefit.cli.options import JsonOpt, ProfilesDirOpt, console, err_console, print_json


@contextmanager
def _progress_bar(enabled: bool):
    """A (what, done, total) callback drawing one rich progress bar on stderr."""
    if not enabled or not err_console.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("timing {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task("", total=None)

        def update(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total)
        yield update


def calibrate(
    measurements: Annotated[Path, typer.Argument(help="Measurement file (.toml): base profile and \\[\\[measurement]] "
                                                 "entries.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Profile file to write (.toml).",
                                         show_default=False)],
    measure: Annotated[bool, typer.Option("--measure", help="Time every model here with onnxruntime (and generated "
                                          "single-layer kernels) instead of reading latencies from the file.")] = False,
    threads: Annotated[int, typer.Option("--threads", min=1, help="onnxruntime intra-op threads for --measure.")] = 1,
    runtime: Annotated[Optional[str], typer.Option(
        "--runtime", metavar="STACK", help="Name of the runtime stack to fit (default: onnxruntime-cpu with --measure, else the "
        "base profile's default stack, refitted, or 'calibrated' when it has none).", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Allow -o to overwrite the base profile's file.")] = False,
    profiles_dir: ProfilesDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Fit a device profile's latency coefficients (and active power) to measured models; write it as a profile."""
    from edgefit.devices.calibrate import calibrate as fit_profile
    from edgefit.devices.calibrate import check_output, load_measurements, resolve_base, write_profile

    spec = load_measurements(measurements)
    # Refuse a bad -o before minutes of timing, not after.
    check_output(spec, output, resolve_base(spec.base, spec.path.parent, profiles_dir), force=force)
    with _progress_bar(measure and not json_out) as progress:
        result = fit_profile(spec, measure=measure, threads=threads, runtime=runtime, profiles_dir=profiles_dir,
                             progress=progress)
    for skipped in result.skipped:   # one line each, on stderr: --json keeps stdout for the document
        err_console.print(f"warning: skipped {skipped.label}: {skipped.reason}", markup=False, soft_wrap=True)
    written = write_profile(result, output, force=force)
    if json_out:
        print_json({**result.to_dict(), "written": str(written)})
    else:
        from edgefit.report.calibrate_terminal import render_calibration

        render_calibration(console, result, written)


def register(app: typer.Typer) -> None:
    app.command()(calibrate)
