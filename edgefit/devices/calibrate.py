"""`edgefit calibrate`: fit a runtime stack's latency coefficients (and active power) to measurements.

The latency model (edgefit.devices.latency) is linear in what a model costs per layer class:

    latency = features . coefficients        features = conv MACs, depthwise MACs, fc MACs, elementwise elements,
                                                        operators dispatched, 1 (per inference)

so measured latencies of a few models determine the coefficients by least squares, with two constraints:

* **No negative rates.** A coefficient is seconds per unit of work; a negative one is noise fitted as physics.
  The fit is non-negative least squares (Lawson-Hanson, written here in numpy: scipy.optimize.nnls would do, but
  scipy is not a dependency and the algorithm is 40 lines).
* **Relative error.** Measured models span 0.03 ms to 200 ms on one machine; unweighted least squares would fit the
  slowest model and ignore the per-op overhead that dominates the fastest. Each measurement's row is divided by
  its latency, so the fit minimises the sum of squared relative errors.

Features the measurements cannot separate are not guessed: a feature every measured model lacks (no depthwise
convolution anywhere), one on which no measurement spends a noticeable share of its latency (the classifier heads'
few fc MACs in a set of CNNs), or one whose column the others already span (operator count proportional to
elementwise work across the models) keeps the base profile's coefficient, and the result says so. `keep_base` in the
measurement file pins coefficients on purpose. With `--measure`, generated single-layer kernels (edgefit.devices.timing)
join the fit and separate the layer classes, as nn-Meter does.

The fit quality is the leave-one-out relative error over the user's models: each model predicted by a fit to all
the other measurements. It is the error to expect on a model that was not measured, and the written profile
carries it as the stack's `expected_error`.

Energy: energy = active power x latency, so the active power is fitted (relative error again) from the
measurements that give an energy.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import math
import os
import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgefit.devices.fields import PRECISIONS, normalize_name
from edgefit.devices.latency import (
    FEATURE_NAMES,
    LatencyCoefficients,
    LatencyFeatures,
    latency_features,
    latency_precision,
)
from edgefit.devices.profiles import DeviceProfile, find_profile, load_profile
from edgefit.errors import EdgefitError, MeasurementError, ProfileError
from edgefit.fidelity import Progress
from edgefit.toml_files import load_toml, read_toml
from edgefit.units import parse_duration_s, parse_energy_j

# A column whose component outside the span of the columns already chosen is below this share of its length
# (the sine of its angle to that span, after weighting and scaling) carries no information of its own: its
# coefficient could be traded against the others' at no cost in fit, so the data cannot set it.
_SEPARABLE = 0.05
# A feature on which no measurement spends this share of its latency (judged with the base profile's rates) is
# noise-level in every row: left free, it becomes a slack variable that soaks up the other features' error and
# predicts absurdly for a model rich in it (a leave-one-out fit without the only fully-connected model put a
# 9-parameter classifier head's fc rate on the autoencoder: 87x too slow).
_INFORMATIVE = 0.02
# A datasheet says nothing about math-library calls: the roofline prior for a transcendental element is this many
# elementwise elements, the ratio measured for onnxruntime 1.32 on an AMD EPYC (Pow(x, 0.75) 8.9 ns against Add
# 0.19 ns per element; edgefit.devices.latency). A prior at the elementwise cost (50x too cheap) would put the class
# under _INFORMATIVE in every measurement and keep it from being fitted.
_TRANSCENDENTAL_PRIOR = 45
COEFFICIENT_NAMES = tuple(f"s_per_{name}" for name in (
    "conv_mac", "depthwise_mac", "fc_mac", "integer_mac", "elementwise_element", "transcendental_element",
    "moved_byte", "lrn_element", "uncached_byte", "conv_weight", "op", "inference"))
MEASUREMENT_KEYS = ("model", "latency", "energy", "input_shape", "dim", "precision")
FILE_KEYS = ("base", "keep_base", "measurement")



# ---- the measurement file -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Measurement:
    model: Path                                  # resolved against the measurement file's folder
    label: str                                   # the path as the file gives it
    latency_s: float | None                      # None: to be timed here (--measure)
    energy_j: float | None
    input_shapes: Mapping[str, list[int]] = field(default_factory=dict)
    dims: Mapping[str, int] = field(default_factory=dict)
    precision: str | None = None                 # None: the model's own


@dataclass(frozen=True)
class MeasurementFile:
    path: Path
    base: str                                    # profile name, alias, or a .toml path resolved against `path`
    keep_base: tuple[str, ...]                   # feature names whose coefficients stay the base profile's
    measurements: tuple[Measurement, ...]


def _unknown_key(where: str, key: str, known: tuple[str, ...]) -> MeasurementError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (expected {', '.join(known)})"
    return MeasurementError(f"{where}: unknown key {key!r}{hint}")


def _shape_table(value: Any, where: str, key: str, depth: int) -> dict:
    def valid_dim(d: Any) -> bool:
        return isinstance(d, int) and not isinstance(d, bool) and d >= 0
    ok = isinstance(value, dict) and all(
        (isinstance(v, list) and all(valid_dim(d) for d in v)) if depth == 1 else valid_dim(v)
        for v in value.values())
    if not ok:
        example = "{ x = [1, 3, 224, 224] }" if depth == 1 else "{ batch = 1 }"
        raise MeasurementError(f"{where}: {key} must be a table like {example}")
    return dict(value)


def _measurement(entry: Any, folder: Path, where: str) -> Measurement:
    if not isinstance(entry, dict):
        raise MeasurementError(f"{where}: expected a [[measurement]] table")
    for key in entry:
        if key not in MEASUREMENT_KEYS:
            raise _unknown_key(where, key, MEASUREMENT_KEYS)
    label = entry.get("model")
    if not isinstance(label, str) or not label.strip():
        raise MeasurementError(f"{where}: missing model = \"path/to/model.onnx\" (relative to the measurement file)")
    where = f"{where} ({label})"
    model = folder / label
    if not model.is_file():
        raise MeasurementError(f"{where}: model file not found: {model}")

    def quantity(key: str, parse: Callable[[Any], float]) -> float | None:
        if key not in entry:
            return None
        try:
            value = parse(entry[key])
        except EdgefitError as error:
            raise MeasurementError(f"{where}: {key}: {error}") from None
        if value <= 0:
            raise MeasurementError(f"{where}: {key} must be positive, got {entry[key]!r}")
        return value

    precision = entry.get("precision")
    if precision is not None and precision not in PRECISIONS:
        raise MeasurementError(f"{where}: precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return Measurement(model, label, quantity("latency", parse_duration_s), quantity("energy", parse_energy_j),
                       _shape_table(entry.get("input_shape", {}), where, "input_shape", 1),
                       _shape_table(entry.get("dim", {}), where, "dim", 0), precision)


def load_measurements(path: str | Path) -> MeasurementFile:
    """Read and validate a measurement file; every problem is a one-line MeasurementError naming the entry."""
    path = Path(path)
    data = load_toml(path, MeasurementError, "measurements")
    for key in data:
        if key not in FILE_KEYS:
            raise _unknown_key(str(path), key, FILE_KEYS)
    base = data.get("base")
    if not isinstance(base, str) or not base.strip():
        raise MeasurementError(f"{path}: missing base = \"PROFILE\" (a profile name, alias or .toml file to start "
                               "from)")
    keep = data.get("keep_base", [])
    if not isinstance(keep, list) or any(k not in FEATURE_NAMES for k in keep):
        raise MeasurementError(f"{path}: keep_base must list feature names drawn from {', '.join(FEATURE_NAMES)}")
    entries = data.get("measurement")
    if not isinstance(entries, list) or not entries:
        raise MeasurementError(f"{path}: no [[measurement]] entries (each names a model and its latency)")
    measurements = tuple(_measurement(entry, path.parent, f"{path}: measurement {number}")
                         for number, entry in enumerate(entries, 1))
    return MeasurementFile(path, base.strip(), tuple(k for k in FEATURE_NAMES if k in keep), measurements)


def resolve_base(name: str, relative_to: Path, profiles_dir=None) -> DeviceProfile:
    """The base profile: a .toml path (relative to the measurement file) or a name/alias on the search path."""
    if name.endswith(".toml"):
        return find_profile(str(relative_to / name), ())
    return load_profile(name, profiles_dir)


# ---- non-negative least squares -------------------------------------------------------------------------

def nnls(a: np.ndarray, b: np.ndarray, max_iterations: int | None = None) -> np.ndarray:
    """x >= 0 minimising ||a x - b||, by Lawson and Hanson's active-set method (Solving Least Squares Problems,
    1974, ch. 23): move the variable whose gradient most wants to grow into the passive (free) set, solve the
    unconstrained problem on that set, and step back towards the previous point when a variable would go negative.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    rows, columns = a.shape
    x = np.zeros(columns)
    passive = np.zeros(columns, dtype=bool)
    tolerance = 10 * np.finfo(np.float64).eps * max(rows, columns) * max(np.abs(a).sum(axis=0).max(initial=0), 1e-300)
    for _ in range(max_iterations or 3 * columns + 10):
        gradient = a.T @ (b - a @ x)
        candidates = np.where(passive, -np.inf, gradient)
        if passive.all() or candidates.max() <= tolerance:
            break
        passive[int(np.argmax(candidates))] = True
        while True:
            trial = np.zeros(columns)
            trial[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (trial[passive] > 0).all():
                x = trial
                break
            # Step from x towards the trial point until the first passive variable reaches zero; drop it.
            blocking = passive & (trial <= 0)
            step = np.min(x[blocking] / (x[blocking] - trial[blocking]))
            x = x + step * (trial - x)
            passive &= x > tolerance
            x[~passive] = 0.0
    return x


# ---- the fit -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Fit:
    coefficients: LatencyCoefficients
    fitted: tuple[str, ...]                      # feature names the measurements set
    kept: Mapping[str, str]                      # feature name -> why the base profile's coefficient stays


def fit_coefficients(features: np.ndarray, latencies_s: np.ndarray, base: LatencyCoefficients,
                     keep_base: tuple[str, ...] = (), *, require_enough: bool = True) -> Fit:
    """Coefficients minimising the relative error of `features @ c` against `latencies_s`, c >= 0; features the
    data cannot separate keep `base`'s coefficient. `require_enough`: fewer measurements than coefficients to fit
    is an error (a leave-one-out refit instead pins what it cannot set)."""
    features = np.asarray(features, dtype=np.float64)
    latencies_s = np.asarray(latencies_s, dtype=np.float64)
    weighted = features / latencies_s[:, None]
    kept: dict[str, str] = {name: "kept from the base profile (keep_base)" for name in keep_base}
    base_share = weighted * base.vector()   # share of each latency the base profile puts on each feature
    for j, name in enumerate(FEATURE_NAMES):
        if name in kept:
            continue
        if not weighted[:, j].any():
            kept[name] = "no measured model has any: kept from the base profile"
        elif base.vector()[j] > 0 and base_share[:, j].max() < _INFORMATIVE:
            kept[name] = (f"under {_INFORMATIVE:.0%} of every measured latency at the base profile's rate, too "
                          "little to fit: kept from the base profile")
    free = [j for j, name in enumerate(FEATURE_NAMES) if name not in kept]
    if require_enough and len(latencies_s) < len(free):
        names = ", ".join(FEATURE_NAMES[j] for j in free)
        raise MeasurementError(
            f"{len(latencies_s)} measurement(s) cannot determine {len(free)} coefficients ({names}): at least "
            f"{len(free)} usable measurements are needed; add measurements, time generated kernels too with "
            "--measure, or pin some with keep_base = [...]")
    scale = np.ones(len(FEATURE_NAMES))
    norms = np.linalg.norm(weighted, axis=0)
    scale[norms > 0] = norms[norms > 0]
    scaled = weighted / scale

    # Pivoted Gram-Schmidt: take the column with the most length outside the span of those taken; stop when what
    # is left of every remaining column is below _SEPARABLE of its length.
    chosen: list[int] = []
    basis = np.zeros((len(latencies_s), 0))
    remaining = list(free)
    while remaining:
        residuals = {j: scaled[:, j] - basis @ (basis.T @ scaled[:, j]) for j in remaining}
        best = max(remaining, key=lambda j: np.linalg.norm(residuals[j]))
        if np.linalg.norm(residuals[best]) < _SEPARABLE:
            break
        chosen.append(best)
        basis = np.column_stack([basis, residuals[best] / np.linalg.norm(residuals[best])])
        remaining.remove(best)
    for j in remaining:
        others = ", ".join(FEATURE_NAMES[k] for k in chosen) or "nothing"
        kept[FEATURE_NAMES[j]] = f"not separable from {others} in these measurements: kept from the base profile"

    coefficients = base.vector().copy()
    pinned = [j for j in range(len(FEATURE_NAMES)) if j not in chosen]
    target = 1.0 - weighted[:, pinned] @ coefficients[pinned]
    if chosen:
        coefficients[chosen] = nnls(scaled[:, chosen], target) / scale[chosen]
    return Fit(LatencyCoefficients.from_vector(coefficients), tuple(FEATURE_NAMES[j] for j in sorted(chosen)),
               {name: kept[name] for name in FEATURE_NAMES if name in kept})


def fit_power(latencies_s: np.ndarray, energies_j: np.ndarray) -> float:
    """Active power P minimising the relative error of P x latency against the measured energies."""
    ratio = np.asarray(latencies_s, dtype=np.float64) / np.asarray(energies_j, dtype=np.float64)
    return float(ratio.sum() / (ratio @ ratio))


# ---- calibrating a profile ------------------------------------------------------------------------------

@dataclass(frozen=True)
class CalibrationRow:
    """One measured model or generated kernel, with what the fit predicts for it."""

    label: str
    kind: str                                    # "model" or "kernel"
    precision: str
    features: LatencyFeatures
    latency_s: float                             # measured (on the board, or here with --measure)
    fitted_s: float                              # predicted by the fit to every measurement
    loo_s: float | None                          # predicted by the fit to every other measurement (models only)
    energy_j: float | None = None
    fitted_energy_j: float | None = None
    timing: Any = None                           # edgefit.devices.timing.Timing when timed here

    @property
    def error(self) -> float:
        return self.fitted_s / self.latency_s - 1

    @property
    def loo_error(self) -> float | None:
        return None if self.loo_s is None else self.loo_s / self.latency_s - 1

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.label, "kind": self.kind, "precision": self.precision,
                "measured_ms": self.latency_s * 1e3, "fitted_ms": self.fitted_s * 1e3, "error": self.error,
                "loo_ms": None if self.loo_s is None else self.loo_s * 1e3, "loo_error": self.loo_error,
                "energy_mj": None if self.energy_j is None else self.energy_j * 1e3,
                "fitted_energy_mj": None if self.fitted_energy_j is None else self.fitted_energy_j * 1e3,
                "features": dict(zip(FEATURE_NAMES, self.features.vector().tolist())),
                "timing": self.timing.to_dict() if self.timing is not None else None}


