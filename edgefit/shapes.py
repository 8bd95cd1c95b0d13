"""Resolving every tensor's shape for the user's input shapes.

onnx shape inference (with data propagation) does the work; where it leaves unknowns in the main graph and the
weights are in memory, a real onnxruntime run on synthetic inputs of the resolved shapes fills them in.
"""

from __future__ import annotations

import ast
import functools
import math
import operator
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import GraphProto, ModelProto, TensorProto, numpy_helper

from edgefit.analysis.dtypes import dtype_code, dtype_name, tensor_bytes
from edgefit.errors import ShapeError
from edgefit.known_values import BranchChoice, constant_node, known_values
from edgefit.units import MAX_DIM, parse_dims, parse_input_shapes  # noqa: F401 - parsers re-exported
from edgefit.model import (STUB_ABOVE_ELEMENTS, GraphIndex, external_data_bytes, has_subgraph, index_graph,
                           initializer_names, iter_graphs, metadata_only_copy, node_attribute, subgraph_scope)

# Synthetic inputs for the onnxruntime fallback are allocated for real; above this they would cost more
# memory than the analysis is worth, so the fallback is skipped and the shapes stay unknown.
_FALLBACK_MAX_INPUT_BYTES = 256 * 2**20
# External weights are read into memory for that run only up to this size.
_FALLBACK_MAX_EXTERNAL_BYTES = 2**30
# A Loop whose condition never turns false on synthetic inputs (or a huge trip count) would run forever.
_FALLBACK_TIMEOUT_S = 10.0


Dims = tuple[int | str | None, ...]   # a dimension is a number, a symbol (dim_param, maybe "") or unknown (None)


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    dims: Dims | None   # None: unknown rank

    @functools.cached_property   # asked for many times per tensor; instances are shared and immutable
    def shape(self) -> tuple[int, ...] | None:
        """The concrete shape; None unless the rank and every dimension are numbers."""
        dims = self.dims
        return dims if dims is not None and all(type(d) is int for d in dims) else None

    @functools.cached_property
    def elements(self) -> int | None:
        return None if self.shape is None else math.prod(self.shape)

    @functools.cached_property
    def nbytes(self) -> int | None:
        """Storage bytes; None when the shape is unknown or the type has no fixed size (strings)."""
        return None if self.shape is None else tensor_bytes(self.elements, self.dtype)


@dataclass
class ShapeTable:
    """Per graph (keyed by scope path, "" for the main graph): tensor name -> TensorInfo.

    resolve_shapes fills it for bound input shapes (analysis needs numbers); infer_symbolic_shapes for the model
    as it is, symbols kept (passes rewrite a graph for every input shape it may be given)."""

    scopes: dict[str, dict[str, TensorInfo]]
    parents: dict[str, str]           # scope -> enclosing scope
    inputs: dict[str, list[int]]      # the shapes bound to the graph inputs; empty for a symbolic table
    warnings: list[str] = field(default_factory=list)
    source: str = "onnx shape inference"
    non_tensors: set[str] = field(default_factory=set)   # sequences, maps, optionals: no shape to resolve
    # The branch each `If` whose condition is known before run time takes, by (scope, the If's first output).
    branch_choices: dict[tuple[str, str], BranchChoice] = field(default_factory=dict)
    # The graph inputs whose data decide each other `If`'s condition (same keys): which --input-value to give.
    condition_inputs: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)

    def lookup(self, name: str, scope: str = "") -> TensorInfo | None:
        """Find `name` in `scope` or the enclosing scopes (subgraphs read outer tensors by name)."""
        while True:
            info = self.scopes.get(scope, {}).get(name)
            if info is not None or not scope:
                return info
            scope = self.parents.get(scope, "")

    def dims(self, name: str, scope: str = "") -> Dims | None:
        info = self.lookup(name, scope)
        return None if info is None else info.dims

    def dtype(self, name: str, scope: str = "") -> str | None:
        info = self.lookup(name, scope)
        return None if info is None else info.dtype


