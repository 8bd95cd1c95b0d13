"""Markdown gate report, meant for a pull-request comment."""

from __future__ import annotations

import re

from edgefit.gate import GateReport
from edgefit.report.check_text import METRIC_LABELS, format_limit, format_margin, format_value


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


class MarkdownFormat:
    name = "markdown"

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
                cells = [_cell(c) for c in (
                    result.spec.name, result.target.profile.name, result.target.estimate.precision,
                    METRIC_LABELS.get(v.metric, v.metric), format_value(v), format_limit(v), format_margin(v),
                    "✅ ok" if v.ok else "❌ over")]
                cells.insert(1, _code(result.spec.model_label))
                lines.append("| " + " | ".join(cells) + " |")
        lines += ["", f"_Latency, energy and power are estimates (roofline from datasheet figures), "
                      f"not measurements. {report.source_label}: {_code(str(report.config_path))}._", ""]
        return "\n".join(lines)


FORMAT = MarkdownFormat
