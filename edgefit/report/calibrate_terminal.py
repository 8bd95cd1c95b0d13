"""Rich terminal rendering of `edgefit calibrate`: one row per measurement, the fitted coefficients, fit quality."""

from __future__ import annotations

import math
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgefit.devices.calibrate import COEFFICIENT_NAMES, CalibrationResult
from edgefit.devices.latency import FEATURE_NAMES
from edgefit.report.quantities import format_quantity

# How each coefficient reads best: (label, scale from seconds per unit, unit).
_COEFFICIENT_UNITS = {
    "s_per_conv_mac": ("conv", 1e-9, "GMAC/s"), "s_per_depthwise_mac": ("depthwise", 1e-9, "GMAC/s"),
    "s_per_fc_mac": ("fc / matmul", 1e-9, "GMAC/s"), "s_per_integer_mac": ("integer (dynamic quant)", 1e-9, "GMAC/s"),
    "s_per_elementwise_element": ("elementwise", 1e-9, "Gelem/s"),
    "s_per_transcendental_element": ("transcendental (pow, softplus)", 1e-9, "Gelem/s"),
    "s_per_moved_byte": ("data movement", 1e-9, "GB/s"),
    "s_per_lrn_element": ("LRN", 1e-9, "Gelem/s"),
    "s_per_uncached_byte": ("beyond the last-level cache (extra)", 1e-9, "GB/s"),
    "s_per_conv_weight": ("conv weights (extra, per element)", 1e-9, "Gelem/s"),
    "s_per_op": ("per op", 1e6, "us"), "s_per_inference": ("per inference", 1e6, "us"),
}


def _ms(seconds: float | None) -> str:
    return "" if seconds is None else format_quantity(seconds * 1e3, "ms")


def _error(value: float | None) -> str:
    if value is None:
        return ""
    text = f"{value:+.1%}"
    return f"[red]{text}[/]" if abs(value) > 0.25 else text


def _coefficient(name: str, seconds: float) -> str:
    label, scale, unit = _COEFFICIENT_UNITS[name]
    if unit.endswith("/s"):   # a rate: the reciprocal of seconds per unit
        return "unbounded" if seconds == 0 else f"{scale / seconds:.4g} {unit}"
    return f"{seconds * scale:.4g} {unit}"


def render_calibration(console: Console, result: CalibrationResult, written: Path | None) -> None:
    where = "timed here with onnxruntime" if result.measured_here else "from the measurement file"
    console.print(f"[bold]Calibration[/] of {escape(result.base.name)} / runtime {escape(result.runtime)} "
                  f"({len(result.models)} models {where})")
    table = Table(show_edge=False, pad_edge=False)
    for column in ("model", "precision", "measured", "spread", "fitted", "error", "leave-one-out"):
        table.add_column(column, justify="left" if column in ("model", "precision") else "right")
    for row in result.rows:
        spread = f"{row.timing.spread:.1%}" if row.timing is not None else ""
        label = escape(row.label) if row.kind == "model" else f"[dim]{escape(row.label)} (kernel)[/]"
        table.add_row(label, row.precision, _ms(row.latency_s), spread, _ms(row.fitted_s), _error(row.error),
                      _error(row.loo_error))
    console.print(table)

    for fit in result.fits:
        rates = Table(show_edge=False, pad_edge=False, title=f"{fit.precision} coefficients", title_justify="left")
        for column in ("class", "fitted", "base profile", "set by"):
            rates.add_column(column)
        fitted = fit.fit.coefficients.vector()
        base = fit.base.vector()
        for k, (name, feature) in enumerate(zip(COEFFICIENT_NAMES, FEATURE_NAMES)):
            how = escape(fit.fit.kept[feature]) if feature in fit.fit.kept else "the measurements"
            rates.add_row(_COEFFICIENT_UNITS[name][0], _coefficient(name, fitted[k]), _coefficient(name, base[k]), how)
        console.print(rates)
    if result.active_power_w is not None:
        console.print(f"active power: {format_quantity(result.active_power_w * 1e3, 'mW')} (fitted to the measured "
                      f"energies; base profile {format_quantity(result.base.active_power_w * 1e3, 'mW')})")
    if math.isfinite(result.loo_error):
        console.print(f"fit quality: leave-one-out error {result.loo_error:.1%} (mean), "
                      f"{result.within_25_percent:.0%} of models within ±25%; in-sample error {result.fit_error:.1%}")
    else:
        console.print(f"fit quality: in-sample error {result.fit_error:.1%}; one measurement gives no "
                      "leave-one-out error")
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    if written is not None:
        console.print(f"wrote {escape(str(written))}: use it as --target {escape(str(written))}")