def real_inputs(graph: GraphProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are not initializers (old IR versions list weights as inputs too)."""
    weights = initializer_names(graph)
    return [i for i in graph.input if i.name not in weights]


# A 1-D integer input that gives the rank of a node's output (Expand's or Reshape's shape, ConstantOfShape's
# input) is a list of dimensions: onnx shape inference allocates one entry per element, so a declared length of
# 2**62 would exhaust memory before any figure is reported. No runtime supports ranks anywhere near this.
MAX_RANK = 1024
_RANK_SLOTS = {("Expand", 1), ("Reshape", 1), ("ConstantOfShape", 0)}
# Names exporters give a leading batch dimension (PyTorch: batch_size, N; TensorFlow converters: unk__12, None;
# torch.export: s0; Paddle and old converters: -1 or no name at all).
_BATCH_NAME = re.compile(r"batch|^(n|b|bs|none|s0|dynamic\w*|unk__\d+|\?)$", re.IGNORECASE)
# metadata_props keys in which exporters record the input image size the model was trained and exported at.
_IMAGE_SIZE_KEYS = {"imgsz": "Ultralytics export", "image_size": "exporter metadata",
                    "img_size": "exporter metadata", "input_size": "exporter metadata"}


def _check_sizes(pinned: dict[str, list[int]], dims: dict[str, int], assume_dims: int | None) -> None:
    """The same limits for library callers as for the command line (which parses with parse_input_shapes)."""
    for name, shape in pinned.items():
        if any(type(size) is not int or not 1 <= size <= MAX_DIM for size in shape):
            raise ShapeError(f"--input-shape {name or '(the input)'}={'x'.join(map(str, shape))}: dimensions must "
                             f"be positive integers of at most 2**62")
    for name, size in dims.items():
        if type(size) is not int or not 1 <= size <= MAX_DIM:
            raise ShapeError(f"--dim {name}={size}: the value must be a positive integer of at most 2**62")
    if assume_dims is not None and (type(assume_dims) is not int or not 1 <= assume_dims <= MAX_DIM):
        raise ShapeError(f"--assume-dims {assume_dims}: expected a positive integer")


def _metadata_image_size(proto: ModelProto) -> tuple[tuple[int, int], str] | None:
    """(height, width) an exporter recorded in the model's metadata (Ultralytics writes imgsz: [640, 640])."""
    for entry in proto.metadata_props:
        if entry.key not in _IMAGE_SIZE_KEYS or len(entry.value) > 64:
            continue
        try:
            value = ast.literal_eval(entry.value.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            continue
        if type(value) is int:
            value = [value, value]
        if isinstance(value, (list, tuple)) and len(value) in (2, 3) and all(type(v) is int for v in value):
            height, width = value[-2:]
            if 1 <= height <= MAX_DIM and 1 <= width <= MAX_DIM:
                return (height, width), f"{entry.key}={entry.value.strip()} ({_IMAGE_SIZE_KEYS[entry.key]})"
    return None


def _spatial_axes(dims: Dims) -> tuple[int, int] | None:
    """The height and width axes of a rank-4 image input: NCHW when axis 1 holds 1, 3 or 4 channels, else NHWC."""
    if len(dims) != 4:
        return None
    channels = [d if type(d) is int else None for d in dims]
    if channels[1] in (1, 3, 4):
        return 2, 3
    if channels[3] in (1, 3, 4):
        return 1, 2
    return None


def _is_batch_like(axis: int, dim: int | str | None) -> bool:
    return axis == 0 and (not isinstance(dim, str) or bool(_BATCH_NAME.search(dim)))


def _param(dim: int | str | None) -> str:
    """The dimension's symbol, "" when it has none."""
    return dim if isinstance(dim, str) else ""


def _bind_input_shapes(proto: ModelProto, pinned: dict[str, list[int]], dims: dict[str, int],
                       warnings: list[str], assume_dims: int | None = None) -> dict[str, list[int]]:
    """Each input's shape: pinned by the user, else declared, with symbolic dimensions from --dim, arithmetic on
    them, the exporter's metadata (image size) or, for a batch-like leading axis, 1. Any other unbound dimension
    is an error naming what to pass -- unless `assume_dims` gives them all one value (a warning says so)."""
    graph = proto.graph
    _check_sizes(pinned, dims, assume_dims)
    inputs = real_inputs(graph)
    names = [i.name for i in inputs]
    if "" in pinned:
        if len(inputs) != 1:
            raise ShapeError(f"--input-shape without NAME= needs a model with one input; this one has {names}")
        if names[0] in pinned and list(pinned[names[0]]) != list(pinned[""]):
            raise ShapeError(f"--input-shape gives {names[0]!r} two shapes: "
                             f"{'x'.join(map(str, pinned[names[0]]))} and {'x'.join(map(str, pinned['']))}")
        pinned = {**{k: v for k, v in pinned.items() if k}, names[0]: pinned[""]}
    for name in pinned:
        if name not in names:
            raise ShapeError(f"unknown input {name!r} in --input-shape; the model's inputs are {names}")
    declared = {i.name: declared_info(i) for i in inputs}
    declared_params = {d for info in declared.values() if info is not None for d in info.dims or ()
                       if isinstance(d, str)}
    for name in dims:
        if name not in declared_params:
            warnings.append(f"--dim {name} matches no symbolic dimension of the model's inputs "
                            f"({', '.join(sorted(declared_params)) or 'it has none'})")
    image_size = _metadata_image_size(proto)
    batches: dict[str, list[str]] = {}
    from_metadata: list[str] = []
    assumed: dict[str, list[str]] = {}
    unbound: list[tuple[str, Dims, list[int | None]]] = []
    resolved: dict[str, list[int]] = {}
    for value in inputs:
        info = declared[value.name]
        if info is None or info is _NOT_A_TENSOR:
            raise ShapeError(f"input {value.name!r} is not a tensor (sequence/map/optional inputs are not supported)")
        if value.name in pinned:
            shape = pinned[value.name]
            if info.dims is not None and len(info.dims) != len(shape):
                raise ShapeError(f"--input-shape {value.name}: rank {len(shape)} given, the model declares rank "
                                 f"{len(info.dims)}")
            for axis, (dim, given) in enumerate(zip(info.dims or (), shape)):
                if type(dim) is int and dim >= 0 and dim != given:
                    warnings.append(f"input {value.name!r} axis {axis} is fixed at {dim} in the model; "
                                    f"using {given} from --input-shape")
            resolved[value.name] = list(shape)
            continue
        if info.dims is None:
            raise ShapeError(f"input {value.name!r} has no declared shape; pass --input-shape "
                             f"{value.name}=1x3x224x224 (its real dimensions)")
        spatial = _spatial_axes(info.dims) if image_size else None
        shape: list[int | None] = []
        for axis, dim in enumerate(info.dims):
            if type(dim) is int and dim >= 0:   # Paddle and others write -1 for "dynamic"
                if dim > MAX_DIM:
                    raise ShapeError(f"input {value.name!r} declares axis {axis} of size {dim}, beyond "
                                     f"2**62; pass its real shape with --input-shape {value.name}=...")
                size = dim
            elif isinstance(dim, str) and dim in dims:
                size = dims[dim]
            elif isinstance(dim, str) and (size := _dim_expression(dim, dims, declared_params,
                                                                   assume_dims)) is not None:
                pass
            elif spatial and axis in spatial:
                size = image_size[0][spatial.index(axis)]
                from_metadata.append(f"{value.name}[{axis}]")
            elif _is_batch_like(axis, dim):
                size = 1
                batches.setdefault(_param(dim) or "axis 0", []).append(value.name)
            elif assume_dims is not None:
                size = assume_dims
                assumed.setdefault(_param(dim) or f"axis {axis} (unnamed)", []).append(value.name)
            else:
                size = None
            shape.append(size)
        if None in shape:
            unbound.append((value.name, info.dims, shape))
        else:
            resolved[value.name] = shape
    if unbound:
        raise ShapeError(_unbound_message(unbound))
    if batches:
        described = ", ".join(f"{label} of {', '.join(dict.fromkeys(owners))}" for label, owners in batches.items())
        warnings.append(f"batch dimension set to 1 ({described}); bind it with --dim NAME=VALUE or --input-shape")
    if from_metadata:
        warnings.append(f"image height and width of {', '.join(dict.fromkeys(f.split('[')[0] for f in from_metadata))}"
                        f" taken from the model's metadata {image_size[1]}; override with --input-shape or --dim")
    if assumed:
        described = ", ".join(f"{label} (in {', '.join(dict.fromkeys(owners))})" for label, owners in assumed.items())
        warnings.append(f"unbound dimensions set to {assume_dims} by --assume-dims: {described}; the figures hold "
                        f"for that size only")
    return resolved


def input_value_arrays(graph: GraphProto, given: dict[str, list[float]], pinned: dict[str, list[int]],
                        ) -> tuple[dict[str, np.ndarray], dict[str, list[int]]]:
    """The values given for inputs as arrays of the input's element type and shape: one number fills a scalar (or
    a tensor of ones along each declared axis), N numbers a 1-D input. Also the shapes they pin."""
    declared = {value.name: value for value in real_inputs(graph)}
    arrays: dict[str, np.ndarray] = {}
    for name, numbers in given.items():
        if name not in declared:
            raise ShapeError(f"unknown input {name!r} in --input-value; the model's inputs are {list(declared)}")
        info = declared_info(declared[name])
        if info is None or info is _NOT_A_TENSOR or info.dtype in ("string", "undefined"):
            raise ShapeError(f"--input-value {name}: the input is not a numeric tensor")
        rank = len(info.dims) if info.dims is not None else (0 if len(numbers) == 1 else 1)
        shape = pinned.get(name) or ([len(numbers)] if rank == 1 else [1] * rank)
        if math.prod(shape) != len(numbers):
            raise ShapeError(f"--input-value {name}: {len(numbers)} value(s) given for an input of shape "
                             f"{'x'.join(map(str, shape)) or 'scalar'}")
        np_dtype = onnx.helper.tensor_dtype_to_np_dtype(dtype_code(info.dtype))
        array = np.array(numbers, dtype=np.float64).reshape(shape)
        if not np.issubdtype(np_dtype, np.floating) and np.any(array != np.round(array)):
            raise ShapeError(f"--input-value {name}: the input holds {info.dtype}, not fractions")
        arrays[name] = array.astype(np_dtype)
    return arrays, {name: list(array.shape) for name, array in arrays.items()}


def _unbound_message(unbound: list[tuple[str, Dims, list[int | None]]]) -> str:
    """One line: which dimensions of which inputs are unbound, and the exact options that bind them. An input
    whose unbound dimensions are all plain names comes first: binding those often fixes the others (Optimum's
    'past_sequence_length + 1' follows from past_sequence_length)."""

    def plain_names(entry: tuple[str, Dims, list[int | None]]) -> bool:
        _, declared, shape = entry
        return all(_param(declared[axis]).isidentifier() for axis, size in enumerate(shape) if size is None)

    name, declared, shape = sorted(unbound, key=lambda entry: not plain_names(entry))[0]
    missing = [(axis, _param(declared[axis])) for axis, size in enumerate(shape) if size is None]
    shown = ", ".join(f"{param!r} (axis {axis})" if param else f"axis {axis}" for axis, param in missing)
    pattern = "x".join(str(size) if size is not None else f"<{_param(declared[axis]) or f'axis{axis}'}>"
                       for axis, size in enumerate(shape))
    options = f"--input-shape {name}={pattern}"
    named = [param for _, param in missing if param.isidentifier()]
    if len(named) == len(missing):
        options += " or " + " ".join(f"--dim {param}=VALUE" for param in dict.fromkeys(named))
    others = f"; {len(unbound) - 1} more input(s) have unbound dimensions too" if len(unbound) > 1 else ""
    return (f"input {name!r} has unbound dimension(s) {shown} that the model does not fix: pass "
            f"{options} (or --assume-dims 1 to set every unbound dimension to 1){others}")


def _guard_rank_inputs(index: GraphIndex, resolved: dict[str, list[int]]) -> None:
    """Refuse an input whose length would become the rank of a node's output (see MAX_RANK) before onnx shape
    inference tries to build that many dimensions."""
    for node, names in zip(index.nodes, index.inputs):
        for position, name in enumerate(names):
            shape = resolved.get(name)
            if shape is not None and (node.op_type, position) in _RANK_SLOTS and len(shape) == 1 \
                    and shape[0] > MAX_RANK:
                raise ShapeError(f"input {name!r} gives the output shape of {node.op_type} node "
                                 f"{node.name or node.output[0]!r} but holds {shape[0]} values: that would be a "
                                 f"tensor of rank {shape[0]}; pass its real length with --input-shape {name}=N")


_DIM_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv,
                  ast.Div: operator.floordiv}


def _dim_expression(text: str, dims: dict[str, int], declared: set[str], assume_dims: int | None) -> int | None:
    """The value of a dimension named by arithmetic on other dimensions, as Hugging Face Optimum writes them
    ('past_sequence_length + 1', 'past_sequence_length + sequence_length'): names bound with --dim take their
    value; other names the model's inputs declare take `assume_dims` when given, 1 when they name a batch. None
    when the text is a plain name, refers to an unbound dimension, or is anything else."""
    if len(text) > 256:   # no exporter writes longer ones; parsing a deeply nested one would exhaust the stack
        return None
    try:
        tree = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    if not isinstance(tree, ast.BinOp):
        return None

    def value(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.Name) and node.id in dims:
            return dims[node.id]
        if isinstance(node, ast.Name) and node.id in declared and assume_dims is not None:
            return assume_dims
        if isinstance(node, ast.Name) and node.id in declared and _BATCH_NAME.search(node.id):
            return 1
        if isinstance(node, ast.BinOp) and type(node.op) in _DIM_OPERATORS:
            left, right = value(node.left), value(node.right)
            if right == 0 and isinstance(node.op, (ast.FloorDiv, ast.Div)):
                raise ValueError(text)
            return _DIM_OPERATORS[type(node.op)](left, right)
        raise ValueError(text)

    try:
        size = value(tree)
    except ValueError:
        return None
    return size if 1 <= size <= MAX_DIM else None


def _collect(graph: GraphProto, scope: str, scopes: dict[str, dict[str, TensorInfo]], cache: dict,
             non_tensors: set[str], nodes: list[onnx.NodeProto] | None = None,
             values: list[onnx.ValueInfoProto] | None = None) -> None:
    """Record the graph's typed values (`values`: its inputs, outputs and value_info unless given), initializers
    and Constant nodes. This is the one place that reads ONNX type protos into TensorInfo. `cache`, shared across
    calls, holds one TensorInfo per (element type, dims) and the TensorInfo (None: not a tensor) of each
    serialized TypeProto seen: reading a proto's dims field by field costs far more than serializing it, and
    most tensors share their type with another."""
    table = scopes.setdefault(scope, {})

    def info_of(elem_type: int, dims: Dims | None) -> TensorInfo:
        info = cache.get((elem_type, dims))
        if info is None:
            info = cache[(elem_type, dims)] = TensorInfo(dtype_name(elem_type), dims)
        return info

    for value in [*graph.input, *graph.output, *graph.value_info] if values is None else values:
        type_key = value.type.SerializeToString()
        if type_key in cache:
            info = cache[type_key]
        else:
            info = cache[type_key] = _type_info(value.type, info_of)
        if info is None:
            continue
        if info is _NOT_A_TENSOR:
            non_tensors.add(value.name)
            continue
        previous = table.get(value.name)
        if previous is None or previous.shape is None:
            table[value.name] = info
    for tensor in graph.initializer:
        table[tensor.name] = info_of(tensor.data_type, tuple(tensor.dims))
    for sparse in graph.sparse_initializer:
        table[sparse.values.name] = TensorInfo(dtype_name(sparse.values.data_type), tuple(sparse.dims))
    for node in graph.node if nodes is None else nodes:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output:
            info = constant_node_info(node)
            if info is not None:
                table[node.output[0]] = info


# The type of a sequence, map or optional value: it has no tensor shape to resolve, ever.
_NOT_A_TENSOR = TensorInfo("not a tensor", None)


def _new_info(elem_type: int, dims: Dims | None) -> TensorInfo:
    return TensorInfo(dtype_name(elem_type), dims)


def declared_info(value: onnx.ValueInfoProto) -> TensorInfo | None:
    """What a value's annotation declares (see _type_info)."""
    return _type_info(value.type, _new_info)


def _type_info(type_proto: onnx.TypeProto, info_of) -> TensorInfo | None:
    """TensorInfo of a tensor type (dims None when the rank is unknown); _NOT_A_TENSOR for sequences, maps and
    optionals; None when no type is given."""
    kind = type_proto.WhichOneof("value")
    if kind is None:
        return None
    if kind != "tensor_type":
        return _NOT_A_TENSOR
    tensor_type = type_proto.tensor_type
    dims = None
    if tensor_type.HasField("shape"):
        dims = tuple(d.dim_value if kind == "dim_value" else d.dim_param if kind == "dim_param" else None
                     for d in tensor_type.shape.dim for kind in (d.WhichOneof("value"),))
    return info_of(tensor_type.elem_type, dims)


# Ops whose output is a tensor's shape or size, which depends on the input's shape only, not on its values: data
# propagation exists to carry such values into shape inputs.
_SHAPE_READERS = frozenset({"Shape", "Size"})


def _all_outputs_known(graphs: list[tuple[str, str, GraphProto]], scopes: dict[str, dict[str, TensorInfo]],
                       main_outputs: list[str]) -> bool:
    """Does every node output of every graph have a known shape in its own scope?"""
    for scope, _, graph in graphs:
        table = scopes[scope]
        names = main_outputs if not scope else [name for node in graph.node for name in node.output if name]
        for name in names:
            info = table.get(name)
            if info is None or info.shape is None:
                return False
    return True


def constant_node_info(node: onnx.NodeProto) -> TensorInfo | None:
    """Dtype and shape of a Constant node's value, from its attribute alone."""
    for attr in node.attribute:
        if attr.name == "value":
            return TensorInfo(dtype_name(attr.t.data_type), tuple(attr.t.dims))
        if attr.name == "sparse_value":
            return TensorInfo(dtype_name(attr.sparse_tensor.values.data_type), tuple(attr.sparse_tensor.dims))
        if attr.name in ("value_float", "value_int", "value_string"):
            return TensorInfo({"value_float": "float32", "value_int": "int64", "value_string": "string"}[attr.name], ())
        if attr.name == "value_floats":
            return TensorInfo("float32", (len(attr.floats),))
        if attr.name == "value_ints":
            return TensorInfo("int64", (len(attr.ints),))
        if attr.name == "value_strings":
            return TensorInfo("string", (len(attr.strings),))
    return None


def resolve_shapes(proto: ModelProto, input_shapes: dict[str, list[int]] | None = None,
                   dims: dict[str, int] | None = None, *, weights_loaded: bool = True,
                   external_dir: Path | None = None,
                   index: GraphIndex | None = None, light: ModelProto | None = None,
                   assume_dims: int | None = None,
                   input_values: dict[str, list[float]] | None = None) -> ShapeTable:
    """Shapes of every tensor. `index` is the main graph's index_graph (for its topological order and nodes).

    `light` is a metadata_only_copy(proto, index.order) the caller made already; it is modified here.
    `assume_dims` sets every dimension nothing else binds (see _bind_input_shapes); None: such a dimension is
    a ShapeError naming the option that binds it. `input_values` gives inputs' values (a scalar's or a short
    vector's, e.g. a sample rate): conditions and shapes computed from them are then known (see known_values).
    """
    warnings: list[str] = []
    values, value_shapes = input_value_arrays(proto.graph, input_values or {}, input_shapes or {})
    resolved = _bind_input_shapes(proto, {**value_shapes, **(input_shapes or {})}, dims or {}, warnings, assume_dims)
    if index is None:
        index = index_graph(proto.graph)
    _guard_rank_inputs(index, resolved)
    if light is None:
        light = metadata_only_copy(proto, index.order)
    main_outputs = [name for names in index.outputs for name in names if name]

    def graphs_of(graph: GraphProto) -> list[tuple[str, str, GraphProto]]:
        # Most models hold no subgraph: then walking every node's attributes to look for one is wasted time.
        return list(iter_graphs(graph)) if index.with_subgraphs else [("", "", graph)]
    # Does any node read a shape at run time (see data propagation below)?
    reads_shapes = any(node.op_type in _SHAPE_READERS for node in index.nodes)
    # Stale annotations (value_info, declared output shapes, in subgraphs too) would override the shapes that
    # follow from the resolved inputs: inference keeps a declared shape that conflicts with what it infers.
    main_constants = _small_constants(light.graph) if index.with_subgraphs else {}
    for scope, _, graph in graphs_of(light.graph):
        del graph.value_info[:]
        for value in graph.output:
            if value.type.HasField("tensor_type"):
                value.type.tensor_type.ClearField("shape")
        if scope:
            reads_shapes = reads_shapes or any(node.op_type in _SHAPE_READERS for node in graph.node)
            _share_outer_constants(graph, main_constants)
    for value in light.graph.input[:len(proto.graph.input)]:   # the stubs for weights come after
        if value.name in resolved:
            value.type.tensor_type.shape.Clear()
            for size in resolved[value.name]:
                value.type.tensor_type.shape.dim.add().dim_value = size
    # Data propagation (the values of Shape -> Gather -> Concat chains) makes inference much slower and only
    # informs shapes that stay unknown without it. Where no node reads a shape at run time it is rarely needed,
    # so inference runs without it first and again with it only if some node output is left unknown.
    for data_prop in ((True,) if reads_shapes else (False, True)):
        try:
            inferred = onnx.shape_inference.infer_shapes(light, check_type=False, strict_mode=False,
                                                         data_prop=data_prop)
        except Exception as error:  # inference can fail on one odd node; per-node unknowns are handled below
            if not data_prop:
                continue
            warnings.append(f"onnx shape inference failed ({str(error).splitlines()[0]}); shapes come from the "
                            f"model's annotations only")
            inferred = light
        scopes: dict[str, dict[str, TensorInfo]] = {}
        parents: dict[str, str] = {}
        cache: dict = {}
        non_tensors: set[str] = set()
        subgraphs = graphs_of(inferred.graph)
        for scope, parent, graph in subgraphs:
            _collect(graph, scope, scopes, cache, non_tensors, None if scope else index.nodes)
            parents[scope] = parent
        if data_prop or _all_outputs_known(subgraphs, scopes, main_outputs):
            break
    choices: dict[tuple[str, str], BranchChoice] = {}
    condition_inputs: dict[tuple[str, str], tuple[str, ...]] = {}
    if index.with_subgraphs:
        subgraphs, choices, condition_inputs = _control_flow_rounds(light, subgraphs, scopes, parents, cache, non_tensors, index.nodes,
                                                  values)
    # Tensors share TensorInfo objects: test each distinct one, and look for the names only when one fails.
    distinct = {id(info): info for table in scopes.values() for info in table.values()}.values()
    if any(info.shape and min(info.shape) < 0 for info in distinct):
        # e.g. an input smaller than a kernel: the model cannot run at these shapes
        negative = {name: info.shape for table in scopes.values() for name, info in table.items()
                    if info.shape and min(info.shape) < 0}
        first = next((o for _, _, g in iter_graphs(proto.graph) for n in g.node for o in n.output if o in negative),
                     next(iter(negative)))
        given = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in resolved.items())
        raise ShapeError(f"the input shapes ({given}) give tensor {first!r} a negative dimension "
                         f"{list(negative[first])}: the model cannot run at these shapes (an input smaller than a "
                         f"kernel?); pass larger ones with --input-shape")
    _dropout_masks(subgraphs, scopes, index.nodes)
    result = ShapeTable(scopes, parents, resolved, warnings, non_tensors=non_tensors, branch_choices=choices,
                        condition_inputs=condition_inputs)
    main = scopes[""]
    missing = [o for o in main_outputs if (main.get(o) is None or main[o].shape is None) and o not in non_tensors]
    if missing:
        _fill_with_onnxruntime(proto, result, missing, weights_loaded, external_dir, values)
    for value in proto.graph.output:
        declared = declared_info(value)
        if declared is None or declared.dims is None:
            continue
        dims = declared.dims
        known = scopes[""].get(value.name)
        if known is not None and known.shape is not None:
            # A declaration the graph contradicts is ignored (the graph is what runs), but the user should know.
            if len(dims) != len(known.shape) or any(type(d) is int and 0 <= d != size
                                                     for d, size in zip(dims, known.shape)):
                shown = "x".join(str(d) if type(d) is int else (d or "?") for d in dims)
                warnings.append(f"output {value.name!r} is declared {shown or 'a scalar'} but computes "
                                f"{'x'.join(map(str, known.shape)) or 'a scalar'} at these input shapes; the "
                                f"computed shape is used")
        elif all(type(d) is int and d >= 0 for d in dims):
            # A declared output shape is the last resort, used only when nothing knew.
            scopes[""][value.name] = declared
            warnings.append(f"shape of output {value.name!r} is taken from the model's declaration; it could "
                            f"not be inferred for the resolved input shapes")
    return result