@dataclass(frozen=True)
class SkippedMeasurement:
    """A measurement the fit could not use, and why (its MACs are incomplete, it cannot be analysed or timed)."""

    label: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"model": self.label, "reason": self.reason}


@dataclass(frozen=True)
class PrecisionFit:
    precision: str
    base: LatencyCoefficients
    fit: Fit

    def to_dict(self) -> dict[str, Any]:
        return {"precision": self.precision, "fitted": list(self.fit.fitted), "kept": dict(self.fit.kept),
                "coefficients": dict(zip(COEFFICIENT_NAMES, self.fit.coefficients.vector().tolist())),
                "base_coefficients": dict(zip(COEFFICIENT_NAMES, self.base.vector().tolist()))}


@dataclass(frozen=True)
class CalibrationResult:
    measurements_path: Path
    model_paths: tuple[Path, ...]                # the measured models (inputs the output must never replace)
    base: DeviceProfile
    runtime: str                                 # name of the fitted runtime stack
    runtime_display: str
    rows: tuple[CalibrationRow, ...]
    fits: tuple[PrecisionFit, ...]
    active_power_w: float | None                 # fitted from energies; None: none given
    measured_here: bool
    host: Mapping[str, Any] | None
    date: str                                    # ISO 8601, UTC
    notes: tuple[str, ...]
    skipped: tuple[SkippedMeasurement, ...] = ()   # measurements (or generated kernels) left out of the fit

    @property
    def models(self) -> tuple[CalibrationRow, ...]:
        return tuple(r for r in self.rows if r.kind == "model")

    @property
    def loo_error(self) -> float:
        """Mean absolute leave-one-out relative error over the measured models."""
        errors = [abs(r.loo_error) for r in self.models if r.loo_error is not None]
        return float(np.mean(errors)) if errors else math.nan

    @property
    def fit_error(self) -> float:
        return float(np.mean([abs(r.error) for r in self.models]))

    @property
    def within_25_percent(self) -> float:
        """Share of models whose leave-one-out prediction is within +-25%."""
        errors = [r.loo_error for r in self.models if r.loo_error is not None]
        return float(np.mean([abs(e) <= 0.25 for e in errors])) if errors else math.nan

    def fit_for(self, precision: str) -> PrecisionFit:
        return next(f for f in self.fits if f.precision == precision)

    def to_dict(self) -> dict[str, Any]:
        return {"measurements": str(self.measurements_path), "models": [str(p) for p in self.model_paths],
                "base": self.base.name, "runtime": self.runtime,
                "runtime_display_name": self.runtime_display, "measured_here": self.measured_here,
                "host": dict(self.host) if self.host else None, "date": self.date,
                "loo_error": _finite(self.loo_error), "fit_error": self.fit_error,
                "within_25_percent": _finite(self.within_25_percent),
                "active_power_w": self.active_power_w, "fits": [f.to_dict() for f in self.fits],
                "rows": [r.to_dict() for r in self.rows], "notes": list(self.notes),
                "skipped": [s.to_dict() for s in self.skipped]}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _host(threads: int) -> dict[str, Any]:
    import onnxruntime

    processor = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                processor = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    from edgefit.devices.timing import host_last_level_cache

    return {"hostname": platform.node(), "system": f"{platform.system()} {platform.release()}",
            "machine": platform.machine(), "processor": processor or "unknown", "cpus": os.cpu_count() or 0,
            "onnxruntime": onnxruntime.__version__, "threads": threads,
            "clock": "thread cpu time" if threads == 1 else "wall time",
            "last_level_cache_bytes": host_last_level_cache()}


