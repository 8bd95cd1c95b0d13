"""From a device budget to the best model that fits: search pass recipes, judge each candidate on the device and
measure its fidelity in onnxruntime, keep the best (or the cheapest) one that fits.

The search space, per target device:

* precision: the fused float model, then each quantization mode the target's runtime can execute (fp16 when it
  lists fp16; static int8 when it lists int8, restricted to the profile's `int8_ops`; dynamic int8 too, except
  on microcontrollers, whose runtimes run full-integer models only);
* static int8 calibrated two ways (minmax, percentile), and A16W8 (16-bit activations, int8 weights) where the
  target's runtime has int16-activation kernels for every op of the model (its operator list says which);
  output heads stay float (edgefit.passes.quantize);
* the best static recipe that fits the budget but misses the floor, with its worst regions kept in float: one
  sensitivity pass (edgefit.sensitivity: float and fully quantized model run once on the calibration data, every
  activation compared) ranks regions -- decomposed LayerNorms, attention blocks, activation chains, weight layers,
  single ops -- by the SQNR they lose; then k, the number of worst regions kept in float, is found by bisection on
  the floor (about log2(regions) candidates), not one layer at a time;
* structured (channel) pruning at increasing ratios, quantized to the cheapest precision the target runs, until
  the fidelity floor breaks;
* the memory-aware execution order written into the node order (the reorder pass), for a candidate that misses
  the budget while the planner's order has a smaller arena than the file order a TFLM-style runtime follows.
* when an operator binds -- the fused model holds ops the target's runtime cannot run that the decompose pass
  rewrites (Gelu, LayerNormalization, HardSigmoid, ...) -- every recipe starts `fuse,decompose:OPS`.

Not searched: magnitude (unstructured) pruning, because no runtime edgefit models stores zeros for less (every
profile's flash holds dense tensors, so zeroed weights change no verdict).

Order of the search: with `objective="fidelity"` (the default) candidates are tried from the least lossy on: a
model that already fits is returned fused and otherwise unchanged; pruning is tried only when no precision fits.
With `objective="size" | "latency" | "energy"` every candidate is built and estimated first (cheap), then their
fidelity is measured in cost order and the first that fits and holds the floor wins.

Calibration pre-processing and ranges are computed once per model and method and shared by every candidate
(QuantizationCache). Every fidelity figure is measured by running the candidate and the original in onnxruntime on the same inputs.
Device figures are check's estimates (operators verdict included), except that flash counts every weight as
stored in the file (check scales a mixed int8 model's float weights to int8; a layer kept in float keeps its 4
bytes per weight on the device).
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import itertools
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnx import ModelProto

from edgefit.analysis.footprint import Footprint, analyze
from edgefit.devices.check import Budgets, TargetResult, Verdict, check_footprint, resolve_targets
from edgefit.devices.estimate import model_precision
from edgefit.devices.fields import TIERS
from edgefit.devices.profiles import DeviceProfile, list_profiles
from edgefit.errors import ConfigError, EdgefitError, ModelError
from edgefit.fidelity import (Fidelity, SampleSet, compare, load_samples, run_model, select_samples, shapes_from_data,
                              synthetic_samples)
from edgefit.sensitivity import Sensitivity

OBJECTIVES = ("fidelity", "size", "latency", "energy")
DEFAULT_MIN_COSINE = 0.99
PRUNE_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
# One device per tier for `--tiers`: a datacenter GPU, an int8 edge accelerator, a phone, a microcontroller.
TIER_DEVICES = {"cloud": "dgx-a100", "edge": "coral-dev-board", "mobile": "iphone-15-pro",
                "tiny": "arduino-nano-33-ble-sense"}
MANIFEST_NAME = "fit-manifest.json"
NOT_SEARCHED = (
    "magnitude (unstructured) pruning: no target's storage profits from sparsity (every profile stores dense "
    "weights), so zeroed weights change no verdict",
)
_MODE_PRECISION = {"fp16": "fp16", "int8": "int8", "dynamic": "int8"}

Progress = Callable[[str, int, int], None]   # (current candidate, done, planned)
WIDE_REGIONS, FLOAT_REGIONS = "16-bit regions", "float regions"   # the stages that keep the worst regions apart


@dataclass(frozen=True)
class FidelityFloor:
    """What a candidate must keep: cosine similarity of the outputs and, with labels, accuracy."""

    min_cosine: float | None = DEFAULT_MIN_COSINE
    max_accuracy_drop: float | None = None     # absolute: 0.01 is one percentage point

    def shortfall(self, fidelity: Fidelity) -> tuple[str, float, float] | None:
        """The first floor the candidate misses as (metric, value, limit); None when it holds."""
        if self.min_cosine is not None and not fidelity.cosine >= self.min_cosine:
            return "cosine", fidelity.cosine, self.min_cosine
        if self.max_accuracy_drop is not None:
            drop = accuracy_drop(fidelity)
            if drop is None or drop > self.max_accuracy_drop + 1e-12:
                return "accuracy_drop", drop if drop is not None else float("nan"), self.max_accuracy_drop
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"min_cosine": self.min_cosine, "max_accuracy_drop": self.max_accuracy_drop}


def accuracy_drop(fidelity: Fidelity) -> float | None:
    if fidelity.accuracy_before is None or fidelity.accuracy_after is None:
        return None
    return fidelity.accuracy_before - fidelity.accuracy_after


def fidelity_score(fidelity: Fidelity) -> tuple[float, float]:
    """Higher is better: accuracy after (when labels give it), then cosine."""
    accuracy = fidelity.accuracy_after if fidelity.accuracy_after is not None else 0.0
    return accuracy, fidelity.cosine


@dataclass(frozen=True)
class Candidate:
    """One recipe built, judged on the device and (unless skipped) measured."""

    recipe: str                          # an `optimize --passes` string
    exclude: tuple[str, ...]             # layers kept in float (`optimize --exclude`)
    stage: str                           # precision | 16-bit regions | float regions | prune
    result: TargetResult | None          # None: the recipe could not be built (see error)
    fidelity: Fidelity | None            # None: not measured (over budget in a cost-ordered search, or error)
    floor_miss: tuple[str, float, float] | None = None
    error: str | None = None
    footprint: Footprint | None = field(default=None, repr=False, compare=False)
    regions: tuple[str, ...] = ()        # the regions `exclude` keeps in float or `wide` gives 16 bits
    wide: tuple[str, ...] = ()           # nodes with 16-bit activations in an int8 model (`optimize --wide`)

    @property
    def label(self) -> str:
        if self.regions:
            kept, nodes = ("16-bit", self.wide) if self.wide else ("float", self.exclude)
            return f"{self.recipe} ({kept}: {len(self.regions)} region(s), {len(nodes)} node(s))"
        return self.recipe + (f" (float: {', '.join(self.exclude)})" if self.exclude else "")

    @property
    def fits_budget(self) -> bool:
        return self.result is not None and self.result.fits

    @property
    def meets_floor(self) -> bool:
        return self.fidelity is not None and self.floor_miss is None

    @property
    def fits(self) -> bool:
        return self.fits_budget and self.meets_floor

    def cost(self, objective: str) -> tuple[float, ...]:
        est = self.result.estimate
        if objective == "latency":
            return est.latency_s, est.flash_bytes
        if objective == "energy":
            return est.energy_j, est.flash_bytes
        return est.flash_bytes, est.ram_bytes

    def to_dict(self) -> dict[str, Any]:
        est = self.result.estimate if self.result else None
        return {"recipe": self.recipe, "exclude": list(self.exclude), "wide": list(self.wide),
                "regions": list(self.regions),
                "stage": self.stage, "fits": self.fits,
                "fits_budget": self.fits_budget, "meets_floor": self.meets_floor if self.fidelity else None,
                "precision": est.precision if est else None,
                "ram_bytes": est.ram_bytes if est else None, "flash_bytes": est.flash_bytes if est else None,
                "latency_ms": est.latency_s * 1e3 if est else None,
                "energy_mj": est.energy_j * 1e3 if est else None,
                "fidelity": self.fidelity.to_dict() if self.fidelity else None,
                "floor_miss": None if self.floor_miss is None else dict(zip(("metric", "value", "limit"),
                                                                             self.floor_miss)),
                "checks": [v.to_dict() for v in self.result.verdicts] if self.result else [],
                "error": self.error}


@dataclass(frozen=True)
class NoFit:
    """Why nothing fits: the closest candidate, what still binds and by how much, what would close it."""

    closest: Candidate
    metric: str                          # a verdict's metric (ram, flash, latency, power, precision) or a floor
    value: float | str
    limit: float | str
    unit: str
    limit_source: str                    # device, budget, rate, a tier default, or "floor"
    devices_that_fit: tuple[str, ...]    # bigger devices on which the closest candidate fits (smallest first)

    @property
    def gap(self) -> float | None:
        """By how much the closest candidate misses, in the metric's unit; None for a precision or operators miss."""
        if isinstance(self.value, str) or isinstance(self.limit, str):
            return None
        return abs(self.value - self.limit)

    def to_dict(self) -> dict[str, Any]:
        return {"closest": self.closest.label, "recipe": self.closest.recipe, "exclude": list(self.closest.exclude),
                "binding": {"metric": self.metric, "value": self.value, "limit": self.limit, "unit": self.unit,
                            "limit_source": self.limit_source, "gap": self.gap},
                "patch_plan": (self.closest.result.patch_plan.to_dict()
                               if self.closest.result and self.closest.result.patch_plan else None),
                "devices_that_fit": list(self.devices_that_fit)}


