"""Decompose: rewrite ops a target runtime has no kernel for into standard ONNX ops it has.

Microcontroller runtimes register a fixed set of kernels; an op outside it stops the model. Most of the ops today's
exporters write that such runtimes lack are short formulas of ops they do have. This pass writes those formulas
into the graph (the model's own opset, checked by onnx.checker and run in onnxruntime like every pass result).

Rewrites (x the op's input; "exact" means the same formula the ONNX specification defines, equal up to float
rounding, about 1e-7 relative):

* LayerNormalization(x, scale, bias; axis, epsilon, stash_type) -- exact:
  m = ReduceMean(x), d = x - m, v = ReduceMean(d * d), y = d / Sqrt(v + epsilon) * scale + bias, the means over
  the axes from `axis` to the last (kept as size-1 dims); computed in the stash type (Cast around it when x is of
  another float type); ReduceMean takes its axes as an input from opset 18, as an attribute before.
* Gelu(x; approximate="tanh") (opset 20) -- exact: x * Sigmoid(2 * sqrt(2/pi) * (x + 0.044715 x^3)), which is
  the tanh formula 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) because (1 + tanh z) / 2 = sigmoid(2 z), in
  six ops (Mul, Mul, Add, Mul, Sigmoid, Mul) with the polynomial factored as x * (a + b x^2): no x^3 tensor, whose
  range int8 quantization would otherwise have to cover.
* Gelu(x; approximate="none") (opset 20) and the Erf chain older exporters write for it, x * 0.5 * (1 + Erf(x /
  sqrt(2))) in any order of its Muls (torch's TorchScript and dynamo exporters at opset < 20, Hugging Face's
  0.5 x * (...)) -- erf has no kernel on TensorFlow Lite Micro -- become the same tanh form: an approximation,
  max |error| 4.73e-4 at x = -2.70 (GELU_TANH_MAX_ERROR rounds it up; float64 on a 1e-4 grid over [-10, 10]).
  The other erf-free candidate, x * sigmoid(1.702 x), is 43x worse (max |error| 0.0203 at x = 2.27).
* HardSigmoid(x; alpha, beta) -- exact: Clip(x * alpha + beta, 0, 1) (Clip with min/max inputs from opset 11,
  attributes before).
* HardSwish(x) (opset 14) -- exact: x * Clip(x * (1/6) + 0.5, 0, 1).
* Reshape(allowzero=1) whose shape is a constant without a 0 -- exact: the same Reshape with allowzero=0 (the
  attribute only changes what a 0 in the shape means). torch's dynamo exporter writes allowzero=1 on every Reshape.
* Reciprocal(x) -- exact: Div(1, x).
* Pow(x, 2) -- exact: Mul(x, x); Pow(x, 0.5) -- exact: Sqrt(x) (for an exponent stored as a constant).

Which ops: the ones named (`--passes decompose:Gelu:LayerNormalization`, or `decompose:all`); else, with a target
(PassOptions.operator_list, set by `--target`), the ones the target's operator list says cannot run; else all of
the above. A node whose rewrite needs something unknown (its input's type, the rank for a positive axis, a constant
exponent) is left as it is and a note says why.

Subgraphs (If/Loop/Scan bodies) are not rewritten; a note names the rewritable ops found inside them.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from onnx import ModelProto, NodeProto, TensorProto, helper, numpy_helper

from edgefit.errors import ConfigError
from edgefit.model import collector_paused, has_subgraph, node_attribute
from edgefit.passes.base import GraphEditor, Pass, PassOptions, PassResult, Progress, copy_model, node_label
from edgefit.shapes import ShapeTable, infer_symbolic_shapes

# max |gelu_tanh(x) - gelu(x)| over the reals is 4.73e-4, at x = -2.70 (float64 on a 1e-4 grid over [-10, 10]; the
# difference decays to 0 away from it); rounded up to leave room for float32 rounding.
GELU_TANH_MAX_ERROR = 4.8e-4
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_CUBIC = 0.044715

# What each rewrite does, by the op (as a runtime's list names it) that it removes.
REWRITES: dict[str, str] = {
    "Gelu": "tanh form (approximate=tanh: exact; approximate=none: |error| <= 4.8e-4)",
    "Erf": "Erf-based Gelu chain -> tanh form (|error| <= 4.8e-4); a lone Erf stays",
    "LayerNormalization": "ReduceMean/Sub/Mul/ReduceMean/Add/Sqrt/Div/Mul/Add (exact)",
    "HardSigmoid": "Mul/Add/Clip (exact)",
    "HardSwish": "Mul/Add/Clip/Mul (exact)",
    "Reshape": "allowzero=1 -> 0 where the constant shape holds no 0 (exact)",
    "Reciprocal": "Div(1, x) (exact)",
    "Pow": "exponent 2 -> Mul(x, x), 0.5 -> Sqrt(x) (exact)",
}
EXACT = frozenset({"LayerNormalization", "HardSigmoid", "HardSwish", "Reshape", "Reciprocal", "Pow"})
_FLOAT_TYPES = {name: np.dtype(name) for name in ("float32", "float16", "float64")}


@dataclass(frozen=True)
class DecomposeStats:
    nodes_before: int
    nodes_after: int
    rewritten: dict[str, int]            # per op rewritten (REWRITES key): how many nodes or chains
    chosen: tuple[str, ...]              # the ops the pass was asked to rewrite
    basis: str                           # why those: named, the target's list, or all it knows
    max_abs_error: float                 # the largest stated error of the rewrites done (0.0: all exact)
    notes: tuple[str, ...] = ()
    name: str = "decompose"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "nodes_before": self.nodes_before, "nodes_after": self.nodes_after,
                "rewritten": dict(self.rewritten), "chosen": list(self.chosen), "basis": self.basis,
                "max_abs_error": self.max_abs_error, "notes": list(self.notes)}

    def render(self, console) -> None:
        done = ", ".join(f"{op} {count}" for op, count in sorted(self.rewritten.items()))
        exactness = (f"; Gelu in tanh form: |error| <= {self.max_abs_error:.1e} per activation"
                     if self.max_abs_error else "; exact" if self.rewritten else "")
        console.print(f"  nodes {self.nodes_before} -> {self.nodes_after}; {done or 'nothing to rewrite'}{exactness}")
        console.print(f"  ops: {', '.join(self.chosen) or 'none'} ({self.basis})")


class Decompose(Pass):
    """Rewrite ops the target runtime lacks (Gelu, Erf-Gelu, LayerNormalization, HardSigmoid, HardSwish, ...)
    into standard ONNX ops it has."""

    name = "decompose"
    usage = "decompose[:OP[:OP...]|:all]"

    @classmethod
    def parse_args(cls, args: Sequence[str], spec: str) -> dict[str, Any]:
        if not args:
            return {}
        if list(args) == ["all"]:
            return {"decompose_ops": tuple(REWRITES)}
        unknown = [a for a in args if a not in REWRITES]
        if unknown:
            raise ConfigError(f"--passes {spec!r}: decompose does not rewrite {unknown[0]!r}; it rewrites "
                              f"{', '.join(REWRITES)} (or 'all')")
        return {"decompose_ops": tuple(dict.fromkeys(args))}

    def run(self, model: ModelProto, options: PassOptions, progress: Progress | None) -> PassResult:
        with collector_paused():
            chosen, basis, notes = _chosen_ops(model, options)
            return _decompose(model, chosen, basis, notes)


PASS = Decompose


def decompose(model: ModelProto, ops: Sequence[str] | None = None) -> PassResult:
    """Rewrite `ops` (REWRITES keys; None: all of them) into standard ONNX ops."""
    return Decompose().apply(model, PassOptions(decompose_ops=None if ops is None else tuple(ops)))


def ops_not_running(model: ModelProto, operator_list: str, options: PassOptions = PassOptions()) -> tuple[str, ...]:
    """The op types of `model`'s nodes that the runtime with this operator list cannot run, in graph order.

    Judged at fp32, or at int8 for a list whose runtime runs int8 only: the pass runs before quantization and
    should rewrite an op for lacking a kernel, not for its precision."""
    from edgefit.analysis.footprint import analyze
    from edgefit.devices.operators import load_operator_list
    from edgefit.devices.operators.coverage import ModelGraph, operator_coverage

    operators = load_operator_list(operator_list)
    footprint = analyze(model, **options.shape_bindings)
    precision = "int8" if operators.int8_only else "fp32"
    coverage = operator_coverage(ModelGraph(model, footprint), footprint, operators, precision)
    return tuple(dict.fromkeys(node.op_type for node in coverage.not_running))


def rewritable(ops: Sequence[str]) -> tuple[str, ...]:
    """The ops among `ops` that decompose rewrites (keeping their order)."""
    return tuple(op for op in ops if op in REWRITES)


def _chosen_ops(model: ModelProto, options: PassOptions) -> tuple[tuple[str, ...], str, list[str]]:
    if options.decompose_ops is not None:
        return options.decompose_ops, "named", []
    if options.operator_list is None:
        return tuple(REWRITES), "all it knows, no target given", []
    missing = ops_not_running(model, options.operator_list, options)
    chosen = rewritable(missing)
    others = [op for op in missing if op not in REWRITES]
    notes = [f"{options.operator_list} cannot run {', '.join(others)} either; decompose has no rewrite for "
             f"{'it' if len(others) == 1 else 'them'}"] if others else []
    return chosen, f"those {options.operator_list} cannot run", notes


# ---- the rewrites --------------------------------------------------------------------------------------

class _Rewriter:
    """Replaces nodes of one graph by formulas of standard ops, through a GraphEditor."""

    def __init__(self, editor: GraphEditor, shapes: ShapeTable, opset: int):
        self.editor, self.shapes, self.opset = editor, shapes, opset
        self.notes: list[str] = []
        self._constants: dict[tuple, str] = {}

    # -- helpers
    def float_type(self, name: str):
        """The numpy type of a float tensor; None when unknown or not a float."""
        return _FLOAT_TYPES.get(self.shapes.dtype(name) or "")

    def rank(self, name: str) -> int | None:
        dims = self.shapes.dims(name)
        return None if dims is None else len(dims)

    def constant(self, value, dtype) -> str:
        """A scalar (or small array) initializer, shared between rewrites."""
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._constants:
            self._constants[key] = self.editor.add_initializer("decompose_const", array)
        return self._constants[key]

    def value(self, name: str) -> np.ndarray | None:
        """A constant's values: an initializer or a Constant node's."""
        found = self.editor.constant(name)
        if found is not None:
            return found
        producer = self.editor.producer.get(name)
        if producer is not None and producer.op_type == "Constant" and producer.domain in ("", "ai.onnx"):
            attribute = next((a for a in producer.attribute if a.name == "value"), None)
            if attribute is not None:
                return numpy_helper.to_array(attribute.t)
            scalar = node_attribute(producer, "value_float")
            if scalar is not None:
                return np.asarray(scalar, dtype=np.float32)
        return None

    def scalar(self, name: str, x: str) -> float | None:
        """The value of a one-element constant that broadcasts against `x` without changing its shape."""
        found = self.value(name)
        if found is None or found.size != 1:
            return None
        rank = self.rank(x)
        if found.ndim and (rank is None or found.ndim > rank):
            return None
        return float(found.reshape(()))

    def emit(self, anchor: NodeProto, op: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        """Insert a node before `anchor`; its output is `output` or a fresh name."""
        label = node_label(anchor)
        out = output or self.editor.fresh_name(f"{anchor.output[0]}_{op.lower()}")
        node = helper.make_node(op, inputs, [out], name=self.editor.fresh_name(f"{label}/{op}"), **attrs)
        self.editor.insert_before(anchor, node)
        return out

    def replace(self, removed: Sequence[NodeProto]) -> None:
        for node in removed:
            self.editor.remove(node)

    def clip01(self, anchor: NodeProto, x: str, dtype, output: str | None = None) -> str | None:
        if self.opset >= 11:
            return self.emit(anchor, "Clip", [x, self.constant(0, dtype), self.constant(1, dtype)], output)
        if self.opset >= 6:
            return self.emit(anchor, "Clip", [x], output, min=0.0, max=1.0)
        return None

    # -- Gelu, as x * sigmoid(x * (a + b x^2)) with a = 2 sqrt(2/pi), b = a * 0.044715
    def gelu_tanh_form(self, anchor: NodeProto, x: str, y: str, dtype) -> None:
        a = 2 * _SQRT_2_OVER_PI
        square = self.emit(anchor, "Mul", [x, x])
        scaled = self.emit(anchor, "Mul", [square, self.constant(a * _GELU_CUBIC, dtype)])
        factor = self.emit(anchor, "Add", [scaled, self.constant(a, dtype)])
        argument = self.emit(anchor, "Mul", [x, factor])
        gate = self.emit(anchor, "Sigmoid", [argument])
        self.emit(anchor, "Mul", [x, gate], y)

    def gelu(self, node: NodeProto) -> str | None:
        dtype = self.float_type(node.input[0])
        if dtype is None:
            return "the input's type is not known"
        self.gelu_tanh_form(node, node.input[0], node.output[0], dtype)
        self.replace([node])
        return None

    def erf_gelu(self, erf: NodeProto) -> str | None:
        """Div(x, sqrt 2) | Mul(x, 1/sqrt 2) -> Erf -> Add 1 -> two Muls by x and 0.5 (any order), or one Mul
        by a tensor Mul(x, 0.5)."""
        editor = self.editor
        scale = editor.producer.get(erf.input[0])
        if scale is None or scale.op_type not in ("Div", "Mul") or len(scale.input) != 2:
            return "not the Gelu pattern (Erf's input is no x / sqrt(2))"
        x, divisor = scale.input
        expected = math.sqrt(2.0) if scale.op_type == "Div" else 1 / math.sqrt(2.0)
        value = self.scalar(divisor, x)
        if value is None or not math.isclose(value, expected, rel_tol=1e-6):
            return "not the Gelu pattern (Erf's input is no x / sqrt(2))"
        add = editor.sole_consumer(erf.output[0])
        if editor.sole_consumer(scale.output[0]) is not erf or add is None or add.op_type != "Add":
            return "not the Gelu pattern (Erf's output is no 1 + erf)"
        one = add.input[1] if add.input[0] == erf.output[0] else add.input[0]
        if self.scalar(one, x) != 1.0:
            return "not the Gelu pattern (Erf's output is no 1 + erf)"
        first = editor.sole_consumer(add.output[0])
        if first is None or first.op_type != "Mul":
            return "not the Gelu pattern (1 + erf is not multiplied)"
        other = first.input[1] if first.input[0] == add.output[0] else first.input[0]
        chain = [scale, erf, add, first]
        if other == x or self.scalar(other, x) == 0.5:   # two Muls: the second multiplies by the remaining factor
            second = editor.sole_consumer(first.output[0])
            if second is None or second.op_type != "Mul":
                return "not the Gelu pattern (one of x and 0.5 is missing)"
            last = second.input[1] if second.input[0] == first.output[0] else second.input[0]
            if not ((other == x and self.scalar(last, x) == 0.5) or (other != x and last == x)):
                return "not the Gelu pattern (one of x and 0.5 is missing)"
            chain.append(second)
        else:   # one Mul by a tensor that is x * 0.5
            half = editor.producer.get(other)
            if half is None or half.op_type != "Mul" or x not in half.input or self.scalar(
                    half.input[1] if half.input[0] == x else half.input[0], x) != 0.5:
                return "not the Gelu pattern (1 + erf is multiplied by neither x nor 0.5)"
        dtype = self.float_type(x)
        if dtype is None:
            return "the input's type is not known"
        self.gelu_tanh_form(scale, x, chain[-1].output[0], dtype)
        self.replace(chain)
        return None

    def layer_norm(self, node: NodeProto) -> str | None:
        x, y = node.input[0], node.output[0]
        if any(name and self.editor.is_read(name) for name in node.output[1:]):
            return "its Mean or InvStdDev output is used"
        dtype = self.float_type(x)
        if dtype is None:
            return "the input's type is not known"
        axis = node_attribute(node, "axis", -1)
        if axis >= 0:
            rank = self.rank(x)
            if rank is None:
                return "axis is positive and the input's rank is not known"
            axis -= rank
        axes = list(range(axis, 0))
        stash = helper.tensor_dtype_to_np_dtype(node_attribute(node, "stash_type", TensorProto.FLOAT))
        epsilon = node_attribute(node, "epsilon", 1e-5)

        def mean(value: str) -> str:
            if self.opset >= 18:
                return self.emit(node, "ReduceMean", [value, self.constant(axes, np.int64)], keepdims=1)
            return self.emit(node, "ReduceMean", [value], axes=axes, keepdims=1)

        source = x if stash == dtype else self.emit(node, "Cast", [x], to=helper.np_dtype_to_tensor_dtype(stash))
        deviation = self.emit(node, "Sub", [source, mean(source)])
        variance = mean(self.emit(node, "Mul", [deviation, deviation]))
        spread = self.emit(node, "Sqrt", [self.emit(node, "Add", [variance, self.constant(epsilon, stash)])])
        normalized = self.emit(node, "Div", [deviation, spread])
        if stash != dtype:
            normalized = self.emit(node, "Cast", [normalized], to=helper.np_dtype_to_tensor_dtype(dtype))
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        scaled = self.emit(node, "Mul", [normalized, node.input[1]], None if bias else y)
        if bias:
            self.emit(node, "Add", [scaled, bias], y)
        self.replace([node])
        return None

    def hard_sigmoid(self, node: NodeProto) -> str | None:
        x, y = node.input[0], node.output[0]
        dtype = self.float_type(x)
        if dtype is None:
            return "the input's type is not known"
        if self.opset < 6:
            return f"opset {self.opset} has no Clip with bounds"
        alpha, beta = node_attribute(node, "alpha", 0.2), node_attribute(node, "beta", 0.5)
        line = self.emit(node, "Add", [self.emit(node, "Mul", [x, self.constant(alpha, dtype)]),
                                       self.constant(beta, dtype)])
        self.clip01(node, line, dtype, y)
        self.replace([node])
        return None

    def hard_swish(self, node: NodeProto) -> str | None:
        x, y = node.input[0], node.output[0]
        dtype = self.float_type(x)
        if dtype is None:
            return "the input's type is not known"
        line = self.emit(node, "Add", [self.emit(node, "Mul", [x, self.constant(1 / 6, dtype)]),
                                       self.constant(0.5, dtype)])
        self.emit(node, "Mul", [x, self.clip01(node, line, dtype)], y)
        self.replace([node])
        return None

    def reshape(self, node: NodeProto) -> str | None:
        if node_attribute(node, "allowzero", 0) != 1:
            return ""   # nothing to do: no note
        shape = self.value(node.input[1]) if len(node.input) > 1 else None
        if shape is None:
            return "its shape is computed at run time (a 0 in it would mean something else with allowzero=0)"
        if (shape == 0).any():
            return "its shape holds a 0 (allowzero=1 makes that an empty dimension)"
        del node.attribute[:]   # allowzero is Reshape's only attribute; its default is 0
        return None

    def reciprocal(self, node: NodeProto) -> str | None:
        dtype = self.float_type(node.input[0])
        if dtype is None:
            return "the input's type is not known"
        self.emit(node, "Div", [self.constant(1, dtype), node.input[0]], node.output[0])
        self.replace([node])
        return None

    def pow(self, node: NodeProto) -> str | None:
        x, y = node.input
        if self.float_type(x) is None:
            return "the base is not a float tensor of known type"
        exponent = self.scalar(y, x)
        if exponent == 2.0:
            self.emit(node, "Mul", [x, x], node.output[0])
        elif exponent == 0.5:
            self.emit(node, "Sqrt", [x], node.output[0])
        else:
            return "only constant exponents 2 and 0.5 are rewritten"
        self.replace([node])
        return None


# The rewrite per op type (the Erf chain is found from its Erf node).
_BY_OP: dict[str, Callable[[_Rewriter, NodeProto], str | None]] = {
    "Gelu": _Rewriter.gelu, "Erf": _Rewriter.erf_gelu, "LayerNormalization": _Rewriter.layer_norm,
    "HardSigmoid": _Rewriter.hard_sigmoid, "HardSwish": _Rewriter.hard_swish, "Reshape": _Rewriter.reshape,
    "Reciprocal": _Rewriter.reciprocal, "Pow": _Rewriter.pow,
}


def _decompose(model: ModelProto, chosen: tuple[str, ...], basis: str, notes: list[str]) -> PassResult:
    result = copy_model(model)
    graph = result.graph
    nodes_before = len(graph.node)
    opset = next((o.version for o in result.opset_import if o.domain in ("", "ai.onnx")), 1)
    rewritten: Counter[str] = Counter()
    left: Counter[tuple[str, str]] = Counter()
    in_subgraphs: set[str] = set()
    approximated = False
    if chosen:
        editor = GraphEditor(graph)
        rewriter = _Rewriter(editor, infer_symbolic_shapes(result), opset)
        for node in editor.nodes():
            if has_subgraph(node):
                in_subgraphs |= _ops_inside(node) & set(chosen)
            if node.domain not in ("", "ai.onnx") or node.op_type not in chosen or not editor.alive(node):
                continue
            reason = _BY_OP[node.op_type](rewriter, node)
            if reason is None:
                rewritten[node.op_type] += 1
                approximated |= node.op_type == "Erf" or (
                    node.op_type == "Gelu" and node_attribute(node, "approximate", "none") != "tanh")
            elif reason:
                left[(node.op_type, reason)] += 1
        editor.remove_dead()
        editor.commit()
    notes = notes + [f"{count} {op} left as {'it is' if count == 1 else 'they are'}: {reason}"
                     for (op, reason), count in sorted(left.items())]
    if in_subgraphs:
        notes.append(f"{', '.join(sorted(in_subgraphs))} inside If/Loop/Scan bodies not rewritten "
                     "(decompose edits the main graph only)")
    stats = DecomposeStats(nodes_before, len(graph.node), dict(sorted(rewritten.items())), chosen, basis,
                           GELU_TANH_MAX_ERROR if approximated else 0.0, tuple(notes))
    return PassResult(result, stats)


def _ops_inside(node: NodeProto) -> set[str]:
    found: set[str] = set()
    for attribute in node.attribute:
        for sub in ([attribute.g] if attribute.HasField("g") else list(attribute.graphs)):
            for inner in sub.node:
                found.add(inner.op_type)
                if has_subgraph(inner):
                    found |= _ops_inside(inner)
    return found
