"""Operator coverage per runtime: which nodes of a model a runtime stack can execute, and where the rest go.

Each runtime's list is a TOML file in this package (tflm.toml, edgetpu.toml, vela.toml, ...) naming what the
runtime has kernels for, the constraints that matter (int8 only, kernel/stride limits, tensor rank, static shapes),
the document it comes from and that document's revision. A profile names its list with `operators = "tflm"`.
A list either names ONNX ops (STM32Cube.AI, the onnxruntime execution providers: their importers take ONNX) or,
with `lowering = "onnx2tf"`, the TFLite builtins a converter makes of them: lowering/onnx2tf.toml says which
builtins each ONNX op (with its attributes and constant inputs) becomes, and a node runs when every one of them has
a kernel, for the deployed tensor type where the list records types (`ADD = ["float32", "int8", "int16"]`).

Every computing node gets one status:
  supported    in the list, every constraint checked and met;
  supported    ... or an op the user declared a custom kernel for (--custom-op DOMAIN.NAME, custom_ops = [...]);
  unsupported  not in a complete list (the runtime has no kernel for it), a custom-domain op included;
  violates     in the list, but a constraint fails (a stride of 4 on Ethos-U55, an fp32 model on the Edge TPU);
  unknown      edgefit cannot judge it (the list is partial, a shape or value it cannot see).
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
FORM_CONDITIONS = frozenset({"constant", "attributes", "scalar", "zero_in", "last_axis", "inputs"})
# The deployment precision -> the tensor type a kernel must run (a list's per-builtin types).
TENSOR_TYPES = {"fp32": "float32", "fp16": "float16", "int8": "int8"}
_TYPE_NAMES = frozenset({"float32", "float16", "int8", "int16"})


@dataclass(frozen=True)
class LoweringForm:
    """One way an ONNX op lowers: when `when` holds, it becomes `builtins`, or is refused (`refuse`: why), or
    what it becomes cannot be seen (`unknown`: why)."""

    when: Mapping[str, Any]
    builtins: tuple[str, ...] = ()
    refuse: str = ""
    unknown: str = ""


@dataclass(frozen=True)
class Lowering:
    """A converter's table from ONNX op to the builtins it becomes (lowering/NAME.toml)."""

    name: str
    title: str
    source: str
    url: str
    revision: str
    retrieved: str
    forms: Mapping[str, tuple[LoweringForm, ...]]   # every op it converts: one unconditional form, or several
    hints: Mapping[str, str]                       # builtin -> what would make a model that needs it run