@dataclass(frozen=True)
class TargetFit:
    """The search for one device."""

    profile: DeviceProfile
    candidates: tuple[Candidate, ...]
    chosen: Candidate | None
    pareto: tuple[Candidate, ...]        # measured candidates no other beats on both flash and fidelity
    skipped: tuple[str, ...]             # recipes the time budget left untried
    no_fit: NoFit | None
    search_s: float
    model: ModelProto | None = field(default=None, repr=False, compare=False)   # the chosen model
    output: str | None = None
    sha256: str | None = None
    quantize_heads: bool = False         # the search quantized the output heads too (--quantize-heads)

    @property
    def fits(self) -> bool:
        return self.chosen is not None

    def to_dict(self, model_path: str | None = None) -> dict[str, Any]:
        chosen = self.chosen
        return {"target": self.profile.name, "tier": self.profile.tier, "fits": self.fits,
                "recipe": chosen.recipe if chosen else None, "exclude": list(chosen.exclude) if chosen else [],
                "wide": list(chosen.wide) if chosen else [],
                "float_regions": list(chosen.regions) if chosen and chosen.stage == FLOAT_REGIONS else [],
                "wide_regions": list(chosen.regions) if chosen and chosen.stage == WIDE_REGIONS else [],
                "command": optimize_command(model_path, self.profile.name, chosen, self.quantize_heads)
                if chosen else None,
                "output": self.output, "sha256": self.sha256,
                "fidelity": chosen.fidelity.to_dict() if chosen else None,
                "estimates": chosen.result.estimate.to_dict() if chosen else None,
                "checks": [v.to_dict() for v in chosen.result.verdicts] if chosen else [],
                "candidates": [c.to_dict() for c in self.candidates],
                "pareto": [c.label for c in self.pareto], "skipped": list(self.skipped),
                "no_fit": self.no_fit.to_dict() if self.no_fit else None, "search_s": self.search_s}


