"""Device profiles: one TOML file per device, validated into frozen DeviceProfile objects.

Profiles are looked up along a search path: directories given with `--profiles-dir`, then those in the
EDGEFIT_PROFILES environment variable (os.pathsep-separated), then the built-in profiles: the repository's
top-level `profiles/` folder, which a wheel carries as `edgefit/profiles/` (pyproject.toml maps the folder into
the package), and a source checkout or editable install reads where it is.
A profile in an earlier directory shadows a later one of the same name, so users can override built-ins.
"""

from __future__ import annotations

import difflib
import errno
import math
import os
import re
import stat
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgefit.errors import ConfigError, EdgefitError, ProfileError
from edgefit.latency import LatencyCoefficients
from edgefit.runtime_memory import MEMORY_MODELS
from edgefit.units import parse_duration_s, parse_power_w, parse_size

TIERS = ("cloud", "edge", "mobile", "tiny")
PRECISIONS = ("fp32", "fp16", "int8")


def check_precision(precision: str | None) -> None:
    """A deployment precision someone asked for must be one edgefit models (None: the model's own)."""
    if precision is not None and precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}: expected one of {', '.join(PRECISIONS)}")


# Typical latency band per tier (DESIGN.md section 4: cloud 100-1000 ms incl. a 100-500 ms network round trip,
# edge 10-100 ms, mobile 5-50 ms, tiny 1-10 ms). Context for a latency figure, never a limit: what an application
# needs is the user's to say (a budget, a rate) or the profile's (`latency_budget`).
TIER_LATENCY_BAND_S = {"cloud": (0.100, 1.0), "edge": (0.010, 0.100), "mobile": (0.005, 0.050),
                       "tiny": (0.001, 0.010)}

def _builtin_profiles_dir() -> Path:
    package = Path(__file__).resolve().parent.parent
    installed = package / "profiles"          # inside an installed wheel
    return installed if installed.is_dir() else package.parent / "profiles"   # the source tree


BUILTIN_PROFILES_DIR = _builtin_profiles_dir()
PROFILES_ENV = "EDGEFIT_PROFILES"


# What the speed and power figures of a profile or runtime stack rest on.
BASES = ("datasheet", "published measurement", "user calibration")


@dataclass(frozen=True)
class RuntimeStack:
    """One software stack (inference runtime + kernels + compiler) a device runs models with, and what it costs:
    latency coefficients per precision (edgefit.latency), optionally the power drawn while it runs."""

    name: str
    display_name: str
    basis: str                                      # one of BASES: where the coefficients come from
    source: str
    coefficients: Mapping[str, LatencyCoefficients]  # by precision
    expected_error: float | None = None             # typical relative error of its latency estimates
    active_power_w: float | None = None             # draw while inferring; None: the profile's active_power
    active_power_source: str | None = None          # which measurement, on which supply rail
    # What the stack itself spends and runs, where it differs from the profile's figures (None: the profile's).
    memory_model: str | None = None                 # edgefit.runtime_memory model of this stack
    operators: str | None = None                    # its operator list (edgefit/operators/NAME.toml)
    runtime_ram_bytes: int | None = None
    runtime_flash_bytes: int | None = None
    footprint_source: str | None = None             # where runtime_ram / runtime_flash come from

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "display_name": self.display_name, "basis": self.basis, "source": self.source,
            "expected_error": self.expected_error, "active_power_w": self.active_power_w,
            "active_power_source": self.active_power_source, "memory_model": self.memory_model,
            "operators": self.operators, "runtime_ram_bytes": self.runtime_ram_bytes,
            "runtime_flash_bytes": self.runtime_flash_bytes, "footprint_source": self.footprint_source,
            "latency_coefficients": {p: dict(zip(_COEFFICIENT_KEYS, c.vector().tolist()))
                                     for p, c in self.coefficients.items()},
        }


@dataclass(frozen=True)
class StackSettings:
    """What a model runs with on a device under one runtime stack: its memory model, operator list and runtime
    RAM and flash, each the stack's own where it sets one, else the profile's."""

    runtime: str | None                  # the stack's name; None: the profile has no stacks
    memory_model: str
    operators: str | None                # None: no operator list, the model's ops are not judged
    runtime_ram_bytes: int
    runtime_flash_bytes: int
    from_stack: tuple[str, ...] = ()     # which of the four the stack set (the rest are the profile's)

    def to_dict(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "memory_model": self.memory_model, "operators": self.operators,
                "runtime_ram_bytes": self.runtime_ram_bytes, "runtime_flash_bytes": self.runtime_flash_bytes,
                "from_stack": list(self.from_stack)}


