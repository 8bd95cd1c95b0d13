"""Parsing of sizes, durations, power and energy with explicit units (formatting them: edgefit.report.quantities).

KB/MB/GB are decimal (1000), KiB/MiB/GiB binary (1024), as DESIGN.md section 3 specifies.
"""

from __future__ import annotations

import math
import re

from edgefit.errors import ConfigError, ShapeError

_SIZE_UNITS = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_TIME_UNITS = {"": 1e-3, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9, "m": 60.0, "min": 60.0}
_POWER_UNITS = {"": 1.0, "w": 1.0, "mw": 1e-3, "uw": 1e-6, "µw": 1e-6, "kw": 1e3}
_ENERGY_UNITS = {"": 1.0, "j": 1.0, "mj": 1e-3, "uj": 1e-6, "µj": 1e-6, "nj": 1e-9, "kj": 1e3, "wh": 3600.0,
                 "mwh": 3.6}
_QUANTITY = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-zµ]*)\s*$")


def _parse(text: str | int | float, units: dict[str, float], what: str) -> float:
    if isinstance(text, bool):
        raise ConfigError(f"invalid {what} {text!r}")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        match = _QUANTITY.match(str(text))
        unit = match.group(2).lower() if match else None
        if match is None or unit not in units:
            known = ", ".join(u for u in units if u)
            raise ConfigError(f"invalid {what} {text!r}: expected a number with an optional unit ({known})")
        value = float(match.group(1)) * units[unit]
    if not math.isfinite(value) or value < 0:   # '1e999KB' overflows to inf; sizes, times and powers are >= 0
        raise ConfigError(f"invalid {what} {text!r}: expected a finite, non-negative number")
    return value


def parse_size(text: str | int | float) -> int:
    """Bytes from '512KB', '520 KiB', '4MB', '1.5GiB' or a plain integer."""
    return int(round(_parse(text, _SIZE_UNITS, "size")))


def parse_duration_s(text: str | int | float) -> float:
    """Seconds from '20ms', '1.5s', '200us', '5m' (minutes); a bare number means milliseconds."""
    return _parse(text, _TIME_UNITS, "duration")


def parse_power_w(text: str | int | float) -> float:
    """Watts from '50mW', '2.5W', '300uW'; a bare number means watts."""
    return _parse(text, _POWER_UNITS, "power")


def parse_energy_j(text: str | int | float) -> float:
    """Joules from '1.1mJ', '250uJ', '0.5J', '2mWh'; a bare number means joules."""
    return _parse(text, _ENERGY_UNITS, "energy")


def check_rate_hz(rate: object) -> float | None:
    """None, or a positive, finite number of inferences per second (NaN, booleans and strings are refused)."""
    if rate is None:
        return None
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < math.inf:
        raise ConfigError(f"invalid rate {rate!r}: expected a positive, finite number of inferences per second")
    return float(rate)


# ---- shapes and dimensions on the command line -----------------------------------------------------------

# Largest size accepted for one dimension: a shape's element count must still fit onnx's and numpy's int64.
MAX_DIM = 2**62


def ascii_int(text: str) -> int | None:
    """The value of a plain ASCII decimal integer ('12', not '²', '١٢' or '1e3'), else None."""
    text = text.strip()
    # Past 20 digits it is out of any range edgefit accepts (and int() refuses 4,300+ digits with a ValueError).
    return int(text) if text and len(text) <= 20 and text.isascii() and text.isdigit() else None


def parse_input_shapes(specs: list[str] | None) -> dict[str, list[int]]:
    """'x=1x3x224x224' -> {'x': [1, 3, 224, 224]}; a spec without NAME= is keyed '' (the only input).
    Dimensions are positive ASCII integers (validated again, with the model at hand, by resolve_shapes)."""
    shapes: dict[str, list[int]] = {}
    for spec in specs or []:
        name, sep, dims = spec.rpartition("=")
        if not sep:
            name, dims = "", spec
        sizes = [ascii_int(p) for p in dims.replace(",", "x").split("x")] if dims.strip() else []
        if not sizes or None in sizes or not all(1 <= size <= MAX_DIM for size in sizes):
            raise ShapeError(f"invalid --input-shape {spec!r}: expected NAME=1x3x224x224 (positive integers, at "
                             f"most 2**62)")
        if shapes.get(name.strip(), sizes) != sizes:
            raise ShapeError(f"--input-shape {spec!r} conflicts with an earlier --input-shape for the same input")
        shapes[name.strip()] = sizes
    return shapes


def parse_dims(specs: list[str] | None) -> dict[str, int]:
    """'batch=1' -> {'batch': 1}; the value is a positive ASCII integer."""
    dims: dict[str, int] = {}
    for spec in specs or []:
        name, sep, text = spec.partition("=")
        value = ascii_int(text)
        if not sep or not name.strip() or value is None or not 1 <= value <= MAX_DIM:
            raise ShapeError(f"invalid --dim {spec!r}: expected NAME=VALUE with a positive integer VALUE (at most "
                             f"2**62)")
        if dims.get(name.strip(), value) != value:
            raise ShapeError(f"--dim {spec!r} conflicts with an earlier --dim {name.strip()}={dims[name.strip()]}")
        dims[name.strip()] = value
    return dims


# The most numbers one --input-value gives: edgefit.known_values computes values up to this many elements.
MAX_INPUT_VALUES = 4096


def parse_input_values(specs: list[str] | None) -> dict[str, list[int | float]]:
    """'sr=16000' -> {'sr': [16000]}; 'ids=1,2,3' -> {'ids': [1, 2, 3]}: the value of a scalar (or short 1-D)
    input, for conditions computed from it. Numbers are ASCII decimals (ints stay exact); the model's element
    type and shape are checked by resolve_shapes."""
    values: dict[str, list[int | float]] = {}
    for spec in specs or []:
        name, sep, text = spec.partition("=")
        numbers = [_ascii_number(part) for part in text.split(",")] if text.strip() else []
        if not sep or not name.strip() or not numbers or None in numbers or len(numbers) > MAX_INPUT_VALUES:
            raise ShapeError(f"invalid --input-value {spec!r}: expected NAME=VALUE or NAME=V1,V2,... (numbers)")
        if values.get(name.strip(), numbers) != numbers:
            raise ShapeError(f"--input-value {spec!r} conflicts with an earlier --input-value for the same input")
        values[name.strip()] = numbers
    return values


def _ascii_number(text: str) -> int | float | None:
    """'16000' -> 16000, '-2' -> -2, '0.5' -> 0.5; None for anything else (inf, nan, '1e999', non-ASCII)."""
    text = text.strip()
    negative = text.startswith("-")
    digits = text[1:] if negative else text
    whole = ascii_int(digits)
    if whole is not None:
        return -whole if negative else whole
    head, dot, tail = digits.partition(".")
    if dot and (head or tail) and all(part == "" or ascii_int(part) is not None for part in (head, tail)):
        return float(text)
    return None


def parse_assume_dims(value: str | int | None) -> int | None:
    """--assume-dims N: the size every otherwise unbound dimension takes (None: such a dimension is an error)."""
    if value is None:
        return None
    size = value if type(value) is int else ascii_int(str(value))
    if size is None or not 1 <= size <= MAX_DIM:
        raise ShapeError(f"invalid --assume-dims {value!r}: expected a positive integer")
    return size
