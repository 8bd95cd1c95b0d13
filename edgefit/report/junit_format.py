"""JUnit XML gate report: one testcase per gate x budget, so CI test views list every budget."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from edgefit.check import GateReport
from edgefit.report.check_text import describe_verdict


class JUnitFormat:
    name = "junit"

    def render(self, report: GateReport) -> str:
        cases = [(result, v) for result in report.results for v in result.verdicts]
        failures = sum(not v.ok for _, v in cases)
        counts = {"tests": str(len(cases)), "failures": str(failures), "errors": "0", "skipped": "0", "time": "0"}
        suites = ET.Element("testsuites", name="edgefit gate", **counts)
        suite = ET.SubElement(suites, "testsuite", name=f"edgefit gate ({report.config_path})", **counts)
        for result, v in cases:
            case = ET.SubElement(suite, "testcase", classname=f"edgefit.gate.{result.spec.name}",
                                 name=f"{v.metric} on {result.target.profile.name}", time="0",
                                 file=result.spec.model_label)
            detail = describe_verdict(v)
            if v.ok:
                ET.SubElement(case, "system-out").text = detail
            else:
                failure = ET.SubElement(case, "failure", message=detail, type="OverBudget")
                failure.text = (f"{result.spec.name}: {detail}\nmodel: {result.spec.model_label}\n"
                                f"target: {result.target.profile.name} at {result.target.estimate.precision}\n"
                                "figures are estimates (roofline from datasheet figures)")
        ET.indent(suites)
        return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