def infer_symbolic_shapes(proto: ModelProto) -> ShapeTable:
    """The main graph's tensors as onnx shape inference sees the model as it is, symbolic dims kept (the passes
    rewrite a graph for every input shape). Best effort: inference runs on a metadata-only copy (weights are not
    serialized); when it fails (custom ops, broken graphs) only the initializers are known, so shape-dependent
    rewrites are simply skipped."""
    scopes: dict[str, dict[str, TensorInfo]] = {}
    cache: dict = {}
    non_tensors: set[str] = set()
    try:
        inferred = onnx.shape_inference.infer_shapes(metadata_only_copy(proto), data_prop=True)
    except Exception:  # noqa: BLE001 - onnx raises several error types here
        inferred = None
    if inferred is not None:
        _collect(inferred.graph, "", scopes, cache, non_tensors)
    # The weights' own dims have the last word (an old-IR graph input may declare a weight differently).
    _collect(proto.graph, "", scopes, cache, non_tensors, nodes=[], values=[])
    return ShapeTable(scopes, {"": ""}, {}, non_tensors=non_tensors)


def _small_constants(graph: GraphProto) -> dict[str, TensorProto]:
    """The graph's constants whose values the light copy keeps: its small initializers and Constant nodes (which
    exporters such as PyTorch's use for shapes), by name."""
    constants = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or not node.output:
            continue
        value = _small_constant_value(node)
        if value is not None:
            constants[node.output[0]] = numpy_helper.from_array(value, node.output[0])
    return constants


