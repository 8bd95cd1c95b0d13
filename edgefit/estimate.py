"""What a model needs on one device: memory, latency, energy and power. Every figure is an estimate.

Memory follows DESIGN.md section 2 at the precision the model is deployed in:
    flash = weights + runtime code
    RAM   = activation arena + runtime overhead (+ weights when the runtime loads them into RAM)

Latency is a roofline per layer, summed, plus fixed costs:
    layer time = max(MACs / (peak MAC rate x efficiency, both at the precision),
                     activation bytes / memory bandwidth + weight bytes / bandwidth of where weights live)
    latency    = sum of layer times + per-inference overhead + per-op overhead x layers + network round trip

Energy and power: the device draws `active_power` while busy (latency without the network round trip) and
`idle_power` otherwise, so at `rate` inferences per second with duty cycle d = rate x busy time:
    energy per inference = active power x busy time
    average power        = idle power x (1 - d) + active power x d
DESIGN.md writes the average as idle + rate x energy, which counts the idle draw twice while busy; the
duty-cycle form is exact for the same two-state model and the two agree when d is small. Without a rate the
device is assumed to infer back to back (d = 1). Battery life = battery energy / average power.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from edgefit.analysis.dtypes import DTYPE_BYTES, FLOAT_DTYPES, PRECISION_BYTES
from edgefit.analysis.footprint import Footprint
from edgefit.devices import DeviceProfile, check_precision
from edgefit.units import check_rate_hz

METHOD = ("estimate: per-layer roofline max(MACs / (peak MAC rate x efficiency), bytes moved / bandwidth) "
          "+ overheads, from the device profile's datasheet figures; not a measurement")

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

    @property
    def busy_s(self) -> float:
        return self.compute_s + self.overhead_s

    @property
    def latency_s(self) -> float:
        return self.compute_s + self.overhead_s + self.network_s

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
            "weight_bytes": self.weight_bytes,
            "compute_ms": self.compute_s * 1e3,
            "overhead_ms": self.overhead_s * 1e3,
            "network_ms": self.network_s * 1e3,
            "rate_hz": self.rate_hz,
            "duty_cycle": self.duty_cycle,
            "battery_life_h": self.battery_life_h,
            "precision": self.precision,
            "precision_supported": self.precision_supported,
            "memory_bound_layers": self.memory_bound_layers,
            "latency_is_lower_bound": self.latency_is_lower_bound,
            "layers_without_macs": list(self.layers_without_macs),
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
             rate_hz: float | None = None) -> Estimate:
    """Estimate memory, latency, energy and power of `footprint` on `profile` at `precision` (default: the model's)."""
    precision = precision or model_precision(footprint)
    check_precision(precision)
    check_rate_hz(rate_hz)

    weight_bytes = footprint.weight_bytes_at(precision)
    activation_bytes = footprint.activation_bytes_at(precision, shared_storage=profile.shares_activation_storage)
    flash_bytes = weight_bytes + profile.runtime_flash_bytes
    ram_bytes = activation_bytes + profile.runtime_ram_bytes + (weight_bytes if profile.weights_in_ram else 0)

    weight_bandwidth = (profile.memory_bandwidth_bytes_per_s if profile.weights_in_ram
                        else profile.flash_bandwidth_bytes_per_s)
    weight_scale = weight_bytes / footprint.weight_bytes if footprint.weight_bytes else 1.0
    columns = _layer_columns(footprint, precision)
    memory_time = (columns.activation_moved / profile.memory_bandwidth_bytes_per_s
                   + columns.weight_bytes * (weight_scale / weight_bandwidth))
    mac_time = columns.macs / profile.macs_per_s(precision)
    memory_bound = int(np.count_nonzero(memory_time > mac_time))
    compute_s = float(np.maximum(mac_time, memory_time).sum())
    without_macs = columns.without_macs

    overhead_s = profile.inference_overhead_s + profile.per_op_overhead_s * columns.count
    busy_s = compute_s + overhead_s
    energy_j = profile.active_power_w * busy_s
    duty_cycle = 1.0 if rate_hz is None else min(1.0, rate_hz * busy_s)
    avg_power_w = profile.idle_power_w * (1 - duty_cycle) + profile.active_power_w * duty_cycle
    battery_wh = profile.battery_wh
    return Estimate(
        target=profile.name, precision=precision, precision_supported=precision in profile.precisions,
        weight_bytes=weight_bytes, activation_bytes=activation_bytes, ram_bytes=ram_bytes, flash_bytes=flash_bytes,
        compute_s=compute_s, overhead_s=overhead_s, network_s=profile.network_rtt_s, energy_j=energy_j,
        rate_hz=rate_hz, duty_cycle=duty_cycle, avg_power_w=avg_power_w,
        battery_life_h=battery_wh / avg_power_w if battery_wh is not None else None,
        memory_bound_layers=memory_bound, layers_without_macs=tuple(without_macs),
    )
