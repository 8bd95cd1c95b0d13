"""Every quantity as people read it: bytes, counts, durations, power, energy. The one home of the formatters."""

from __future__ import annotations


def _scaled(n: float | int | None, base: int, units: tuple[str, ...], first: str) -> str:
    """Divide by `base` until below it; the first unit prints as an integer, the others with 2 decimals."""
    if n is None:
        return "unknown"
    value = float(n)
    for unit in units[:-1]:
        if abs(value) < base:
            break
        value /= base
    else:
        unit = units[-1]
    return f"{int(value)}{first}" if unit == units[0] else f"{value:.2f}{unit}"


def format_bytes(n: float | int | None) -> str:
    """Human-readable binary size: 1536 -> '1.50 KiB'."""
    return _scaled(n, 1024, ("", " KiB", " MiB", " GiB", " TiB"), " B")


def format_count(n: float | int | None) -> str:
    """Human-readable count with SI suffix: 1_234_000 -> '1.23 M'."""
    return _scaled(n, 1000, ("", " K", " M", " G", " T"), "")


def format_bytes_short(n: float) -> str:
    """Three significant digits, binary units: '520 KiB', '74.5 GiB' (keeps tables narrow)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1000 or unit == "PiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_quantity(value: float | str, unit: str) -> str:
    """12345 bytes -> '12.06 KiB'; 3.2 ms -> '3.2 ms'; 1234 mW -> '1.23 W'; 0.5 mJ -> '0.5 mJ'."""
    if isinstance(value, str):
        return value
    if unit == "bytes":
        return format_bytes(value)
    if unit == "ms":
        if value >= 1000:
            return f"{value / 1000:.2f} s"
        return f"{value:.3g} ms" if value < 1 else f"{value:.1f} ms"
    if unit in ("mW", "mJ"):
        if value >= 1000:
            return f"{value / 1000:.3g} {unit[1:]}"
        return f"{value:.3g} {unit}"
    return f"{value:g}"


def format_seconds(value: float | None) -> str:
    """1.5 -> '1.50 s', 0.0123 -> '12.3 ms'; None -> 'unknown'."""
    if value is None:
        return "unknown"
    return f"{value:,.2f} s" if value >= 1 else f"{value * 1000:.3g} ms"