def calibrate(measurements: str | Path | MeasurementFile, *, measure: bool = False, threads: int = 1,
              runtime: str | None = None, profiles_dir=None, timing_plan=None, kernels: bool = True,
              progress: Progress | None = None, timer: Callable[..., Any] | None = None) -> CalibrationResult:
    """Fit the base profile's runtime stack to the measurements in the file (timed here with `measure`).

    `timer`: what times a model with `measure`, called as edgefit.devices.timing.time_model is (the default); a
    benchmark passes one that returns timings it stored, so a fit can be re-run without re-timing."""
    from edgefit.analysis.footprint import analyze
    from edgefit.devices.estimate import model_precision
    from edgefit.model import load_model

    spec = measurements if isinstance(measurements, MeasurementFile) else load_measurements(measurements)
    base = resolve_base(spec.base, spec.path.parent, profiles_dir)
    stack_name, stack_display = _stack_identity(base, runtime, measure, threads)
    notes: list[str] = []
    if measure and any(m.latency_s is not None for m in spec.measurements):
        notes.append("latencies in the measurement file were ignored: --measure timed every model on this machine")
    missing = [m for m in spec.measurements if m.latency_s is None]
    if missing and not measure:
        raise MeasurementError(f"{spec.path}: {missing[0].label} has no latency: give latency = \"12.3ms\" or "
                               "pass --measure to time the models on this machine")

    plan = None
    # The cache of the machine the latencies come from: this host's when timed here, else the base profile's.
    cache_bytes = base.last_level_cache_bytes
    if measure:
        from edgefit.devices.timing import TimingPlan, host_last_level_cache, time_model
        from edgefit.devices.timing import kernels as make_kernels

        plan = timing_plan or TimingPlan()
        timer = timer or time_model
        cache_bytes = host_last_level_cache()
    rows: list[dict[str, Any]] = []
    skipped: list[SkippedMeasurement] = []
    generated = make_kernels(cache_bytes) if measure and kernels else ()
    total = len(spec.measurements) + len(generated)
    for done, item in enumerate(spec.measurements):
        try:
            loaded = load_model(item.model, load_weights=measure)
            footprint = analyze(loaded, dict(item.input_shapes), dict(item.dims))
        except EdgefitError as error:
            skipped.append(SkippedMeasurement(item.label, f"cannot analyse it: {error}"))
            continue
        uncosted = [layer.name for layer in footprint.layers if layer.macs is None]
        if uncosted:   # its features would miss that work, and the fit would charge it to the other coefficients
            skipped.append(SkippedMeasurement(
                item.label, f"MACs unknown for {', '.join(uncosted[:3])}{' ...' if len(uncosted) > 3 else ''}"
                            f" ({'; '.join(footprint.unknowns[:1])}): its features would miss that work"))
            continue
        precision = latency_precision(footprint, item.precision or model_precision(footprint))
        timing = None
        latency = item.latency_s
        if measure:
            if progress:
                progress(item.label, done, total)
            try:
                timing = timer(loaded.proto, what=item.label, threads=threads, plan=plan,
                                    input_shapes=dict(item.input_shapes), dims=dict(item.dims))
            except MeasurementError as error:   # onnxruntime cannot run it, or its timings stay unstable
                skipped.append(SkippedMeasurement(item.label, str(error)))
                continue
            latency = timing.median_s
        rows.append({"label": item.label, "kind": "model", "precision": precision,
                     "features": latency_features(footprint, precision, cache_bytes), "latency_s": latency,
                     "energy_j": item.energy_j, "timing": timing})
    if not rows:
        raise MeasurementError(f"{spec.path}: no usable measurement: {_skip_summary(skipped)}")
    if generated and not any(r["precision"] == "fp32" for r in rows):
        notes.append("generated kernels were not timed: they are fp32 and no measured model is")
        generated = ()
    for done, kernel in enumerate(generated, len(spec.measurements)):
        if progress:
            progress(kernel.name, done, total)
        try:
            timing = timer(kernel.model, what=f"generated kernel {kernel.name}", threads=threads, plan=plan)
        except MeasurementError as error:
            skipped.append(SkippedMeasurement(kernel.name, str(error)))
            continue
        rows.append({"label": kernel.name, "kind": "kernel", "precision": "fp32",
                     "features": latency_features(analyze(kernel.model), "fp32", cache_bytes),
                     "latency_s": timing.median_s,
                     "energy_j": None, "timing": timing})
    if progress:
        progress("", total, total)

    fits, fitted_rows = [], []
    for precision in PRECISIONS:
        group = [r for r in rows if r["precision"] == precision]
        if not group:
            continue
        base_coefficients = base_latency_coefficients(base, stack_name, precision)
        x = np.array([r["features"].vector() for r in group])
        y = np.array([r["latency_s"] for r in group])
        try:
            fit = fit_coefficients(x, y, base_coefficients, spec.keep_base)
        except MeasurementError as error:
            after = f" ({_skip_summary(skipped)})" if skipped else ""
            raise MeasurementError(f"{spec.path}: {precision}: {error}{after}") from None
        fits.append(PrecisionFit(precision, base_coefficients, fit))
        for i, row in enumerate(group):
            loo = None
            if row["kind"] == "model":
                others = np.arange(len(group)) != i
                if others.any():
                    refit = fit_coefficients(x[others], y[others], base_coefficients, spec.keep_base,
                                             require_enough=False)
                    loo = refit.coefficients.predict(row["features"])
            fitted_rows.append({**row, "fitted_s": fit.coefficients.predict(row["features"]), "loo_s": loo})

    power = None
    with_energy = [r for r in fitted_rows if r["energy_j"] is not None]
    if with_energy:
        power = fit_power(np.array([r["latency_s"] for r in with_energy]),
                          np.array([r["energy_j"] for r in with_energy]))
        if power < base.idle_power_w:
            notes.append(f"the fitted active power ({power * 1e3:.4g} mW) is below the base profile's idle power "
                         f"({base.idle_power_w * 1e3:.4g} mW): are the energies above idle, or of another rail?")
    ordered = [r for r in fitted_rows if r["kind"] == "model"] + [r for r in fitted_rows if r["kind"] == "kernel"]
    result_rows = tuple(CalibrationRow(
        r["label"], r["kind"], r["precision"], r["features"], r["latency_s"], r["fitted_s"], r["loo_s"],
        r["energy_j"], power * r["latency_s"] if power is not None and r["energy_j"] is not None else None,
        r["timing"]) for r in ordered)
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    return CalibrationResult(spec.path, tuple(m.model for m in spec.measurements), base, stack_name, stack_display,
                             result_rows, tuple(fits), power, measure, _host(threads) if measure else None,
                             now.isoformat().replace("+00:00", "Z"), tuple(notes), tuple(skipped))


