"""Plain-text wording of check results, shared by every check/gate format: quantities, verdicts, the tier line."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from edgefit.report.quantities import format_bytes, format_quantity

if TYPE_CHECKING:
    from edgefit.devices.check import TargetResult, TierResult, TierSummary, Verdict
    from edgefit.devices.estimate import Estimate
    from edgefit.devices.stacks import StackSettings

METRIC_LABELS = {
    "ram": "RAM", "flash": "flash", "latency": "latency", "power": "power", "precision": "precision",
    "ram_growth": "arena growth", "flash_growth": "weight growth", "operators": "operators",
}
# How many fitting devices a one-line summary names before it abbreviates.
_NAMED_DEVICES = 3
# Where a latency stands against its tier's typical band.
_BAND_RELATION = {"above": "slower than", "within": "within", "below": "faster than"}
BASIS_LABELS = {"datasheet": "datasheet figures"}


def format_value(verdict: Verdict) -> str:
    text = format_quantity(verdict.value, verdict.unit)
    return f">= {text}" if verdict.lower_bound else text


def format_limit(verdict: Verdict) -> str:
    if verdict.limit is None:
        return "no budget"
    return format_quantity(verdict.limit, verdict.unit)


def format_band(verdict: Verdict) -> str:
    """The verdict's tier band: '1–10 ms' (bands are round numbers in the verdict's unit)."""
    assert verdict.band is not None
    return f"{verdict.band.low:g}–{verdict.band.high:g} {verdict.unit}"


def describe_band(verdict: Verdict) -> str:
    """'slower than the typical 1–10 ms of the Tiny tier'; '' without a band."""
    if verdict.band is None:
        return ""
    tier = verdict.band.tier.capitalize()
    relation = _BAND_RELATION.get(verdict.band_position or "")
    if relation is None:   # a lower bound under the top of the band: the figure may lie anywhere above it
        return f"the {tier} tier's typical band is {format_band(verdict)}"
    return f"{relation} the typical {format_band(verdict)} of the {tier} tier"


def format_margin(verdict: Verdict) -> str:
    """'44% free' under budget, '12% over' over it, '' when there is no numeric margin (or no budget)."""
    margin = verdict.margin_pct
    if margin is None:
        return ""
    if margin >= 0:
        return f"{margin:.0f}% free"
    return f"{-margin:.0f}% over"


def describe_verdict(verdict: Verdict) -> str:
    """One clause: 'RAM 310.00 KiB > 300.00 KiB (budget, 3% over)'; a figure without a budget:
    'latency 18.8 ms — slower than the typical 1–10 ms of the Tiny tier'."""
    label = METRIC_LABELS.get(verdict.metric, verdict.metric)
    if verdict.kind == "context":
        band = describe_band(verdict)
        return f"{label} {format_value(verdict)} — {band}" if band else f"{label} {format_value(verdict)} (no budget)"
    if verdict.metric == "precision":
        supported = "supported" if verdict.ok else f"not supported (runs {verdict.limit})"
        return f"{verdict.value} {supported}"
    relation = "<=" if verdict.ok else ">"
    margin = format_margin(verdict)
    return (f"{label} {format_value(verdict)} {relation} {format_limit(verdict)} "
            f"({verdict.limit_source}{', ' + margin if margin else ''})")


def describe_target(result: TargetResult) -> str:
    """'fits esp32 at int8: RAM 236.00 KiB <= 520.00 KiB (...); ...' or the failed budgets only."""
    shown = result.verdicts if result.fits else result.failures
    head = "fits" if result.fits else "does not fit"
    return (f"{head} {result.profile.name} at {result.estimate.precision}: "
            + "; ".join(describe_verdict(v) for v in shown if v.metric != "precision" or not v.ok))


# How a command's user sets the latency budget that a context-only latency lacks.
_LATENCY_BUDGET_HOW = {"check": "--max-latency or --rate", "gate": "max_latency or rate in the gate"}


def latency_budget_how(command: str) -> str:
    """'--max-latency or --rate' for check, 'max_latency or rate in the gate' for gate."""
    return _LATENCY_BUDGET_HOW[command]


def format_error(expected_error: float | None) -> str:
    """A relative error: 0.12 -> '±12%'; None -> 'unknown'."""
    return "unknown" if expected_error is None else f"±{expected_error * 100:.3g}%"


def format_basis(estimate: Estimate) -> str:
    """What an estimate rests on: 'datasheet figures, expected error unknown', 'user calibration, typically
    within ±12%'."""
    error = ("expected error unknown" if estimate.expected_error is None
             else f"typically within {format_error(estimate.expected_error)}")
    return f"{BASIS_LABELS.get(estimate.basis, estimate.basis)}, {error}"