@dataclass(frozen=True)
class FitReport:
    model_path: str | None
    objective: str
    floor: FidelityFloor
    budgets: Budgets
    rate_hz: float | None
    fidelity_inputs: str                 # "user" or "synthetic"
    calibration: str                     # "user" or "synthetic"
    targets: tuple[TargetFit, ...]
    not_searched: tuple[str, ...]
    warnings: tuple[str, ...]
    search_s: float
    manifest: str | None = None

    @property
    def fits(self) -> bool:
        return all(t.fits for t in self.targets)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "model": self.model_path, "objective": self.objective, "floor": self.floor.to_dict(),
            "budgets": dataclasses.asdict(self.budgets), "rate_hz": self.rate_hz,
            "fits": self.fits, "fidelity_inputs": self.fidelity_inputs, "calibration": self.calibration,
            "not_searched": list(self.not_searched), "warnings": list(self.warnings), "search_s": self.search_s,
            "manifest": self.manifest, "targets": [t.to_dict(self.model_path) for t in self.targets]}
        if len(self.targets) == 1:   # one device: its answer at the top level too
            data.update({k: v for k, v in data["targets"][0].items() if k not in ("fits", "search_s")})
        return data


def optimize_command(model_path: str | None, target: str, candidate: Candidate, quantize_heads: bool = False) -> str:
    """The `edgefit optimize` command that rebuilds `candidate` (given the same --calib); `quantize_heads`: the
    search quantized the output heads too, which only static quantization reads."""
    parts = ["edgefit", "optimize", model_path or "MODEL", "--target", target, "--passes", candidate.recipe]
    if candidate.exclude:
        parts += ["--exclude", ",".join(candidate.exclude)]
    if candidate.wide:
        parts += ["--wide", ",".join(candidate.wide)]
    if quantize_heads and any(f"quantize:{mode}" in candidate.recipe for mode in ("int8", "a16w8")):
        parts.append("--quantize-heads")
    return " ".join(parts)


# ---- shared work ---------------------------------------------------------------------------------------

@dataclass
class _Built:
    model: ModelProto | None
    footprint: Footprint | None
    error: str | None = None
    fidelity: Fidelity | None = None


class _Workspace:
    """What every target's search shares: the original model, its fused form, the data, the reference outputs,
    and every candidate model built so far (a recipe builds the same model for every target with the same int8
    op types), with its footprint and fidelity."""

    def __init__(self, proto: ModelProto, calibration: SampleSet, samples: SampleSet, floor: FidelityFloor,
                 input_shapes: dict[str, list[int]] | None, dims: dict[str, int] | None,
                 assume_dims: int | None = None, input_values: dict[str, list[float]] | None = None,
                 quantize_heads: bool = False):
        from edgefit.passes.pipeline import PassOptions, run_passes
        from edgefit.passes.quantize import QuantizationCache

        self.original, self.calibration, self.samples, self.floor = proto, calibration, samples, floor
        self.quantization_cache = QuantizationCache()   # pre-processing and ranges once, for every candidate
        self.options = PassOptions(calibration=calibration, input_shapes=input_shapes, dims=dims,
                                   assume_dims=assume_dims, input_values=input_values,
                                   quantization_cache=self.quantization_cache, quantize_heads=quantize_heads)
        self.reference = run_model(proto, samples, what="the original model")
        self.fused = run_passes(proto, "fuse", self.options).model
        self._built: dict[tuple, _Built] = {}
        self._sensitivity: dict[tuple, Sensitivity | None] = {}

    def build(self, recipe: str, exclude: tuple[str, ...], int8_ops: tuple[str, ...] | None,
              wide: tuple[str, ...] = ()) -> _Built:
        from edgefit.passes.pipeline import run_passes

        key = (recipe, exclude, int8_ops if "quantize:" in recipe and ":fp16" not in recipe else None, wide)
        if key not in self._built:
            rest = recipe.removeprefix("fuse").lstrip(",")
            options = dataclasses.replace(self.options, exclude=exclude, int8_op_types=int8_ops, wide_nodes=wide)
            try:
                model = run_passes(self.fused, rest, options).model if rest else self.fused
                footprint = analyze(model, **self.options.shape_bindings)
                self._built[key] = _Built(model, footprint)
            except EdgefitError as error:
                self._built[key] = _Built(None, None, str(error))
        return self._built[key]

    def measure(self, built: _Built, label: str) -> Fidelity | None:
        if built.fidelity is None and built.model is not None:
            try:
                built.fidelity = compare(self.original, built.model, self.samples,
                                         reference_outputs=self.reference, candidate_name=f"candidate {label}")
            except EdgefitError as error:
                built.error = str(error)
        return built.fidelity

    def sensitivity(self, recipe: str, int8_ops: tuple[str, ...] | None) -> Sensitivity | None:
        """Regions of the fused model ranked by the SQNR `recipe` (a static one, fully quantized) loses in them,
        on the calibration data; computed once per recipe and set of int8 op types. None when the fully quantized
        model cannot be built or run. The output heads, float already, are no candidates."""
        from edgefit import sensitivity

        key = (recipe, int8_ops)
        if key not in self._sensitivity:
            built = self.build(recipe, (), int8_ops)
            result = None
            if built.model is not None:
                # the float model the recipe quantizes: fused, and decomposed when the recipe says so
                float_model = self.build(recipe[:recipe.index(",quantize:")], (), None).model
                named = _named_model(float_model if float_model is not None else self.fused)
                heads = sensitivity.output_heads(named)
                quantizable = set(int8_ops) if int8_ops is not None else None
                skip = () if self.options.quantize_heads else heads.nodes
                regions = [r for r in sensitivity.find_regions(named, skip=skip)
                           if quantizable is None or any(_op_of(named, n) in quantizable for n in r.nodes)]
                try:
                    result = sensitivity.measure(named, built.model, self.calibration, regions)
                except Exception as error:  # noqa: BLE001 - onnxruntime refuses some intermediate outputs
                    built.error = built.error or f"sensitivity not measured: {str(error).splitlines()[0]}"
            self._sensitivity[key] = result
        return self._sensitivity[key]