def _skip_summary(skipped: list[SkippedMeasurement]) -> str:
    first = skipped[0] if skipped else None
    return (f"{len(skipped)} skipped" + (f", first {first.label}: {first.reason}" if first else "")).rstrip()


def _stack_identity(base: DeviceProfile, runtime: str | None, measure: bool, threads: int) -> tuple[str, str]:
    """Name and display name of the fitted runtime stack: --runtime, else onnxruntime on this host when timed
    here, else the base profile's default stack (refitted), else 'calibrated'."""
    if runtime:
        known = {stack.name: stack for stack in base.runtimes}
        name = normalize_name(runtime)
        return name, known[name].display_name if name in known else runtime
    if measure:
        import onnxruntime

        return "onnxruntime-cpu", (f"ONNX Runtime {onnxruntime.__version__} (CPU, {threads} thread"
                                   f"{'s' if threads != 1 else ''}), timed by edgefit calibrate --measure")
    stack = base.runtime_stack()
    return (stack.name, stack.display_name) if stack is not None else ("calibrated", base.runtime)


def base_latency_coefficients(base: DeviceProfile, runtime: str | None, precision: str) -> LatencyCoefficients:
    """The base profile's coefficients at `precision`, what a coefficient the data cannot set falls back to: those
    of its runtime stack `runtime` (else its default stack) when it has them, else its roofline: one MAC rate for
    every class, an element read and written at memory bandwidth, and its overheads."""
    names = {stack.name for stack in base.runtimes}
    stack = base.runtime_stack(runtime if runtime in names else None)
    if stack is not None and precision in stack.coefficients:
        return stack.coefficients[precision]
    element_bytes = {"fp32": 4, "fp16": 2, "int8": 1}[precision]
    mac_s = 1.0 / base.macs_per_s(precision)
    element_s = 2 * element_bytes / base.memory_bandwidth_bytes_per_s
    byte_s = 1 / base.memory_bandwidth_bytes_per_s
    # A convolution's weight element: read once from memory.
    return LatencyCoefficients(mac_s, mac_s, mac_s, mac_s, element_s, _TRANSCENDENTAL_PRIOR * element_s,
                               2 * byte_s, _TRANSCENDENTAL_PRIOR * element_s, byte_s, element_bytes * byte_s,
                               base.per_op_overhead_s, base.inference_overhead_s)


