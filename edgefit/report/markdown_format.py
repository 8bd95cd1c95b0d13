"""Markdown gate report, meant for a pull-request comment."""

from __future__ import annotations

import re

from edgefit.gate import GateReport
from edgefit.model_report import ModelReport
from edgefit.report.check_text import (
    METRIC_LABELS, describe_bases, describe_band, format_limit, format_margin, format_value, latency_budget_how,
    render_tier_line,
)
from edgefit.report.quantities import format_bytes, format_count


def _one_line(text: str) -> str:
    """Markdown ends a table row at any line break: CR, LF or CRLF."""
    return " ".join(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))


def _cell(text: str) -> str:
    """Plain text in a table cell: pipes escaped, HTML shown as text (GitHub drops tags such as <script>)."""
    return (_one_line(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("|", "\\|"))


def _code(text: str) -> str:
    """Text as an inline code span in a table cell, fenced with more backticks than it holds."""
    text = _one_line(text).replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _model_markdown(report: ModelReport, top: int = 10) -> str:
    fp = report.footprint
    lines = [f"## edgefit analyze: {_cell(str(fp.model_path or 'model'))}", "", "| figure | value |", "|---|---:|",
             f"| parameters | {fp.params:,} |", f"| weight bytes | {fp.weight_bytes:,} ({format_bytes(fp.weight_bytes)}) |",
             f"| MACs | {fp.macs:,} ({format_count(fp.macs)}) |", f"| FLOPs | {fp.flops:,} |",
             f"| peak activation RAM | {fp.peak_activation_bytes:,} ({format_bytes(fp.peak_activation_bytes)}) |",
             f"| lower bound | {fp.activation_lower_bound_bytes:,} |",
             f"| peak set by | {_code(fp.peak_node or '-')} |", ""]
    if report.check is not None:
        lines += [f"**{_cell(render_tier_line(report.check.tiers))}**", ""]
    heaviest = sorted((layer for layer in fp.layers if layer.macs), key=lambda layer: -(layer.macs or 0))[:top]
    if heaviest:
        lines += [f"Top {len(heaviest)} layers by MACs:", "", "| layer | op | MACs | output |", "|---|---|---:|---:|"]
        lines += [f"| {_code(layer.name)} | {_cell(layer.op_type)} | {layer.macs:,} | "
                  f"{format_bytes(layer.output_bytes) if layer.output_bytes is not None else 'unknown'} |"
                  for layer in heaviest]
        lines.append("")
    lines += [f"- unknown: {_cell(reason)}" for reason in fp.unknowns]
    return "\n".join(lines).rstrip("\n") + "\n"


class MarkdownFormat:
    name = "markdown"

    def render_model(self, report: ModelReport) -> str:
        return _model_markdown(report)

    def render(self, report: GateReport) -> str:
        failed = len(report.failed)
        headline = (f"✅ all {len(report.results)} {report.items} passed" if report.passed
                    else f"❌ {failed} of {len(report.results)} {report.items} failed")
        lines = [
            f"### edgefit {report.command}: {headline}",
            "",
            "| gate | model | target | precision | budget | estimate | limit | margin | result |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for result in report.results:
            for v in result.verdicts:
                context = v.kind == "context"
                cells = [_cell(c) for c in (
                    result.spec.name, result.target.profile.name, result.target.estimate.precision,
                    METRIC_LABELS.get(v.metric, v.metric), format_value(v), format_limit(v),
                    describe_band(v) if context else format_margin(v),
                    "ℹ️ context" if context else "❔ not judged" if v.status == "not judged" else
                    "✅ ok" if v.ok else "❌ over")]
                cells.insert(1, _code(result.spec.model_label))
                lines.append("| " + " | ".join(cells) + " |")
        lines += ["", f"_Latency, energy and power are estimates (measured runtime-stack rates where the profile has "
                      f"them, else a datasheet roofline), not measurements; basis: "
                      f"{_cell(describe_bases([r.target for r in report.results]))}. A latency without a budget "
                      f"({_cell(latency_budget_how(report.command))}) is context, not a check. "
                      f"{report.source_label}: {_code(str(report.config_path))}._", ""]
        return "\n".join(lines)


FORMAT = MarkdownFormat
