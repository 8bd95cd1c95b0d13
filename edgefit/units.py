"""Parsing of sizes, durations and power with explicit units (formatting them: edgefit.report.quantities).

KB/MB/GB are decimal (1000), KiB/MiB/GiB binary (1024), as DESIGN.md section 3 specifies.
"""

from __future__ import annotations

import math
import re

from edgefit.errors import ConfigError

_SIZE_UNITS = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_TIME_UNITS = {"": 1e-3, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9, "min": 60.0}
_POWER_UNITS = {"": 1.0, "w": 1.0, "mw": 1e-3, "uw": 1e-6, "µw": 1e-6, "kw": 1e3}
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
    """Seconds from '20ms', '1.5s', '200us'; a bare number means milliseconds."""
    return _parse(text, _TIME_UNITS, "duration")


def parse_power_w(text: str | int | float) -> float:
    """Watts from '50mW', '2.5W', '300uW'; a bare number means watts."""
    return _parse(text, _POWER_UNITS, "power")


def check_rate_hz(rate: object) -> float | None:
    """None, or a positive, finite number of inferences per second (NaN, booleans and strings are refused)."""
    if rate is None:
        return None
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < math.inf:
        raise ConfigError(f"invalid rate {rate!r}: expected a positive, finite number of inferences per second")
    return float(rate)
