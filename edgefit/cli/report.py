"""`edgefit report`: one self-contained HTML page about a model — memory timeline, arena layout, per-layer
costs, device verdicts and, with --compare, what a pass changed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgefit.cli.options import (AllTargetsOpt, AssumeDimsOpt, CustomOpOpt, DimOpt, InputShapeOpt, InputValueOpt,
                                 JsonOpt, ModelArg, PrecisionOpt, ProfilesDirOpt, TargetsOpt, console,
                                 parse_assume_dims, parse_custom_ops, parse_dims, parse_input_shapes,
                                 parse_input_values, print_json, targets_or_all)
from edgefit.errors import ConfigError


def report(
    model: ModelArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="The HTML file to write.", show_default=False)],
    target: TargetsOpt = None,
    all_targets: AllTargetsOpt = False,
    precision: PrecisionOpt = None,
    compare: Annotated[Optional[Path], typer.Option(
        "--compare", help="Another version of the model (e.g. the output of 'edgefit optimize'): before -> after "
        "for every figure and per-layer changes.", show_default=False)] = None,
    eval_data: Annotated[Optional[Path], typer.Option(
        "--eval", metavar="DATA", help="Inputs (.npz, optionally with labels) to measure the fidelity of --compare against MODEL.",
        show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Allow -o to name an input file.")] = False,
    profiles_dir: ProfilesDirOpt = None,
    input_shape: InputShapeOpt = None,
    dim: DimOpt = None,
    assume_dims: AssumeDimsOpt = None,
    custom_op: CustomOpOpt = None,
    input_value: InputValueOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Write one offline HTML page about MODEL: summary, memory timeline, arena layout, layers, devices."""
    targets = targets_or_all(target, all_targets, required=False, profiles_dir=profiles_dir)
    from edgefit.model import write_text_atomic
    from edgefit.model_report import build_report
    from edgefit.report.page import render_page

    if eval_data is not None and compare is None:
        raise ConfigError("--eval measures the fidelity of --compare; give --compare OTHER.onnx too")
    built = build_report(model, targets, precision.value if precision else None,
                         compare_with=compare, eval_path=eval_data, profiles_dir=profiles_dir,
                         input_shapes=parse_input_shapes(input_shape), dims=parse_dims(dim),
                         assume_dims=parse_assume_dims(assume_dims), custom_ops=parse_custom_ops(custom_op),
                         input_values=parse_input_values(input_value))
    inputs = [model] + ([compare] if compare else []) + ([eval_data] if eval_data else [])
    written = write_text_atomic(output, render_page(built), inputs=inputs, force=force)
    if json_out:
        print_json({"output": str(written), "bytes": written.stat().st_size, **built.to_dict()})
    else:
        console.print(f"wrote {written} ({written.stat().st_size:,} bytes)")


def register(app: typer.Typer) -> None:
    app.command()(report)