def _op_of(model: ModelProto, name: str) -> str:
    return next(n.op_type for n in model.graph.node if n.name == name)


def _named_model(model: ModelProto) -> ModelProto:
    """A copy of `model` with its nodes under the names quantize gives them (it names unnamed nodes the same way,
    on its copy), so that exclusions reach unnamed nodes too; the model itself is left as it is."""
    named = ModelProto()
    named.CopyFrom(model)
    from edgefit.passes.base import ensure_node_names

    ensure_node_names(named.graph)
    return named


# ---- one target ----------------------------------------------------------------------------------------

def _without_reorder(recipe: str) -> str:
    return recipe.removesuffix(",reorder")


def _stored_weights(footprint: Footprint) -> Footprint:
    """The footprint with its weights counted as stored: all bytes under the dominant dtype, so that judging it
    at its own precision neither shrinks layers kept in float nor changes the precision it is judged at."""
    return dataclasses.replace(footprint, weight_bytes_by_dtype={footprint.dominant_dtype: footprint.weight_bytes})


class _Search:
    def __init__(self, work: _Workspace, profile: DeviceProfile, budgets: Budgets, rate_hz: float | None,
                 runtime: str | None, objective: str, deadline: float | None, progress: Progress | None,
                 profiles_dir=None, custom_ops: Sequence[str] = ()):
        self.work, self.profile, self.budgets, self.rate_hz = work, profile, budgets, rate_hz
        self.runtime = runtime
        self.profiles_dir, self.custom_ops = profiles_dir, custom_ops
        self.objective, self.deadline, self.progress = objective, deadline, progress
        self.int8_ops = profile.int8_ops
        self.candidates: list[Candidate] = []
        self.skipped: list[str] = []
        self.planned = 0
        # Dynamic int8 quantizes activations at run time, which microcontroller runtimes (TFLM, hand-written C)
        # do not do: they run full-integer models only.
        self.modes = [m for m in ("fp16", "int8", "dynamic") if _MODE_PRECISION[m] in profile.precisions
                      and not (m == "dynamic" and profile.tier == "tiny")]
        self.base = "fuse"   # every recipe's first passes (see decomposed_base)

    def decomposed_base(self) -> str:
        """'fuse', or 'fuse,decompose:OPS' when an operator binds: the fused model holds ops this target's runtime
        cannot run and the decompose pass rewrites (every recipe then starts with it)."""
        from edgefit.passes.decompose import ops_not_running, rewritable

        operators = self.profile.stack_settings(self.runtime).operators
        if operators is None:
            return "fuse"
        self._report("operators of the fused model")
        try:
            ops = rewritable(ops_not_running(self.work.fused, operators, self.work.options))
        except EdgefitError:   # not analysable: the candidates' own checks say why
            return "fuse"
        return f"fuse,decompose:{':'.join(ops)}" if ops else "fuse"

    # -- pieces
    def out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline

    def judge(self, recipe: str, exclude: tuple[str, ...] = (), stage: str = "precision",
              wide: tuple[str, ...] = ()) -> Candidate:
        """Build and estimate (cached across targets); no fidelity yet."""
        self._report(recipe)
        built = self.work.build(recipe, exclude, self.int8_ops, wide)
        if built.footprint is None:
            return Candidate(recipe, exclude, stage, None, None, error=built.error, wide=wide)
        candidate = Candidate(recipe, exclude, stage, self._check(built), None, footprint=built.footprint, wide=wide)
        # A runtime that runs the nodes as stored (TFLM, onnxruntime's sequential executor) plans the file order:
        # where the planner's order has a smaller arena and the budget is missed, write that order into the file.
        footprint = built.footprint
        if not candidate.fits_budget and footprint.file_order_peak_bytes > footprint.peak_activation_bytes:
            reordered = self.work.build(f"{recipe},reorder", exclude, self.int8_ops, wide)
            if reordered.footprint is not None:
                result = self._check(reordered)
                if result.fits or result.estimate.ram_bytes < candidate.result.estimate.ram_bytes:
                    return Candidate(f"{recipe},reorder", exclude, stage, result, None,
                                     footprint=reordered.footprint, wide=wide)
        return candidate

    def _check(self, built: _Built, patching: bool = False) -> TargetResult:
        """check's verdicts (with the operators verdict, which needs the graph) on the weights as stored; patch
        advice only when asked (it plans every patch grid: for the closest candidate, not for every one)."""
        from edgefit.devices.check import with_model_advice

        footprint = _stored_weights(built.footprint)
        result = check_footprint(footprint, self.profile, model_precision(footprint), self.budgets, self.rate_hz,
                                 self.runtime)
        return with_model_advice([result], footprint, built.model, patching=patching)[0]

    def measured(self, candidate: Candidate) -> Candidate:
        if candidate.result is None:
            return candidate
        built = self.work.build(candidate.recipe, candidate.exclude, self.int8_ops, candidate.wide)
        fidelity = self.work.measure(built, candidate.label)
        if fidelity is None:
            return dataclasses.replace(candidate, error=built.error)
        return dataclasses.replace(candidate, fidelity=fidelity, floor_miss=self.work.floor.shortfall(fidelity))

    def tried(self, candidate: Candidate) -> Candidate:
        self.candidates.append(candidate)
        return candidate

    def evaluate(self, recipe: str, exclude: tuple[str, ...] = (), stage: str = "precision",
                 over_budget_too: bool = True, wide: tuple[str, ...] = ()) -> Candidate | None:
        """Judge and measure one recipe; None (and the recipe noted as skipped) when time is up. Without
        `over_budget_too`, a candidate over the budget is judged only: its fidelity cannot make it the answer."""
        if self.out_of_time():
            self.skipped.append(recipe + (f" (float: {', '.join(exclude)})" if exclude else ""))
            return None
        candidate = self.judge(recipe, exclude, stage, wide)
        return self.tried(self.measured(candidate) if over_budget_too or candidate.fits_budget else candidate)

    def _report(self, label: str) -> None:
        if self.progress:
            self.progress(label, len(self.candidates), max(self.planned, len(self.candidates) + 1))

    def precision_recipes(self) -> list[str]:
        recipes = [self.base]
        for mode in self.modes:
            recipes.append(f"{self.base},quantize:{mode}")
            if mode == "int8":
                recipes.append(f"{self.base},quantize:int8:percentile")
                if self.runs_a16w8():
                    recipes.append(f"{self.base},quantize:a16w8")
        return recipes

    def static_recipes(self) -> tuple[str, ...]:
        """The static quantization recipes whose worst regions may go back to float."""
        return tuple(f"{self.base},quantize:{mode}" for mode in ("int8", "int8:percentile", "a16w8"))

    def runs_a16w8(self) -> bool:
        """Whether the target's runtime has int16-activation kernels for every op type of the model."""
        int16 = self.int16_kernels()
        op_types = {n.op_type for n in self.work.fused.graph.node if n.op_type != "Constant"}
        return int16 is not None and int16.runs_a16w8(op_types)

    def prune_recipes(self) -> list[str]:
        cheapest = "int8" if "int8" in self.modes else ("fp16" if "fp16" in self.modes else None)
        tail = f",quantize:{cheapest}" if cheapest else ""
        return [f"{self.base},prune:{ratio:g}:structured{tail}" for ratio in PRUNE_RATIOS]

    def worst_regions(self, base: Candidate) -> None:
        """`base` (a static recipe that fits the budget, misses the floor) with its k worst regions kept apart,
        k by bisection on the floor. With an int8 base on a runtime that has int16-activation kernels, regions
        first get 16-bit activations (weights stay int8: no float weight bytes); when no k of those fits, the
        worst regions go back to float."""
        if self.out_of_time():
            self.skipped.append(f"{base.recipe} with its worst regions in float")
            return
        self._report(f"sensitivity of {base.recipe}")
        ranking = self.work.sensitivity(base.recipe, self.int8_ops)
        if ranking is None:
            self.skipped.append(f"{base.recipe} with float regions (sensitivity not measured)")
            return
        int16 = self.int16_kernels()
        if int16 is not None and ":a16w8" not in base.recipe:
            widened = [r for r in ranking.wide_order() if int16.runs_a16w8(r.op_types)]
            if widened and self.bisect(base, widened, WIDE_REGIONS):
                return
        self.bisect(base, list(ranking.float_order()), FLOAT_REGIONS)

    def bisect(self, base: Candidate, order: list, stage: str) -> bool:
        """Candidates keeping the first k regions of `order` apart (at 16 bits or in float, by `stage`): k by
        bisection on the floor between 0 (base misses) and all of them, each step one candidate. The bisection
        follows the floor alone: every region kept apart may be over the budget while the smallest k that holds
        the floor fits (float weights and 16-bit activations grow with k). Whether one of them fits."""
        if not order:
            return False
        self.planned += max(1, math.ceil(math.log2(len(order)))) + 1
        tried: list[Candidate] = []

        def with_worst(count: int) -> Candidate | None:
            if self.out_of_time():
                self.skipped.append(f"{base.recipe} with the {count} worst region(s) {stage.split()[0]} (and the "
                                    "rest of the bisection)")
                return None
            regions = order[:count]
            nodes = tuple(sorted({n for r in regions for n in r.nodes}))
            exclude, wide = ((), nodes) if stage == WIDE_REGIONS else (nodes, ())
            candidate = self.evaluate(base.recipe, exclude, stage, wide=wide)
            self.candidates[-1] = candidate = dataclasses.replace(candidate, regions=tuple(r.name for r in regions))
            tried.append(candidate)
            return candidate

        low, high = 0, len(order)   # low misses the floor; high is tried first
        top = with_worst(high)
        while top is not None and top.meets_floor and high - low > 1:
            middle = (low + high) // 2
            candidate = with_worst(middle)
            if candidate is None:
                break
            if candidate.meets_floor:
                high = middle
            else:
                low = middle
        return any(c.fits for c in tried)

    def int16_kernels(self):
        """The target runtime's operator list when it has int16-activation kernels (for some op types)."""
        from edgefit.devices.operators import load_operator_list

        name = self.profile.stack_settings(self.runtime).operators
        operators = load_operator_list(name) if name else None
        return operators if operators is not None and operators.int16_activation_ops else None

    def best_static_miss(self) -> Candidate | None:
        """The static candidate that fits the budget but misses the floor with the best fidelity."""
        missed = [c for c in self.candidates if _without_reorder(c.recipe) in self.static_recipes() and not c.exclude
                  and c.fits_budget and c.fidelity is not None and not c.meets_floor]
        return max(missed, key=lambda c: fidelity_score(c.fidelity), default=None)

    # -- strategies
    def by_fidelity(self) -> None:
        self.planned = len(self.precision_recipes())
        # A precision over the budget is not measured (fp16 and dynamic int8 run slowly on CPUs); the float
        # regions' bisection does measure over-budget candidates: it follows the floor.
        first = self.evaluate(self.base, over_budget_too=False)
        if first is not None and first.fits:   # already fits: fused and otherwise unchanged
            return
        for recipe in self.precision_recipes()[1:]:
            self.evaluate(recipe, over_budget_too=False)
        base = self.best_static_miss()
        if base is not None and not any(c.fits for c in self.candidates):
            self.worst_regions(base)
        if any(c.fits for c in self.candidates):
            return
        self.planned += len(PRUNE_RATIOS)
        prunes = self.prune_recipes()
        for k, recipe in enumerate(prunes):   # the smallest ratio that fits keeps most of the model
            candidate = self.evaluate(recipe, stage="prune")
            if candidate is None:   # out of time: the larger ratios were not tried either
                self.skipped += prunes[k + 1:]
                return
            if candidate.fits or (candidate.fidelity is not None and not candidate.meets_floor):
                return

    def by_cost(self) -> None:
        recipes = self.precision_recipes() + self.prune_recipes()
        self.planned = len(recipes)
        queue: list[tuple[tuple[float, ...], int, Candidate]] = []
        ticket = itertools.count()   # equal costs keep their planned order; candidates themselves do not compare
        for recipe in recipes:
            if self.out_of_time():
                self.skipped.append(recipe)
                continue
            candidate = self.judge(recipe, stage="prune" if ":structured" in recipe else "precision")
            if candidate.result is None:
                self.tried(candidate)
            else:
                heapq.heappush(queue, (candidate.cost(self.objective), next(ticket), candidate))
        while queue:
            _, _, candidate = heapq.heappop(queue)
            if self.out_of_time():
                self.skipped.append(candidate.label)
                continue
            if not candidate.fits_budget:   # over budget: its fidelity cannot change the answer
                self.tried(candidate)
                continue
            candidate = self.tried(self.measured(candidate))
            if candidate.fits:
                return
            # the cheapest static recipe missing the floor: its worst regions in float cost little flash more
            if _without_reorder(candidate.recipe) in self.static_recipes() and candidate.fidelity is not None \
                    and not any(c.stage in (WIDE_REGIONS, FLOAT_REGIONS) for c in self.candidates):
                self.worst_regions(candidate)
                if any(c.fits for c in self.candidates):
                    return

    def run(self) -> TargetFit:
        started = time.monotonic()
        self.base = self.decomposed_base()
        (self.by_fidelity if self.objective == "fidelity" else self.by_cost)()
        fitting = [c for c in self.candidates if c.fits]
        # The bisections' larger k were probes: of their fitting candidates the one with the fewest regions kept
        # apart (16-bit ones before float ones: they cost no float weights) is the answer, as the floor is all it
        # must recover.
        regional = (WIDE_REGIONS, FLOAT_REGIONS)
        probes = sorted((c for c in fitting if c.stage in regional),
                        key=lambda c: (regional.index(c.stage), len(c.regions)))
        fitting = [c for c in fitting if c.stage not in regional or c is probes[0]]
        chosen = None
        if fitting:
            chosen = (max(fitting, key=lambda c: fidelity_score(c.fidelity)) if self.objective == "fidelity"
                      else fitting[-1])
        built = self.work.build(chosen.recipe, chosen.exclude, self.int8_ops, chosen.wide) if chosen else None
        return TargetFit(self.profile, tuple(self.candidates), chosen, pareto_front(self.candidates),
                         tuple(self.skipped), None if chosen else self.no_fit(), time.monotonic() - started,
                         built.model if built else None, quantize_heads=self.work.options.quantize_heads)

    def no_fit(self) -> NoFit | None:
        # A candidate within budget whose fidelity could not be measured (onnxruntime refused to load it) tells
        # nothing about what binds; its error is listed with the candidates.
        judged = [c for c in self.candidates if c.result is not None and not (c.fits_budget and c.fidelity is None)]
        if not judged:
            return None
        in_budget = [c for c in judged if c.fits_budget and c.fidelity is not None]
        if in_budget:   # the budget holds somewhere; the fidelity floor binds
            best = max(in_budget, key=lambda c: fidelity_score(c.fidelity))
            metric, value, limit = best.floor_miss
            return NoFit(best, metric, value, limit, "", "floor", ())
        from edgefit.devices.check import _binding, _closest_to_fitting

        # Closest among those that hold the floor (or were not measured): a candidate that misses both the budget
        # and the floor is no answer to what would close the gap.
        usable = [c for c in judged if c.fidelity is None or c.meets_floor] or judged
        closest_result = _closest_to_fitting([c.result for c in usable])
        closest = next(c for c in usable if c.result is closest_result)
        binding: Verdict = _binding(closest_result)
        built = self.work.build(closest.recipe, closest.exclude, self.int8_ops, closest.wide)
        if binding.metric == "ram":   # tiling may close a RAM gap: patch advice for this candidate
            closest = dataclasses.replace(closest, result=self._check(built, patching=True))
        return NoFit(closest, binding.metric, binding.value, binding.limit, binding.unit, binding.limit_source,
                     devices_that_fit(closest, built.model, self.profile, self.rate_hz, self.profiles_dir,
                                      self.custom_ops))


