"""Run passes in sequence, prove each left its input untouched and produced a valid model, and measure fidelity
against the original model after every pass.

A pass list is written `fuse,prune:0.5,quantize` -- each name optionally followed by colon-separated arguments
that the pass parses itself (`prune:SPARSITY[:structured|:per-layer]`, `quantize[:int8|:dynamic|:fp16]`); passes
are looked up by name in edgefit.passes.registry. What a pass does not get from its arguments comes from
PassOptions.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onnx import ModelProto

from edgefit.analysis.footprint import Footprint, analyze
from edgefit.errors import ConfigError, ModelError, PassError, ShapeError
from edgefit.guard import check_run_memory
from edgefit.fidelity import (Fidelity, Progress, SampleSet, compare, load_samples, run_model, select_samples,
                              shapes_from_data)
from edgefit.model import (index_graph, load_model, prepare_output, refuse_overwrite, save_model, sort_nodes,
                           validate)
from edgefit.passes.base import PassOptions, PassResult, PassStats, copy_model
from edgefit.passes.registry import get_pass


@dataclass(frozen=True)
class PassSpec:
    name: str
    options: PassOptions | None = None   # None: the run's options unchanged

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class PassStep:
    spec: str
    stats: PassStats
    fidelity: Fidelity | None

    def to_dict(self) -> dict[str, Any]:
        return {"pass": self.spec, "stats": self.stats.to_dict(),
                "fidelity": self.fidelity.to_dict() if self.fidelity else None}


@dataclass(frozen=True)
class PipelineResult:
    model: ModelProto
    steps: tuple[PassStep, ...]
    # The arena of the last int8/fp16 quantize pass's input with its float activations at the new precision:
    # what a runtime that fuses the QDQ pairs (or runs fp16) keeps. None: no such pass.
    deployed_activation_bytes: int | None = None

    @property
    def fidelity(self) -> Fidelity | None:
        return self.steps[-1].fidelity if self.steps else None


def parse_passes(text: str, base: PassOptions = PassOptions()) -> tuple[PassSpec, ...]:
    """'fuse,prune:0.5,quantize:fp16' -> PassSpecs with their options resolved against `base`; each pass parses
    its own arguments. A pass whose requirement an earlier pass removes is refused."""
    specs = []
    removed: dict[str, str] = {}   # property -> the pass that removed it
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, *args = item.split(":")
        chosen = get_pass(name)
        missing = sorted(chosen.requires & removed.keys())
        if missing:
            raise ConfigError(f"--passes {text!r}: {name} needs {missing[0]}, which {removed[missing[0]]} "
                              "before it removes")
        removed.update(dict.fromkeys(chosen.removes, name))
        for gained in chosen.ensures:
            removed.pop(gained, None)
        specs.append(PassSpec(item, dataclasses.replace(base, **chosen.parse_args(args, item))))
    if not specs:
        raise ConfigError("--passes names no pass")
    return tuple(specs)


def apply_pass(model: ModelProto, spec: PassSpec, options: PassOptions = PassOptions(),
               progress: Progress | None = None) -> PassResult:
    """Run one pass on `model`, which it leaves untouched (Pass.apply checks)."""
    return get_pass(spec.name.split(":")[0]).apply(model, spec.options or options, progress)


def run_passes(model: ModelProto, passes: str | Sequence[PassSpec], options: PassOptions = PassOptions(), *,
               fidelity_samples: SampleSet | None = None, progress: Progress | None = None) -> PipelineResult:
    """Apply passes in order. After each one: the input is unchanged (hash, in Pass.apply), the result passes
    onnx.checker, and, with `fidelity_samples`, the result is compared with the ORIGINAL model on those samples."""
    specs = parse_passes(passes, options) if isinstance(passes, str) else tuple(passes)
    reference_outputs = None
    if fidelity_samples is not None:
        reference_outputs = run_model(model, fidelity_samples, progress, what="the original model",
                                      label="running original")
    current, steps, deployed = _topologically_sorted(model), [], None
    for spec in specs:
        result = apply_pass(current, spec, options, progress)
        mode = getattr(result.stats, "mode", None)
        if mode in ("int8", "fp16"):   # worked out now, so the float model need not be kept to the end
            deployed = analyze(current, **options.shape_bindings).activation_bytes_at(mode)
        # Let go of the pass's input before the result's checks and fidelity run: with large weights the
        # intermediate model would otherwise sit beside the result and its onnxruntime session.
        current = result.model
        try:
            validate(result.model, f"the result of pass {spec}")
        except ModelError as error:
            raise PassError(str(error)) from None
        fidelity = None
        if fidelity_samples is not None:
            fidelity = compare(model, result.model, fidelity_samples, progress, reference_outputs=reference_outputs,
                               candidate_name=f"the result of pass {spec}", label=f"fidelity after {spec}")
        steps.append(PassStep(str(spec), result.stats, fidelity))
    return PipelineResult(current, tuple(steps), deployed)


def _topologically_sorted(model: ModelProto) -> ModelProto:
    """The model itself, or a sorted copy when its nodes are stored out of topological order: onnxruntime and
    edgefit's analysis accept such files, but a pass result must pass onnx.checker, which requires the order."""
    order = index_graph(model.graph).order
    if order == list(range(len(order))):
        return model
    ordered = copy_model(model)
    sort_nodes(ordered)
    return ordered