_STACK_SETTINGS = ("memory_model", "operators", "runtime_ram_bytes", "runtime_flash_bytes")


@dataclass(frozen=True)
class DeviceProfile:
    """What edgefit needs to know about one device; every number comes with a source note in `sources`."""

    name: str
    display_name: str
    tier: str
    processor: str
    runtime: str
    precisions: tuple[str, ...]          # precisions the runtime can execute on this device
    ram_bytes: int                       # RAM (or accelerator/system memory) the model can use
    flash_bytes: int                     # flash / storage holding the model and the runtime
    runtime_ram_bytes: int               # RAM the runtime (and the firmware/OS it needs) takes
    runtime_flash_bytes: int             # code size of the runtime
    weights_in_ram: bool                 # the model file is loaded into RAM (phones, edge boxes, servers)
    peak_macs_per_s: Mapping[str, float]  # peak MAC rate per precision
    efficiency: Mapping[str, float]      # fraction of the peak MAC rate real kernels sustain, per precision
    memory_bandwidth_bytes_per_s: float  # activations (and weights when in RAM)
    flash_bandwidth_bytes_per_s: float   # weights read in place from flash (MCUs); = memory bandwidth otherwise
    inference_overhead_s: float          # fixed cost per inference (invoke, copies, scheduling)
    per_op_overhead_s: float             # dispatch cost per operator (interpreter step, kernel launch)
    network_rtt_s: float                 # request round trip to reach the device (cloud)
    active_power_w: float                # draw while running inference
    idle_power_w: float                  # draw between inferences
    latency_budget_s: float | None = None  # the latency the device's application needs, when the profile says
    basis: str = "datasheet"             # what the speed and power figures rest on: one of BASES
    expected_error: float | None = None  # relative error of the latency estimate (0.25: +-25%), when known
    ram_usable_fraction: float = 1.0     # share of RAM one app may take (phones' OS limits)
    battery_mah: float | None = None
    battery_v: float | None = None
    aliases: tuple[str, ...] = ()
    int8_ops: tuple[str, ...] | None = None   # ONNX op types the int8 kernels cover; None: every quantizable op
    operators: str | None = None   # the runtime's operator list (edgefit/operators/NAME.toml); None: not judged
    shares_activation_storage: bool = False   # runtime aliases views and runs elementwise ops in place
    memory_model: str = "static"         # how the runtime spends RAM beside the activations (edgefit.runtime_memory)
    notes: str = ""
    sources: Mapping[str, str] = field(default_factory=dict)
    path: Path | None = None
    runtimes: tuple[RuntimeStack, ...] = ()   # software stacks with measured costs; the default one first
    calibration: Mapping[str, Any] | None = None   # `edgefit calibrate`'s record (models, fitted, loo_error, date)

    @property
    def default_runtime(self) -> str | None:
        return self.runtimes[0].name if self.runtimes else None

    def runtime_stack(self, name: str | None = None) -> RuntimeStack | None:
        """The stack called `name`, or the default one (None when the profile has no stacks)."""
        if name is None:
            return self.runtimes[0] if self.runtimes else None
        key = normalize_name(name)
        for stack in self.runtimes:
            if stack.name == key:
                return stack
        choices = ", ".join(stack.name for stack in self.runtimes)
        offered = f"it offers {choices}" if choices else "it has no runtime stacks"
        raise ProfileError(f"profile {self.name!r} has no runtime {name!r}: {offered}")

    def stack_settings(self, name: str | None = None) -> StackSettings:
        """Memory model, operator list and runtime footprint under the stack called `name` (default: the default
        stack): the stack's where it sets them, else the profile's."""
        stack = self.runtime_stack(name)
        values = {key: getattr(self, key) for key in _STACK_SETTINGS}
        own = tuple(key for key in _STACK_SETTINGS if stack is not None and getattr(stack, key) is not None)
        values.update({key: getattr(stack, key) for key in own})
        return StackSettings(stack.name if stack is not None else None, **values, from_stack=own)

    @property
    def ram_limit_bytes(self) -> int:
        """RAM the model and its runtime may use."""
        return int(self.ram_bytes * self.ram_usable_fraction)

    @property
    def battery_wh(self) -> float | None:
        if self.battery_mah is None or self.battery_v is None:
            return None
        return self.battery_mah / 1000 * self.battery_v

    def _rate_precision(self, precision: str) -> str:
        """An unsupported precision runs at the rate of the widest precision the profile has a rate for."""
        if precision in self.peak_macs_per_s:
            return precision
        return next(p for p in PRECISIONS if p in self.peak_macs_per_s)

    def macs_per_s(self, precision: str) -> float:
        """Sustained MAC rate at `precision`: peak x efficiency."""
        rate_precision = self._rate_precision(precision)
        return self.peak_macs_per_s[rate_precision] * self.efficiency[rate_precision]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "display_name": self.display_name, "tier": self.tier, "aliases": list(self.aliases),
            "int8_ops": list(self.int8_ops) if self.int8_ops is not None else None,
            "operators": self.operators,
            "shares_activation_storage": self.shares_activation_storage, "memory_model": self.memory_model,
            "processor": self.processor, "runtime": self.runtime, "precisions": list(self.precisions),
            "ram_bytes": self.ram_bytes, "ram_usable_fraction": self.ram_usable_fraction,
            "ram_limit_bytes": self.ram_limit_bytes, "flash_bytes": self.flash_bytes,
            "runtime_ram_bytes": self.runtime_ram_bytes, "runtime_flash_bytes": self.runtime_flash_bytes,
            "weights_in_ram": self.weights_in_ram, "peak_macs_per_s": dict(self.peak_macs_per_s),
            "efficiency": dict(self.efficiency), "memory_bandwidth_bytes_per_s": self.memory_bandwidth_bytes_per_s,
            "flash_bandwidth_bytes_per_s": self.flash_bandwidth_bytes_per_s,
            "inference_overhead_ms": self.inference_overhead_s * 1e3, "per_op_overhead_us": self.per_op_overhead_s * 1e6,
            "network_rtt_ms": self.network_rtt_s * 1e3, "active_power_w": self.active_power_w,
            "idle_power_w": self.idle_power_w, "battery_mah": self.battery_mah, "battery_v": self.battery_v,
            "latency_budget_ms": None if self.latency_budget_s is None else self.latency_budget_s * 1e3,
            "basis": self.basis, "expected_error": self.expected_error,
            "notes": self.notes, "sources": dict(self.sources),
            "path": str(self.path) if self.path else None,
            "default_runtime": self.default_runtime, "runtimes": [stack.to_dict() for stack in self.runtimes],
            "calibration": dict(self.calibration) if self.calibration is not None else None,
        }