def _small_constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    """A Constant node's value when it has at most STUB_ABOVE_ELEMENTS elements (what the light copy keeps)."""
    for attr in node.attribute:
        if attr.name == "value" and attr.t.data_location != TensorProto.EXTERNAL:
            return numpy_helper.to_array(attr.t) if math.prod(attr.t.dims) <= STUB_ABOVE_ELEMENTS else None
        if attr.name in ("value_float", "value_int"):
            return np.array(attr.f if attr.name == "value_float" else attr.i,
                            np.float32 if attr.name == "value_float" else np.int64)
        if attr.name in ("value_floats", "value_ints"):
            values = attr.floats if attr.name == "value_floats" else attr.ints
            if len(values) <= STUB_ABOVE_ELEMENTS:
                return np.array(list(values), np.float32 if attr.name == "value_floats" else np.int64)
    return None


def _share_outer_constants(subgraph: GraphProto, main_constants: dict[str, TensorProto]) -> None:
    """Give a subgraph copies of the small main-graph constants it reads (Tile repeats, Reshape shapes).

    onnx shape inference shows a subgraph only the types of outer values, not their contents, so a shape that
    follows from an outer constant would stay unknown inside the branch. The copy is for inference only.
    """
    defined = {i.name for i in subgraph.input} | {t.name for t in subgraph.initializer}
    read: set[str] = set()
    for node in subgraph.node:
        defined.update(node.output)
        read.update(node.input)
    subgraph.initializer.extend(main_constants[name] for name in sorted(read - defined) if name in main_constants)


