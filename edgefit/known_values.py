"""Values known before the model runs: constants, input values the user gives, and tensor shapes.

onnx shape inference carries values only through the few ops that have a data-propagation function (Shape,
Gather, Concat, Slice, arithmetic on shapes ...) and never reports them. Exporters compute pads, Reshape targets
and `If` conditions through ConstantOfShape, Transpose, Equal, Not and the like (Silero VAD's padding and its
"squeeze only if this axis is 1" branches), so shapes downstream of them and the branch an `If` takes stay
unknown. Here every node whose inputs have known values is evaluated with onnx's reference implementation (one
small node at a time), Shape and Size read resolved shapes, and an `If` whose condition is known passes on the
values of the branch it takes. edgefit.shapes folds the values back into the copy it infers shapes on.
"""

from __future__ import annotations

import math
from collections import ChainMap
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from onnx import GraphProto, NodeProto, TensorProto, numpy_helper

from edgefit.model import (
    has_subgraph,
    node_attribute,
    node_subgraphs,
    subgraph_outer_reads,
    subgraph_scope,
)

# Values are computed and kept only up to this many elements: shapes, pads, indices and conditions are tiny, and
# a large tensor computable from constants is a weight, which no shape depends on.
MAX_VALUE_ELEMENTS = 4096
# Ops whose output is a draw, not a function of their inputs.
_RANDOM = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Bernoulli",
                     "Multinomial"})


@dataclass(frozen=True)
class BranchChoice:
    """The branch an `If` takes for the given inputs, and what decided it."""

    branch: str                       # "then_branch" or "else_branch"
    inputs: tuple[str, ...]           # graph inputs whose given values the condition depends on
    from_shapes: bool                 # the condition depends on tensor shapes


@dataclass(frozen=True)
class ValueSource:
    """What a known value was computed from besides constants."""

    inputs: frozenset[str] = frozenset()   # inputs whose given values it depends on
    from_shapes: bool = False              # it depends on tensor shapes

    def __or__(self, other: ValueSource) -> ValueSource:
        return ValueSource(self.inputs | other.inputs, self.from_shapes or other.from_shapes)


@dataclass
class KnownValues:
    values: dict[str, np.ndarray] = field(default_factory=dict)      # tensor name -> value (any scope)
    # What each value came from; a Constant folded in from an earlier call keeps the source it had then.
    sources: dict[str, ValueSource] = field(default_factory=dict)
    choices: dict[tuple[str, str], BranchChoice] = field(default_factory=dict)   # (scope, If's first output)
    # Tensor without a known value -> the graph inputs whose data it follows from (none: a random op, a shape
    # that is not known). What tells a user which --input-value would decide an If.
    reads: dict[str, frozenset[str]] = field(default_factory=dict)
    # (scope, If's first output) of each If whose condition is not known -> the inputs its condition reads.
    undecided: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)


def known_values(graph: GraphProto, opset: int, shape_of: Callable[[str, str], tuple[int, ...] | None],
                 input_values: dict[str, np.ndarray], sources: dict[str, ValueSource] | None = None) -> KnownValues:
    """The values computable in `graph` and its subgraphs, and the branch of every `If` whose condition is known.

    `shape_of(name, scope)`: a tensor's resolved shape (None unless every dimension is a number). `sources`: the
    sources of an earlier call's values, which the caller has folded into `graph` as Constant nodes.
    """
    found = KnownValues(sources=dict(sources or {}))
    weights = {tensor.name for tensor in graph.initializer}
    found.reads.update({value.name: frozenset({value.name}) for value in graph.input
                        if value.name not in weights and value.name not in input_values})
    env: ChainMap = ChainMap({name: (value, ValueSource(frozenset({name}))) for name, value in input_values.items()})
    _walk(graph, "", env, opset, shape_of, found)
    return found


def _walk(graph: GraphProto, scope: str, env: ChainMap, opset: int, shape_of, found: KnownValues) -> None:
    for tensor in graph.initializer:
        if math.prod(tensor.dims) <= MAX_VALUE_ELEMENTS and tensor.data_location != TensorProto.EXTERNAL:
            env[tensor.name] = (numpy_helper.to_array(tensor), ValueSource())
    for position, node in enumerate(graph.node):
        if node.domain not in ("", "ai.onnx"):
            pass
        elif node.op_type in ("If", "Loop", "Scan"):
            _control_flow(node, position, scope, env, opset, shape_of, found)
        elif not has_subgraph(node):   # SequenceMap and the like: not evaluated
            outputs = _evaluate(node, scope, env, opset, shape_of, found.sources)
            for name, (value, source) in outputs.items():
                env[name] = (value, source)
                found.values[name] = value
                found.sources[name] = source
        _note_reads(node, node.output, env, found)


