"""Rich terminal rendering of device profiles, check reports and gate reports."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from edgefit.devices.fields import PRECISIONS, TIERS
from edgefit.devices.operators import load_operator_list
from edgefit.devices.profiles import DeviceProfile
from edgefit.devices.stacks import RuntimeStack
from edgefit.report.check_text import (
    BASIS_LABELS,
    METRIC_LABELS,
    describe_bases,
    describe_operators,
    describe_patch_plan,
    describe_settings,
    describe_verdict,
    format_band,
    format_basis,
    format_error,
    format_limit,
    format_margin,
    format_value,
    latency_budget_how,
    render_tier_line,
    why_tier_misses,
)
from edgefit.report.quantities import format_bytes, format_bytes_short, format_count, format_quantity

if TYPE_CHECKING:   # `profiles list` renders here without loading the analysis (onnx, numpy)
    from edgefit.devices.check import CheckReport, TargetResult, Verdict
    from edgefit.gate import GateReport

_ESTIMATE_NOTE = ("All latency, energy and power figures are estimates (per-class rates of the runtime stack where "
                  "the profile has them, else a per-layer roofline from datasheet figures), not measurements.")


def _rates(profile: DeviceProfile) -> str:
    return ", ".join(f"{p} {format_count(profile.peak_macs_per_s[p])}MAC/s"
                     for p in PRECISIONS if p in profile.peak_macs_per_s)


def _power(watts: float) -> str:
    return format_quantity(watts * 1e3, "mW")


def _peak(profile: DeviceProfile) -> str:
    """The fastest precision's peak rate, e.g. '3.84 G int8'."""
    precision = max(profile.peak_macs_per_s, key=lambda p: (profile.peak_macs_per_s[p], PRECISIONS.index(p)))
    rate = profile.peak_macs_per_s[precision]
    for suffix in ("", " K", " M", " G", " T", " P"):
        if rate < 1000 or suffix == " P":
            return f"{rate:.3g}{suffix} {precision}"
        rate /= 1000
    raise AssertionError("unreachable")


def render_profiles(console: Console, profiles: Sequence[DeviceProfile]) -> None:
    """One table per tier, so the table stays narrow enough for an 80-column terminal."""
    for tier in TIERS:
        members = [p for p in profiles if p.tier == tier]
        if not members:
            continue
        table = Table(title=f"{tier.capitalize()} devices", title_justify="left", box=box.SIMPLE_HEAD,
                      pad_edge=False)
        table.add_column("name", no_wrap=True)
        for column in ("RAM", "flash", "peak MAC/s", "power on/idle"):
            table.add_column(column, justify="right", no_wrap=True)
        for profile in members:
            table.add_row(profile.name, format_bytes_short(profile.ram_bytes), format_bytes_short(profile.flash_bytes),
                          _peak(profile), f"{_power(profile.active_power_w)}/{_power(profile.idle_power_w)}")
        console.print(table)
    console.print(Text("Details and the source of every number: edgefit profiles show NAME", style="dim"))


