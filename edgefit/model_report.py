"""Everything `edgefit report` shows about one model, as data: its footprint, the memory timeline, per-layer costs
on a chosen target, the device verdicts, and optionally a comparison with another version of the model (the
output of `optimize`) with measured fidelity. edgefit.report.page renders it as one HTML page; `analyze --format`
renders the same object as Markdown or HTML.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefit.analysis.footprint import Footprint, LayerStats
from edgefit.analysis.timeline import MemoryTimeline, memory_timeline
from edgefit.devices.check import (
    Budgets,
    CheckReport,
    ProfilesDir,
    analyze_for_check,
    check,
)
from edgefit.devices.estimate import layer_latencies
from edgefit.devices.profiles import DeviceProfile
from edgefit.fidelity import Fidelity, SampleSet


@dataclass(frozen=True)
class LayerDelta:
    """One layer before and after: None on a side where the layer does not exist (removed, or added by a pass)."""

    name: str
    op_type: str
    before: LayerStats | None
    after: LayerStats | None

    def change(self, field: str) -> int | None:
        """after - before of an integer field (a missing layer counts 0); None when a side's value is unknown."""
        values = [0 if layer is None else getattr(layer, field) for layer in (self.before, self.after)]
        return None if None in values else values[1] - values[0]


@dataclass(frozen=True)
class Comparison:
    footprint: Footprint                 # the other model
    check: CheckReport | None            # its verdicts on the same targets
    layers: tuple[LayerDelta, ...]       # by layer name: kept, removed and added layers
    fidelity: Fidelity | None            # measured on `--eval` data, when given

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.footprint.model_path, "footprint": self.footprint.to_dict(),
                "check": self.check.to_dict() if self.check else None,
                "fidelity": self.fidelity.to_dict() if self.fidelity else None,
                "layers": [{"name": d.name, "op_type": d.op_type, "removed": d.after is None,
                            "added": d.before is None, "macs": d.change("macs"),
                            "weight_bytes": d.change("weight_bytes"), "output_bytes": d.change("output_bytes")}
                           for d in self.layers]}


@dataclass(frozen=True)
class ModelReport:
    footprint: Footprint
    timeline: MemoryTimeline
    check: CheckReport | None            # None when no target was asked for
    latency_target: str | None           # the target whose per-layer latency is shown (the first checked)
    layer_latency_s: tuple[float, ...]   # per footprint layer on that target; empty without a target
    comparison: Comparison | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.footprint.model_path, "footprint": self.footprint.to_dict(),
                "timeline": self.timeline.to_dict(), "check": self.check.to_dict() if self.check else None,
                "latency_target": self.latency_target, "layer_latency_ms": [t * 1e3 for t in self.layer_latency_s],
                "comparison": self.comparison.to_dict() if self.comparison else None}


def layer_deltas(before: Sequence[LayerStats], after: Sequence[LayerStats]) -> tuple[LayerDelta, ...]:
    """Pair layers by name, in the order of `before` with the layers only `after` has at the end."""
    after_by_name = {layer.name: layer for layer in after}
    before_names = {layer.name for layer in before}
    kept = [LayerDelta(layer.name, layer.op_type, layer, after_by_name.get(layer.name)) for layer in before]
    added = [LayerDelta(layer.name, layer.op_type, None, layer) for layer in after if layer.name not in before_names]
    return tuple(kept + added)


def build_report(model: str | Path | Footprint, targets: Iterable[str | DeviceProfile] | None = (),
                 precision: str | None = None, *, compare_with: str | Path | None = None,
                 eval_path: str | Path | None = None, budgets: Budgets = Budgets(), rate_hz: float | None = None,
                 input_shapes: Mapping[str, Sequence[int]] | None = None, dims: Mapping[str, int] | None = None,
                 profiles_dir: ProfilesDir = None, assume_dims: int | None = None,
                 custom_ops: Iterable[str] = (),
                 input_values: Mapping[str, Sequence[float]] | None = None) -> ModelReport:
    """Analyse `model` (and `compare_with`), check both on `targets` (None: every profile; empty: none) and gather
    what the report draws; `custom_ops`: ops the user wrote kernels for, `input_values`: values of inputs that
    decide If conditions (see edgefit.devices.check.check). Fidelity
    of `compare_with` against `model` is measured only with `eval_path` data, whose arrays also bind the input
    dimensions the model leaves open."""
    evaluation = None
    if eval_path is not None and not isinstance(model, Footprint):
        from edgefit.fidelity import load_samples, shapes_from_data
        from edgefit.model import load_model

        proto = load_model(model).proto   # the inputs' declarations are all the data are checked against
        evaluation = load_samples(eval_path, proto)
        input_shapes = shapes_from_data(proto, dict(input_shapes or {}), dict(dims or {}), evaluation=evaluation)
    footprint = model if isinstance(model, Footprint) else analyze_for_check(model, input_shapes, dims, assume_dims,
                                                                             input_values)
    targets = None if targets is None else list(targets)
    checked = None
    if targets is None or targets:
        checked = check(footprint, targets, precision, budgets, rate_hz, profiles_dir=profiles_dir,
                        custom_ops=custom_ops)
    first = checked.targets[0] if checked and checked.targets else None
    latencies = (layer_latencies(footprint, first.profile, first.estimate.precision, first.estimate.runtime)
                 if first else ())
    comparison = None
    if compare_with is not None:
        other = analyze_for_check(compare_with, input_shapes, dims, assume_dims, input_values)
        other_check = (check(other, [t.profile for t in checked.targets], precision, budgets, rate_hz)
                       if checked else None)
        fidelity = _fidelity(footprint, other, eval_path, evaluation) if eval_path is not None else None
        comparison = Comparison(other, other_check, layer_deltas(footprint.layers, other.layers), fidelity)
    return ModelReport(footprint, memory_timeline(footprint), checked, first.profile.name if first else None,
                       latencies, comparison)


def _fidelity(reference: Footprint, candidate: Footprint, eval_path: str | Path,
              evaluation: SampleSet | None) -> Fidelity:
    from edgefit.errors import ConfigError
    from edgefit.fidelity import compare, select_samples
    from edgefit.model import load_model

    if reference.model_path is None or candidate.model_path is None:
        raise ConfigError("measuring fidelity needs both models as files")
    reference_model = load_model(reference.model_path, load_weights=True).proto
    candidate_model = load_model(candidate.model_path, load_weights=True).proto
    samples = select_samples(reference_model, eval_path=eval_path, evaluation=evaluation)
    return compare(reference_model, candidate_model, samples, candidate_name=str(candidate.model_path))
