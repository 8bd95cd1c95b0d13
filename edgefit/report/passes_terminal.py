"""Rich terminal rendering of an optimisation run: before -> after footprint, each pass, fidelity, target verdict."""

from __future__ import annotations

import math
from collections.abc import Callable

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgefit.fidelity import Fidelity
from edgefit.passes.base import PassStats
from edgefit.passes.fuse import FuseStats
from edgefit.passes.pipeline import OptimizeReport
from edgefit.passes.prune import PruneStats
from edgefit.passes.quantize import QuantizeStats
from edgefit.passes.reorder import ReorderStats
from edgefit.passes.target import TargetVerdict
from edgefit.units import format_bytes, format_count

_MAX_LISTED = 12


def _change(before: float | None, after: float | None) -> str:
    if not before or after is None:
        return ""
    ratio = after / before
    if math.isclose(ratio, 1.0, rel_tol=1e-9):
        return "="
    return f"{(ratio - 1) * 100:+.1f}%  (x{ratio:.2f})"


def _seconds(value: float | None) -> str:
    if value is None:
        return "unknown"
    return f"{value:,.2f} s" if value >= 1 else f"{value * 1000:.3g} ms"


def render_optimize_report(console: Console, report: OptimizeReport, verdict: TargetVerdict | None = None) -> None:
    steps = escape(" -> ".join(s.spec for s in report.steps))
    table = Table(title=f"edgefit {steps}: {escape(report.input_path)} -> {escape(report.output_path)}", title_justify="left")
    table.add_column("")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_column("change", justify="right")
    b, a = report.before, report.after
    rows: list[tuple[str, float | None, float | None, Callable]] = [
        ("weight bytes", b.weight_bytes, a.weight_bytes, format_bytes),
        ("parameters", b.params, a.params, format_count),
        ("MACs", b.macs, a.macs, format_count),
        ("peak activation RAM", b.peak_activation_bytes, a.peak_activation_bytes, format_bytes),
    ]
    if report.deployed_activation_bytes is not None:
        rows.append(("  deployed (int8/fp16 activations)", b.peak_activation_bytes, report.deployed_activation_bytes,
                     format_bytes))
    if verdict is not None:
        rows.append((f"est. latency on {verdict.device}", verdict.latency_before_s, verdict.latency_after_s, _seconds))
    for label, before, after, fmt in rows:
        table.add_row(label, fmt(before), fmt(after), _change(before, after))
    console.print(table)
    for step in report.steps:
        _render_stats(console, step.spec, step.stats)
    _render_fidelity(console, report)
    if verdict is not None:
        style = "bold green" if verdict.fits else "bold red"
        word = "FITS" if verdict.fits else "DOES NOT FIT"
        console.print(f"[{style}]{verdict.device}: {word}[/] ({verdict.precision_after}; before: "
                      f"{'fits' if verdict.fits_before else 'does not fit'} at {verdict.precision_before}) - "
                      f"{escape(verdict.summary)}")


def _render_stats(console: Console, spec: str, stats: PassStats) -> None:
    console.print(f"\n[bold]{escape(spec)}[/]")
    if isinstance(stats, FuseStats):
        done = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(stats.rewrites.items()))
        console.print(f"  nodes {stats.nodes_before} -> {stats.nodes_after}; {done or 'nothing to fuse'}; "
                      f"{stats.initializers_removed} unused initializers removed")
    elif isinstance(stats, PruneStats):
        _render_prune(console, stats)
    elif isinstance(stats, QuantizeStats):
        source = ""
        if stats.calibration:
            source = f", calibrated ({stats.method}) on {stats.calibration_samples} {stats.calibration} samples"
        console.print(f"  mode {stats.mode}{source}; {len(stats.quantized_layers)} layer(s) quantized, "
                      f"{len(stats.float_layers)} kept in float")
        for line in stats.float_layers[:_MAX_LISTED]:
            console.print(f"  [dim]{escape(line)}[/]")
    elif isinstance(stats, ReorderStats):
        console.print(f"  file-order arena {format_bytes(stats.file_order_peak_before)} -> "
                      f"{format_bytes(stats.file_order_peak_after)} ({stats.nodes_moved} nodes moved; lower bound "
                      f"{format_bytes(stats.lower_bound)})")
    for note in stats.notes:
        console.print(f"  [yellow]note:[/] {escape(note)}")