# ---- parsing -------------------------------------------------------------------------------------------

def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a non-empty string")
    return value.strip()


def _positive(parse: Callable[[Any], float], allow_zero: bool = False) -> Callable[[Any], float]:
    def parse_positive(value: Any) -> float:
        number = parse(value)
        if number < 0 or (number == 0 and not allow_zero):
            raise ValueError(f"expected a {'non-negative' if allow_zero else 'positive'} value, got {value!r}")
        return number
    return parse_positive


def _size(value: Any, allow_zero: bool = False) -> int:
    return int(_positive(parse_size, allow_zero)(value))


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r}")
    return float(value)


def _bandwidth(value: Any) -> float:
    """'25.6 GB/s' or '1.5GiB/s' (a size per second) or a plain number of bytes per second."""
    if isinstance(value, str):
        value = value.strip().removesuffix("/s").removesuffix("ps")
    return float(parse_size(value))


def _fraction(value: Any) -> float:
    number = _number(value)
    if not 0 < number <= 1:
        raise ValueError(f"expected a fraction in (0, 1], got {value!r}")
    return number


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _basis(value: Any) -> str:
    if value not in BASES:
        raise ValueError(f"expected one of {', '.join(BASES)}, got {value!r}")
    return value


def _tier(value: Any) -> str:
    if value not in TIERS:
        raise ValueError(f"expected one of {', '.join(TIERS)}, got {value!r}")
    return value