def devices_that_fit(candidate: Candidate, model: ModelProto | None, profile: DeviceProfile, rate_hz: float | None,
                     profiles_dir=None, custom_ops: Sequence[str] = ()) -> tuple[str, ...]:
    """Other known devices the candidate (whose graph is `model`) fits as it is: device limits, and the operators
    of each device's runtime with the user's `custom_ops` declared; smallest RAM first."""
    from edgefit.devices.check import with_model_advice

    footprint = _stored_weights(candidate.footprint)
    precision = model_precision(footprint)
    others = [p.with_custom_ops(custom_ops) for p in list_profiles(profiles_dir) if p.name != profile.name]
    results = with_model_advice([check_footprint(footprint, p, precision, Budgets(), rate_hz) for p in others],
                                footprint, model, patching=False)
    fitting = [result.profile for result in results if result.fits]
    return tuple(p.name for p in sorted(fitting, key=lambda p: (p.ram_limit_bytes, p.flash_bytes)))


def pareto_front(candidates: Sequence[Candidate]) -> tuple[Candidate, ...]:
    """Measured candidates that no other beats on flash (smaller) and fidelity (higher) at once."""
    measured = [c for c in candidates if c.fidelity is not None and c.result is not None]

    def dominated(c: Candidate) -> bool:
        flash, score = c.result.estimate.flash_bytes, fidelity_score(c.fidelity)
        return any(o.result.estimate.flash_bytes <= flash and fidelity_score(o.fidelity) >= score
                   and (o.result.estimate.flash_bytes, fidelity_score(o.fidelity)) != (flash, score)
                   for o in measured)

    front = [c for c in measured if not dominated(c)]
    return tuple(sorted(front, key=lambda c: c.result.estimate.flash_bytes))