# ---- the calibrated profile -----------------------------------------------------------------------------

def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or os.path.samefile(a, b)
    except OSError:   # the output does not exist yet
        return False


def check_output(spec: MeasurementFile | CalibrationResult, out: str | Path, base: DeviceProfile, *,
                 force: bool = False) -> Path:
    """Refuse an output path that is not a .toml file or that would overwrite an input: the measurement file and
    the models always, the base profile unless `force`. The CLI checks before anything is timed."""
    out = Path(out)
    if out.suffix.lower() != ".toml":
        raise MeasurementError(f"output {out}: a profile file must end in .toml (so that --target can tell it from "
                               "a profile name)")
    if out.is_dir():
        raise MeasurementError(f"output {out} is a directory")
    if isinstance(spec, CalibrationResult):
        inputs = (spec.measurements_path, *spec.model_paths)
    else:
        inputs = (spec.path, *(m.model for m in spec.measurements))
    for source in inputs:
        if _same_file(out, source):
            raise MeasurementError(f"refusing to overwrite the input {source} with the calibrated profile; choose "
                                   "another -o")
    if base.path is not None and not force and _same_file(out, base.path):
        raise MeasurementError(f"refusing to overwrite the base profile {base.path}; choose another -o or pass "
                               "--force")
    return out


