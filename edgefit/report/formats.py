"""The registry of machine-readable report formats: a format is one file, `edgefit/report/<name>_format.py`,
holding a class with `name` and `render(report) -> str`, exported as `FORMAT`.

Names come from the file names, so `--help` can list them without importing the formats (which import the
library's result types, and with them onnx). `render` receives a GateReport; `check` hands its CheckReport over
as one (edgefit.gate.check_as_gate_report), so every format serves both commands.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Protocol

_SUFFIX = "_format"


class ReportFormat(Protocol):
    name: str

    def render(self, report) -> str: ...


def format_names() -> tuple[str, ...]:
    """Every format's name, sorted: json, markdown, ... (the file name without `_format.py`)."""
    here = [str(Path(__file__).parent)]
    return tuple(sorted(m.name[: -len(_SUFFIX)] for m in pkgutil.iter_modules(here) if m.name.endswith(_SUFFIX)))


def get_format(name: str) -> ReportFormat:
    return importlib.import_module(f"edgefit.report.{name}{_SUFFIX}").FORMAT()
