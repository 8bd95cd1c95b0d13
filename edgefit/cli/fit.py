"""`edgefit fit`: from a device budget to the best model that fits.

Parses the options, calls edgefit.fitting.fit, renders (tables or --json); exit 0 when every target got a fitting
model written, 1 when some target has none, 2 (via EdgefitError in edgefit.cli.main) on bad input.
"""

from __future__ import annotations

from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgefit.cli.options import (
    EXIT_OVER_BUDGET,
    AssumeDimsOpt,
    CustomOpOpt,
    DimOpt,
    InputShapeOpt,
    InputValueOpt,
    JsonOpt,
    MaxFlashOpt,
    MaxLatencyOpt,
    MaxPowerOpt,
    MaxRamOpt,
    ModelArg,
    ProfilesDirOpt,
    RateOpt,
    RuntimeOpt,
    console,
    err_console,
    known_targets,
    parse_assume_dims,
    parse_custom_ops,
    parse_dims,
    parse_input_shapes,
    parse_input_values,
    print_json,
)
from edgefit.errors import ConfigError


class Objective(str, Enum):
    fidelity = "fidelity"
    size = "size"
    latency = "latency"
    energy = "energy"


@contextmanager
def _progress_bar(enabled: bool):
    """A (candidate, done, planned) callback drawing one rich progress bar on stderr."""
    if not enabled or not err_console.is_terminal:
        yield None
        return
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as bars:
        task = bars.add_task("fit", total=None)

        def update(candidate: str, done: int, planned: int) -> None:
            bars.update(task, description=escape(candidate), completed=done, total=planned)
        yield update


def fit(
    model: ModelArg,
    target: Annotated[Optional[list[str]], typer.Option(
        "--target", "-t", metavar="DEVICE", help="Device profile name, alias or .toml path (repeatable: one model per device).",
        show_default=False)] = None,
    tiers: Annotated[bool, typer.Option(
        "--tiers", help="One model per tier: dgx-a100 (cloud), coral-dev-board (edge), iphone-15-pro (mobile), "
        "arduino-nano-33-ble-sense (tiny), with fit-manifest.json.")] = False,
    max_ram: MaxRamOpt = None,
    max_flash: MaxFlashOpt = None,
    max_latency: MaxLatencyOpt = None,
    max_power: MaxPowerOpt = None,
    rate: RateOpt = None,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Model file to write (one target; default MODEL.fit.onnx), or the directory for "
        "several targets / --tiers (default MODEL-fit/): <stem>.<device>.onnx + fit-manifest.json.",
        show_default=False)] = None,
    objective: Annotated[Objective, typer.Option(
        "--objective", help="fidelity: the fitting recipe with the best fidelity; size / latency / energy: the "
        "cheapest recipe (in that cost) that fits and holds the fidelity floor.")] = Objective.fidelity,
    min_cosine: Annotated[Optional[float], typer.Option(
        "--min-cosine", metavar="COSINE", help="Fidelity floor: cosine similarity of the outputs to the original's (default 0.99 "
        "unless only --max-accuracy-drop is given).", show_default=False)] = None,
    max_accuracy_drop: Annotated[Optional[str], typer.Option(
        "--max-accuracy-drop", metavar="POINTS", help="Fidelity floor: accuracy may drop at most this much, e.g. 1% (needs --eval "
        "with labels).", show_default=False)] = None,
    calib: Annotated[Optional[Path], typer.Option(
        "--calib", metavar="DATA", help="Calibration inputs (.npz or folder of .npy; the arrays bind open input dimensions). "
        "Without it, synthetic data from several distributions, the floor judged on the worst (with a warning).",
        show_default=False)] = None,
    eval_path: Annotated[Optional[Path], typer.Option(
        "--eval", metavar="DATA", help="Fidelity inputs (.npz with one array per input + optional 'labels'). Default: --calib, "
        "else synthetic.", show_default=False)] = None,
    time_budget: Annotated[Optional[str], typer.Option(
        "--time-budget", metavar="DURATION", help="Bound the search, e.g. 5m or 30s (a bare number is ms); what was not tried is "
        "reported.",
        show_default=False)] = None,
    quantize_heads: Annotated[bool, typer.Option(
        "--quantize-heads", help="Quantize the output heads too (default: Softmax/Sigmoid and what follows the last "
        "weight layers stay float).")] = False,
    runtime: RuntimeOpt = None,
    profiles_dir: ProfilesDirOpt = None,
    input_shape: InputShapeOpt = None,
    dim: DimOpt = None,
    assume_dims: AssumeDimsOpt = None,
    custom_op: CustomOpOpt = None,
    input_value: InputValueOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Search fuse / precision / float-layer / pruning recipes for the best model that fits the device(s)."""
    known_targets(target, profiles_dir)
    from edgefit.devices.check import Budgets, resolve_targets
    from edgefit.fitting import fit as fit_model
    from edgefit.fitting import parse_accuracy_drop, tier_targets
    from edgefit.report.fit_terminal import render_fit_report
    from edgefit.units import parse_duration_s

    if not target and not tiers:
        raise ConfigError("no target given: name one with --target NAME (see 'edgefit profiles list') or use --tiers")
    custom_ops = parse_custom_ops(custom_op)
    profiles = resolve_targets(list(target or []) + (list(tier_targets()) if tiers else []), profiles_dir, custom_ops)
    several = len(profiles) > 1
    out = output or (model.with_name(f"{model.stem}-fit") if several else model.with_name(f"{model.stem}.fit.onnx"))
    with _progress_bar(not json_out) as progress:
        report = fit_model(
            model, profiles, Budgets.parse(max_ram, max_flash, max_latency, max_power), rate,
            objective=objective.value, min_cosine=min_cosine, max_accuracy_drop=parse_accuracy_drop(max_accuracy_drop),
            calib=calib, eval_path=eval_path, output=out,
            time_budget_s=parse_duration_s(time_budget) if time_budget is not None else None,
            input_shapes=parse_input_shapes(input_shape), dims=parse_dims(dim), runtime=runtime,
            profiles_dir=profiles_dir, progress=progress, assume_dims=parse_assume_dims(assume_dims),
            input_values=parse_input_values(input_value), custom_ops=custom_ops, quantize_heads=quantize_heads)
    if json_out:
        print_json(report.to_dict())
    else:
        render_fit_report(console, report)
    if not report.fits:
        raise typer.Exit(EXIT_OVER_BUDGET)


def register(app: typer.Typer) -> None:
    app.command()(fit)
