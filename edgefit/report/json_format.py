"""JSON output of check and gate reports: the reports' own to_dict(), one object, stable keys."""

from __future__ import annotations

import json

from edgefit.check import CheckReport, GateReport


class JsonFormat:
    name = "json"

    def render(self, report: CheckReport | GateReport) -> str:
        return json.dumps(report.to_dict(), indent=2) + "\n"