# ---- the entry point -----------------------------------------------------------------------------------

def parse_accuracy_drop(text: str | float | None) -> float | None:
    """'1%' -> 0.01; a plain number is a fraction (0.01)."""
    if text is None:
        return None
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ConfigError(f"invalid --max-accuracy-drop {text!r}: write a percentage, e.g. 1%") from None
    if not 0 <= value < 1:
        raise ConfigError(f"invalid --max-accuracy-drop {text!r}: expected 0% to below 100%")
    return value


def tier_targets() -> tuple[str, ...]:
    return tuple(TIER_DEVICES[tier] for tier in TIERS)


def fit(model: str | os.PathLike | ModelProto, targets: str | DeviceProfile | Sequence[str | DeviceProfile],
        budgets: Budgets = Budgets(), rate_hz: float | None = None, *, objective: str = "fidelity",
        min_cosine: float | None = None, max_accuracy_drop: float | None = None,
        calib: str | os.PathLike | None = None, eval_path: str | os.PathLike | None = None,
        output: str | os.PathLike | None = None, time_budget_s: float | None = None,
        input_shapes: dict[str, list[int]] | None = None, dims: dict[str, int] | None = None,
        runtime: str | None = None, profiles_dir=None, progress: Progress | None = None,
        assume_dims: int | None = None, input_values: dict[str, list[float]] | None = None,
        custom_ops: Sequence[str] = (), quantize_heads: bool = False) -> FitReport:
    """Search recipes for each target and return the best model that fits each (see the module docstring).

    The floor: `min_cosine` (default 0.99 unless only `max_accuracy_drop` is given) and `max_accuracy_drop`
    (a fraction; needs labelled `eval_path` data). `output`: with one target a model file, with several a
    directory that receives `<stem>.<device>.onnx` per fitting target and fit-manifest.json. Nothing is written
    without `output`; the chosen models are on `TargetFit.model`. `input_values` (--input-value): values of
    inputs that decide If conditions, also fed to the model in synthetic samples. `custom_ops` (--custom-op): ops
    the user wrote kernels for, judged supported on the targets and on the other devices a miss suggests.
    """
    started = time.monotonic()
    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown objective {objective!r}: expected one of {', '.join(OBJECTIVES)}")
    if time_budget_s is not None and not time_budget_s > 0:
        raise ConfigError(f"invalid time budget {time_budget_s!r}: expected a positive duration")
    if min_cosine is not None and not 0 < min_cosine <= 1:
        raise ConfigError(f"invalid --min-cosine {min_cosine!r}: expected a value in (0, 1]")
    floor = FidelityFloor(DEFAULT_MIN_COSINE if min_cosine is None and max_accuracy_drop is None else min_cosine,
                          max_accuracy_drop)
    profiles = resolve_targets([targets] if isinstance(targets, (str, DeviceProfile)) else targets, profiles_dir,
                               custom_ops)
    source = None if isinstance(model, ModelProto) else Path(model)
    proto = model if source is None else _load(source)
    outputs = _plan_outputs(source, proto, profiles, output)

    calibration = load_samples(calib, proto) if calib is not None else None
    evaluation = load_samples(eval_path, proto) if eval_path is not None else None
    input_shapes = shapes_from_data(proto, input_shapes, dims, calibration=calibration, evaluation=evaluation)
    if calibration is None:
        calibration = synthetic_samples(proto, input_shapes=input_shapes, dims=dims, assume_dims=assume_dims,
                                        input_values=input_values)
    samples = select_samples(proto, evaluation=evaluation, calib=calibration)
    if max_accuracy_drop is not None and samples.labels is None:
        raise ConfigError("--max-accuracy-drop needs labelled data: pass --eval with a 'labels' array")
    warnings = []
    if calibration.source == "synthetic":
        from edgefit.passes.quantize import SYNTHETIC_WARNING

        warnings.append(SYNTHETIC_WARNING)
    if samples.source == "synthetic":
        warnings.append("fidelity measured on synthetic random inputs; pass --eval (or --calib) with real samples")

    work = _Workspace(proto, calibration, samples, floor, input_shapes, dims, assume_dims, input_values,
                      quantize_heads)
    deadline = None if time_budget_s is None else started + time_budget_s
    results = []
    for profile in profiles:
        search = _Search(work, profile, budgets, rate_hz, runtime, objective, deadline, progress, profiles_dir,
                         custom_ops)
        results.append(search.run())
    results = [_written(r, outputs.get(r.profile.name), source) for r in results]
    manifest = None
    if output is not None and writes_directory(profiles, Path(output)):
        manifest = str(_write_manifest(Path(output), results, source))
    return FitReport(str(source) if source else None, objective, floor, budgets, rate_hz, samples.source,
                     calibration.source, tuple(results), NOT_SEARCHED, tuple(warnings),
                     time.monotonic() - started, manifest)