def _rounded(value: float) -> float:
    """Six significant digits: the fit is not more accurate, and the file stays readable."""
    return float(f"{value:.6g}")


def profile_data(result: CalibrationResult, name: str) -> dict[str, Any]:
    """The calibrated profile as a TOML table: the base profile's fields, the fitted runtime stack as the default,
    the fitted active power, and the [calibration] record."""
    base = result.base
    if base.path is None:
        raise ProfileError(f"base profile {base.name!r} has no file to start from")
    data = read_toml(base.path)
    sources = data.setdefault("source", {})
    data["name"] = name
    data["display_name"] = f"{base.display_name}, user-calibrated {result.date[:10]}"
    data.pop("aliases", None)   # the base profile keeps its aliases; two profiles cannot share one
    where = f"edgefit calibrate {result.measurements_path.name} ({result.date})"
    if result.host:
        data["processor"] = result.host["processor"]
        data["runtime"] = result.runtime_display
        sources["processor"] = f"{where}: timed on host {result.host['hostname']} ({result.host['system']})"
        if result.host.get("last_level_cache_bytes"):
            data["last_level_cache"] = result.host["last_level_cache_bytes"]
            sources["last_level_cache"] = f"{where}: the host's last-level cache, from /sys/devices/system/cpu"
    data.setdefault("runtimes", {})[result.runtime] = stack_table(result, where)
    data["default_runtime"] = result.runtime
    data["calibration"] = calibration_table(result)
    return data


