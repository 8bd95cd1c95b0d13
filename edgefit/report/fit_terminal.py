"""Rich terminal rendering of `edgefit fit`: the candidates tried per device (chosen one marked), the Pareto
front of flash vs fidelity, and for a device nothing fits the closest candidate and what would close the gap."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from edgefit.fitting import Candidate, FitReport, NoFit, TargetFit, accuracy_drop
from edgefit.report.check_text import (
    METRIC_LABELS,
    describe_latency_basis,
    describe_operators,
    describe_patch_plan,
    format_quantity,
)
from edgefit.report.passes_terminal import describe_distributions

_NAMED_DEVICES = 3


def _fidelity_cells(candidate: Candidate, with_accuracy: bool) -> list[str]:
    fidelity = candidate.fidelity
    if fidelity is None:
        return ["error" if candidate.error else "-"] + ([""] if with_accuracy else [])
    cells = [f"{fidelity.cosine:.5f}"]
    if with_accuracy:
        change = None if accuracy_drop(fidelity) is None else fidelity.accuracy_after - fidelity.accuracy_before
        cells.append("" if change is None else f"{fidelity.accuracy_after * 100:.2f}% ({change * 100:+.2f})")
    return cells


def _fits_cell(candidate: Candidate) -> Text:
    if candidate.fits:
        return Text("yes", style="green")
    if candidate.result is None:
        return Text("error", style="red")
    reasons = [METRIC_LABELS.get(v.metric, v.metric) for v in candidate.result.failures]
    if candidate.floor_miss is not None:
        reasons.append("floor")
    return Text("no: " + ", ".join(reasons), style="red")


def candidate_table(fit: TargetFit) -> Table:
    table = Table(title=f"{escape(fit.profile.name)} ({fit.profile.tier}): candidates (* chosen; device figures "
                  "are estimates, fidelity is measured)", title_justify="left")
    with_accuracy = any(c.fidelity is not None and accuracy_drop(c.fidelity) is not None for c in fit.candidates)
    table.add_column("")
    # On an 80-column terminal the recipe folds and a figure wraps before its unit, rather than the recipe shrinking
    # to nothing or the last columns being cut off.
    table.add_column("recipe", overflow="fold", ratio=3, min_width=12)
    for name in ("RAM", "flash", "latency", "cosine") + (("accuracy (change, pt)",) if with_accuracy else ()):
        table.add_column(name, justify="right", min_width=7)
    table.add_column("fits", overflow="fold", ratio=1, min_width=4)
    for candidate in fit.candidates:
        est = candidate.result.estimate if candidate.result else None
        mark = Text("*", style="bold green") if candidate is fit.chosen else ""
        table.add_row(mark, escape(candidate.label),
                      format_quantity(est.ram_bytes, "bytes") if est else "",
                      format_quantity(est.flash_bytes, "bytes") if est else "",
                      (">= " if est.latency_is_lower_bound else "") + format_quantity(est.latency_s * 1e3, "ms")
                      if est else "",
                      *_fidelity_cells(candidate, with_accuracy), _fits_cell(candidate))
    estimates = [c.result.estimate for c in fit.candidates if c.result]
    if estimates:
        table.caption = describe_latency_basis(estimates)
        table.caption_justify = "left"
    return table


def _no_fit_lines(no_fit: NoFit) -> list[str]:
    lines = [f"closest: {no_fit.closest.label}"]
    label = METRIC_LABELS.get(no_fit.metric, no_fit.metric)
    if no_fit.metric in ("cosine", "accuracy_drop"):
        shown = (f"{no_fit.value:.5f} < {no_fit.limit:.5f}" if no_fit.metric == "cosine"
                 else f"{no_fit.value * 100:.2f} pt > {no_fit.limit * 100:.2f} pt")
        lines.append(f"binding: fidelity floor {no_fit.metric.replace('_', ' ')} {shown}")
        lines.append("to close it: relax the floor to the closest candidate's figure, or calibrate on real data")
        return lines
    if no_fit.metric == "precision":
        lines.append(f"binding: precision {no_fit.value} not supported (runs {no_fit.limit})")
    elif no_fit.metric == "operators":
        ops = describe_operators(no_fit.closest.result) if no_fit.closest.result else None
        lines.append(f"binding: operators {no_fit.value} ({no_fit.limit})" if ops is None else f"binding: {ops}")
    else:
        over = no_fit.value / no_fit.limit if no_fit.limit else float("inf")
        lines.append(f"binding: {label} {format_quantity(no_fit.value, no_fit.unit)} > "
                     f"{format_quantity(no_fit.limit, no_fit.unit)} ({no_fit.limit_source}, "
                     f"{(over - 1) * 100:.0f}% over)")
    tiling = describe_patch_plan(no_fit.closest.result) if no_fit.closest.result else None
    if tiling:
        lines.append(f"tiling: {tiling}")
    if no_fit.limit_source in ("budget", "rate"):   # a requirement the user set: a bigger device does not lift it
        option = "--rate" if no_fit.limit_source == "rate" else f"--max-{no_fit.metric}"
        lines.append(f"to close it: {option} allowing {format_quantity(no_fit.value, no_fit.unit)}")
    elif no_fit.devices_that_fit:
        named = ", ".join(no_fit.devices_that_fit[:_NAMED_DEVICES])
        more = len(no_fit.devices_that_fit) - _NAMED_DEVICES
        kind = "another" if no_fit.metric in ("operators", "precision") else "a bigger"   # not a matter of size
        lines.append(f"to close it: {kind} device fits it as it is: {named}"
                     + (f" (+{more} more)" if more > 0 else ""))
    else:
        lines.append("to close it: no known device fits the closest candidate")
    return lines


def render_target(console: Console, fit: TargetFit) -> None:
    console.print(candidate_table(fit))
    errors = dict.fromkeys(c.error for c in fit.candidates if c.error)
    for error in errors:   # once per reason: a quantize refusal repeats for every recipe that quantizes
        console.print(f"[red]error[/] in {sum(c.error == error for c in fit.candidates)} candidate(s): "
                      f"{escape(error)}", soft_wrap=True)
    if fit.pareto:
        front = " | ".join(f"{escape(c.label)}: {format_quantity(c.result.estimate.flash_bytes, 'bytes')}, "
                           f"cos {c.fidelity.cosine:.5f}" for c in fit.pareto)
        console.print(f"Pareto front (flash vs fidelity, {len(fit.pareto)}): {front}", soft_wrap=True)
    if fit.skipped:
        console.print(f"[yellow]time budget reached; not tried:[/] {escape(', '.join(fit.skipped))}",
                      soft_wrap=True)
    if fit.chosen is not None:
        where = f" -> {escape(fit.output)}" if fit.output else ""
        console.print(f"[bold green]fits[/] {escape(fit.profile.name)}: {escape(fit.chosen.label)}{where}",
                      soft_wrap=True)
        if fit.chosen.fidelity is not None and fit.chosen.fidelity.distributions and not fit.chosen.fidelity.identical:
            console.print(f"  synthetic inputs: {escape(describe_distributions(fit.chosen.fidelity))}",
                          soft_wrap=True)
        chosen = fit.chosen.result.estimate if fit.chosen.result else None
        if chosen is not None and chosen.latency_is_lower_bound:
            console.print(f"[yellow]{escape(fit.profile.name)}: latency and power are lower bounds, MACs unknown "
                          f"for {escape(', '.join(chosen.layers_without_macs))}[/]", soft_wrap=True)
    elif fit.no_fit is not None:
        console.print(f"[bold red]nothing fits[/] {escape(fit.profile.name)}", soft_wrap=True)
        for line in _no_fit_lines(fit.no_fit):
            console.print(f"  {escape(line)}", soft_wrap=True)
        closest = fit.no_fit.closest.fidelity
        if closest is not None and closest.distributions:
            console.print(f"  synthetic inputs: {escape(describe_distributions(closest))}", soft_wrap=True)
    else:
        console.print(f"[bold red]nothing fits[/] {escape(fit.profile.name)}: no candidate could be built",
                      soft_wrap=True)


def render_fit_report(console: Console, report: FitReport) -> None:
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True)
    for fit in report.targets:
        render_target(console, fit)
    if report.manifest:
        console.print(f"manifest: {escape(report.manifest)}")
    floor = report.floor
    parts = [f"cosine >= {floor.min_cosine:g}"] if floor.min_cosine is not None else []
    if floor.max_accuracy_drop is not None:
        parts.append(f"accuracy drop <= {floor.max_accuracy_drop * 100:g} pt")
    console.print(f"objective {report.objective}, floor {' and '.join(parts)}, fidelity on {report.fidelity_inputs} "
                  f"inputs; search {report.search_s:.1f} s. Device figures are estimates; not searched: "
                  f"{'; '.join(report.not_searched)}", style="dim", soft_wrap=True)
