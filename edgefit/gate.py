"""The CI gate: edgefit.toml ([[gate]] entries: model x target x budgets, optional baseline) -> GateReport.

Parsing validates every key and names the file, the gate and the key in its errors; each model is analyzed once
however many gates use it; a baseline (an `edgefit analyze --json` file) adds growth verdicts.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgefit.analysis.footprint import Footprint
from edgefit.devices.check import (
    Budgets,
    CheckReport,
    ProfilesDir,
    TargetResult,
    Verdict,
    analyze_for_check,
    check_footprint,
    with_model_advice,
)
from edgefit.devices.estimate import METHOD
from edgefit.devices.fields import check_precision, custom_ops_field
from edgefit.devices.profiles import find_profile, list_profiles
from edgefit.errors import ConfigError, EdgefitError, ShapeError
from edgefit.guard import existing_kind, regular_file
from edgefit.toml_files import load_toml
from edgefit.units import (
    MAX_DIM,
    MAX_INPUT_VALUES,
    ascii_int,
    check_rate_hz,
    parse_assume_dims,
)

GATE_KEYS = ("name", "model", "target", "precision", "max_ram", "max_flash", "max_latency", "max_power", "rate",
             "input_shape", "dim", "assume_dims", "input_value", "baseline", "max_growth", "custom_ops")
_DEFAULT_KEYS = tuple(k for k in GATE_KEYS if k not in ("name", "model", "baseline"))
_TOP_KEYS = ("profiles_dir", "defaults", "gate")
# Baseline figures (keys of `edgefit analyze --json`) and the verdict that guards each.
_GROWTH_METRICS = {"flash_growth": "weight_bytes", "ram_growth": "peak_activation_bytes"}


@dataclass(frozen=True)
class GateSpec:
    name: str
    model: Path                          # resolved against the config file's directory
    model_label: str                     # as written in the config (for annotations)
    target: str
    precision: str | None
    budgets: Budgets
    rate_hz: float | None
    input_shapes: Mapping[str, tuple[int, ...]]
    dims: Mapping[str, int]
    baseline: Path | None
    max_growth: float | None             # fraction: 0.05 for "5%"
    assume_dims: int | None = None       # see edgefit.shapes.resolve_shapes
    custom_ops: tuple[str, ...] = ()     # ops the user wrote kernels for (DOMAIN.NAME), judged supported
    input_values: Mapping[str, tuple[float, ...]] = field(default_factory=dict)   # as --input-value gives them


@dataclass(frozen=True)
class GateConfig:
    path: Path
    profiles_dirs: tuple[Path, ...]
    gates: tuple[GateSpec, ...]


@dataclass(frozen=True)
class GateResult:
    spec: GateSpec
    target: TargetResult
    growth: tuple[Verdict, ...]
    unknowns: tuple[str, ...]

    @property
    def verdicts(self) -> tuple[Verdict, ...]:
        return self.target.verdicts + self.growth

    @property
    def passed(self) -> bool:
        return all(v.ok for v in self.verdicts)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.spec.name, "model": self.spec.model_label, "target": self.target.profile.name,
                "tier": self.target.profile.tier, "precision": self.target.estimate.precision,
                "passed": self.passed, "checks": [v.to_dict() for v in self.verdicts],
                "estimates": self.target.estimate.to_dict(),
                "baseline": str(self.spec.baseline) if self.spec.baseline else None,
                "unknowns": list(self.unknowns)}


@dataclass(frozen=True)
class GateReport:
    config_path: Path                    # for `check --format`: the model file
    results: tuple[GateResult, ...]
    command: str = "gate"                # the command whose results these are (report headlines name it)

    @property
    def items(self) -> str:
        """What one result is, plural, for headlines: 'gates', or for a check 'targets'."""
        return "gates" if self.command == "gate" else "targets"

    @property
    def source_label(self) -> str:
        """What config_path is: the gate's 'Config', a check's 'Model'."""
        return "Config" if self.command == "gate" else "Model"

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failed(self) -> tuple[GateResult, ...]:
        return tuple(r for r in self.results if not r.passed)

    def to_dict(self) -> dict[str, Any]:
        return {"config": str(self.config_path), "passed": self.passed, "gates": len(self.results),
                "failed": len(self.failed), "estimated": True, "method": METHOD,
                "results": [r.to_dict() for r in self.results]}


def check_as_gate_report(report: CheckReport) -> GateReport:
    """A check's targets as gate results (one per target, no baseline), so that every gate report format
    (markdown, junit, github, html) renders `edgefit check` output too."""
    model = report.model_path or "model"
    results = tuple(
        GateResult(GateSpec(name=f"{Path(model).name} on {t.profile.name}", model=Path(model), model_label=model,
                            target=t.profile.name, precision=report.precision, budgets=report.budgets,
                            rate_hz=report.rate_hz, input_shapes={}, dims={}, baseline=None, max_growth=None),
                   t, (), report.unknowns)
        for t in report.targets)
    return GateReport(Path(model), results, command="check")


def _unknown_key(where: str, key: str, allowed: Sequence[str]) -> ConfigError:
    close = difflib.get_close_matches(key, allowed, n=1)
    return ConfigError(f"{where}: unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))


def _parse_growth(value: Any, where: str) -> float:
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*%\s*", value) if isinstance(value, str) else None
    if match is None:
        raise ConfigError(f"{where}: max_growth {value!r}: write it as a percentage, e.g. \"5%\"")
    return float(match.group(1)) / 100


def _parse_shapes(value: Any, where: str) -> dict[str, tuple[int, ...]]:
    """{input = [1, 3, 96, 96]} or {input = "1x3x96x96"}."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: input_shape: expected a table such as {{input = [1, 3, 96, 96]}}")
    shapes = {}
    for name, dims in value.items():
        if isinstance(dims, str):   # ASCII digits only, as on the command line ('١' is a digit to int())
            dims = [ascii_int(d) for d in dims.lower().split("x")]
        parsed = tuple(dims) if isinstance(dims, (list, tuple)) else ()
        if not parsed or not all(type(d) is int and 1 <= d <= MAX_DIM for d in parsed):
            raise ConfigError(f"{where}: input_shape.{name}: expected positive dimensions (at most 2**62), got "
                              f"{value[name]!r}")
        shapes[name] = parsed
    return shapes