def _dropout_masks(subgraphs: list[tuple[str, str, GraphProto]], scopes: dict[str, dict[str, TensorInfo]],
                   main_nodes: list[onnx.NodeProto]) -> None:
    """onnx infers no shape for the mask output of Dropout before opset 12, nor does onnxruntime produce it at
    inference; by definition it has the data's shape (bool)."""
    for scope, _, graph in subgraphs:
        table = scopes[scope]
        for node in graph.node if scope else main_nodes:
            if node.op_type == "Dropout" and len(node.output) > 1 and node.output[1]:
                data, mask = table.get(node.input[0]), table.get(node.output[1])
                if data is not None and data.shape is not None and (mask is None or mask.shape is None):
                    table[node.output[1]] = TensorInfo("bool", data.shape)


def _loop_state_shapes(subgraphs: list[tuple[str, str, GraphProto]], scopes: dict[str, dict[str, TensorInfo]],
                       parents: dict[str, str]) -> list[tuple[str, str, TensorInfo]]:
    """onnx infers no shapes for the state outputs of Loop (and Scan); a state whose body output has the same
    shape as its initial value keeps that shape through every iteration, so the node's output has it too."""
    lookup = ShapeTable(scopes, parents, {}).lookup
    filled = []
    for scope, _, graph in reversed(subgraphs):   # inner graphs first: their results feed the outer bodies
        for position, node in enumerate(graph.node):
            if node.op_type not in ("Loop", "Scan") or node.domain not in ("", "ai.onnx"):
                continue
            body = node_attribute(node, "body")
            if body is None:
                continue
            if node.op_type == "Loop":
                states, body_outputs = node.input[2:], body.output[1:]
            else:
                scan_inputs = node_attribute(node, "num_scan_inputs", 0)
                states, body_outputs = node.input[:len(node.input) - scan_inputs], body.output
            body_table = scopes.get(subgraph_scope(scope, position, node, "body"), {})
            for output, initial, body_output in zip(node.output, states, body_outputs):
                start, end = lookup(initial, scope), body_table.get(body_output.name)
                known = scopes[scope].get(output)
                if (output and start is not None and end is not None and start.shape is not None
                        and start.shape == end.shape and (known is None or known.shape is None)):
                    scopes[scope][output] = TensorInfo(end.dtype, end.shape)
                    filled.append((scope, output, scopes[scope][output]))
    return filled


