"""Operator coverage per runtime: which nodes of a model a runtime stack can execute, and where the rest go.

Each runtime's list is a TOML file in this package (tflm.toml, edgetpu.toml, vela.toml, ...) naming the ONNX op
types that lower to one of its kernels, the constraints that matter (int8 only, kernel/stride limits, tensor rank,
static shapes) and the document it comes from. A profile names its list with `operators = "tflm"`.

Every computing node gets one status:
  supported    in the list, every constraint checked and met;
  unsupported  not in a complete list (the runtime has no kernel for it);
  violates     in the list, but a constraint fails (a stride of 4 on Ethos-U55, an fp32 model on the Edge TPU);
  unknown      edgefit cannot judge it (the list is partial, a custom domain, a shape or value it cannot see).
Never "supported" for something not checked. The judging lives in edgefit.devices.operators.coverage; this module only
reads the lists (profiles load it, and `edgefit profiles list` must not import onnx).

What an unsupported node means depends on the runtime's kind: on an MCU runtime (TFLM) the model does not run;
on an accelerator the node falls back to the host CPU, either alone (`fallback = "op"`: Vela, onnxruntime EPs)
or with everything after it (`fallback = "rest"`: the Edge TPU compiler cuts the graph once).
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgefit.errors import ConfigError

_HERE = Path(__file__).parent
_KINDS = ("mcu", "accelerator", "cpu")
_FALLBACKS = ("none", "op", "rest")
WINDOW_RULES = frozenset({"spatial_dims", "strides", "dilations", "kernel", "padded_kernel", "dilated_kernel_height",
                           "dilated_kernel_area", "batch_one"})
_CONSTRAINTS = WINDOW_RULES | {"constant_inputs", "attributes", "spatial_axes_only", "rank"}


@dataclass(frozen=True)
class OperatorList:
    name: str
    title: str
    kind: str                           # mcu | accelerator | cpu
    source: str
    url: str
    ops: Mapping[str, str]              # ONNX op type -> what the runtime runs it as
    constraints: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    fallback: str = "none"              # accelerators: "op" (each node alone) or "rest" (the node and all after)
    complete: bool = False              # True: an op not listed is unsupported; False: unknown
    all_standard_ops: bool = False      # every op of the ONNX standard domains runs
    int8_only: bool = False
    static_shapes: bool = False
    max_rank: int | None = None
    max_dim: int | None = None
    max_nonunit_dims: int | None = None  # only this many innermost dimensions may exceed 1
    # ONNX op types with 16-bit-activation / 8-bit-weight (A16W8) kernels; ("*",): every op it runs; (): none.
    int16_activation_ops: tuple[str, ...] = ()

    def runs_a16w8(self, op_types) -> bool:
        """Whether every one of these op types has an int16-activation kernel here."""
        return bool(self.int16_activation_ops) and (
            "*" in self.int16_activation_ops or set(op_types) <= set(self.int16_activation_ops))


def operator_list_names() -> tuple[str, ...]:
    return tuple(sorted(path.stem for path in _HERE.glob("*.toml")))


@functools.cache
def load_operator_list(name: str) -> OperatorList:
    """The runtime's list by name (a file of this package); ConfigError for an unknown name or a bad file."""
    path = _HERE / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(f"unknown operator list {name!r}: expected one of {', '.join(operator_list_names())}")
    data = tomllib.loads(path.read_text("utf-8"))
    ops = data.get("ops", {})
    constraints = data.get("constraints", {})
    problem = None
    if data.get("kind") not in _KINDS:
        problem = f"kind must be one of {', '.join(_KINDS)}"
    elif data.get("fallback", "none") not in _FALLBACKS:
        problem = f"fallback must be one of {', '.join(_FALLBACKS)}"
    elif not data.get("source") or not data.get("url"):
        problem = "every list names its source and url"
    elif any(op not in ops for op in constraints):
        problem = f"constraints for an op not in the list: {sorted(set(constraints) - set(ops))[0]}"
    elif any(set(rules) - _CONSTRAINTS for rules in constraints.values()):
        problem = f"unknown constraint {sorted(set().union(*constraints.values()) - _CONSTRAINTS)[0]!r}"
    if problem:
        raise ConfigError(f"{path}: {problem}")
    return OperatorList(
        name=data["name"], title=data["title"], kind=data["kind"], source=data["source"], url=data["url"],
        ops=dict(ops), constraints={op: dict(rules) for op, rules in constraints.items()},
        fallback=data.get("fallback", "none"), complete=data.get("complete", False),
        all_standard_ops=data.get("all_standard_ops", False), int8_only=data.get("int8_only", False),
        static_shapes=data.get("static_shapes", False), max_rank=data.get("max_rank"), max_dim=data.get("max_dim"),
        max_nonunit_dims=data.get("max_nonunit_dims"),
        int16_activation_ops=tuple(data.get("int16_activation_ops", ())))
