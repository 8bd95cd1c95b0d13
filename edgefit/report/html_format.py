"""Self-contained HTML gate report: one page, no scripts or external assets, for CI artifacts."""

from __future__ import annotations

from html import escape

from edgefit.gate import GateReport
from edgefit.model_report import ModelReport
from edgefit.report.check_text import (
    METRIC_LABELS, describe_bases, describe_band, format_limit, format_margin, format_value, latency_budget_how,
)

_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left}
th{background:#f4f4f4}td.num{text-align:right}.ok{color:#186a1d}.over{color:#b00020;font-weight:bold}
.context{color:#666}.note{color:#666;font-size:.9em}"""


class HtmlFormat:
    name = "html"

    def render_model(self, report: ModelReport) -> str:
        """The page `edgefit report` writes (analyze --format html)."""
        from edgefit.report.page import render_page

        return render_page(report)

    def render(self, report: GateReport) -> str:
        failed = len(report.failed)
        headline = (f"all {len(report.results)} {report.items} passed" if report.passed
                    else f"{failed} of {len(report.results)} {report.items} failed")
        rows = []
        for result in report.results:
            for verdict in result.verdicts:
                context = verdict.kind == "context"
                status = ('<td class="context">context</td>' if context else
                          '<td class="context">not judged</td>' if verdict.status == "not judged" else
                          '<td class="ok">ok</td>' if verdict.ok else '<td class="over">over</td>')
                cells = (result.spec.name, result.spec.model_label, result.target.profile.name,
                         result.target.estimate.precision, METRIC_LABELS.get(verdict.metric, verdict.metric))
                numbers = (format_value(verdict), format_limit(verdict),
                           describe_band(verdict) if context else format_margin(verdict))
                rows.append("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in cells)
                            + "".join(f'<td class="num">{escape(n)}</td>' for n in numbers) + status + "</tr>")
        header = "".join(f"<th>{h}</th>" for h in ("gate", "model", "target", "precision", "budget", "estimate",
                                                    "limit", "margin", "result"))
        return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>edgefit {report.command}: {escape(headline)}"
                f"</title><style>{_STYLE}</style></head><body>\n"
                f"<h1 class=\"{'ok' if report.passed else 'over'}\">edgefit {report.command}: {escape(headline)}</h1>\n"
                f"<table><thead><tr>{header}</tr></thead><tbody>\n" + "\n".join(rows) + "\n</tbody></table>\n"
                f"<p class=\"note\">Latency, energy and power are estimates (measured runtime-stack rates where the "
                f"profile has them, else a datasheet roofline), not measurements; basis: "
                f"{escape(describe_bases([r.target for r in report.results]))}. A latency without a budget "
                f"({escape(latency_budget_how(report.command))}) is context, not a check. {report.source_label}: "
                f"{escape(str(report.config_path))}</p>\n</body></html>\n")


FORMAT = HtmlFormat
