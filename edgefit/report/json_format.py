"""JSON output of every command: one object, stable keys, always valid JSON.

JSON has no NaN or infinity (Python's json module would write the invalid literals `NaN` / `Infinity`); a
figure that is not finite is written as null.

Layout: the object's keys one per line, and the items of a top-level list or object one per line, each written
compactly on its line (a layer, a target, a tier). Python's json module indents only with its pure-Python
encoder, five times slower than the C one on the 12,000 layers of a large graph; this layout keeps every value
to the C encoder and still reads (and diffs, and greps) one item per line.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgefit.devices.check import CheckReport
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


_ENCODER = json.JSONEncoder(allow_nan=False, default=str, separators=(", ", ": "))


def _layout(data: Any, depth: int = 0) -> str:
    """`data` as JSON, containers of the first two levels spread one entry per line (see the module docstring)."""
    pad = "  " * (depth + 1)
    if depth < 2 and isinstance(data, dict) and data and all(isinstance(key, str) for key in data):
        entries = ",\n".join(f"{pad}{_ENCODER.encode(key)}: {_layout(value, depth + 1)}" for key, value in data.items())
        return f"{{\n{entries}\n{pad[2:]}}}"
    if depth < 2 and isinstance(data, (list, tuple)) and data:
        entries = ",\n".join(f"{pad}{_layout(value, depth + 1)}" for value in data)
        return f"[\n{entries}\n{pad[2:]}]"
    return _ENCODER.encode(data)


def dumps(data: Any) -> str:
    """One JSON document (newline-terminated); values json cannot encode are written as str()."""
    try:
        return _layout(data) + "\n"
    except ValueError:   # a non-finite float, which the encoder refuses: the rare case pays for the walk
        return _layout(finite(data)) + "\n"


class JsonFormat:
    name = "json"

    def render(self, report: CheckReport | GateReport) -> str:
        return dumps(report.to_dict())


FORMAT = JsonFormat
