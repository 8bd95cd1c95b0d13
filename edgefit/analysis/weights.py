"""Which tensors are weights, how many parameters they hold and how many bytes the model stores for them.

A weight is a constant tensor that a computing node consumes: an initializer, a Constant node's value, or
anything computed from constants alone (ConstantOfShape, Cast, Reshape, DequantizeLinear ... of constants).
Nodes that only compute constants are folded away here: they are not layers and their outputs are not
activations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from onnx import AttributeProto, GraphProto, NodeProto, SparseTensorProto

from edgefit.analysis.dtypes import FLOAT_DTYPES, QUANTIZED_DTYPES, dtype_name, tensor_bytes
from edgefit.model import GraphIndex, initializer_names
from edgefit.shapes import TensorInfo, constant_node_info

# Ops whose outputs differ from run to run: never constant even when all their inputs are.
NONDETERMINISTIC_OPS = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                     "Bernoulli"}
# Constant-only ops that expand a small stored description into a large tensor: a deployed model holds the
# expanded tensor, so that is what weight bytes count for them.
_GENERATORS = {"ConstantOfShape", "Expand", "Tile", "Range", "EyeLike", "Resize", "Upsample", "Pad", "OneHot"}
# Inputs that configure an op rather than hold learned values: quantization scales and zero points, clip
# bounds, padding values, resize scales, dropout ratios, one-hot values, range bounds.
_CONFIG_SLOTS = {
    "QuantizeLinear": {1, 2}, "DequantizeLinear": {1, 2}, "DynamicQuantizeLinear": set(),
    "QLinearConv": {1, 2, 4, 5, 6, 7}, "QLinearMatMul": {1, 2, 4, 5, 6, 7},
    "ConvInteger": {2, 3}, "MatMulInteger": {2, 3},
    "Clip": {1, 2}, "Pad": {1, 2, 3}, "Resize": {1, 2, 3}, "Upsample": {1}, "Dropout": {1, 2}, "OneHot": {1, 2},
    "Range": {0, 1, 2}, "NonMaxSuppression": {2, 3, 4},
    # Initial states of recurrent cells: zeros (or a caller's state), not learned.
    "LSTM": {5, 6}, "GRU": {5}, "RNN": {5},
    # onnxruntime's contrib ops (com.microsoft), as its quantizer and optimizer write them.
    "QLinearAdd": {1, 2, 4, 5, 6, 7}, "QLinearMul": {1, 2, 4, 5, 6, 7}, "QGemm": {1, 2, 4, 5, 7, 8},
    "QLinearSigmoid": {1, 2, 3, 4}, "QLinearLeakyRelu": {1, 2, 3, 4}, "QLinearSoftmax": {1, 2, 3, 4},
    "QLinearGlobalAveragePool": {1, 2, 3, 4}, "QLinearAveragePool": {1, 2, 3, 4},
    "MatMulIntegerToFloat": {2, 3, 4, 5}, "DynamicQuantizeMatMul": {2, 3}, "DynamicQuantizeLSTM": {5, 6, 8, 9, 10, 11},
}


def _variadic_config_slot(op_type: str, slot: int) -> bool:
    """Config slots of ops with variadic inputs: QLinearConcat (Y scale, Y zero point, then (X, scale, zero point)
    per input) and Loop (trip count, condition, then the initial values of its loop-carried state)."""
    if op_type == "QLinearConcat":
        return slot < 2 or (slot - 2) % 3 != 0
    return op_type == "Loop"


# Elementwise ops whose one-value constant operand is a hyperparameter, not a learned tensor: exporters write
# LayerNorm, GELU and attention as formulas with constants such as an epsilon, 0.5, 0.044715 or 1/sqrt(d).
_SCALAR_CONFIG_OPS = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mod", "Where", "Equal", "Greater", "Less",
                      "GreaterOrEqual", "LessOrEqual"}
# Input slots that hold learned weights wherever these ops appear: a graph input there means a model exported
# without its parameters.
WEIGHT_SLOTS = {
    "Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (1, 2), "BatchNormalization": (1, 2, 3, 4),
    "LayerNormalization": (1, 2), "InstanceNormalization": (1, 2), "GroupNormalization": (1, 2),
    "LSTM": (1, 2, 3), "GRU": (1, 2, 3), "RNN": (1, 2, 3), "PRelu": (1,),
}
# The layers that multiply by a weight matrix or kernel: what prune thins and quantize turns into int8 layers.
LINEAR_LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# Integer bias inputs of integer-arithmetic ops are parameters although int32.
_INT32_BIAS_SLOTS = {"QLinearConv": {8}, "QGemm": {6}}


def is_parameter(node: NodeProto, slot: int, dtype: str, elements: int | None = None) -> bool:
    """Does the constant at input `slot` of `node` hold learned values (as opposed to shapes, axes, scales)?"""
    if slot in _CONFIG_SLOTS.get(node.op_type, ()) or _variadic_config_slot(node.op_type, slot):
        return False
    if elements == 1 and node.op_type in _SCALAR_CONFIG_OPS:
        return False
    if dtype in FLOAT_DTYPES or dtype in QUANTIZED_DTYPES:
        return True
    return dtype == "int32" and slot in _INT32_BIAS_SLOTS.get(node.op_type, ())


@dataclass
class ConstantView:
    """Constant tensors of one graph and the nodes that only compute constants."""

    constants: set[str]
    folded_nodes: set[int]                   # node indices whose outputs are all constant
    producer: dict[str, int]
    stored: dict[str, str] = field(default_factory=dict)   # constant name -> how it is held: "initializer"/"node"
    sparse: dict[str, SparseTensorProto] = field(default_factory=dict)   # constants stored in sparse form


def constant_view(graph: GraphProto, index: GraphIndex, outer_constants: Iterable[str] = ()) -> ConstantView:
    real_inputs = {i.name for i in graph.input} - initializer_names(graph)
    constants = set(outer_constants) - real_inputs
    stored: dict[str, str] = {}
    sparse = {s.values.name: s for s in graph.sparse_initializer}
    for tensor in [*graph.initializer, *(s.values for s in graph.sparse_initializer)]:
        constants.add(tensor.name)
        stored[tensor.name] = "initializer"
    folded: set[int] = set()
    nodes, reads, outputs, with_subgraphs = index.nodes, index.reads, index.outputs, index.with_subgraphs
    for i in index.order:
        node = nodes[i]
        op_type = node.op_type
        if op_type == "Constant" and node.domain in ("", "ai.onnx"):
            constants.update(outputs[i])
            stored.update({o: "node" for o in outputs[i]})
            sparse.update({outputs[i][0]: a.sparse_tensor for a in node.attribute if a.name == "sparse_value"})
            folded.add(i)
        elif (reads[i] and op_type not in NONDETERMINISTIC_OPS and i not in with_subgraphs
              and all(name in constants for name in reads[i])):
            constants.update(o for o in outputs[i] if o)
            folded.add(i)
    return ConstantView(constants, folded, index.producer, stored, sparse)


# Folded ops whose output holds every value of their first input and nothing else, re-typed or re-arranged: a
# weight read through them (a tied embedding transposed for the output layer) is the same parameters.
_SAME_VALUES = {"Cast", "CastLike", "DequantizeLinear", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten",
                "Identity"}
# Folded ops whose output holds values of their first input (some or all): they keep its storage dtype.
_VALUE_PRESERVING = _SAME_VALUES | {"Slice", "Gather", "Concat", "Split"}
# The same parameters also when requantized: onnxruntime's QDQ quantizer writes Q(Transpose(DQ(int8 weight))) for
# a tied embedding's output layer. (Not a storage dtype: a float weight behind QuantizeLinear deploys as int8.)
_SAME_PARAMETERS = _SAME_VALUES | {"QuantizeLinear"}


Lookup = Callable[[str], TensorInfo | None]   # a tensor's info as seen from the graph being walked


def _source(graph: GraphProto, view: ConstantView, name: str, through: set[str]) -> str:
    """The constant `name` is computed from by folded ops in `through` (following their first input)."""
    current = name
    while True:
        producer = view.producer.get(current)
        node = graph.node[producer] if producer is not None else None
        if (node is None or view.stored.get(current) or node.op_type not in through or not node.input
                or not node.input[0] or node.input[0] not in view.constants):
            return current
        current = node.input[0]


def _stored_dtype(graph: GraphProto, view: ConstantView, lookup: Lookup, name: str) -> str | None:
    """The dtype a weight is stored in: int8 for DequantizeLinear(int8), float16 for Cast(float16 -> float32)."""
    current = _source(graph, view, name, _VALUE_PRESERVING)
    if current in view.sparse:
        return dtype_name(view.sparse[current].values.data_type)
    info = lookup(current)
    return info.dtype if info is not None else None


def _scales_a_dynamic_quantization(graph: GraphProto, view: ConstantView, node: NodeProto) -> bool:
    """A Mul of the activation scale a DynamicQuantizeLinear computes: its constant operand is the weight's
    (per-channel) quantization scale, as onnxruntime's quantize_dynamic writes MatMulInteger layers."""
    if node.op_type != "Mul":
        return False
    for name in node.input:
        producer = view.producer.get(name)
        if producer is not None and graph.node[producer].op_type == "DynamicQuantizeLinear" and (
                list(graph.node[producer].output).index(name) == 1):
            return True
    return False