def render_profile(console: Console, profile: DeviceProfile) -> None:
    table = Table(title=f"{profile.name}: {profile.display_name}", title_justify="left", show_lines=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_column("source", style="dim")
    source = profile.sources.get
    rows = [
        ("tier", profile.tier, ""),
        ("aliases", ", ".join(profile.aliases) or "-", ""),
        ("processor", profile.processor, source("processor", "")),
        ("runtime", profile.runtime, ""),
        *[(f"runtimes.{stack.name}", f"{stack.display_name}: {stack.basis}"
           + (f", typically within ±{stack.expected_error:.0%}" if stack.expected_error is not None else "")
           + (" (default)" if stack.name == profile.default_runtime else "") + _stack_settings(stack),
          stack.source + (f"; runtime RAM/flash: {stack.footprint_source}" if stack.footprint_source else ""))
          for stack in profile.runtimes],
        *[(f"runtimes.{stack.name}.{precision}", f"{precision} latency"
           + (f", typically within ±{error:.0%}" if (error := stack.expected_error_at(precision)) is not None else ""),
           text)
          for stack in profile.runtimes for precision, text in stack.precision_sources.items()],
        ("precisions", ", ".join(profile.precisions), ""),
        ("operators", profile.operators or "- (not judged)", _overridden(profile, "operators")),
        *[(f"operators.{name}", _list_revision(name), load_operator_list(name).url) for name in profile.operator_lists],
        *([("custom_ops", ", ".join(profile.custom_ops), "kernels the user wrote: judged supported")]
          if profile.custom_ops else []),
        ("ram", format_bytes(profile.ram_bytes), source("ram", "")),
        ("flash", format_bytes(profile.flash_bytes), source("flash", "")),
        ("runtime_ram", format_bytes(profile.runtime_ram_bytes), source("runtime_ram", "")),
        ("memory_model", profile.memory_model, "arena = planned activations + runtime state (edgefit.devices.runtime_memory)"
         + (f"; {_overridden(profile, 'memory_model')}" if _overridden(profile, "memory_model") else "")),
        ("runtime_flash", format_bytes(profile.runtime_flash_bytes), source("runtime_flash", "")),
        ("weights_in_ram", str(profile.weights_in_ram).lower(), source("weights_in_ram", "")),
        ("peak_gmacs", _rates(profile), source("peak_gmacs", "")),
        ("efficiency", ", ".join(f"{p} {profile.efficiency[p]:g}" for p in PRECISIONS if p in profile.peak_macs_per_s),
         source("efficiency", "")),
        ("memory_bandwidth", f"{format_bytes(profile.memory_bandwidth_bytes_per_s)}/s", source("memory_bandwidth", "")),
        ("flash_bandwidth", f"{format_bytes(profile.flash_bandwidth_bytes_per_s)}/s", source("flash_bandwidth", "")),
        ("inference_overhead", format_quantity(profile.inference_overhead_s * 1e3, "ms"),
         source("inference_overhead", "")),
        ("per_op_overhead", format_quantity(profile.per_op_overhead_s * 1e3, "ms"), source("per_op_overhead", "")),
        ("network_rtt", format_quantity(profile.network_rtt_s * 1e3, "ms"), source("network_rtt", "")),
        ("active_power", _power(profile.active_power_w), source("active_power", "")),
        ("idle_power", _power(profile.idle_power_w), source("idle_power", "")),
        ("latency_budget", "none" if profile.latency_budget_s is None
         else format_quantity(profile.latency_budget_s * 1e3, "ms"),
         source("latency_budget", "latency is judged only against a budget given to check or gate")),
        ("basis", BASIS_LABELS.get(profile.basis, profile.basis), ""),
        ("expected_error", format_error(profile.expected_error), source("expected_error", "")),
    ]
    if profile.ram_usable_fraction != 1.0:
        rows.insert(6, ("ram_usable_fraction", f"{profile.ram_usable_fraction:g}", source("ram_usable_fraction", "")))
    if profile.battery_wh is not None:
        rows.append(("battery", f"{profile.battery_mah:g} mAh at {profile.battery_v:g} V ({profile.battery_wh:.1f} Wh)",
                     source("battery_mah", "")))
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if profile.notes:
        console.print(Text(f"note: {profile.notes}", style="yellow"))
    console.print(Text(f"file: {profile.path}", style="dim"))


def _list_revision(name: str) -> str:
    """'TensorFlow Lite Micro, revision 90b983c... (retrieved 2026-12-08); lowered by onnx2tf ... revision ...'."""
    operators = load_operator_list(name)
    text = f"{operators.title}, revision {_short_hashes(operators.revision)} (retrieved {operators.retrieved})"
    lowering = operators.lowering
    if lowering is not None:
        text += f"; ONNX ops lowered as {lowering.title} does, revision {_short_hashes(lowering.revision)}"
    return text


def _short_hashes(text: str) -> str:
    """Commit hashes cut to 12 digits, which a narrow table column keeps whole (--json has them in full)."""
    return re.sub(r"\b([0-9a-f]{12})[0-9a-f]{28}\b", r"\1", text)


def _overridden(profile: DeviceProfile, key: str) -> str:
    """'runtimes stm32cube-ai-8.1, stm32cube-ai-7.3 set their own' when some stacks replace the profile's `key`."""
    own = [stack.name for stack in profile.runtimes if getattr(stack, key) is not None]
    return f"runtimes {', '.join(own)} set their own" if own else ""


def _stack_settings(stack: RuntimeStack) -> str:
    """'; memory model static, operators stm32cube-ai, runtime RAM 8.00 KiB' for what the stack sets itself."""
    own = [f"{label} {value}" for label, value in (("memory model", stack.memory_model),
                                                   ("operators", stack.operators)) if value is not None]
    own += [f"{label} {format_bytes(value)}" for label, value in (("runtime RAM", stack.runtime_ram_bytes),
                                                                  ("runtime flash", stack.runtime_flash_bytes))
            if value is not None]
    return "; " + ", ".join(own) if own else ""


def _ok_mark(verdict: Verdict) -> Text:
    if verdict.kind == "context":
        return Text("context", style="yellow" if verdict.band_position == "above" else "dim")
    if verdict.status == "not judged":
        return Text("not judged", style="magenta")
    return Text("ok", style="green") if verdict.ok else Text("OVER", style="bold red")


def _cell(verdict: Verdict | None) -> Text:
    """A verdict's value; over budget it is red and marked ✗, a figure without a budget that is slower than its
    tier's band is yellow and marked *, so both also read without colour."""
    if verdict is None:
        return Text("-", style="dim")
    if verdict.metric in ("ram", "flash"):
        text = format_bytes_short(float(verdict.value))
    else:
        text = format_value(verdict)
    if not verdict.ok:
        return Text(f"{text} ✗", style="bold red")
    if verdict.kind == "context" and verdict.band_position == "above":
        return Text(f"{text} *", style="yellow")
    return Text(text)


def _verdict_table(title: str, verdicts: Sequence[Verdict]) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column, justify in (("budget", "left"), ("estimate", "right"), ("limit", "right"), ("limit from", "left"),
                            ("margin", "right"), ("", "left")):
        table.add_column(column, justify=justify)
    for v in _shown(verdicts):
        table.add_row(METRIC_LABELS.get(v.metric, v.metric), format_value(v), format_limit(v), v.limit_source or "",
                      format_margin(v), _ok_mark(v))
    return table


def _print_context(console: Console, verdicts: Sequence[Verdict], command: str) -> None:
    """The figures nobody set a budget for, each against its tier's band."""
    for v in verdicts:
        if v.kind == "context":
            console.print(Text(f"{describe_verdict(v)} (no latency budget: set one with {latency_budget_how(command)} "
                               "to judge it)",
                               style="yellow" if v.band_position == "above" else "dim"))


def _estimate_line(result: TargetResult) -> str:
    est = result.estimate
    rate = "back to back" if est.rate_hz is None else f"{est.rate_hz:g}/s"
    # Unknown MACs (e.g. a Loop without a known trip count): latency, and with it energy and power, are minimums.
    at_least = ">= " if est.latency_is_lower_bound else ""
    parts = [
        f"latency {at_least}{format_quantity(est.latency_s * 1e3, 'ms')}"
        + (f" incl. {format_quantity(est.network_s * 1e3, 'ms')} network round trip" if est.network_s else "")
        + (f" incl. {format_quantity(est.fallback_s * 1e3, 'ms')} of fallback layers on the host CPU"
           if est.fallback_s else ""),
        f"energy {at_least}{format_quantity(est.energy_j * 1e3, 'mJ')}/inference",
        # back to back, the device is always busy: average power is the active power whatever the latency
        f"average power {at_least if est.rate_hz is not None else ''}{_power(est.avg_power_w)} at {rate}",
        f"weights {format_bytes(est.weight_bytes)}, activations {format_bytes(est.activation_bytes)}",
    ]
    if est.battery_life_h is not None:
        parts.append(f"battery life {est.battery_life_h:.1f} h")
    if est.memory.model.startswith("tflm"):
        parts.append(f"set the tensor arena to {est.arena_bytes:,} bytes ({est.memory.head_bytes:,} tensors + "
                     f"{est.memory.tail_bytes:,} interpreter state)")
    parts.append(describe_settings(est.settings))
    parts.append(f"basis: {format_basis(est)}")
    return f"estimates on {result.runtime_label}: " + "; ".join(parts)


def _target_detail(console: Console, report: CheckReport, result: TargetResult) -> None:
    profile = result.profile
    verdict = Text("fits", style="bold green") if result.fits else Text("does not fit", style="bold red")
    console.print(_verdict_table(f"{profile.name} ({profile.tier}) at {report.precision}", result.verdicts))
    _print_context(console, result.verdicts, "check")
    console.print(Text(_estimate_line(result), style="dim"))
    if not result.estimate.keeps_up:
        console.print(Text(f"cannot keep up with {result.estimate.rate_hz:g} inferences/s", style="red"))
    console.print(Text.assemble(f"{profile.name}: ", verdict))


def _summary_table(report: CheckReport) -> Table:
    """One row per device, grouped by tier; narrow enough for an 80-column terminal."""
    table = Table(title=f"edgefit check: {escape(report.model_path or 'model')} at {report.precision}", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    # Average power means little without a rate or a power budget, and the table has no room to spare.
    show_power = report.rate_hz is not None or report.budgets.max_power_w is not None
    table.add_column("device", no_wrap=True)
    for column in ("RAM", "flash", "latency") + (("power",) if show_power else ()):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("fits", no_wrap=True)
    for tier in TIERS:
        members = [r for r in report.targets if r.profile.tier == tier]
        if not members:
            continue
        table.add_row(Text(tier.capitalize(), style="bold"))
        for result in members:
            cells = [_cell(result.verdict("ram")), _cell(result.verdict("flash")), _cell(result.verdict("latency"))]
            if show_power:
                power = result.verdict("power")
                cells.append(_cell(power) if power else Text(_power(result.estimate.avg_power_w)))
            fits = Text("yes", style="green") if result.fits else Text("no", style="red")
            table.add_row(f" {result.profile.name}", *cells, fits)
    return table


def _print_band_note(console: Console, report: CheckReport) -> None:
    """Under the device table: latencies without a budget are shown against their tier's typical band."""
    context = [v for r in report.targets if (v := r.verdict("latency")) is not None and v.kind == "context"]
    if not context:
        return
    bands = {v.band.tier: v for v in context if v.band is not None}
    typical = ", ".join(f"{tier} {format_band(bands[tier])}" for tier in TIERS if tier in bands)
    console.print(Text(f"* slower than the tier's typical latency ({typical}); a latency without a budget does "
                       f"not decide the fit (set one with {latency_budget_how('check')})", style="dim"))


def _tier_table(report: CheckReport) -> Table:
    table = Table(title="Tiers", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("tier", "fits", "devices that fit / why not"):
        table.add_column(column)
    for result in report.tiers.tiers:
        if result.fits:
            table.add_row(result.tier.capitalize(), Text("yes", style="green"), ", ".join(result.devices))
        else:
            table.add_row(result.tier.capitalize(), Text("no", style="red"), why_tier_misses(result))
    return table


def render_check(console: Console, report: CheckReport, *, detailed: bool) -> None:
    """`detailed`: one verdict table per target; otherwise one row per target plus the tier summary."""
    if detailed:
        for result in report.targets:
            _target_detail(console, report, result)
    else:
        console.print(_summary_table(report))
        _print_band_note(console, report)
        console.print(_tier_table(report))
        console.print(Text(render_tier_line(report.tiers), style="bold"))
    for result in report.targets:
        for line, style in ((describe_operators(result), "yellow"), (describe_patch_plan(result), "cyan")):
            if line:
                console.print(Text(line, style=style))
    precision_note = "the model's own" if report.precision_is_models_own else "requested"
    # A detailed report gives each target's basis on its estimate line.
    basis = "" if detailed else f" Basis: {describe_bases(report.targets)}."
    console.print(Text(f"precision: {report.precision} ({precision_note}). {_ESTIMATE_NOTE}{basis}", style="dim"))
    for reason in report.unknowns:
        console.print(Text(f"unknown: {reason}", style="magenta"))
    for result in report.targets:
        if result.estimate.latency_is_lower_bound:
            console.print(Text(f"{result.profile.name}: latency is a lower bound, MACs unknown for "
                               f"{', '.join(result.estimate.layers_without_macs)}", style="magenta"))
            break


def _shown(verdicts: Sequence[Verdict]) -> list[Verdict]:
    """Terminal tables leave out a supported precision: it is a precondition, not a budget."""
    return [v for v in verdicts if v.metric != "precision" or not v.ok]


def render_gate(console: Console, report: GateReport) -> None:
    console.print(Text(f"edgefit gate: {report.config_path}", style="bold"))
    for result in report.results:
        mark = "passed" if result.passed else "FAILED"
        title = (f"{mark}: {result.spec.name}, {result.target.profile.name} at {result.target.estimate.precision} "
                 f"({result.spec.model_label})")
        console.print(_verdict_table(escape(title), result.verdicts))   # names and paths are the user's
        _print_context(console, result.verdicts, report.command)
        console.print(Text(f"estimates: {format_basis(result.target.estimate)}", style="dim"))
    for result in report.failed:
        for v in result.verdicts:
            if not v.ok:
                console.print(Text(f"FAIL {result.spec.name}: {describe_verdict(v)}", style="red"))
    passed = len(report.results) - len(report.failed)
    style = "bold green" if report.passed else "bold red"
    console.print(Text(f"{passed}/{len(report.results)} gates passed", style=style))
    console.print(Text(_ESTIMATE_NOTE, style="dim"))