def _note_reads(node: NodeProto, names, env: ChainMap, found: KnownValues) -> None:
    """Record, for each of `names` (outputs of `node`, or its body's inputs) without a known value, the graph
    inputs whose data the node reads: through its inputs and what its subgraphs read from outer scopes."""
    unknown = [name for name in names if name and name not in env]
    if unknown:
        read = frozenset().union(*(found.reads.get(name, frozenset())
                                   for name in (*node.input, *subgraph_outer_reads(node)) if name))
        found.reads.update(dict.fromkeys(unknown, read))


def _control_flow(node: NodeProto, position: int, scope: str, env: ChainMap, opset: int, shape_of,
                  found: KnownValues) -> None:
    """Walk the subgraphs (their own constant chains have values too); an If whose condition is known walks only
    the branch it takes and passes that branch's output values on."""
    condition = env.get(node.input[0]) if node.op_type == "If" and node.input and node.input[0] else None
    if condition is not None and condition[0].size == 1:
        branch = "then_branch" if bool(condition[0].reshape(-1)[0]) else "else_branch"
        found.choices[(scope, node.output[0])] = BranchChoice(branch, tuple(sorted(condition[1].inputs)),
                                                             condition[1].from_shapes)
        body = node_attribute(node, branch)
        inner = env.new_child()
        _walk(body, subgraph_scope(scope, position, node, branch), inner, opset, shape_of, found)
        for outer_name, result in zip(node.output, body.output):
            known = inner.get(result.name)
            if outer_name and known is not None:
                env[outer_name] = (known[0], known[1] | condition[1])
                found.values[outer_name] = known[0]
                found.sources[outer_name] = known[1] | condition[1]
        return
    if node.op_type == "If" and node.input and node.input[0]:
        found.undecided[(scope, node.output[0])] = tuple(sorted(found.reads.get(node.input[0], frozenset())))
    for attr_name, body in node_subgraphs(node):
        _note_reads(node, [value.name for value in body.input], env, found)   # Loop/Scan state, scanned slices
        _walk(body, subgraph_scope(scope, position, node, attr_name), env.new_child(), opset, shape_of, found)


def _evaluate(node: NodeProto, scope: str, env: ChainMap, opset: int, shape_of,
              sources: dict[str, ValueSource]) -> dict[str, tuple[np.ndarray, ValueSource]]:
    op = node.op_type
    if op == "Constant":
        value = _constant(node)
        if value is None or not node.output:
            return {}
        return {node.output[0]: (value, sources.get(node.output[0], ValueSource()))}
    if op in ("Shape", "Size") and node.input and node.output:
        shape = shape_of(node.input[0], scope)
        if shape is None:
            return {}
        if op == "Size":
            return {node.output[0]: (np.array(math.prod(shape), np.int64), ValueSource(from_shapes=True))}
        start, end = node_attribute(node, "start", 0), node_attribute(node, "end", None)
        return {node.output[0]: (np.array(shape[start:end], np.int64), ValueSource(from_shapes=True))}
    inputs = [env.get(name) if name else None for name in node.input]
    if op in _RANDOM or not node.input or any(name and known is None for name, known in zip(node.input, inputs)):
        return {}
    # The outputs must be known to be small before anything is computed (Expand or ConstantOfShape of a large
    # shape would fill memory).
    for name in node.output:
        shape = shape_of(name, scope) if name else ()
        if shape is None or math.prod(shape) > MAX_VALUE_ELEMENTS:
            return {}
    from onnx.reference import ReferenceEvaluator

    feeds = {name: known[0] for name, known in zip(node.input, inputs) if name}
    try:
        results = ReferenceEvaluator(node, opsets={"": opset}).run(None, feeds)
    except Exception:  # noqa: BLE001 - an op the reference implementation lacks or rejects: the value stays unknown
        return {}
    source = ValueSource()
    for known in inputs:
        if known is not None:
            source = source | known[1]
    return {name: (np.asarray(value), source) for name, value in zip(node.output, results)
            if name and isinstance(value, np.ndarray)}


def _constant(node: NodeProto) -> np.ndarray | None:
    for attr in node.attribute:
        if attr.name == "value" and attr.t.data_location != TensorProto.EXTERNAL:
            return numpy_helper.to_array(attr.t) if math.prod(attr.t.dims) <= MAX_VALUE_ELEMENTS else None
        if attr.name in ("value_int", "value_float"):
            return np.array(attr.i, np.int64) if attr.name == "value_int" else np.array(attr.f, np.float32)
        if attr.name in ("value_ints", "value_floats"):
            return (np.array(list(attr.ints), np.int64) if attr.name == "value_ints"
                    else np.array(list(attr.floats), np.float32))
    return None


def constant_node(name: str, value: np.ndarray) -> NodeProto:
    """A Constant node holding `value` as `name` (how a computed value is folded into a graph)."""
    from onnx import helper

    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name))
