"""GitHub Actions workflow commands: one ::error annotation per breached budget, on the model file."""

from __future__ import annotations

import os
from pathlib import Path

from edgefit.gate import GateReport, GateSpec
from edgefit.report.check_text import describe_verdict, format_basis


def workspace_path(spec: GateSpec) -> str:
    """The model's path relative to the working directory (the repository root in a CI job), where annotations
    and test reports look for it; the config's own spelling when the model lies outside it. The config
    spells it relative to the config file, which may sit in a subfolder."""
    try:   # absolute, not resolved: a model that is a symlink is annotated where the repository has it
        return Path(os.path.abspath(spec.model)).relative_to(os.getcwd()).as_posix()
    except (ValueError, OSError):
        return spec.model_label


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
                title = f"edgefit {report.command}: {result.spec.name}"
                message = (f"{result.target.profile.name} at {result.target.estimate.precision}: "
                           f"{describe_verdict(v)} (estimate from {format_basis(result.target.estimate)})")
                lines.append(f"::error file={_escape_property(workspace_path(result.spec))},"
                             f"title={_escape_property(title)}::{_escape_data(message)}")
        passed = len(report.results) - len(report.failed)
        lines.append(f"edgefit {report.command}: {passed}/{len(report.results)} {report.items} passed "
                     "(figures are estimates)")
        return "\n".join(lines) + "\n"


FORMAT = GithubFormat