def describe_latency_basis(estimates: Sequence[Estimate]) -> str:
    """Where a before -> after comparison's latencies come from, and whether that is one basis: 'one basis: runtime
    esp-nn, published measurement (fp32 typically within ±60%, int8 ±50%)'. Two different bases (one a datasheet
    roofline, the other a measured stack) would make the change an artefact of the sources, so it is said."""
    def source(est: Estimate) -> str:
        kind = BASIS_LABELS.get(est.basis, est.basis)
        return f"runtime {est.runtime}, {kind}" if est.runtime is not None and est.basis != "datasheet" \
            else f"{kind} (roofline)"

    sources = list(dict.fromkeys(source(est) for est in estimates))
    errors = list(dict.fromkeys(f"{est.precision} {format_error(est.expected_error)}" for est in estimates))
    if len(sources) == 1:
        return f"latency on one basis: {sources[0]} ({', '.join(errors)})"
    return "latency NOT on one basis: " + "; ".join(f"{est.precision}: {source(est)}" for est in estimates)


def describe_settings(settings: StackSettings) -> str:
    """'memory model static, operators stm32cube-ai of runtime stm32cube-ai-8.1': the models an estimate used,
    grouped by who set them (the runtime stack or the profile)."""
    named = {"memory_model": f"memory model {settings.memory_model}",
             "operators": f"operators {settings.operators or 'not judged'}"}
    own = [text for key, text in named.items() if key in settings.from_stack]
    inherited = [text for key, text in named.items() if key not in settings.from_stack]
    groups = ([f"{', '.join(own)} of runtime {settings.runtime}"] if own else []) + (
        [f"{', '.join(inherited)} of the profile"] if inherited else [])
    return "; ".join(groups)


def describe_bases(results: Sequence[TargetResult]) -> str:
    """The basis of every result's estimates, each once: 'datasheet figures, expected error unknown', or with
    the devices when they differ, the commonest last and unnamed: 'published measurement, typically within ±32%
    (nucleo-h7a3zi-q, nucleo-l4r5zi); datasheet figures, expected error unknown (the other devices)'."""
    by_basis: dict[str, list[str]] = {}
    for result in results:
        by_basis.setdefault(format_basis(result.estimate), []).append(result.profile.name)
    if len(by_basis) == 1:
        return next(iter(by_basis))
    commonest = max(by_basis, key=lambda basis: len(by_basis[basis]))
    named = [f"{basis} ({', '.join(names)})" for basis, names in by_basis.items() if basis != commonest]
    return "; ".join([*named, f"{commonest} (the other devices)"])


def _devices(names: tuple[str, ...]) -> str:
    shown = ", ".join(names[:_NAMED_DEVICES])
    more = len(names) - _NAMED_DEVICES
    return shown + (f" and {more} more" if more > 0 else "")


def why_tier_misses(tier: TierResult) -> str:
    """For a tier that does not fit: the binding constraint on its best device, and what int8 would change."""
    binding = tier.binding
    assert binding is not None
    if binding.metric == "precision":
        reason = f"{binding.value} is not supported (best device {tier.best_device} runs {binding.limit})"
    elif binding.metric == "operators":
        reason = _missing_operator(tier)
    else:
        label = METRIC_LABELS.get(binding.metric, binding.metric)
        reason = (f"needs {format_value(binding)} {label}, best device ({tier.best_device}) "
                  f"allows {format_limit(binding)}")
    outlook = tier.int8
    if outlook is None:
        return reason
    if outlook.fits:
        return f"{reason}; int8 would fit ({_devices(outlook.devices)})"
    if outlook.binding is not None and not outlook.binding.ok and outlook.binding.metric != "operators":
        return f"{reason}; int8 would need {format_value(outlook.binding)}, still too much"
    return f"{reason}; int8 would not fit either"


def _missing_operator(tier: TierResult) -> str:
    """'no device runs every op: Erf (erf) becomes ERF; ERF has no TensorFlow Lite Micro kernel: run ...' / '... on
    esp32, the best device', naming the first op the best device cannot run, why, and what would make it run."""
    first, coverage = tier.first_unsupported, tier.operators
    assert first is not None and coverage is not None   # an operators verdict fails only on a node that cannot run
    what = (f"{first.op_type} ({first.layer}) {first.reason}" if first.status == "unsupported"
            else f"{first.op_type} ({first.layer}) breaks a limit of {coverage.title}: {first.reason}")
    more = len(coverage.not_running) - 1
    what += f" (and {more} more op{'s' if more > 1 else ''})" if more else ""
    if tier.operators_fail_everywhere:
        return f"no device runs every op: {what}"
    return f"{what} on {tier.best_device}, the best device"


