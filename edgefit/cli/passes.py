"""`edgefit fuse | prune | quantize | optimize`: the optimisation passes.

Each command is the same few steps over edgefit.passes.pipeline.optimize_file: build PassOptions from the
flags, run, render (tables or --json), exit 1 when --target is given and the result does not fit.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgefit.cli.options import (
    EXIT_OVER_BUDGET,
    AssumeDimsOpt,
    DimOpt,
    InputShapeOpt,
    InputValueOpt,
    JsonOpt,
    ModelArg,
    console,
    err_console,
    parse_assume_dims,
    parse_dims,
    parse_input_shapes,
    parse_input_values,
    print_json,
)

OutputOpt = Annotated[Optional[Path], typer.Option(
    "--output", "-o", help="Where to write the result (default: next to the input, e.g. model.int8.onnx).",
    show_default=False)]
ForceOpt = Annotated[bool, typer.Option("--force", help="Allow -o to be the input file itself (overwrites it).")]
TargetOpt = Annotated[Optional[str], typer.Option(
    "--target", "-t", metavar="DEVICE", help="Device profile (name, alias or .toml file): picks the quantization mode, adds latency "
    "and the fit verdict.",
    show_default=False)]
EvalOpt = Annotated[Optional[Path], typer.Option(
    "--eval", metavar="DATA", help="Fidelity inputs: .npz with one array per input name (+ optional 'labels' for accuracy), "
    "or a folder of .npy files; its arrays bind input dimensions the model leaves open. Default: the calibration "
    "data, else synthetic inputs (several distributions, judged on the worst).", show_default=False)]
SamplesOpt = Annotated[Optional[int], typer.Option(
    "--samples", help="Use at most this many --eval samples for fidelity (without --eval, fidelity runs on all of "
    "the --calib data or on synthetic samples).", min=1, show_default=False)]
SparsityOpt = Annotated[float, typer.Option(
    "--sparsity", "-s", metavar="FRACTION", help="Fraction of weights to zero (unstructured) or of channels to remove (--structured).",
    min=0.0, max=0.99)]
PerLayerOpt = Annotated[bool, typer.Option("--per-layer", help="Same sparsity in every layer instead of one global "
                                           "magnitude threshold.")]
SkipOpt = Annotated[Optional[list[str]], typer.Option(
    "--skip", metavar="NAMES", help="Layer (node) names to leave dense, or 'first' / 'last' (repeatable, comma-separated).",
    show_default=False)]
StructuredOpt = Annotated[bool, typer.Option("--structured", help="Remove whole output channels (lowest L1 norm) "
                                             "so the model really gets smaller and faster.")]
ModeOpt = Annotated[Optional[str], typer.Option(
    "--mode", metavar="int8|a16w8|dynamic|fp16", help="int8 (static QDQ), a16w8 (static QDQ, 16-bit activations, "
    "int8 weights), dynamic (int8 weights, runtime activation scales) or fp16. "
    "Default: from --target's precisions, else int8.", show_default=False)]
CalibOpt = Annotated[Optional[Path], typer.Option(
    "--calib", metavar="DATA", help="Calibration inputs (.npz or folder of .npy); its arrays bind input dimensions the model "
    "leaves open. Without it, synthetic data (N(0,1), [0,1), [0,255] pixels where the input takes them) is used "
    "and the result warns that accuracy may suffer.", show_default=False)]
MethodOpt = Annotated[str, typer.Option("--method", metavar="minmax|entropy|percentile", help="Calibration method: minmax, entropy or percentile.")]
AsymmetricOpt = Annotated[bool, typer.Option(
    "--asymmetric-activations", help="int8 activations with a zero point (all 256 levels for ReLU outputs; "
    "more accurate where the target's kernels support it). Default: symmetric.")]
QuantizeHeadsOpt = Annotated[bool, typer.Option(
    "--quantize-heads", help="Quantize the output heads too (Softmax/Sigmoid and what follows the last weight "
    "layers). Default: they stay float, and the last weight layers' outputs are not requantized.")]
ExcludeOpt = Annotated[Optional[list[str]], typer.Option(
    "--exclude", metavar="NAMES", help="Node names or op types to keep in float (repeatable, comma-separated).", show_default=False)]
WideOpt = Annotated[Optional[list[str]], typer.Option(
    "--wide", metavar="NAMES", help="Node names or op types given 16-bit activations in an int8 model (weights stay "
    "int8; repeatable, comma-separated). fit's answer may name some.", show_default=False)]
PassesOpt = Annotated[str, typer.Option(
    "--passes", metavar="PASSES", help="Comma-separated passes, e.g. fuse,prune:0.5,quantize (prune:S[:structured|:per-layer], "
    "quantize[:int8|:a16w8|:dynamic|:fp16][:minmax|:entropy|:percentile], reorder, decompose[:OP...|:all]: rewrite "
    "ops --target cannot run).")]


def _split(values: list[str] | None) -> tuple[str, ...]:
    return tuple(v.strip() for value in values or [] for v in value.split(",") if v.strip())


@contextmanager
def _progress_bars(enabled: bool):
    """A (label, done, total) callback drawing one rich progress bar per label on stderr."""
    if not enabled or not err_console.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    tasks: dict[str, int] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as bars:
        def update(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = bars.add_task(label, total=total)
            bars.update(tasks[label], completed=done, total=total)
        yield update


def _run(model: Path, output: Path | None, suffix: str, passes: str, *, force: bool, target: str | None,
         eval_path: Path | None, samples: int | None, input_shape: list[str] | None, dim: list[str] | None,
         assume_dims: str | None, input_value: list[str] | None,
         json_out: bool, calib: Path | None = None, mode: str | None = None, **pass_options) -> None:
    """Shared body of the four commands."""
    profile = None
    if target:   # an unknown device is refused before onnx and numpy are imported
        from edgefit.devices.profiles import load_profile

        profile = load_profile(target)
    from edgefit.passes.pipeline import PassOptions, optimize_file
    from edgefit.passes.quantize import mode_for_precisions
    from edgefit.passes.target import assess_target
    from edgefit.report.passes_terminal import render_optimize_report, target_verdict_dict

    chosen_mode = mode or (mode_for_precisions(profile.precisions) if profile else "int8")
    # Ops the target's int8 kernels cannot run stay in float (the profile's int8_ops; unset means all).
    int8_op_types = profile.int8_ops if profile and chosen_mode in ("int8", "a16w8") else None
    options = PassOptions(mode=chosen_mode, input_shapes=parse_input_shapes(input_shape),
                          dims=parse_dims(dim), assume_dims=parse_assume_dims(assume_dims),
                          input_values=parse_input_values(input_value), int8_op_types=int8_op_types,
                          # decompose rewrites what the target's runtime cannot run
                          operator_list=profile.stack_settings().operators if profile else None, **pass_options)
    out = output or model.with_name(f"{model.stem}.{suffix.format(mode=chosen_mode)}.onnx")
    with _progress_bars(not json_out) as progress:
        report = optimize_file(model, out, passes, options, eval_path=eval_path, calib_path=calib,
                               eval_limit=samples, force=force, progress=progress)
    verdict = assess_target(profile, report.before, report.after) if profile else None
    if json_out:
        data = report.to_dict()
        if verdict is not None:
            data["target"] = target_verdict_dict(verdict)
        print_json(data)
    else:
        render_optimize_report(console, report, verdict)
    if verdict is not None and not verdict.fits:
        raise typer.Exit(EXIT_OVER_BUDGET)


def fuse(model: ModelArg, output: OutputOpt = None, force: ForceOpt = False, target: TargetOpt = None,
         eval_path: EvalOpt = None, samples: SamplesOpt = None, input_shape: InputShapeOpt = None,
         dim: DimOpt = None, assume_dims: AssumeDimsOpt = None,
         input_value: InputValueOpt = None, json_out: JsonOpt = False) -> None:
    """Fold BatchNorm/Mul/Add into Conv/Gemm, MatMul+Add into Gemm, constants into weights; drop no-op nodes."""
    _run(model, output, "fused", "fuse", force=force, target=target, eval_path=eval_path, samples=samples,
         input_shape=input_shape, dim=dim, assume_dims=assume_dims, input_value=input_value, json_out=json_out)


def prune(model: ModelArg, sparsity: SparsityOpt = 0.5, per_layer: PerLayerOpt = False, skip: SkipOpt = None,
          structured: StructuredOpt = False, output: OutputOpt = None, force: ForceOpt = False,
          target: TargetOpt = None, eval_path: EvalOpt = None, samples: SamplesOpt = None,
          input_shape: InputShapeOpt = None, dim: DimOpt = None, assume_dims: AssumeDimsOpt = None,
          input_value: InputValueOpt = None,
          json_out: JsonOpt = False) -> None:
    """Magnitude pruning: zero the smallest weights, or remove whole channels with --structured (folds first)."""
    # Folding first turns weights computed by Constant/ConstantOfShape nodes into prunable initializers and
    # BatchNorm into its conv (numerically equivalent), so pruning reaches every weight.
    _run(model, output, "slim" if structured else "pruned", "fuse,prune", force=force, target=target,
         eval_path=eval_path, samples=samples, input_shape=input_shape, dim=dim, assume_dims=assume_dims,
         input_value=input_value,
         json_out=json_out,
         sparsity=sparsity, per_layer=per_layer, skip=_split(skip), structured=structured)


def quantize(model: ModelArg, mode: ModeOpt = None, calib: CalibOpt = None, method: MethodOpt = "minmax",
             asymmetric_activations: AsymmetricOpt = False, quantize_heads: QuantizeHeadsOpt = False,
             exclude: ExcludeOpt = None, wide: WideOpt = None, output: OutputOpt = None, force: ForceOpt = False, target: TargetOpt = None, eval_path: EvalOpt = None, samples: SamplesOpt = None,
             input_shape: InputShapeOpt = None, dim: DimOpt = None, assume_dims: AssumeDimsOpt = None,
             input_value: InputValueOpt = None,
          json_out: JsonOpt = False) -> None:
    """Quantize with onnxruntime: static int8 QDQ (calibrated), dynamic int8, or fp16.

    BatchNorm and constant Mul/Add are folded first (the fuse pass) so that they quantize as part of their layer.
    """
    _run(model, output, "{mode}", "fuse,quantize", force=force, target=target, eval_path=eval_path, samples=samples,
         input_shape=input_shape, dim=dim, assume_dims=assume_dims,
         input_value=input_value, json_out=json_out, calib=calib, mode=mode,
         method=method, quantize_heads=quantize_heads,
         symmetric_activations=not asymmetric_activations, exclude=_split(exclude), wide_nodes=_split(wide))


def optimize(model: ModelArg, passes: PassesOpt = "fuse,quantize", sparsity: SparsityOpt = 0.5,
             per_layer: PerLayerOpt = False, skip: SkipOpt = None, structured: StructuredOpt = False,
             mode: ModeOpt = None, calib: CalibOpt = None, method: MethodOpt = "minmax",
             asymmetric_activations: AsymmetricOpt = False, quantize_heads: QuantizeHeadsOpt = False,
             exclude: ExcludeOpt = None, wide: WideOpt = None, output: OutputOpt = None, force: ForceOpt = False, target: TargetOpt = None, eval_path: EvalOpt = None,
             samples: SamplesOpt = None, input_shape: InputShapeOpt = None, dim: DimOpt = None,
             assume_dims: AssumeDimsOpt = None, input_value: InputValueOpt = None, json_out: JsonOpt = False) -> None:
    """Run several passes in order (fidelity against the original after each), e.g. fuse,prune:0.5,quantize."""
    _run(model, output, "optimized", passes, force=force, target=target, eval_path=eval_path, samples=samples,
         input_shape=input_shape, dim=dim, assume_dims=assume_dims,
         input_value=input_value, json_out=json_out, calib=calib, mode=mode,
         method=method, quantize_heads=quantize_heads,
         symmetric_activations=not asymmetric_activations, exclude=_split(exclude), wide_nodes=_split(wide),
         sparsity=sparsity,
         per_layer=per_layer, skip=_split(skip), structured=structured)


def register(app: typer.Typer) -> None:
    for command in (fuse, prune, quantize, optimize):
        app.command()(command)