def _precisions(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or any(p not in PRECISIONS for p in value):
        raise ValueError(f"expected a non-empty list drawn from {', '.join(PRECISIONS)}, got {value!r}")
    return tuple(p for p in PRECISIONS if p in value)


def _aliases(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(a, str) and a.strip() for a in value):
        raise ValueError(f"expected a list of names, got {value!r}")
    return tuple(normalize_name(a) for a in value)


def _op_types(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(op, str) and op.isidentifier() for op in value):
        raise ValueError(f"expected a non-empty list of ONNX op types such as [\"Conv\", \"Gemm\"], got {value!r}")
    return tuple(value)


def _efficiency(value: Any) -> dict[str, float]:
    """One fraction for every precision, or a table per precision: {fp32 = 0.2, int8 = 0.05}."""
    if isinstance(value, dict):
        if not value or any(p not in PRECISIONS for p in value):
            raise ValueError(f"expected a fraction or a table of fractions by precision ({', '.join(PRECISIONS)})")
        return {p: _fraction(v) for p, v in value.items()}
    fraction = _fraction(value)
    return {p: fraction for p in PRECISIONS}


def _peak_gmacs(value: Any) -> dict[str, float]:
    if not isinstance(value, dict) or not value:
        raise ValueError("expected a table of GMAC/s per precision, e.g. {fp32 = 0.24, int8 = 0.96}")
    rates = {}
    for precision, gmacs in value.items():
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r} (expected {', '.join(PRECISIONS)})")
        rate = _number(gmacs)
        if rate <= 0:
            raise ValueError(f"{precision}: expected a positive GMAC/s rate, got {gmacs!r}")
        rates[precision] = rate * 1e9
    return rates


def _operator_list(value: Any) -> str:
    """The name of one of edgefit's operator lists; loading it checks that it exists."""
    from edgefit.operators import load_operator_list

    return load_operator_list(_text(value)).name


def _memory_model(value: Any) -> str:
    name = _text(value)
    if name not in MEMORY_MODELS:
        raise ValueError(f"unknown memory model {name!r}: expected one of {', '.join(MEMORY_MODELS)}")
    return name


# ---- runtime stacks ------------------------------------------------------------------------------------

_RATE_PREFIXES = {"": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_RATE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kMGT]?)(MAC|MACs|elem|elements)/s\s*$")
# Keys of a per-precision table, in LatencyCoefficients order; the rates count MACs or elements, the rest are
# durations.
_COEFFICIENT_KEYS = ("conv", "depthwise", "fc", "elementwise", "per_op", "per_inference")
_RATE_UNIT = {"conv": "MAC", "depthwise": "MAC", "fc": "MAC", "elementwise": "elem"}
_STACK_FIELDS = frozenset({"display_name", "basis", "source", "expected_error", "active_power",
                           "active_power_source", "memory_model", "operators", "runtime_ram", "runtime_flash",
                           "footprint_source"})