@dataclass
class WeightTally:
    """Running totals of weights across the main graph and its subgraphs; each tensor counted once."""

    params_by_dtype: dict[str, int] = field(default_factory=dict)
    bytes_by_dtype: dict[str, int] = field(default_factory=dict)
    counted_params: set[str] = field(default_factory=set)
    counted_storage: set[str] = field(default_factory=set)
    unknowns: list[str] = field(default_factory=list)

    def add_consumer(self, graph: GraphProto, view: ConstantView, lookup: Lookup, node: NodeProto,
                     inputs: tuple[str, ...], reads: tuple[str, ...]) -> tuple[int, int]:
        """Count the weights a computing node reads; returns the (params, bytes) newly attributed to it.

        `inputs` is node.input as stored; `reads` adds the names the node's subgraphs read from this scope.
        """
        constants = view.constants
        if not any(name in constants for name in reads):
            return 0, 0
        params = stored = 0
        # Slots follow node.input, empty optional inputs included, so that is_parameter sees true positions;
        # names a node's subgraphs read from this scope come after, at no slot (never a parameter here).
        implicit = [n for n in reads if n not in inputs] if len(reads) > len(inputs) or "" in inputs else []
        for slot, name in enumerate(inputs + tuple(implicit)):
            if not name or name not in constants:
                continue
            info = lookup(name)
            if info is None or info.shape is None:
                self.unknowns.append(f"weight {name!r} of node {node.name or node.op_type!r} has an unknown shape")
                continue
            source = _source(graph, view, name, _SAME_PARAMETERS)
            if (source not in self.counted_params and slot < len(inputs)
                    and is_parameter(node, slot, info.dtype, info.elements)
                    and not _scales_a_dynamic_quantization(graph, view, node)):
                self.counted_params.add(source)
                dtype = _stored_dtype(graph, view, lookup, name) or info.dtype
                self.params_by_dtype[dtype] = self.params_by_dtype.get(dtype, 0) + info.elements
                params += info.elements
            if name not in self.counted_storage:
                stored += self._count_storage(graph, view, lookup, name)
        return params, stored

    def add_attribute_weights(self, node: NodeProto) -> tuple[int, int]:
        """Weights a classical-ML op (ai.onnx.ml: linear models, SVMs, tree ensembles, encoders) holds in its
        attributes; returns (params, bytes). Float arrays (coefficients, support vectors, thresholds, leaf values)
        are parameters; every array attribute (also node ids, class labels, category strings) is stored data."""
        params = stored = 0
        for attr in node.attribute:
            if attr.type == AttributeProto.FLOATS:
                entries = [("float32", len(attr.floats), 4 * len(attr.floats))]
            elif attr.type == AttributeProto.INTS:
                entries = [("int64", 0, 8 * len(attr.ints))]
            elif attr.type == AttributeProto.STRINGS:
                entries = [("string", 0, sum(len(text) for text in attr.strings))]
            elif attr.type in (AttributeProto.TENSOR, AttributeProto.TENSORS):
                tensors = [attr.t] if attr.type == AttributeProto.TENSOR else list(attr.tensors)
                entries = []
                for tensor in tensors:
                    dtype, elements = dtype_name(tensor.data_type), math.prod(tensor.dims)
                    entries.append((dtype, elements if dtype in FLOAT_DTYPES else 0,
                                    tensor_bytes(elements, dtype) or 0))
            else:
                continue
            for dtype, learned, size in entries:
                if learned:
                    self.params_by_dtype[dtype] = self.params_by_dtype.get(dtype, 0) + learned
                if size:
                    self.bytes_by_dtype[dtype] = self.bytes_by_dtype.get(dtype, 0) + size
                params += learned
                stored += size
        return params, stored

    def _count_storage(self, graph: GraphProto, view: ConstantView, lookup: Lookup, name: str) -> int:
        """Bytes of the stored tensors a constant is computed from (walking back through folded nodes)."""
        total = 0
        pending = [name]
        while pending:
            current = pending.pop()
            if current in self.counted_storage:
                continue
            self.counted_storage.add(current)
            producer = view.producer.get(current)
            node = graph.node[producer] if producer is not None else None
            if current in view.sparse:   # stored as values + indices, not as the dense tensor it stands for
                for part in (view.sparse[current].values, view.sparse[current].indices):
                    dtype = dtype_name(part.data_type)
                    size = tensor_bytes(math.prod(part.dims), dtype) or 0
                    self.bytes_by_dtype[dtype] = self.bytes_by_dtype.get(dtype, 0) + size
                    total += size
            elif node is None or view.stored.get(current) or node.op_type in _GENERATORS:
                info = lookup(current)
                if info is None and node is not None and node.op_type == "Constant":
                    info = constant_node_info(node)
                if info is None or info.shape is None:
                    self.unknowns.append(f"stored size of constant {current!r} is unknown")
                    continue
                size = info.nbytes or 0
                self.bytes_by_dtype[info.dtype] = self.bytes_by_dtype.get(info.dtype, 0) + size
                total += size
            else:
                pending.extend(n for n in node.input if n)
        return total