def _load(path: Path) -> ModelProto:
    from edgefit.model import load_model

    return load_model(path, load_weights=True).proto


def _plan_outputs(source: Path | None, proto: ModelProto, profiles: Sequence[DeviceProfile],
                  output: str | os.PathLike | None) -> dict[str, Path]:
    """Where each target's model goes; checked before any work so a bad -o fails fast."""
    from edgefit.model import prepare_output, refuse_overwrite

    if output is None:
        return {}
    out = Path(output)
    if not writes_directory(profiles, out):
        paths = {profiles[0].name: out}
    else:
        if out.exists() and not out.is_dir():
            raise ModelError(f"output {out} is a file; several targets need a directory for -o")
        stem = source.stem if source else (proto.graph.name or "model")
        paths = {p.name: out / f"{stem}.{p.name}.onnx" for p in profiles}
    for path in paths.values():
        if source is not None:
            refuse_overwrite(source, path, False, forceable=False)   # fit has no --force
        prepare_output(path, create=False)
    return paths


def writes_directory(profiles: Sequence[DeviceProfile], output: Path) -> bool:
    """Several targets, or an existing directory as -o: one file per device plus the manifest."""
    return len(profiles) > 1 or output.is_dir()


def _written(result: TargetFit, path: Path | None, source: Path | None) -> TargetFit:
    if path is None or result.model is None:
        return result
    from edgefit.model import save_model

    save_model(result.model, path, input_path=source)
    return dataclasses.replace(result, output=str(path), sha256=file_sha256(path))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_entries(results: Sequence[TargetFit], model_path: str | None) -> list[dict[str, Any]]:
    entries = []
    for r in results:
        chosen = r.chosen
        est = chosen.result.estimate if chosen else None
        entries.append({
            "tier": r.profile.tier, "device": r.profile.name, "fits": r.fits,
            "file": Path(r.output).name if r.output else None,
            "recipe": chosen.recipe if chosen else None, "exclude": list(chosen.exclude) if chosen else [],
            "command": optimize_command(model_path, r.profile.name, chosen, r.quantize_heads) if chosen else None,
            "footprint": None if est is None else {
                "precision": est.precision, "ram_bytes": est.ram_bytes, "flash_bytes": est.flash_bytes,
                "latency_ms": est.latency_s * 1e3, "energy_mj": est.energy_j * 1e3, "estimated": True},
            "fidelity": chosen.fidelity.to_dict() if chosen else None, "sha256": r.sha256})
    return entries


def _write_manifest(folder: Path, results: Sequence[TargetFit], source: Path | None) -> Path:
    """fit-manifest.json beside the models, written atomically (temp file + rename)."""
    from edgefit.report.json_format import dumps

    path = folder / MANIFEST_NAME
    text = dumps({"model": str(source) if source else None,
                  "models": manifest_entries(results, str(source) if source else None)})
    fd, tmp = tempfile.mkstemp(prefix=f".{MANIFEST_NAME}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
