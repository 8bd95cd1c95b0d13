"""What a model needs on one device: memory, latency, energy and power. Every figure is an estimate.

Memory follows DESIGN.md section 2 at the precision the model is deployed in:
    flash = weights + runtime code
    RAM   = arena + runtime overhead (+ weights when the runtime loads them into RAM)
where the arena is the profile's memory model (edgefit.devices.runtime_memory): the planned activations plus what the
runtime keeps beside them (for TensorFlow Lite Micro, the tensor arena to configure).

Latency, when the profile's runtime stack has coefficients for the precision (measured on the device, see
edgefit.devices.latency): per-class rates for what the runtime dispatches,
    latency = conv MACs / conv rate + depthwise MACs / depthwise rate + fc MACs / fc rate
              + integer MACs / integer rate + elementwise elements / elementwise rate
              + transcendental elements / transcendental rate + bytes moved / movement rate
              + LRN elements / LRN rate + bytes beyond the last-level cache / uncached rate
              + conv weight elements / conv weight rate
              + ops x per-op cost + per-inference cost + network round trip
Otherwise a roofline per layer from datasheet figures, summed, plus fixed costs:
    layer time = max(MACs / (peak MAC rate x efficiency, both at the precision),
                     activation bytes / memory bandwidth + weight bytes / bandwidth of where weights live)
    latency    = sum of layer times + per-inference overhead + per-op overhead x layers + network round trip
Every estimate carries its basis (datasheet, published measurement, user calibration) and, where known, the
typical relative error of that basis.

Energy and power: the device draws `active_power` while busy (latency without the network round trip) and
`idle_power` otherwise (a runtime stack may state its own measured active power), so at `rate` inferences per second with duty cycle d = rate x busy time:
    energy per inference = active power x busy time
    average power        = idle power x (1 - d) + active power x d
DESIGN.md writes the average as idle + rate x energy, which counts the idle draw twice while busy; the
duty-cycle form is exact for the same two-state model and the two agree when d is small. Without a rate the
device is assumed to infer back to back (d = 1). Battery life = battery energy / average power.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from edgefit.analysis.dtypes import DTYPE_BYTES, FLOAT_DTYPES, PRECISION_BYTES
from edgefit.analysis.footprint import Footprint
from edgefit.devices.fields import check_precision
from edgefit.devices.latency import WORK_KINDS, dispatched_work, latency_features, latency_precision
from edgefit.devices.profiles import DeviceProfile
from edgefit.devices.runtime_memory import RuntimeMemory, runtime_memory
from edgefit.devices.stacks import StackSettings
from edgefit.units import check_rate_hz

METHOD = ("estimate: per-class rates (conv, depthwise, fc, elementwise, per op) of the profile's runtime stack where it "
          "has them, else a per-layer roofline max(MACs / (peak MAC rate x efficiency), bytes moved / bandwidth) + "
          "overheads from the profile's figures; each estimate's basis says what they rest on (datasheet, published "
          "measurement, user calibration); not a measurement of this model")

# How the model's own weight dtype maps to a deployment precision.
_PRECISION_OF_DTYPE = {
    "float32": "fp32", "float64": "fp32", "float16": "fp16", "bfloat16": "fp16",
    "int8": "int8", "uint8": "int8", "int16": "int8", "uint16": "int8",
    "int4": "int8", "uint4": "int8", "int2": "int8", "uint2": "int8",
}


def model_precision(footprint: Footprint) -> str:
    """The precision the model is stored in ('fp32', 'fp16' or 'int8'), from its dominant weight dtype."""
    return _PRECISION_OF_DTYPE.get(footprint.dominant_dtype, "fp32")


@dataclass(frozen=True)
class Estimate:
    """One model on one device at one precision. All figures are estimates, see METHOD."""

    target: str
    precision: str
    precision_supported: bool           # False: the runtime cannot execute this precision on the device
    weight_bytes: int                   # weights at the precision
    activation_bytes: int               # arena at the precision (int8 activations take a quarter of fp32)
    ram_bytes: int
    flash_bytes: int
    compute_s: float                    # summed per-layer roofline times
    overhead_s: float                   # per-inference plus per-op overheads
    network_s: float                    # round trip to reach the device (cloud)
    energy_j: float
    rate_hz: float | None               # None: back-to-back inference
    duty_cycle: float                   # share of time the device is busy inferring (capped at 1)
    avg_power_w: float
    battery_life_h: float | None
    memory_bound_layers: int            # layers whose roofline time is set by bandwidth, not MACs
    layers_without_macs: tuple[str, ...]  # layers whose MACs are unknown: their compute time is missing
    memory: RuntimeMemory               # the runtime's arena: activations (head) + its bookkeeping (tail)
    settings: StackSettings             # the memory model, operator list and runtime sizes used, and whose they are
    runtime: str | None = None          # the profile's runtime stack the estimate is for
    fallback_s: float = 0.0             # layers an accelerator cannot run, timed on the host CPU instead
    basis: str = "datasheet"            # where the latency figures come from (edgefit.devices.fields.BASES)
    expected_error: float | None = None  # typical relative error of the latency, when the basis states one

    @property
    def arena_bytes(self) -> int:
        return self.memory.arena_bytes

    @property
    def busy_s(self) -> float:
        return self.compute_s + self.overhead_s + self.fallback_s

    @property
    def latency_s(self) -> float:
        return self.busy_s + self.network_s

    @property
    def latency_is_lower_bound(self) -> bool:
        return bool(self.layers_without_macs)

    @property
    def keeps_up(self) -> bool:
        """Whether the device can run `rate_hz` inferences per second at all."""
        return self.rate_hz is None or self.rate_hz * self.busy_s <= 1.0

    def to_dict(self) -> dict[str, object]:
        return {
            "latency_ms": self.latency_s * 1e3,
            "energy_mj": self.energy_j * 1e3,
            "avg_power_mw": self.avg_power_w * 1e3,
            "ram_bytes": self.ram_bytes,
            "flash_bytes": self.flash_bytes,
            "activation_bytes": self.activation_bytes,
            "arena_bytes": self.arena_bytes,
            "arena": self.memory.to_dict(),
            "weight_bytes": self.weight_bytes,
            "compute_ms": self.compute_s * 1e3,
            "overhead_ms": self.overhead_s * 1e3,
            "network_ms": self.network_s * 1e3,
            "fallback_ms": self.fallback_s * 1e3,
            "rate_hz": self.rate_hz,
            "duty_cycle": self.duty_cycle,
            "battery_life_h": self.battery_life_h,
            "precision": self.precision,
            "precision_supported": self.precision_supported,
            "memory_bound_layers": self.memory_bound_layers,
            "latency_is_lower_bound": self.latency_is_lower_bound,
            "layers_without_macs": list(self.layers_without_macs),
            "runtime": self.runtime,
            "basis": self.basis,
            "expected_error": self.expected_error,
            "stack_settings": self.settings.to_dict(),
            "estimated": True,
        }


# An int8 runtime fuses the QuantizeLinear/DequantizeLinear pairs of a QDQ model into its integer kernels
# (TFLite Micro, onnxruntime's QDQ transformer, TensorRT), so they cost neither time nor an op dispatch there.
_FUSED_IN_INT8 = frozenset({"QuantizeLinear", "DequantizeLinear"})


def _float_scale(dtype: str, precision: str) -> float:
    """How much a tensor of `dtype` grows or shrinks when floats are stored at `precision`."""
    if dtype not in FLOAT_DTYPES or not DTYPE_BYTES.get(dtype):
        return 1.0
    return PRECISION_BYTES[precision] / DTYPE_BYTES[dtype]


@dataclass(frozen=True)
class _LayerColumns:
    """The per-layer figures every device's estimate needs, as arrays: one model is checked against dozens of
    devices, and a Python loop over tens of thousands of layers per device would dominate `check --all`."""

    count: int
    activation_moved: np.ndarray   # bytes each layer reads and writes at the precision
    weight_bytes: np.ndarray
    macs: np.ndarray               # 0 where unknown
    without_macs: tuple[str, ...]


_columns_cache: dict[tuple[int, str], _LayerColumns] = {}


def _layer_columns(footprint: Footprint, precision: str) -> _LayerColumns:
    key = (id(footprint), precision)
    if key not in _columns_cache:
        layers = [l for l in footprint.layers if not (precision == "int8" and l.op_type in _FUSED_IN_INT8)]
        _columns_cache[key] = _LayerColumns(
            len(layers),
            np.array([((l.input_bytes or 0) + (l.output_bytes or 0)) * _float_scale(l.dtype, precision)
                      for l in layers], dtype=np.float64),
            np.array([l.weight_bytes for l in layers], dtype=np.float64),
            np.array([l.macs or 0 for l in layers], dtype=np.float64),
            tuple(l.name for l in layers if l.macs is None))
        weakref.finalize(footprint, _columns_cache.pop, key, None)   # the entry lives as long as the footprint
    return _columns_cache[key]


def estimate(footprint: Footprint, profile: DeviceProfile, precision: str | None = None,
             rate_hz: float | None = None, runtime: str | None = None) -> Estimate:
    """Estimate memory, latency, energy and power of `footprint` on `profile` at `precision` (default: the model's)
    with the profile's runtime stack `runtime` (default: its default stack, if it has any)."""
    precision = precision or model_precision(footprint)
    check_precision(precision)
    check_rate_hz(rate_hz)

    stack = profile.runtime_stack(runtime)
    settings = profile.stack_settings(runtime)
    weight_bytes = footprint.weight_bytes_at(precision)
    activation_bytes = footprint.activation_bytes_at(precision, shared_storage=profile.shares_activation_storage)
    memory = runtime_memory(footprint, settings.memory_model, precision, activation_bytes)
    flash_bytes = weight_bytes + settings.runtime_flash_bytes
    ram_bytes = memory.arena_bytes + settings.runtime_ram_bytes + (weight_bytes if profile.weights_in_ram else 0)

    table = latency_precision(footprint, precision)
    coefficients = stack.coefficients.get(table) if stack is not None else None
    columns = _layer_columns(footprint, precision)
    if coefficients is not None:
        terms = coefficients.vector() * latency_features(footprint, table, profile.last_level_cache_bytes).vector()
        work_terms = len(WORK_KINDS)   # the per-class work; the per-op and per-inference terms follow
        compute_s, overhead_s, memory_bound = float(terms[:work_terms].sum()), float(terms[work_terms:].sum()), 0
        basis, expected_error = stack.basis, stack.expected_error_at(table)
        if expected_error is None and basis == "user calibration" and profile.calibration:
            expected_error = profile.calibration.get("loo_error")
    else:
        compute_s, memory_bound = _roofline(columns, profile, precision,
                                            weight_bytes / footprint.weight_bytes if footprint.weight_bytes else 1.0)
        overhead_s = profile.inference_overhead_s + profile.per_op_overhead_s * columns.count
        # The profile's own figures: datasheet unless the profile says they were measured or calibrated.
        basis, expected_error = profile.basis, profile.expected_error
    without_macs = columns.without_macs

    return Estimate(
        target=profile.name, precision=precision, precision_supported=precision in profile.precisions,
        weight_bytes=weight_bytes, activation_bytes=activation_bytes, ram_bytes=ram_bytes, flash_bytes=flash_bytes,
        compute_s=compute_s, overhead_s=overhead_s, network_s=profile.network_rtt_s,
        **_power(profile, runtime, compute_s + overhead_s, rate_hz),
        memory_bound_layers=memory_bound, layers_without_macs=tuple(without_macs), memory=memory,
        runtime=stack.name if stack is not None else None, basis=basis, expected_error=expected_error,
        settings=settings,
    )


def _power(profile: DeviceProfile, runtime: str | None, busy_s: float, rate_hz: float | None) -> dict[str, object]:
    """Energy and power for `busy_s` of inference (the Estimate fields they fill)."""
    stack = profile.runtime_stack(runtime)
    active_power_w = (stack.active_power_w if stack is not None and stack.active_power_w is not None
                      else profile.active_power_w)
    duty_cycle = 1.0 if rate_hz is None else min(1.0, rate_hz * busy_s)
    avg_power_w = profile.idle_power_w * (1 - duty_cycle) + active_power_w * duty_cycle
    battery_wh = profile.battery_wh
    return {"energy_j": active_power_w * busy_s, "rate_hz": rate_hz, "duty_cycle": duty_cycle,
            "avg_power_w": avg_power_w, "battery_life_h": battery_wh / avg_power_w if battery_wh is not None else None}


def host_fallback_s(footprint: Footprint, profile: DeviceProfile, precision: str, layers: Collection[str]) -> float:
    """Seconds the host CPU takes for `layers` (those an accelerator hands back): the datasheet roofline of
    `estimate` with the tensors at the deployed `precision` (weights read where they live) but the profile's fp32
    MAC rate, its host core's (accelerator profiles give their CPU's fp32 figures and no host int8 rate, so an int8
    kernel there is timed at the fp32 rate), plus the per-op dispatch. A layer the runtime fuses costs nothing."""
    kept = [layer.name for layer in footprint.layers if not (precision == "int8" and layer.op_type in _FUSED_IN_INT8)]
    moved = np.array([name in layers for name in kept], dtype=bool)
    columns = _layer_columns(footprint, precision)
    weight_scale = footprint.weight_bytes_at(precision) / footprint.weight_bytes if footprint.weight_bytes else 1.0
    _, memory_time = _roofline_parts(columns, profile, precision, weight_scale)
    host_time = np.maximum(columns.macs / profile.macs_per_s("fp32"), memory_time) + profile.per_op_overhead_s
    return float(host_time[moved].sum())


def with_host_fallback(est: Estimate, footprint: Footprint, profile: DeviceProfile, layers: Collection[str],
                       host_s: float) -> Estimate:
    """`est` with `layers` (those an accelerator cannot run) taken off the accelerator and run on the host CPU in
    `host_s`: their accelerator time leaves compute and overhead, `host_s` becomes `fallback_s`, and energy and
    power follow (at the profile's or stack's active power: the board's draw, whichever unit is busy)."""
    compute, dispatch = _layer_parts(footprint, profile, est.precision, est.runtime)
    moved = np.array([layer.name in layers for layer in footprint.layers], dtype=bool)
    compute_s = max(0.0, est.compute_s - float(compute[moved].sum()))
    overhead_s = max(0.0, est.overhead_s - float(dispatch[moved].sum()))
    return dataclasses.replace(est, compute_s=compute_s, overhead_s=overhead_s, fallback_s=host_s,
                               **_power(profile, est.runtime, compute_s + overhead_s + host_s, est.rate_hz))


def _roofline_parts(columns: _LayerColumns, profile: DeviceProfile, precision: str,
                    weight_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Per layer: seconds at the sustained MAC rate, and seconds to move its bytes (datasheet figures)."""
    weight_bandwidth = (profile.memory_bandwidth_bytes_per_s if profile.weights_in_ram
                        else profile.flash_bandwidth_bytes_per_s)
    memory_time = (columns.activation_moved / profile.memory_bandwidth_bytes_per_s
                   + columns.weight_bytes * (weight_scale / weight_bandwidth))
    return columns.macs / profile.macs_per_s(precision), memory_time


def _roofline_times(columns: _LayerColumns, profile: DeviceProfile, precision: str,
                    weight_scale: float) -> np.ndarray:
    return np.maximum(*_roofline_parts(columns, profile, precision, weight_scale))


def _roofline(columns: _LayerColumns, profile: DeviceProfile, precision: str, weight_scale: float) -> tuple[float, int]:
    """Summed per-layer roofline time and the number of memory-bound layers."""
    mac_time, memory_time = _roofline_parts(columns, profile, precision, weight_scale)
    return float(np.maximum(mac_time, memory_time).sum()), int(np.count_nonzero(memory_time > mac_time))


def _layer_parts(footprint: Footprint, profile: DeviceProfile, precision: str,
                 runtime: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Per layer of `footprint.layers`, by the same model as `estimate`: seconds of compute and of dispatch (the
    per-op cost). A layer the runtime folds, fuses or drops costs 0 in both."""
    stack = profile.runtime_stack(runtime)
    table = latency_precision(footprint, precision)
    coefficients = stack.coefficients.get(table) if stack is not None else None
    if coefficients is not None:
        per_unit = dict(zip(WORK_KINDS, coefficients.vector()[:len(WORK_KINDS)]))
        work = dispatched_work(footprint, table, profile.last_level_cache_bytes)
        return (np.array([0.0 if w is None else sum(amount * per_unit[kind] for kind, amount in w.items())
                          for w in work], dtype=np.float64),
                np.array([0.0 if w is None else coefficients.s_per_op for w in work], dtype=np.float64))
    kept = np.array([not (precision == "int8" and layer.op_type in _FUSED_IN_INT8) for layer in footprint.layers],
                    dtype=bool)
    columns = _layer_columns(footprint, precision)
    weight_scale = footprint.weight_bytes_at(precision) / footprint.weight_bytes if footprint.weight_bytes else 1.0
    compute = np.zeros(len(kept))
    compute[kept] = _roofline_times(columns, profile, precision, weight_scale)
    return compute, np.where(kept, profile.per_op_overhead_s, 0.0)


def layer_latencies(footprint: Footprint, profile: DeviceProfile, precision: str | None = None,
                    runtime: str | None = None) -> tuple[float, ...]:
    """Estimated seconds of each of `footprint.layers` on `profile`, by the same model as `estimate` (its compute
    and per-op terms; the per-inference overhead belongs to no layer). A layer the runtime folds, fuses or drops
    costs 0. Reports use it to show where the time goes; the totals come from `estimate`."""
    precision = precision or model_precision(footprint)
    check_precision(precision)
    compute, dispatch = _layer_parts(footprint, profile, precision, runtime)
    return tuple(float(t) for t in compute + dispatch)
