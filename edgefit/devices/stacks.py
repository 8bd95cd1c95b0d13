"""Runtime stacks: the software a device runs a model with (runtime + kernels + compiler), with its measured or
fitted latency coefficients and, where it differs from the profile, its memory model, operator list and
footprint. A profile's [runtimes.NAME] tables parse into RuntimeStack; StackSettings is what a model runs with."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgefit.devices.fields import (
    BASES,
    PRECISIONS,
    memory_model_field,
    normalize_name,
    number_field,
    operator_list_field,
    positive_field,
    size_field,
    text_field,
)
from edgefit.devices.latency import LatencyCoefficients
from edgefit.errors import EdgefitError, ProfileError
from edgefit.units import parse_duration_s, parse_power_w


@dataclass(frozen=True)
class RuntimeStack:
    """One software stack (inference runtime + kernels + compiler) a device runs models with, and what it costs:
    latency coefficients per precision (edgefit.devices.latency), optionally the power drawn while it runs."""

    name: str
    display_name: str
    basis: str                                      # one of BASES: where the coefficients come from
    source: str
    coefficients: Mapping[str, LatencyCoefficients]  # by precision
    expected_error: float | None = None             # typical relative error of its latency estimates
    # Where one precision's coefficients come from, and their typical error, when it is not the stack's own
    # `source` / `expected_error` (fp32 on a microcontroller runs on other kernels than its int8: see the profiles).
    precision_sources: Mapping[str, str] = dataclasses.field(default_factory=dict)
    precision_errors: Mapping[str, float] = dataclasses.field(default_factory=dict)
    active_power_w: float | None = None             # draw while inferring; None: the profile's active_power
    active_power_source: str | None = None          # which measurement, on which supply rail
    # What the stack itself spends and runs, where it differs from the profile's figures (None: the profile's).
    memory_model: str | None = None                 # edgefit.devices.runtime_memory model of this stack
    operators: str | None = None                    # its operator list (edgefit/devices/operators/NAME.toml)
    runtime_ram_bytes: int | None = None
    runtime_flash_bytes: int | None = None
    footprint_source: str | None = None             # where runtime_ram / runtime_flash come from

    def expected_error_at(self, precision: str) -> float | None:
        """Typical relative error of latency estimates at `precision`."""
        return self.precision_errors.get(precision, self.expected_error)

    def source_at(self, precision: str) -> str:
        return self.precision_sources.get(precision, self.source)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "display_name": self.display_name, "basis": self.basis, "source": self.source,
            "precision_sources": dict(self.precision_sources), "precision_errors": dict(self.precision_errors),
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


STACK_SETTINGS = ("memory_model", "operators", "runtime_ram_bytes", "runtime_flash_bytes")


# ---- runtime stacks ------------------------------------------------------------------------------------

_RATE_PREFIXES = {"": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_RATE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kMGT]?)(MAC|MACs|elem|elements|B)/s\s*$")
# Keys of a per-precision table, in LatencyCoefficients order; the rates count MACs, elements or bytes, the rest
# are durations.
_COEFFICIENT_KEYS = ("conv", "depthwise", "fc", "integer", "elementwise", "transcendental", "moved", "lrn", "uncached",
                     "conv_weights", "per_op", "per_inference")
_RATE_UNIT = {"conv": "MAC", "depthwise": "MAC", "fc": "MAC", "integer": "MAC", "elementwise": "elem",
              "transcendental": "elem", "moved": "B", "lrn": "elem", "uncached": "B",
              "conv_weights": "elem"}
# Keys added after profiles were written, and what they default to, so every older table still loads and estimates
# as before: integer MACs (ConvInteger / MatMulInteger) at the conv rate, which is what they were charged; bytes moved
# by data-movement ops at the elementwise rate per element of the precision, as those ops were charged per element;
# transcendental elements at the elementwise rate, as they were charged; LRN elements at the transcendental rate, as
# they were charged; bytes beyond the last-level cache and a convolution's weight elements at no extra cost (an
# infinite rate), as nothing was charged for them.
_OPTIONAL_KEYS = ("integer", "transcendental", "moved", "lrn", "uncached", "conv_weights")
_FREE_BY_DEFAULT = frozenset({"uncached", "conv_weights"})
_ELEMENT_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}
# Optional in a per-precision table: where its coefficients come from and their typical error, when they differ
# from the stack's.
_PRECISION_NOTES = ("source", "expected_error")
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


def _coefficients(table: Any, precision: str) -> LatencyCoefficients:
    if not isinstance(table, dict):
        raise ValueError(f"expected a table with {', '.join(_COEFFICIENT_KEYS)}")
    table = {key: value for key, value in table.items() if key not in _PRECISION_NOTES}
    unknown = sorted(set(table) - set(_COEFFICIENT_KEYS))
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} (expected {', '.join(_COEFFICIENT_KEYS)})")
    missing = [key for key in _COEFFICIENT_KEYS if key not in table and key not in _OPTIONAL_KEYS]
    if missing:
        raise ValueError(f"missing key {missing[0]!r}")
    values: dict[str, float] = {}
    for key in _COEFFICIENT_KEYS:
        if key not in table:   # an optional key: its documented default (see _OPTIONAL_KEYS)
            if key == "integer":
                values[key] = values["conv"]
            elif key == "lrn":
                values[key] = values["transcendental"]
            elif key in _FREE_BY_DEFAULT:
                values[key] = 0.0
            else:   # transcendental per element, moved per byte: the elementwise rate
                values[key] = values["elementwise"] / (_ELEMENT_BYTES[precision] if key == "moved" else 1)
            continue
        try:
            values[key] = (_seconds_per_unit(table[key], _RATE_UNIT[key]) if key in _RATE_UNIT
                           else positive_field(parse_duration_s, allow_zero=True)(table[key]))
        except (ValueError, EdgefitError) as error:
            raise ValueError(f"{key}: {error}") from None
    return LatencyCoefficients(*values.values())


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
        values["display_name"] = text_field(table["display_name"])
        values["source"] = text_field(table["source"])
        if table["basis"] not in BASES:
            raise ValueError(f"basis: expected one of {', '.join(BASES)}, got {table['basis']!r}")
        values["basis"] = table["basis"]
        if "expected_error" in table:
            values["expected_error"] = _expected_error(table["expected_error"])
        if ("active_power" in table) != ("active_power_source" in table):
            raise ValueError("active_power and active_power_source go together (which measurement, which rail)")
        if "active_power" in table:
            values["active_power_w"] = positive_field(parse_power_w)(table["active_power"])
            values["active_power_source"] = text_field(table["active_power_source"])
        sizes = [key for key in ("runtime_ram", "runtime_flash") if key in table]
        if bool(sizes) != ("footprint_source" in table):
            raise ValueError("runtime_ram / runtime_flash and footprint_source go together (where the sizes come "
                             "from)")
        for key in sizes:
            values[f"{key}_bytes"] = size_field(table[key], allow_zero=True)
        if sizes:
            values["footprint_source"] = text_field(table["footprint_source"])
        for key, parse in (("memory_model", memory_model_field), ("operators", operator_list_field)):
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
            coefficients[precision] = _coefficients(table[precision], precision)
            if "source" in table[precision]:
                values.setdefault("precision_sources", {})[precision] = text_field(table[precision]["source"])
            if "expected_error" in table[precision]:
                values.setdefault("precision_errors", {})[precision] = _expected_error(
                    table[precision]["expected_error"])
        except (ValueError, TypeError, EdgefitError) as error:
            raise ProfileError(f"{where_precision}: {error}") from None
    if not coefficients:
        raise ProfileError(f"{where}: no latency table; add a [runtimes.{name}.int8] table (or fp32, fp16)")
    return RuntimeStack(name=name, coefficients=coefficients, **values)


def _expected_error(value: Any) -> float:
    error = number_field(value)
    if error <= 0:
        raise ValueError(f"expected_error: expected a positive fraction such as 0.25, got {error!r}")
    return error


def runtime_stacks(data: Mapping[str, Any], precisions: tuple[str, ...], origin: str) -> tuple[RuntimeStack, ...]:
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