def _render_prune(console: Console, stats: PruneStats) -> None:
    console.print(f"  {stats.method}: requested {stats.requested_sparsity:.0%}, achieved "
                  f"{stats.achieved_sparsity:.2%}")
    if stats.method == "structured":
        table = Table(show_edge=False, pad_edge=False, box=None)
        for column in ("layer", "op", "channels", "rewired"):
            table.add_column(column, justify="right" if column == "channels" else "left")
        for layer in stats.channels:
            table.add_row(escape(layer.layer), escape(layer.op_type), f"{layer.channels_before} -> {layer.channels_after}",
                          escape(", ".join(layer.rewired)))
        console.print(table)
    else:
        table = Table(show_edge=False, pad_edge=False, box=None)
        for column in ("layer", "op", "weights", "sparsity", "dense", "sparse storage"):
            table.add_column(column, justify="left" if column in ("layer", "op") else "right")
        for layer in stats.layers:
            table.add_row(escape(layer.layer), escape(layer.op_type), f"{layer.elements:,}", f"{layer.sparsity:.1%}",
                          format_bytes(layer.dense_bytes), f"{format_bytes(layer.sparse_bytes)} {layer.sparse_format}")
        console.print(table)
        console.print(f"  pruned tensors: {format_bytes(stats.dense_weight_bytes)} dense in the ONNX file, "
                      f"{format_bytes(stats.sparse_weight_bytes)} in sparse storage")
        console.print(f"  [dim]{escape(stats.sparse_runtimes)}[/]")
    for line in stats.skipped:
        console.print(f"  [yellow]skipped[/] {escape(line)}")


def _render_fidelity(console: Console, report: OptimizeReport) -> None:
    measured = [(s.spec, s.fidelity) for s in report.steps if s.fidelity is not None]
    if not measured:
        return
    first = measured[0][1]
    with_accuracy = first.accuracy_before is not None
    table = Table(title=f"\nFidelity against the original ({first.samples} {first.inputs} samples)",
                  title_justify="left")
    for column in ("after pass", "cosine", "SQNR dB", "max abs error", "top-1 agreement"):
        table.add_column(column, justify="left" if column == "after pass" else "right")
    if with_accuracy:
        table.add_column("accuracy", justify="right")
    for spec, fidelity in measured:
        row = [escape(spec), f"{fidelity.cosine:.6f}", _sqnr(fidelity), f"{fidelity.max_abs_error:.3g}",
               "n/a" if fidelity.top1_agreement is None else f"{fidelity.top1_agreement:.2%}"]
        if with_accuracy:
            row.append(f"{fidelity.accuracy_before:.2%} -> {fidelity.accuracy_after:.2%}")
        table.add_row(*row)
    console.print(table)
    for spec, fidelity in measured:
        if fidelity.mismatched_outputs:
            console.print(f"[yellow]after {escape(spec)}: {fidelity.mismatched_outputs} output(s) changed shape "
                          "(data-dependent ops), integer values (labels, indices) or where they are NaN / infinite, "
                          "and are left out of the metrics above[/]")
    unused = next((f.labels_unused for _, f in measured if f.labels_unused), None)
    if unused:
        console.print(f"[yellow]the data's labels give no accuracy: {escape(unused)}[/]")
    if first.inputs == "synthetic":
        console.print("[yellow]fidelity measured on synthetic random inputs; pass --eval with real samples for "
                      "numbers that reflect your data[/]")


def _sqnr(fidelity: Fidelity) -> str:
    if fidelity.identical:
        return "identical"
    return "inf" if fidelity.sqnr_db == math.inf else f"{fidelity.sqnr_db:.1f}"   # -inf: the original is all 0