def _seconds_per_unit(value: Any, unit: str) -> float:
    """Seconds per MAC (or element) from a rate: '0.45 GMAC/s', '120 Melem/s', a plain number per second, or inf
    (the class costs nothing beyond its ops' dispatch)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        rate = float(value)
    else:
        match = _RATE.match(value) if isinstance(value, str) else None
        if match is None or not match.group(3).startswith(unit):
            raise ValueError(f"expected a rate such as '0.45 G{unit}/s' or '120 M{unit}/s', got {value!r}")
        rate = float(match.group(1)) * _RATE_PREFIXES[match.group(2)]
    if not rate > 0:   # NaN fails too
        raise ValueError(f"expected a positive rate, got {value!r}")
    return 1.0 / rate


def _coefficients(table: Any) -> LatencyCoefficients:
    if not isinstance(table, dict):
        raise ValueError(f"expected a table with {', '.join(_COEFFICIENT_KEYS)}")
    unknown = sorted(set(table) - set(_COEFFICIENT_KEYS))
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} (expected {', '.join(_COEFFICIENT_KEYS)})")
    missing = [key for key in _COEFFICIENT_KEYS if key not in table]
    if missing:
        raise ValueError(f"missing key {missing[0]!r}")
    values = []
    for key in _COEFFICIENT_KEYS:
        try:
            values.append(_seconds_per_unit(table[key], _RATE_UNIT[key]) if key in _RATE_UNIT
                          else _positive(parse_duration_s, allow_zero=True)(table[key]))
        except (ValueError, EdgefitError) as error:
            raise ValueError(f"{key}: {error}") from None
    return LatencyCoefficients(*values)


def _runtime_stack(name: str, table: Any, precisions: tuple[str, ...], origin: str, label: str) -> RuntimeStack:
    where = f"{origin}: field {label!r}"
    if not isinstance(table, dict):
        raise ProfileError(f"{where}: expected a table")
    unknown = sorted(set(table) - _STACK_FIELDS - set(PRECISIONS))
    inner = table[unknown[0]] if unknown else None
    if isinstance(inner, dict) and set(inner) & (_STACK_FIELDS | set(PRECISIONS)):   # [runtimes.a.b] for "a.b"
        raise ProfileError(f"{where}: unknown table {unknown[0]!r}; a runtime name with a dot must be quoted, "
                           f"as in [runtimes.\"stm32cube-ai-8.1\"]")
    if unknown:
        raise ProfileError(f"{where}: unknown key {unknown[0]!r} (expected {', '.join(sorted(_STACK_FIELDS))} "
                           f"and one table per precision: {', '.join(PRECISIONS)})")
    for key in ("display_name", "basis", "source"):
        if key not in table:
            raise ProfileError(f"{where}: missing key {key!r}")
    values: dict[str, Any] = {}
    try:
        values["display_name"] = _text(table["display_name"])
        values["source"] = _text(table["source"])
        if table["basis"] not in BASES:
            raise ValueError(f"basis: expected one of {', '.join(BASES)}, got {table['basis']!r}")
        values["basis"] = table["basis"]
        if "expected_error" in table:
            error = _number(table["expected_error"])
            if error <= 0:
                raise ValueError(f"expected_error: expected a positive fraction such as 0.25, got {error!r}")
            values["expected_error"] = error
        if ("active_power" in table) != ("active_power_source" in table):
            raise ValueError("active_power and active_power_source go together (which measurement, which rail)")
        if "active_power" in table:
            values["active_power_w"] = _positive(parse_power_w)(table["active_power"])
            values["active_power_source"] = _text(table["active_power_source"])
        sizes = [key for key in ("runtime_ram", "runtime_flash") if key in table]
        if bool(sizes) != ("footprint_source" in table):
            raise ValueError("runtime_ram / runtime_flash and footprint_source go together (where the sizes come "
                             "from)")
        for key in sizes:
            values[f"{key}_bytes"] = _size(table[key], allow_zero=True)
        if sizes:
            values["footprint_source"] = _text(table["footprint_source"])
        for key, parse in (("memory_model", _memory_model), ("operators", _operator_list)):
            if key in table:
                try:
                    values[key] = parse(table[key])
                except (ValueError, EdgefitError) as error:
                    raise ValueError(f"{key}: {error}") from None
    except (ValueError, TypeError, EdgefitError) as error:
        raise ProfileError(f"{where}: {error}") from None
    coefficients = {}
    for precision in (p for p in PRECISIONS if p in table):
        where_precision = f"{origin}: field '{label}.{precision}'"
        if precision not in precisions:
            raise ProfileError(f"{where_precision}: the profile does not run {precision} "
                               f"(precisions = {list(precisions)})")
        try:
            coefficients[precision] = _coefficients(table[precision])
        except ValueError as error:
            raise ProfileError(f"{where_precision}: {error}") from None
    if not coefficients:
        raise ProfileError(f"{where}: no latency table; add a [runtimes.{name}.int8] table (or fp32, fp16)")
    return RuntimeStack(name=name, coefficients=coefficients, **values)


def _runtime_stacks(data: Mapping[str, Any], precisions: tuple[str, ...], origin: str) -> tuple[RuntimeStack, ...]:
    """The profile's [runtimes.<name>] tables, the default one (default_runtime, else the first) first."""
    tables = data.get("runtimes", {})
    if not isinstance(tables, dict):
        raise ProfileError(f"{origin}: field 'runtimes': expected tables [runtimes.<name>]")
    stacks = []
    for name, table in tables.items():
        key = normalize_name(name) if isinstance(name, str) and name.strip() else ""
        if not key:
            raise ProfileError(f"{origin}: field 'runtimes': a runtime needs a name")
        stacks.append(_runtime_stack(key, table, precisions, origin, f"runtimes.{name}"))
    default = data.get("default_runtime")
    if default is None:
        return tuple(stacks)
    names = [stack.name for stack in stacks]
    if not isinstance(default, str) or normalize_name(default) not in names:
        offered = ", ".join(names) or "none"
        raise ProfileError(f"{origin}: field 'default_runtime': {default!r} is not one of the profile's "
                           f"[runtimes.*] tables ({offered})")
    first = names.index(normalize_name(default))
    return (stacks[first], *stacks[:first], *stacks[first + 1:])