# Each round is one onnx shape inference; Silero VAD needs four (pads, then the decoder's If, then the LSTM's
# squeeze conditions, then the shapes they give). More rounds than this means something keeps changing: stop.
_MAX_ROUNDS = 8


def _control_flow_rounds(light: ModelProto, subgraphs: list[tuple[str, str, GraphProto]],
                         scopes: dict[str, dict[str, TensorInfo]], parents: dict[str, str], cache: dict,
                         non_tensors: set[str], main_nodes: list[onnx.NodeProto], input_values: dict[str, np.ndarray],
                         ) -> tuple[list[tuple[str, str, GraphProto]], dict[tuple[str, str], BranchChoice],
                                    dict[tuple[str, str], tuple[str, ...]]]:
    """Fill what onnx shape inference leaves unknown in and around If/Loop/Scan, round by round until nothing new:

    - values known before run time (edgefit.known_values: constants, given input values, shapes) are folded into
      `light` as Constant nodes, so inference reads the pads, Reshape targets and slice bounds they give -- onnx
      propagates values through a few ops only;
    - an If whose condition is known gives its outputs the shapes of the branch it takes (onnx keeps only what
      both branches agree on);
    - a Loop/Scan state keeps its initial shape when the body keeps it (_loop_state_shapes).
    Shapes found this way go back to inference as value_info, so it carries them on to the nodes that read them.
    Returns the graphs as last inferred, the If branch choices and the inputs each undecided If's condition reads.
    """
    lookup = ShapeTable(scopes, parents, {}).lookup
    opset = next((o.version for o in light.opset_import if o.domain in ("", "ai.onnx")), 1)
    hinted: set[tuple[str, str]] = set()
    choices: dict[tuple[str, str], BranchChoice] = {}
    undecided: dict[tuple[str, str], tuple[str, ...]] = {}
    sources: dict = {}
    for _ in range(_MAX_ROUNDS):
        known = known_values(light.graph, opset, lambda name, scope: _shape_of(lookup(name, scope)), input_values,
                             sources)
        choices, sources, undecided = known.choices, known.sources, known.undecided
        graphs = {scope: graph for scope, _, graph in iter_graphs(light.graph)}
        changed = any([_fold_values(graph, known.values) for graph in graphs.values()])
        for scope, name, info in (_loop_state_shapes(subgraphs, scopes, parents)
                                  + _taken_branch_shapes(subgraphs, scopes, parents, choices)):
            if (scope, name) not in hinted:
                hinted.add((scope, name))
                graphs[scope].value_info.append(onnx.helper.make_tensor_value_info(name, dtype_code(info.dtype),
                                                                                   info.shape))
                changed = True
        if not changed:
            break
        try:
            inferred = onnx.shape_inference.infer_shapes(light, check_type=False, strict_mode=False, data_prop=True)
        except Exception:  # noqa: BLE001 - keep what the rounds before found
            break
        subgraphs = list(iter_graphs(inferred.graph))
        for scope, _, graph in subgraphs:
            _collect(graph, scope, scopes, cache, non_tensors, None if scope else main_nodes)
    return subgraphs, choices, undecided


