"""Plain-text wording of check results, shared by every check/gate format: quantities, verdicts, the tier line."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgefit.report.quantities import format_quantity

if TYPE_CHECKING:
    from edgefit.check import TargetResult, TierResult, TierSummary, Verdict

METRIC_LABELS = {
    "ram": "RAM", "flash": "flash", "latency": "latency", "power": "power", "precision": "precision",
    "ram_growth": "arena growth", "flash_growth": "weight growth",
}
# How many fitting devices a one-line summary names before it abbreviates.
_NAMED_DEVICES = 3


def format_value(verdict: Verdict) -> str:
    text = format_quantity(verdict.value, verdict.unit)
    return f">= {text}" if verdict.lower_bound else text


def format_limit(verdict: Verdict) -> str:
    return format_quantity(verdict.limit, verdict.unit)


def format_margin(verdict: Verdict) -> str:
    """'44% free' under budget, '12% over' over it, '' when there is no numeric margin."""
    margin = verdict.margin_pct
    if margin is None:
        return ""
    if margin >= 0:
        return f"{margin:.0f}% free"
    return f"{-margin:.0f}% over"


def describe_verdict(verdict: Verdict) -> str:
    """One clause: 'RAM 310.00 KiB > 300.00 KiB (budget, 3% over)'."""
    label = METRIC_LABELS.get(verdict.metric, verdict.metric)
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
    else:
        label = METRIC_LABELS.get(binding.metric, binding.metric)
        reason = (f"needs {format_value(binding)} {label}, best device ({tier.best_device}) "
                  f"allows {format_limit(binding)}")
    outlook = tier.int8
    if outlook is None:
        return reason
    if outlook.fits:
        return f"{reason}; int8 would fit ({_devices(outlook.devices)})"
    if outlook.binding is not None and not outlook.binding.ok:
        return f"{reason}; int8 would need {format_value(outlook.binding)}, still too much"
    return f"{reason}; int8 would not fit either"


def render_tier_line(summary: TierSummary) -> str:
    """The one-line answer: 'Fits: Cloud, Edge, Mobile. Tiny: no — needs 1.03 MiB flash, ...; int8 would fit (...)'.

    Plain text (no markup), so any renderer can print it.
    """
    fitting = [t.tier.capitalize() for t in summary.tiers if t.fits]
    parts = [f"Fits: {', '.join(fitting) if fitting else 'none'}."]
    parts += [f"{t.tier.capitalize()}: no — {why_tier_misses(t)}." for t in summary.tiers if not t.fits]
    return " ".join(parts)