def _refuse_external_data_overwrite(source: Path, target: Path, force: bool) -> None:
    """The input model's external data files are part of the input: never write the result (or the .data file
    a result above 2 GiB gets) over one of them, even with --force, which is about the model file itself."""
    import onnx

    from edgefit.model import iter_tensors

    metadata = onnx.load(str(source), load_external_data=False)
    data_files = {os.path.realpath(source.parent / entry.value) for tensor in iter_tensors(metadata.graph)
                  for entry in tensor.external_data if entry.key == "location"}
    for written in (target, target.with_name(target.name + ".data")):
        # realpath: Path.resolve() raises on a symlink loop, which `out.data` may be
        if os.path.realpath(written) in data_files and os.path.realpath(written) != os.path.realpath(source):
            raise ModelError(f"refusing to write {written}: it holds external data of the input model {source}; "
                             "choose another -o")


@dataclass(frozen=True)
class OptimizeReport:
    """Everything one optimisation command reports: footprints before and after, each pass, final fidelity."""

    input_path: str
    output_path: str
    before: Footprint
    after: Footprint
    steps: tuple[PassStep, ...]
    fidelity: Fidelity | None
    # Arena when the runtime keeps activations at the quantized precision (QDQ pairs fused into integer kernels,
    # or fp16 compute); the `after` footprint counts the QDQ graph's tensors as the file spells them.
    deployed_activation_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.input_path, "output": self.output_path, "before": self.before.to_dict(),
                "after": self.after.to_dict(), "deployed_activation_bytes": self.deployed_activation_bytes,
                "passes": [s.to_dict() for s in self.steps],
                "fidelity": self.fidelity.to_dict() if self.fidelity else None}


def optimize_file(input_path: str | Path, output_path: str | Path, passes: str | Sequence[PassSpec],
                  options: PassOptions = PassOptions(), *, eval_path: str | Path | None = None,
                  calib_path: str | Path | None = None, eval_limit: int | None = None, force: bool = False,
                  progress: Progress | None = None) -> OptimizeReport:
    """Load a model file, run the passes with fidelity after each, save the result atomically, and report.

    Fidelity runs on `eval_path` (with labels: accuracy too), else on the calibration samples, else on
    synthetic inputs. The input file is never written; `output_path` equal to it is refused unless `force`.
    """
    source, target = Path(input_path), Path(output_path)
    refuse_overwrite(source, target, force)   # before any work, not only at save time
    prepare_output(target, create=False)
    loaded = load_model(source, load_weights=True)
    if loaded.has_external_data:
        _refuse_external_data_overwrite(source, target, force)
    # The data are read here, against the model loaded once, rather than by the caller; their arrays bind the
    # input dimensions the model leaves open.
    evaluation = load_samples(eval_path, loaded.proto, limit=eval_limit) if eval_path is not None else None
    if calib_path is not None:
        options = dataclasses.replace(options, calibration=load_samples(calib_path, loaded.proto))
    options = dataclasses.replace(options, input_shapes=shapes_from_data(
        loaded.proto, options.input_shapes, options.dims, calibration=options.calibration, evaluation=evaluation))
    before = analyze(loaded, **options.shape_bindings)
    check_run_memory(before.peak_activation_bytes, before.inputs, ShapeError)
    samples = select_samples(loaded.proto, evaluation=evaluation, calib=options.calibration, limit=eval_limit,
                             **options.shape_bindings,
                             # float32 outputs, most models' (an output of unknown shape counts nothing)
                             output_bytes=sum(4 * math.prod(shape) for shape in before.outputs.values() if shape))
    result = run_passes(loaded.proto, passes, options, fidelity_samples=samples, progress=progress)
    save_model(result.model, target, input_path=source, force=force)
    after = analyze(result.model, **options.shape_bindings)
    return OptimizeReport(str(source), str(target), before, after, result.steps, result.fidelity,
                          result.deployed_activation_bytes)