def _shape_of(info: TensorInfo | None) -> tuple[int, ...] | None:
    return None if info is None else info.shape


def _fold_values(graph: GraphProto, values: dict[str, np.ndarray]) -> bool:
    """Replace each node whose outputs all have known values by Constant nodes holding them (in the inference
    copy only); nodes holding subgraphs stay, so that their branches' shapes are still inferred."""
    nodes: list[onnx.NodeProto] = []
    folded = False
    for node in graph.node:
        outputs = [o for o in node.output if o]
        if (node.op_type != "Constant" and outputs and all(o in values for o in outputs)
                and not has_subgraph(node)):
            nodes.extend(constant_node(o, values[o]) for o in outputs)
            folded = True
        else:
            nodes.append(node)
    if folded:
        del graph.node[:]
        graph.node.extend(nodes)
    return folded


def _taken_branch_shapes(subgraphs: list[tuple[str, str, GraphProto]], scopes: dict[str, dict[str, TensorInfo]],
                         parents: dict[str, str], choices: dict[tuple[str, str], BranchChoice],
                         ) -> list[tuple[str, str, TensorInfo]]:
    """The outputs of an If whose branch is known have that branch's output shapes."""
    lookup = ShapeTable(scopes, parents, {}).lookup
    filled = []
    for scope, _, graph in subgraphs:
        for position, node in enumerate(graph.node):
            choice = choices.get((scope, node.output[0])) if node.op_type == "If" and node.output else None
            if choice is None:
                continue
            branch = node_attribute(node, choice.branch)
            branch_scope = subgraph_scope(scope, position, node, choice.branch)
            for output, result in zip(node.output, branch.output):
                end, known = lookup(result.name, branch_scope), scopes[scope].get(output)
                if output and end is not None and end.shape is not None and (known is None or known.shape is None):
                    scopes[scope][output] = TensorInfo(end.dtype, end.shape)
                    filled.append((scope, output, scopes[scope][output]))
    return filled


def _synthetic_input(shape: list[int], dtype: str) -> np.ndarray:
    """Inputs that keep data-dependent ops (NonZero, TopK, Range) well-behaved: small positive values."""
    np_dtype = onnx.helper.tensor_dtype_to_np_dtype(dtype_code(dtype))
    if np.issubdtype(np_dtype, np.floating):
        return np.random.default_rng(0).random(shape).astype(np_dtype)
    if np_dtype == np.bool_:
        return np.ones(shape, dtype=np.bool_)
    return np.ones(shape, dtype=np_dtype)


def _run_with_timeout(session, names: list[str], feeds: dict[str, np.ndarray]) -> list:
    import threading

    import onnxruntime as ort

    options = ort.RunOptions()
    options.log_severity_level = 4   # the termination is reported in our warning, not as an onnxruntime log line
    timer = threading.Timer(_FALLBACK_TIMEOUT_S, setattr, (options, "terminate", True))
    timer.daemon = True
    timer.start()
    try:
        return session.run(names, feeds, options)
    except Exception:
        if options.terminate:
            raise TimeoutError(f"stopped after {_FALLBACK_TIMEOUT_S:g} s on synthetic inputs (a Loop that does not "
                               f"end?)") from None
        raise
    finally:
        timer.cancel()


