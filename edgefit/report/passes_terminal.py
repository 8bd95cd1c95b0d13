"""Rich terminal rendering of an optimisation run: before -> after footprint, each pass, fidelity, target verdict."""

from __future__ import annotations

import math
from collections.abc import Callable

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgefit.fidelity import Fidelity
from edgefit.passes.base import PassStats
from edgefit.passes.pipeline import OptimizeReport
from edgefit.passes.target import TargetVerdict
from edgefit.report.check_text import describe_latency_basis, describe_target
from edgefit.report.quantities import format_bytes, format_count, format_seconds

def _change(before: float | None, after: float | None) -> str:
    if not before or after is None:
        return ""
    ratio = after / before
    if math.isclose(ratio, 1.0, rel_tol=1e-9):
        return "="
    return f"{(ratio - 1) * 100:+.1f}%  (x{ratio:.2f})"


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
        rows.append((f"est. latency on {verdict.device}", verdict.before.latency_s, verdict.after.latency_s, format_seconds))
    for label, before, after, fmt in rows:
        table.add_row(label, fmt(before), fmt(after), _change(before, after))
    console.print(table)
    if verdict is not None:
        console.print(f"[dim]{escape(describe_latency_basis([verdict.before.estimate, verdict.after.estimate]))}[/]",
                      soft_wrap=True)
    for step in report.steps:
        _render_stats(console, step.spec, step.stats)
    _render_fidelity(console, report)
    if verdict is not None:
        style = "bold green" if verdict.fits else "bold red"
        word = "FITS" if verdict.fits else "DOES NOT FIT"
        before = verdict.before
        console.print(f"[{style}]{verdict.device}: {word}[/] ({verdict.after.estimate.precision}; before: "
                      f"{'fits' if before.fits else 'does not fit'} at {before.estimate.precision}) - "
                      f"{escape(describe_target(verdict.after))}")


def target_verdict_dict(verdict: TargetVerdict) -> dict:
    """The --json form of a pass command's target verdict, with its one-line summary."""
    return {**verdict.to_dict(), "summary": describe_target(verdict.after)}


def _render_stats(console: Console, spec: str, stats: PassStats) -> None:
    console.print(f"\n[bold]{escape(spec)}[/]")
    stats.render(console)
    for note in stats.notes:
        console.print(f"  [yellow]note:[/] {escape(note)}")


def _render_fidelity(console: Console, report: OptimizeReport) -> None:
    measured = [(s.spec, s.fidelity) for s in report.steps if s.fidelity is not None]
    if not measured:
        return
    first = measured[0][1]
    with_accuracy = first.accuracy_before is not None
    judged = f"; worst of {len(first.distributions)} distributions" if first.distributions else ""
    table = Table(title=f"\nFidelity against the original ({first.samples} {first.inputs} samples{judged})",
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
    for spec, fidelity in measured:
        if fidelity.distributions and not fidelity.identical:
            console.print(f"after {escape(spec)}: {escape(describe_distributions(fidelity))}", soft_wrap=True)
    if first.inputs == "synthetic":
        console.print("[yellow]fidelity measured on synthetic random inputs; pass --eval with real samples for "
                      "numbers that reflect your data[/]")


def describe_distributions(fidelity: Fidelity) -> str:
    """'N(0,1) cosine 0.99910 (8), uniform [0,1) cosine 0.99760 (8); judged on the worst: uniform [0,1)'."""
    parts = ", ".join(f"{name} cosine {part.cosine:.5f} ({part.samples})" for name, part in fidelity.distributions)
    return f"{parts}; judged on the worst: {fidelity.judged_on}"


def _sqnr(fidelity: Fidelity) -> str:
    if fidelity.identical:
        return "identical"
    return "inf" if fidelity.sqnr_db == math.inf else f"{fidelity.sqnr_db:.1f}"   # -inf: the original is all 0