def _parse_input_values(value: Any, where: str) -> dict[str, tuple[float, ...]]:
    """{sr = 16000} or {ids = [1, 2, 3]}: what --input-value sr=16000 gives; the model's input names, types and
    shapes are checked when it is analysed, as for the option."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: input_value: expected a table such as {{sr = 16000}}")
    values = {}
    for name, given in value.items():
        numbers = tuple(given) if isinstance(given, list) else (given,)
        # bool is an int to Python, not a number to a user; inf / nan decide no condition
        if not 1 <= len(numbers) <= MAX_INPUT_VALUES or not all(
                type(n) in (int, float) and math.isfinite(n) for n in numbers):
            raise ConfigError(f"{where}: input_value.{name}: expected a number or a list of numbers, got {given!r}")
        values[name] = numbers
    return values


def _parse_dims(value: Any, where: str) -> dict[str, int]:
    if not isinstance(value, dict) or not all(type(v) is int and 1 <= v <= MAX_DIM for v in value.values()):
        raise ConfigError(f"{where}: dim: expected a table of positive integers (at most 2**62), e.g. {{batch = 1}}")
    return dict(value)


def _parse_assume_dims(value: Any, where: str) -> int | None:
    try:
        return parse_assume_dims(value)
    except ShapeError as error:
        raise ConfigError(f"{where}: assume_dims: {error}") from None


def _parse_gate(entry: Mapping[str, Any], defaults: Mapping[str, Any], index: int, config: Path) -> GateSpec:
    label = entry.get("name") if isinstance(entry.get("name"), str) else None
    where = f"{config}: [[gate]] #{index}" + (f" ({label})" if label else "")
    for key in entry:
        if key not in GATE_KEYS:
            raise _unknown_key(where, key, GATE_KEYS)
    values = {**defaults, **entry}
    for key in ("model", "target"):
        if not isinstance(values.get(key), str) or not values[key].strip():
            raise ConfigError(f"{where}: missing {key!r} (a string)")
    base = config.parent
    model = base / values["model"]
    if existing_kind(model, f"{where}: model file", ConfigError) != "file":
        raise ConfigError(f"{where}: model file {values['model']!r} not found (paths are relative to {base})")
    precision, rate = values.get("precision"), values.get("rate")
    try:
        check_precision(precision)
        check_rate_hz(rate)
        budgets = Budgets.parse(values.get("max_ram"), values.get("max_flash"), values.get("max_latency"),
                                values.get("max_power"))
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    try:
        custom_ops = custom_ops_field(values["custom_ops"]) if "custom_ops" in values else ()
    except ValueError as error:
        raise ConfigError(f"{where}: custom_ops: {error}") from None
    baseline = None
    if "baseline" in values:
        if not isinstance(values["baseline"], str):
            raise ConfigError(f"{where}: baseline: expected a path to an `edgefit analyze --json` file")
        baseline = base / values["baseline"]
        if existing_kind(baseline, f"{where}: baseline file", ConfigError) != "file":
            raise ConfigError(f"{where}: baseline file {values['baseline']!r} not found "
                              f"(write it with: edgefit analyze MODEL --json > {values['baseline']})")
    growth = None
    if "max_growth" in values:
        if baseline is None and "max_growth" in entry:
            raise ConfigError(f"{where}: max_growth needs a baseline to grow from")
        growth = _parse_growth(values["max_growth"], where) if baseline is not None else None
    elif baseline is not None:
        growth = 0.0
    return GateSpec(
        name=label or f"{values['model']} on {values['target']}", model=model, model_label=values["model"],
        # A profile file is named relative to the config, as the model is.
        target=str(base / values["target"]) if values["target"].lower().endswith(".toml") else values["target"],
        precision=precision, budgets=budgets,
        rate_hz=float(rate) if rate is not None else None,
        input_shapes=_parse_shapes(values["input_shape"], where) if "input_shape" in values else {},
        dims=_parse_dims(values["dim"], where) if "dim" in values else {},
        baseline=baseline, max_growth=growth, assume_dims=_parse_assume_dims(values.get("assume_dims"), where),
        custom_ops=custom_ops,
        input_values=_parse_input_values(values["input_value"], where) if "input_value" in values else {},
    )


def load_gate_config(path: str | Path = "edgefit.toml") -> GateConfig:
    """Parse and validate an edgefit.toml; errors name the file, the gate and the key."""
    path = Path(path)
    data = load_toml(path, ConfigError, "the gate configuration",
                     missing="no such file (edgefit gate reads ./edgefit.toml unless given --config)")
    for key in data:
        if key not in _TOP_KEYS:
            raise _unknown_key(str(path), key, _TOP_KEYS)
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ConfigError(f"{path}: [defaults] must be a table")
    for key in defaults:
        if key not in _DEFAULT_KEYS:
            raise _unknown_key(f"{path}: [defaults]", key, _DEFAULT_KEYS)
    gates = data.get("gate")
    if not isinstance(gates, list) or not gates or not all(isinstance(g, dict) for g in gates):
        raise ConfigError(f"{path}: no [[gate]] entries (each names a model and a target)")
    dirs = data.get("profiles_dir", [])
    dirs = [dirs] if isinstance(dirs, str) else dirs
    if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
        raise ConfigError(f"{path}: profiles_dir: expected a directory path or a list of them")
    specs = tuple(_parse_gate(g, defaults, i, path) for i, g in enumerate(gates, start=1))
    return GateConfig(path, tuple(path.parent / d for d in dirs), specs)


def _read_baseline(spec: GateSpec) -> dict[str, int]:
    assert spec.baseline is not None
    try:
        regular_file(spec.baseline, "baseline file", ConfigError)
        data = json.loads(spec.baseline.read_bytes())   # UTF-8, -16 or -32, BOM or not (PowerShell writes UTF-16)
    except (OSError, ValueError, RecursionError) as error:   # ValueError: also an integer of 4,300+ digits
        raise ConfigError(f"{spec.baseline}: not a JSON file written by `edgefit analyze --json` ({error})") from None
    figures = {}
    for key in _GROWTH_METRICS.values():
        value = data.get(key) if isinstance(data, dict) else None
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
            raise ConfigError(f"{spec.baseline}: missing or invalid {key!r} (write the baseline with "
                              f"`edgefit analyze MODEL --json`)")
        figures[key] = value
    return figures


def _growth_verdicts(spec: GateSpec, footprint: Footprint) -> tuple[Verdict, ...]:
    if spec.baseline is None or spec.max_growth is None:
        return ()
    baseline = _read_baseline(spec)
    source = f"baseline +{spec.max_growth * 100:g}%"
    verdicts = []
    for metric, key in _GROWTH_METRICS.items():
        current = getattr(footprint, key)
        limit = baseline[key] * (1 + spec.max_growth)
        verdicts.append(Verdict(metric, current, limit, "bytes", current <= limit, source))
    return tuple(verdicts)


def run_gate(config_path: str | Path = "edgefit.toml", profiles_dir: ProfilesDir = None,
             custom_ops: Sequence[str] = ()) -> GateReport:
    """Check every [[gate]] of an edgefit.toml; each model is analyzed once however many gates use it.
    `custom_ops` (--custom-op): ops the user wrote kernels for, on every gate besides each entry's own."""
    config = load_gate_config(config_path)
    extra = [] if profiles_dir is None else (
        [profiles_dir] if isinstance(profiles_dir, (str, Path)) else list(profiles_dir))
    profiles = list_profiles([*extra, *config.profiles_dirs])
    footprints: dict[tuple, Footprint] = {}
    results = []
    for spec in config.gates:
        key = (spec.model.resolve(), tuple(sorted(spec.input_shapes.items())), tuple(sorted(spec.dims.items())),
               spec.assume_dims, tuple(sorted(spec.input_values.items())))
        if key not in footprints:
            try:
                footprints[key] = analyze_for_check(spec.model, spec.input_shapes, spec.dims, spec.assume_dims,
                                                    spec.input_values)
            except EdgefitError as error:   # say which gate: a config may name many models
                hint = " (a gate sets it with input_shape = { NAME = [1, 3, 224, 224] } or assume_dims = 1)" if (
                    "--input-shape" in str(error)) else ""
                raise type(error)(f"{config.path}: gate {spec.name!r}: {error}{hint}") from None
        footprint = footprints[key]
        try:
            profile = find_profile(spec.target, profiles).with_custom_ops((*spec.custom_ops, *custom_ops))
        except EdgefitError as error:
            raise ConfigError(f"{config.path}: gate {spec.name!r}: {error}") from None
        target = with_model_advice((check_footprint(footprint, profile, spec.precision, spec.budgets, spec.rate_hz),),
                                   footprint)[0]
        results.append(GateResult(spec, target, _growth_verdicts(spec, footprint), footprint.unknowns))
    return GateReport(config.path, tuple(results))
