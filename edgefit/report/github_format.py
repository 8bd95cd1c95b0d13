"""GitHub Actions workflow commands: one ::error annotation per breached budget, on the model file."""

from __future__ import annotations

from edgefit.check import GateReport
from edgefit.report.check_text import describe_verdict


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


class GithubFormat:
    name = "github"

    def render(self, report: GateReport) -> str:
        lines = []
        for result in report.failed:
            for v in result.verdicts:
                if v.ok:
                    continue
                title = f"edgefit gate: {result.spec.name}"
                message = (f"{result.target.profile.name} at {result.target.estimate.precision}: "
                           f"{describe_verdict(v)} (estimate)")
                lines.append(f"::error file={_escape_property(result.spec.model_label)},"
                             f"title={_escape_property(title)}::{_escape_data(message)}")
        passed = len(report.results) - len(report.failed)
        lines.append(f"edgefit gate: {passed}/{len(report.results)} gates passed (figures are estimates)")
        return "\n".join(lines) + "\n"
