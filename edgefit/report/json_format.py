"""JSON output of every command: one object, stable keys, always valid JSON.

JSON has no NaN or infinity (Python's json module would write the invalid literals `NaN` / `Infinity`); a
figure that is not finite is written as null.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgefit.check import CheckReport
    from edgefit.gate import GateReport


def finite(data: Any) -> Any:
    """`data` with every non-finite float (NaN, +-infinity) replaced by None, in nested dicts, lists and tuples."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: finite(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite(value) for value in data]
    return data


def dumps(data: Any) -> str:
    """One JSON document (indented, newline-terminated); values json cannot encode are written as str()."""
    return json.dumps(finite(data), indent=2, allow_nan=False, default=str) + "\n"


class JsonFormat:
    name = "json"

    def render(self, report: CheckReport | GateReport) -> str:
        return dumps(report.to_dict())


FORMAT = JsonFormat
