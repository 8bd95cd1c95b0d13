"""`edgefit analyze`: parameters, weight bytes, MACs/FLOPs and peak activation RAM, plus the tier line."""

from __future__ import annotations

import sys
from enum import Enum
from typing import Annotated

import typer

from edgefit.cli.options import (
    AssumeDimsOpt,
    CustomOpOpt,
    DimOpt,
    InputShapeOpt,
    InputValueOpt,
    JsonOpt,
    ModelArg,
    console,
    json_or_format,
    parse_assume_dims,
    parse_custom_ops,
    parse_dims,
    parse_input_shapes,
    parse_input_values,
    print_json,
)
from edgefit.errors import ProfileError

# The formats that render a model (ModelReport.render_model), besides the terminal table and JSON.
AnalyzeFormat = Enum("AnalyzeFormat", {name: name for name in ("table", "json", "markdown", "html")}, type=str)


def analyze(
    model: ModelArg,
    input_shape: InputShapeOpt = None,
    dim: DimOpt = None,
    assume_dims: AssumeDimsOpt = None,
    input_value: InputValueOpt = None,
    per_layer: Annotated[bool, typer.Option("--per-layer", help="Show every layer, not just the top ones.")] = False,
    top: Annotated[int, typer.Option("--top", help="How many layers to list by MACs and by memory.", min=0)] = 10,
    alignment: Annotated[int, typer.Option("--alignment", help="Arena buffer alignment in bytes.")] = 16,
    output_format: Annotated[AnalyzeFormat, typer.Option(
        "--format", "-f", help="table, json, markdown (PR comment) or html (the page 'edgefit report' writes, on "
        "stdout).")] = AnalyzeFormat.table,
    custom_op: CustomOpOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Parameters, weight bytes, MACs/FLOPs and peak activation RAM of an ONNX model."""
    from edgefit.analysis.footprint import analyze as analyze_model
    from edgefit.devices.check import tier_summary
    from edgefit.model import collector_paused
    from edgefit.report.check_text import render_tier_line

    output_format = json_or_format(output_format, json_out)
    with collector_paused():   # one collection after the command, not one after each of its steps
        footprint = analyze_model(model, input_shapes=parse_input_shapes(input_shape), dims=parse_dims(dim),
                                  alignment=alignment, assume_dims=parse_assume_dims(assume_dims),
                                  input_values=parse_input_values(input_value))
        if output_format.value in ("markdown", "html"):
            from edgefit.model_report import build_report
            from edgefit.report.formats import get_format

            sys.stdout.write(get_format(output_format.value).render_model(build_report(footprint, None)))
            return
        # The first command a user runs should already answer the main question: which tiers does it fit? A
        # broken profile under EDGEFIT_PROFILES costs only that line: the analysis itself needs no profile.
        try:
            tier_line = render_tier_line(tier_summary(footprint, custom_ops=parse_custom_ops(custom_op)))
        except ProfileError as error:
            tier_line = f"Tiers unknown: a device profile could not be read ({error})"
        if output_format.value == "json":
            print_json({**footprint.to_dict(), "tier_summary": tier_line})
        else:
            from edgefit.report import terminal  # rich's tables: only the table format needs them

            terminal.render_footprint(console, footprint, per_layer=per_layer, top=top, tier_line=tier_line)


def register(app: typer.Typer) -> None:
    app.command()(analyze)