@dataclass(frozen=True)
class OperatorList:
    name: str
    title: str
    kind: str                           # mcu | accelerator | cpu
    source: str
    url: str
    revision: str                       # the source's commit, version or date, as read
    retrieved: str                      # when edgefit read it
    ops: Mapping[str, str]              # ONNX op type (or builtin, with a lowering) -> what the runtime runs it as
    constraints: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    fallback: str = "none"              # accelerators: "op" (each node alone) or "rest" (the node and all after)
    complete: bool = False              # True: an op not listed is unsupported; False: unknown
    all_standard_ops: bool = False      # every op of the ONNX standard domains runs
    int8_only: bool = False
    static_shapes: bool = False
    max_rank: int | None = None
    max_dim: int | None = None
    max_nonunit_dims: int | None = None  # only this many innermost dimensions may exceed 1
    lowering: Lowering | None = None    # None: the runtime takes ONNX ops as they are
    host: str | None = None             # accelerators: the list of the runtime that runs what falls back
    hints: Mapping[str, str] = field(default_factory=dict)   # op without a kernel -> what would make it run
    tensor_types: Mapping[str, tuple[str, ...]] = field(default_factory=dict)   # op -> types it has kernels for
    # ONNX op types with 16-bit-activation / 8-bit-weight (A16W8) kernels; ("*",): every op it runs; (): none.
    int16_activation_ops: tuple[str, ...] = ()

    def runs_a16w8(self, op_types) -> bool:
        """Whether every one of these op types has an int16-activation kernel here."""
        return bool(self.int16_activation_ops) and (
            "*" in self.int16_activation_ops or set(op_types) <= set(self.int16_activation_ops))

    def provenance(self) -> dict[str, Any]:
        """Where the list comes from and which revision was read (and the same of its lowering table)."""
        lowering = self.lowering
        return {"name": self.name, "title": self.title, "kind": self.kind, "complete": self.complete,
                "source": self.source, "url": self.url, "revision": self.revision, "retrieved": self.retrieved,
                "lowering": None if lowering is None else {
                    "name": lowering.name, "title": lowering.title, "source": lowering.source, "url": lowering.url,
                    "revision": lowering.revision, "retrieved": lowering.retrieved}}


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
    lowering = load_lowering(data["lowering"]) if "lowering" in data else None
    onnx_ops = lowering.forms if lowering is not None else ops   # what constraints are keyed by: the ONNX op
    typed = {op: tuple(value) for op, value in ops.items() if isinstance(value, list)}
    problem = None
    if data.get("kind") not in _KINDS:
        problem = f"kind must be one of {', '.join(_KINDS)}"
    elif data.get("fallback", "none") not in _FALLBACKS:
        problem = f"fallback must be one of {', '.join(_FALLBACKS)}"
    elif not all(data.get(key) for key in ("source", "url", "revision", "retrieved")):
        problem = "every list names its source, url, revision and the date it was retrieved"
    elif any(op not in onnx_ops for op in constraints):
        problem = f"constraints for an op not in the list: {sorted(set(constraints) - set(onnx_ops))[0]}"
    elif any(set(types) - _TYPE_NAMES for types in typed.values()):
        problem = f"unknown tensor type in [ops]: expected {', '.join(sorted(_TYPE_NAMES))}"
    elif any(set(rules) - _CONSTRAINTS for rules in constraints.values()):
        problem = f"unknown constraint {sorted(set().union(*constraints.values()) - _CONSTRAINTS)[0]!r}"
    if problem:
        raise ConfigError(f"{path}: {problem}")
    return OperatorList(
        name=data["name"], title=data["title"], kind=data["kind"], source=data["source"], url=data["url"],
        revision=data["revision"], retrieved=str(data["retrieved"]),
        ops={op: ", ".join(value) if isinstance(value, list) else value for op, value in ops.items()},
        lowering=lowering, tensor_types=typed, host=data.get("host"),
        hints={**(lowering.hints if lowering is not None else {}), **data.get("hints", {})}, constraints={op: dict(rules) for op, rules in constraints.items()},
        fallback=data.get("fallback", "none"), complete=data.get("complete", False),
        all_standard_ops=data.get("all_standard_ops", False), int8_only=data.get("int8_only", False),
        static_shapes=data.get("static_shapes", False), max_rank=data.get("max_rank"), max_dim=data.get("max_dim"),
        max_nonunit_dims=data.get("max_nonunit_dims"),
        int16_activation_ops=tuple(data.get("int16_activation_ops", ())))


@functools.cache
def load_lowering(name: str) -> Lowering:
    """A converter's lowering table by name (lowering/NAME.toml); ConfigError for an unknown name or a bad file."""
    path = _HERE / "lowering" / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(f"unknown lowering table {name!r}")
    data = tomllib.loads(path.read_text("utf-8"))
    forms: dict[str, tuple[LoweringForm, ...]] = {op: (LoweringForm({}, tuple(builtins)),)
                                                  for op, builtins in data.get("ops", {}).items()}
    for op, entries in data.get("forms", {}).items():
        if op in forms:
            raise ConfigError(f"{path}: {op} is both in [ops] and has [[forms.{op}]]")
        parsed = []
        for entry in entries:
            when = entry.get("when", {})
            outcomes = [key for key in ("builtins", "refuse", "unknown") if key in entry]
            if set(when) - FORM_CONDITIONS or len(outcomes) != 1:
                raise ConfigError(f"{path}: a form of {op} needs conditions among {', '.join(sorted(FORM_CONDITIONS))} "
                                  "and exactly one of builtins, refuse, unknown")
            parsed.append(LoweringForm(when, tuple(entry.get("builtins", ())), entry.get("refuse", ""),
                                       entry.get("unknown", "")))
        forms[op] = tuple(parsed)
    if not all(data.get(key) for key in ("source", "url", "revision", "retrieved")):
        raise ConfigError(f"{path}: a lowering table names its source, url, revision and the date it was retrieved")
    return Lowering(data["name"], data["title"], data["source"], data["url"], data["revision"],
                    str(data["retrieved"]), forms, dict(data.get("hints", {})))