def render_tier_line(summary: TierSummary) -> str:
    """The one-line answer: 'Fits: Cloud, Edge, Mobile. Tiny: no — needs 1.03 MiB flash, ...; int8 would fit (...)'.

    Plain text (no markup), so any renderer can print it.
    """
    fitting = [t.tier.capitalize() for t in summary.tiers if t.fits]
    parts = [f"Fits: {', '.join(fitting) if fitting else 'none'}."]
    parts += [f"{t.tier.capitalize()}: no — {why_tier_misses(t)}." for t in summary.tiers if not t.fits]
    return " ".join(parts)


def describe_patch_plan(result: TargetResult) -> str | None:
    """'fits stm32h7 RAM with 4x4 patches over the first 6 layers: peak 96.00 KiB -> 38.00 KiB, +11% MACs', or the
    best patching reaches when no plan fits; None when there is no advice worth a line."""
    advice = result.patch_plan
    if advice is None or advice.smallest is None or advice.notes:
        return None
    plan = advice.cheapest_fitting or advice.smallest
    how = (f"{plan.grid}x{plan.grid} patches over the first {plan.layers} layers: peak "
           f"{format_bytes(plan.unpatched_bytes)} -> {format_bytes(plan.peak_bytes)}, +{plan.extra_macs_pct:.0f}% MACs")
    if advice.cheapest_fitting is not None:
        return f"fits {result.profile.name} RAM with {how} (patch-based execution)"
    left = "no RAM" if advice.limit_bytes is None or advice.limit_bytes <= 0 else format_bytes(advice.limit_bytes)
    return f"{result.profile.name}: patch-based execution at best {how}; activations have {left} there"


_LISTED_OPS = 5
_LISTED_LAYERS = 3


def _nodes(nodes) -> str:
    """The nodes grouped by op and reason, as a transformer repeats one op in every block: 'LayerNormalization x7
    (ln, ln_1, ln_2 and 4 more) has no STM32Cube.AI kernel: ...' rather than the same sentence seven times."""
    reasons = {n.reason for n in nodes if n.status == "violates"}
    if len(nodes) > 1 and len(reasons) == 1 and all(n.status == "violates" for n in nodes):
        return f"every one {reasons.pop()}"   # e.g. an int8-only accelerator and an fp32 model
    groups: dict[tuple[str, str, str], list[str]] = {}
    for node in nodes:
        groups.setdefault((node.op_type, node.status, node.reason), []).append(node.layer)
    shown = []
    for (op_type, status, reason), layers in list(groups.items())[:_LISTED_OPS]:
        named = ", ".join(layers[:_LISTED_LAYERS])
        named += f" and {len(layers) - _LISTED_LAYERS} more" if len(layers) > _LISTED_LAYERS else ""
        op = f"{op_type} x{len(layers)}" if len(layers) > 1 else op_type
        shown.append(f"{op} ({named}: {reason})" if status == "violates" else
                     f"{op} ({named}){' ' + reason if reason else ''}")
    hidden = len(groups) - _LISTED_OPS
    return ", ".join(shown) + (f" and {hidden} more kind{'s' if hidden > 1 else ''} of op" if hidden > 0 else "")


def describe_operators(result: TargetResult) -> str | None:
    """'esp32: TensorFlow Lite Micro cannot run 1 op: Einsum (mix)' / '... 3 of 30 ops fall back to the CPU ...';
    None when every op is supported or the profile names no operator list."""
    coverage = result.operators
    if coverage is None or coverage.verdict == "supported":
        return None
    name, total = result.profile.name, len(coverage.nodes)
    if coverage.host_failures:
        failing = coverage.host_failures
        line = (f"{name}: {len(failing)} of {total} ops run neither on {coverage.title} nor on the host it falls back "
                f"to: {_nodes(failing)}")
    elif coverage.verdict == "does-not-run":
        failing = coverage.not_running
        line = f"{name}: {coverage.title} cannot run {len(failing)} of {total} ops: {_nodes(failing)}"
    elif coverage.verdict == "fallback":
        extra = ("" if coverage.fallback_latency_s is None else
                 f", est. {format_quantity(coverage.fallback_latency_s * 1e3, 'ms')} on the host core (in the "
                 "latency)")
        line = (f"{name}: {len(coverage.fallback_layers)} of {total} ops fall back to the CPU on {coverage.title}"
                f"{extra}: {_nodes(coverage.not_running)}")
    else:
        line = f"{name}: {coverage.title} runs the known ops"
    if coverage.unknown:
        line += f"; {len(coverage.unknown)} unknown (not judged): {_nodes(coverage.unknown)}"
    return line