def _rate(seconds_per_unit: float, unit: str) -> str | float:
    """A coefficient as the rate profiles spell it; a zero cost (the class is free beyond its op dispatch) is inf."""
    if seconds_per_unit == 0:
        return math.inf
    return f"{_rounded(1e-9 / seconds_per_unit)} G{unit}/s"


def stack_table(result: CalibrationResult, where: str) -> dict[str, Any]:
    """The fitted runtime stack as a profile's [runtimes.<name>] table (see edgefit.devices)."""
    models = len(result.models)
    kernels = len(result.rows) - models
    table: dict[str, Any] = {
        "display_name": result.runtime_display, "basis": "user calibration",
        "source": f"{where}: {models} model(s)" + (f" and {kernels} generated kernels" if kernels else "")
                  + f", starting from profile {result.base.name}"}
    if result.loo_error > 0:   # NaN (a single measurement) fails too
        table["expected_error"] = _rounded(result.loo_error)
    if result.active_power_w is not None:
        energies = sum(1 for r in result.rows if r.energy_j is not None)
        table["active_power"] = f"{_rounded(result.active_power_w * 1e3)} mW"
        table["active_power_source"] = f"{where}: fitted to {energies} measured energies (energy = power x latency)"
    for fit in result.fits:
        c = fit.fit.coefficients
        table[fit.precision] = {
            "conv": _rate(c.s_per_conv_mac, "MAC"), "depthwise": _rate(c.s_per_depthwise_mac, "MAC"),
            "fc": _rate(c.s_per_fc_mac, "MAC"), "integer": _rate(c.s_per_integer_mac, "MAC"),
            "elementwise": _rate(c.s_per_elementwise_element, "elem"),
            "transcendental": _rate(c.s_per_transcendental_element, "elem"), "moved": _rate(c.s_per_moved_byte, "B"),
            "lrn": _rate(c.s_per_lrn_element, "elem"), "uncached": _rate(c.s_per_uncached_byte, "B"),
            "conv_weights": _rate(c.s_per_conv_weight, "elem"),
            "per_op": f"{_rounded(c.s_per_op * 1e6)} us", "per_inference": f"{_rounded(c.s_per_inference * 1e6)} us"}
    return table