# key in the TOML file -> (attribute, parser, required). Numbers with units accept the units of edgefit.units.
_FIELDS: dict[str, tuple[str, Callable[[Any], Any], bool]] = {
    "name": ("name", lambda v: normalize_name(_text(v)), True),
    "display_name": ("display_name", _text, True),
    "tier": ("tier", _tier, True),
    "processor": ("processor", _text, True),
    "runtime": ("runtime", _text, True),
    "precisions": ("precisions", _precisions, True),
    "ram": ("ram_bytes", _size, True),
    "flash": ("flash_bytes", _size, True),
    "runtime_ram": ("runtime_ram_bytes", lambda v: _size(v, allow_zero=True), True),
    "runtime_flash": ("runtime_flash_bytes", lambda v: _size(v, allow_zero=True), True),
    "weights_in_ram": ("weights_in_ram", _boolean, True),
    "peak_gmacs": ("peak_macs_per_s", _peak_gmacs, True),
    "efficiency": ("efficiency", _efficiency, True),
    "memory_bandwidth": ("memory_bandwidth_bytes_per_s", _positive(_bandwidth), True),
    "flash_bandwidth": ("flash_bandwidth_bytes_per_s", _positive(_bandwidth), False),
    "inference_overhead": ("inference_overhead_s", _positive(parse_duration_s, allow_zero=True), True),
    "per_op_overhead": ("per_op_overhead_s", _positive(parse_duration_s, allow_zero=True), False),
    "network_rtt": ("network_rtt_s", _positive(parse_duration_s, allow_zero=True), False),
    "active_power": ("active_power_w", _positive(parse_power_w), True),
    "idle_power": ("idle_power_w", _positive(parse_power_w, allow_zero=True), True),
    "latency_budget": ("latency_budget_s", _positive(parse_duration_s), False),
    "basis": ("basis", _basis, False),
    "expected_error": ("expected_error", _positive(_number), False),
    "ram_usable_fraction": ("ram_usable_fraction", _fraction, False),
    "battery_mah": ("battery_mah", _positive(_number), False),
    "battery_v": ("battery_v", _positive(_number), False),
    "aliases": ("aliases", _aliases, False),
    "int8_ops": ("int8_ops", _op_types, False),
    "operators": ("operators", _operator_list, False),
    "shares_activation_storage": ("shares_activation_storage", _boolean, False),
    "memory_model": ("memory_model", _memory_model, False),
    "notes": ("notes", _text, False),
}
# Keys that are not numbers about the device and so need no source note.
_DESCRIPTIVE = frozenset({"name", "display_name", "tier", "aliases", "notes", "runtime", "precisions", "int8_ops",
                          "operators", "memory_model", "basis"})
# Keys parsed apart from _FIELDS: tables (runtime stacks carry their own sources) and the default stack's name.
_TABLES = frozenset({"source", "runtimes", "default_runtime", "calibration"})


def normalize_name(name: str) -> str:
    """Profile names are matched case-insensitively, with '_' and spaces meaning '-'."""
    return "-".join(name.strip().lower().replace("_", " ").split())


