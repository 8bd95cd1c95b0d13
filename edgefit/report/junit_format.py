"""JUnit XML gate report: one testcase per gate x budget, so CI test views list every budget. A figure nobody set a
budget for (latency without max_latency or rate) is a skipped testcase: reported, not checked."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from edgefit.gate import GateReport
from edgefit.report.check_text import describe_verdict, format_basis
from edgefit.report.github_format import workspace_path


# Characters XML 1.0 cannot hold at all, not even as character references (control characters other than tab,
# newline and carriage return; lone surrogates; U+FFFE/U+FFFF). ElementTree writes them as they are, which makes
# the document unparseable, so they are written as visible \xNN / \uNNNN escapes instead.
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml(text: object) -> str:
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                        else f"\\u{ord(m.group()):04x}", str(text))


class JUnitFormat:
    name = "junit"

    def render(self, report: GateReport) -> str:
        cases = [(result, v) for result in report.results for v in result.verdicts]
        failures = sum(not v.ok for _, v in cases)
        skipped = sum(v.kind == "context" for _, v in cases)
        counts = {"tests": str(len(cases)), "failures": str(failures), "errors": "0", "skipped": str(skipped),
                  "time": "0"}
        suites = ET.Element("testsuites", name=f"edgefit {report.command}", **counts)
        suite = ET.SubElement(suites, "testsuite", name=_xml(f"edgefit {report.command} ({report.config_path})"), **counts)
        for result, v in cases:
            case = ET.SubElement(suite, "testcase", classname=_xml(f"edgefit.{report.command}.{result.spec.name}"),
                                 name=_xml(f"{v.metric} on {result.target.profile.name}"), time="0",
                                 file=_xml(workspace_path(result.spec)))
            detail = _xml(describe_verdict(v))
            if v.kind == "context":
                ET.SubElement(case, "skipped", message=_xml(f"no budget: {describe_verdict(v)}"))
            elif v.ok:
                ET.SubElement(case, "system-out").text = detail
            else:
                failure = ET.SubElement(case, "failure", message=detail, type="OverBudget")
                failure.text = _xml(f"{result.spec.name}: {detail}\nmodel: {result.spec.model_label}\n"
                                    f"target: {result.target.profile.name} at {result.target.estimate.precision}\n"
                                    f"figures are estimates ({format_basis(result.target.estimate)})")
        ET.indent(suites)
        return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


FORMAT = JUnitFormat