def calibration_table(result: CalibrationResult) -> dict[str, Any]:
    def row(r: CalibrationRow) -> dict[str, Any]:
        entry = {"model": r.label, "precision": r.precision, "measured_ms": _rounded(r.latency_s * 1e3),
                 "fitted_ms": _rounded(r.fitted_s * 1e3)}
        if r.loo_error is not None:
            entry["loo_error"] = _rounded(r.loo_error)
        if r.timing is not None:
            entry["spread"] = _rounded(r.timing.spread)
            entry["runs"] = len(r.timing.samples_s)
        if r.energy_j is not None:
            entry["energy_mj"] = _rounded(r.energy_j * 1e3)
        return entry

    table: dict[str, Any] = {
        "date": result.date, "base": result.base.name, "measurements": str(result.measurements_path),
        "runtime": result.runtime, "measured_here": result.measured_here,
        "models": [row(r) for r in result.models],
        "fitted": {f.precision: dict(zip(COEFFICIENT_NAMES, map(_rounded, f.fit.coefficients.vector().tolist())))
                   for f in result.fits},
        "fit_error": _rounded(result.fit_error),
    }
    if math.isfinite(result.loo_error):
        table["loo_error"] = _rounded(result.loo_error)
        table["within_25_percent"] = _rounded(result.within_25_percent)
    kept = {f.precision: dict(f.fit.kept) for f in result.fits if f.fit.kept}
    if kept:
        table["kept_from_base"] = kept
    kernels = [row(r) for r in result.rows if r.kind == "kernel"]
    if kernels:
        table["kernels"] = kernels
    if result.active_power_w is not None:
        table["active_power_w"] = _rounded(result.active_power_w)
    if result.host:
        table["host"] = dict(result.host)
    if result.notes:
        table["notes"] = list(result.notes)
    if result.skipped:
        table["skipped"] = [s.to_dict() for s in result.skipped]
    return table


def write_profile(result: CalibrationResult, out: str | Path, *, force: bool = False) -> Path:
    """Write the calibrated profile atomically; one edgefit could not load again replaces nothing."""
    from edgefit.devices.profiles import load_profile_file
    from edgefit.model import write_text_atomic

    out = check_output(result, out, result.base, force=force)

    def loads_again(written: Path) -> None:
        try:
            load_profile_file(written)
        except ProfileError as error:
            raise ProfileError(f"the calibrated profile would not load: {error}".replace(str(written), str(out))) \
                from None

    return write_text_atomic(out, toml_dumps(profile_data(result, normalize_name(out.stem))), validate=loads_again)


# ---- writing TOML (tomllib only reads; the subset profiles use) ------------------------------------------

def _toml_key(key: str) -> str:
    return key if key and all(c.isalnum() and c.isascii() or c in "-_" for c in key) else _toml_string(key)


def _toml_string(text: str) -> str:
    import json

    # JSON's escapes are TOML's; DEL is the one character JSON leaves raw and TOML forbids.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            raise ValueError("cannot write NaN to TOML")
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (_dt.date, _dt.datetime, _dt.time)):
        return value.isoformat()
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def toml_dumps(data: Mapping[str, Any]) -> str:
    """`data` as TOML: plain values first, then one [table] per nested mapping, then one [[table]] per entry of a
    list of mappings."""
    lines: list[str] = []

    def is_table_list(value: Any) -> bool:
        return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, Mapping) for v in value)

    def body(values: Mapping[str, Any], prefix: str) -> None:
        for key, value in values.items():
            if not isinstance(value, Mapping) and not is_table_list(value):
                lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
        for key, value in values.items():
            path = f"{prefix}.{_toml_key(key)}" if prefix else _toml_key(key)
            if isinstance(value, Mapping):
                if not value or any(not isinstance(v, Mapping) for v in value.values()):
                    lines.append(f"\n[{path}]")
                body(value, path)
        for key, value in values.items():
            path = f"{prefix}.{_toml_key(key)}" if prefix else _toml_key(key)
            if is_table_list(value):
                for entry in value:
                    lines.append(f"\n[[{path}]]")
                    body(entry, path)

    body(data, "")
    return "\n".join(lines).lstrip("\n") + "\n"
