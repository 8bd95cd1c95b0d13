"""Markdown gate report, meant for a pull-request comment."""

from __future__ import annotations

from edgefit.check import GateReport
from edgefit.report.check_text import METRIC_LABELS, format_limit, format_margin, format_value


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


class MarkdownFormat:
    name = "markdown"

    def render(self, report: GateReport) -> str:
        failed = len(report.failed)
        headline = ("✅ all {n} gates passed".format(n=len(report.results)) if report.passed
                    else f"❌ {failed} of {len(report.results)} gates failed")
        lines = [
            f"### edgefit gate: {headline}",
            "",
            "| gate | model | target | precision | budget | estimate | limit | margin | result |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for result in report.results:
            for v in result.verdicts:
                lines.append("| " + " | ".join(_cell(c) for c in (
                    result.spec.name, f"`{result.spec.model_label}`", result.target.profile.name,
                    result.target.estimate.precision, METRIC_LABELS.get(v.metric, v.metric), format_value(v),
                    format_limit(v), format_margin(v), "✅ ok" if v.ok else "❌ over")) + " |")
        lines += ["", f"_Latency, energy and power are estimates (roofline from datasheet figures), "
                      f"not measurements. Config: `{report.config_path}`._", ""]
        return "\n".join(lines)