def _fill_with_onnxruntime(proto: ModelProto, result: ShapeTable, missing: list[str],
                           weights_loaded: bool, external_dir: Path | None, given: dict[str, np.ndarray]) -> None:
    """Run the model once with every unresolved main-graph tensor exposed as an output and record their shapes.
    Inputs whose values the user gave (`given`) get them; the others synthetic values.

    External weights are read for the run (from `external_dir`) only while they are small enough to hold.
    """
    inputs = result.inputs
    table = result.scopes[""]
    input_bytes = sum(math.prod(s) * 8 for s in inputs.values())
    reason = None
    if not weights_loaded and external_dir is None:
        reason = "weights are in external data that was not loaded"
    elif not weights_loaded and external_data_bytes(proto) > _FALLBACK_MAX_EXTERNAL_BYTES:
        reason = (f"its external weights ({external_data_bytes(proto) / 2**30:.1f} GiB) are too large to load "
                  f"for a run")
    elif input_bytes > _FALLBACK_MAX_INPUT_BYTES:
        reason = "synthetic inputs would be too large to allocate"
    if reason is None:
        try:
            from edgefit.runtime import session as ort_session

            probe = ModelProto()
            probe.CopyFrom(proto)
            if not weights_loaded:
                onnx.load_external_data_for_model(probe, str(external_dir))
            del probe.graph.value_info[:]
            known_outputs = {o.name for o in probe.graph.output}
            for name in missing:
                # The element type is given where known; onnxruntime infers it for the rest (e.g. contrib ops).
                if name not in known_outputs:
                    probe.graph.output.append(onnx.helper.make_tensor_value_info(
                        name, dtype_code(table[name].dtype), None) if name in table else onnx.ValueInfoProto(name=name))
            for value in probe.graph.input:
                if value.name in inputs:
                    value.type.tensor_type.shape.Clear()
                    for size in inputs[value.name]:
                        value.type.tensor_type.shape.dim.add().dim_value = size
            session = ort_session(probe)
            feeds = {i.name: given[i.name] if i.name in given else _synthetic_input(
                         inputs[i.name], table[i.name].dtype if i.name in table else "float32")
                     for i in session.get_inputs()}
            names = [o.name for o in session.get_outputs()]
            filled = 0
            for name, value in zip(names, _run_with_timeout(session, names, feeds)):
                if isinstance(value, np.ndarray) and name in missing:
                    filled += 1
                    dtype = table[name].dtype if name in table else dtype_name(
                        onnx.helper.np_dtype_to_tensor_dtype(value.dtype))
                    table[name] = TensorInfo(dtype, tuple(int(d) for d in value.shape))
            if filled:
                result.source = "onnx shape inference + onnxruntime run on synthetic inputs" + (
                    "" if weights_loaded else " (external weights loaded for it)")
                result.warnings.append(f"{filled} tensor shape(s) came from an onnxruntime run on synthetic inputs; "
                                       f"data-dependent shapes may differ for real data")
            if filled == len(missing):
                return
            reason = f"onnxruntime did not return {len(missing) - filled} of them"
        except Exception as error:  # a model onnxruntime cannot run leaves those shapes unknown, with the reason
            reason = f"onnxruntime could not run the model ({str(error).strip().splitlines()[0][:160]})"
    result.warnings.append(f"{len(missing)} tensor shape(s) unresolved by shape inference; the onnxruntime fallback "
                           f"could not fill them all: {reason}")


_MAX_VALUE_NODES = 256


def shape_derived_int(proto: ModelProto, name: str, inputs: dict[str, list[int]]) -> int | None:
    """The value of a scalar integer of the main graph computed from input shapes and small constants only
    (a Loop trip count such as Gather(Shape(x), 1)), by running just its ancestors once in onnxruntime.

    None when the value depends on input data (the answer would be an artefact of synthetic inputs), on large
    or external weights, or on subgraphs.
    """
    producer = {o: node for node in proto.graph.node for o in node.output if o}
    weights = {t.name: t for t in proto.graph.initializer}
    graph_inputs = {i.name for i in real_inputs(proto.graph)}
    needed: set[int] = set()
    used_weights: dict[str, TensorProto] = {}
    used_inputs: set[str] = set()
    data_dependent: dict[str, bool] = {}
    positions = {id(node): k for k, node in enumerate(proto.graph.node)}

    def depends_on_data(tensor: str) -> bool | None:
        """Whether `tensor`'s value follows from input data; None when it cannot be evaluated cheaply."""
        if tensor in data_dependent:
            return data_dependent[tensor]
        if tensor in weights:
            weight = weights[tensor]
            if weight.data_location == TensorProto.EXTERNAL or math.prod(weight.dims) > 4096:
                return None
            used_weights[tensor] = weight
            data_dependent[tensor] = False
            return False
        if tensor in graph_inputs:
            used_inputs.add(tensor)
            data_dependent[tensor] = True
            return True
        node = producer.get(tensor)
        if node is None or has_subgraph(node) or len(needed) >= _MAX_VALUE_NODES:
            return None
        needed.add(positions[id(node)])
        flags = [depends_on_data(n) for n in node.input if n]
        if None in flags:
            return None
        data_dependent[tensor] = node.op_type not in _SHAPE_READERS and any(flags)
        return data_dependent[tensor]

    if depends_on_data(name) is not False or any(n not in inputs for n in used_inputs):
        return None
    nodes = [proto.graph.node[k] for k in sorted(needed)]
    graph = onnx.helper.make_graph(
        nodes, "value", [_typed_input(proto.graph, n, inputs[n]) for n in sorted(used_inputs)],
        [onnx.ValueInfoProto(name=name)], list(used_weights.values()))
    probe = onnx.helper.make_model(graph, opset_imports=proto.opset_import, ir_version=proto.ir_version)
    try:
        from edgefit.runtime import session

        feeds = {n: _synthetic_input(inputs[n], dtype_name(next(i for i in proto.graph.input if i.name == n)
                                                           .type.tensor_type.elem_type)) for n in used_inputs}
        value = np.asarray(session(probe).run([name], feeds)[0]).reshape(-1)
    except Exception:   # an op onnxruntime cannot run on this fragment: the trip count stays unknown
        return None
    return int(value[0]) if value.size == 1 and np.issubdtype(value.dtype, np.integer) else None


def _typed_input(graph: GraphProto, name: str, shape: list[int]) -> onnx.ValueInfoProto:
    declared = next(i for i in graph.input if i.name == name)
    return onnx.helper.make_tensor_value_info(name, declared.type.tensor_type.elem_type, shape)