def parse_profile(data: Mapping[str, Any], origin: str, path: Path | None = None) -> DeviceProfile:
    """Validate one profile's TOML table; errors name `origin` (the file) and the offending field."""
    unknown = sorted(set(data) - set(_FIELDS) - _TABLES)
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(_FIELDS) + sorted(_TABLES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ProfileError(f"{origin}: unknown field {unknown[0]!r}{hint}")
    values: dict[str, Any] = {}
    for key, (attribute, parse, required) in _FIELDS.items():
        if key not in data:
            if required:
                raise ProfileError(f"{origin}: missing field {key!r}")
            continue
        try:
            values[attribute] = parse(data[key])
        except (ValueError, TypeError, EdgefitError) as error:  # edgefit.units raises ConfigError
            raise ProfileError(f"{origin}: field {key!r}: {error}") from None

    sources = data.get("source", {})
    if not isinstance(sources, dict) or not all(isinstance(v, str) and v.strip() for v in sources.values()):
        raise ProfileError(f"{origin}: field 'source': expected a table of non-empty notes, one per number")
    for key in data:
        if key not in _DESCRIPTIVE and key not in _TABLES and key not in sources:
            raise ProfileError(f"{origin}: field {key!r} has no source note (add source.{key} = \"datasheet ...\")")
    stray = sorted(set(sources) - set(data))
    if stray:
        raise ProfileError(f"{origin}: field 'source.{stray[0]}': no such field in the profile")

    missing_rates = [p for p in values["precisions"] if p not in values["peak_macs_per_s"]]
    if missing_rates:
        raise ProfileError(f"{origin}: field 'peak_gmacs': no rate for supported precision {missing_rates[0]!r}")
    missing_efficiency = [p for p in values["peak_macs_per_s"] if p not in values["efficiency"]]
    if missing_efficiency:
        raise ProfileError(f"{origin}: field 'efficiency': no value for precision {missing_efficiency[0]!r}")
    if ("battery_mah" in values) != ("battery_v" in values):
        raise ProfileError(f"{origin}: field 'battery_mah'/'battery_v': give both or neither")
    if values["idle_power_w"] > values["active_power_w"]:
        raise ProfileError(f"{origin}: field 'idle_power': idle power exceeds active power")
    values.setdefault("flash_bandwidth_bytes_per_s", values["memory_bandwidth_bytes_per_s"])
    values.setdefault("per_op_overhead_s", 0.0)
    values.setdefault("network_rtt_s", 0.0)
    calibration = data.get("calibration")
    if calibration is not None and not isinstance(calibration, dict):
        raise ProfileError(f"{origin}: field 'calibration': expected a table (written by edgefit calibrate)")
    return DeviceProfile(**values, sources=dict(sources), path=path,
                         runtimes=_runtime_stacks(data, values["precisions"], origin), calibration=calibration)


# Profiles and gate configs are a few kilobytes; a larger file is not one of them.
_MAX_TOML_BYTES = 16 * 2**20


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file's table. UTF-8, with or without the byte order mark Windows editors write. Raises OSError
    (also for a FIFO, device or oversized file, which are never read), UnicodeDecodeError (not UTF-8) or
    tomllib.TOMLDecodeError (also for tables nested too deeply for the parser's recursion)."""
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise OSError(errno.EINVAL, "not a regular file (a folder, FIFO or device)")
    if info.st_size > _MAX_TOML_BYTES:
        raise OSError(errno.EFBIG, f"{info.st_size:,} bytes, too large for a TOML configuration")
    text = path.read_bytes().decode("utf-8-sig")
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise tomllib.TOMLDecodeError("arrays or tables nested too deeply") from None


def toml_problem(error: ValueError) -> str:
    """Why a file is not valid TOML, in one line (for read_toml's ValueErrors)."""
    if isinstance(error, UnicodeDecodeError):
        return f"not valid TOML: not UTF-8 text (byte {error.object[error.start]:#04x} at offset {error.start})"
    return f"not valid TOML: {error}"


def load_toml(path: Path, error: type[EdgefitError], what: str, missing: str | None = None) -> dict[str, Any]:
    """A TOML file edgefit reads (a profile, measurements, edgefit.toml), every problem one `error` naming the file:
    'cannot read WHAT: why', not UTF-8, not valid TOML; `missing`: what to say instead when there is no such file."""
    try:
        return read_toml(path)
    except OSError as problem:
        if missing is not None and isinstance(problem, FileNotFoundError):
            raise error(f"{path}: {missing}") from None
        raise error(f"{path}: cannot read {what}: {problem.strerror or problem}") from None
    except ValueError as problem:   # tomllib.TOMLDecodeError, UnicodeDecodeError
        raise error(f"{path}: {toml_problem(problem)}") from None


def load_profile_file(path: str | Path) -> DeviceProfile:
    path = Path(path)
    return parse_profile(load_toml(path, ProfileError, "profile"), str(path), path)


# ---- the search path and lookup ------------------------------------------------------------------------

def profile_search_path(profiles_dir: str | Path | Iterable[str | Path] | None = None) -> tuple[Path, ...]:
    """Directories searched for profiles, highest priority first."""
    if profiles_dir is None:
        explicit: list[Path] = []
    elif isinstance(profiles_dir, (str, Path)):
        explicit = [Path(profiles_dir)]
    else:
        explicit = [Path(d) for d in profiles_dir]
    from_env = [Path(p) for p in os.environ.get(PROFILES_ENV, "").split(os.pathsep) if p.strip()]
    for directory in explicit + from_env:
        if not directory.is_dir():
            source = "--profiles-dir" if directory in explicit else PROFILES_ENV
            raise ProfileError(f"{source}: {directory} is not a directory")
    return tuple(explicit + from_env + [BUILTIN_PROFILES_DIR])


def list_profiles(profiles_dir: str | Path | Iterable[str | Path] | None = None) -> tuple[DeviceProfile, ...]:
    """Every profile on the search path (earlier directories shadow later ones), ordered by tier then name.
    A malformed profile file is an error: the caller asked for all of them."""
    profiles, broken = scan_profiles(profiles_dir)
    if broken:
        raise broken[0]
    return profiles


def scan_profiles(profiles_dir: str | Path | Iterable[str | Path] | None = None
                  ) -> tuple[tuple[DeviceProfile, ...], tuple[ProfileError, ...]]:
    """The profiles that load, and the errors of the files that do not: one broken file in a user's folder must
    not stop a command that names another device."""
    by_name: dict[str, DeviceProfile] = {}
    broken: list[ProfileError] = []
    for directory in profile_search_path(profiles_dir):
        for path in sorted(directory.glob("*.toml")):
            try:
                profile = load_profile_file(path)
            except ProfileError as error:
                broken.append(error)
                continue
            if profile.name in by_name:
                if by_name[profile.name].path is not None and by_name[profile.name].path.parent == directory:
                    raise ProfileError(f"{path}: profile name {profile.name!r} is already used by "
                                       f"{by_name[profile.name].path}")
                continue  # shadowed by a directory earlier on the search path
            by_name[profile.name] = profile
    _alias_index(by_name.values())  # fail early on clashing aliases
    return tuple(sorted(by_name.values(), key=lambda p: (TIERS.index(p.tier), p.name))), tuple(broken)


def _alias_index(profiles: Iterable[DeviceProfile]) -> dict[str, DeviceProfile]:
    index = {p.name: p for p in profiles}
    for profile in list(index.values()):
        for alias in profile.aliases:
            other = index.get(alias)
            if other is not None and other is not profile:
                raise ProfileError(f"{profile.path or profile.name}: field 'aliases': {alias!r} is already "
                                   f"the name or an alias of {other.path or other.name}")
            index[alias] = profile
    return index


def find_profile(name: str, profiles: Iterable[DeviceProfile], broken: Sequence[ProfileError] = ()) -> DeviceProfile:
    """The profile called `name` (or aliased so), or the profile file `name` when it ends in .toml; a near miss
    gets 'did you mean ...'. `broken`: errors of profile files that did not load, named when the name is not found."""
    if name.strip().lower().endswith(".toml"):
        return load_profile_file(name.strip())
    index = _alias_index(profiles)
    key = normalize_name(name)
    if key in index:
        return index[key]
    # Near misses by spelling, then names that start with what was typed ('jetson', 'arduino'); an alias
    # stands for its profile, so each device is suggested once, by its name.
    matches = difflib.get_close_matches(key, list(index), n=6, cutoff=0.6)
    matches += [n for n in index if n.startswith(key)]
    close = list(dict.fromkeys(index[m].name for m in matches))[:3]
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    if broken:   # the broken file may be the profile asked for
        raise ProfileError(f"unknown device profile {name!r}{hint}; a profile file on the search path did not "
                           f"load: {broken[0]}")
    raise ProfileError(f"unknown device profile {name!r}{hint} ('edgefit profiles list' shows them all)")


def load_profile(name: str, profiles_dir: str | Path | Iterable[str | Path] | None = None) -> DeviceProfile:
    """Look a device profile up by name or alias on the search path; a broken file elsewhere on the path does
    not matter unless the name is not found (then it may be the profile asked for, and its error is the answer)."""
    return find_profile(name, *scan_profiles(profiles_dir))
