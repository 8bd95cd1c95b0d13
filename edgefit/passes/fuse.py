"""Fuse: fold constants and per-channel affine ops into the layers before them, and drop no-op nodes.

The result holds only standard ONNX ops and computes the same function as the input (up to float rounding).

Why not onnxruntime's offline optimizer: at ORT_ENABLE_BASIC its saved model declares onnxruntime's private
opset domains (com.microsoft, com.microsoft.nchwc, ...) and it does not fold BatchNormalization into Gemm; it
also cannot say what it changed. The folds below are few and their math is short.

Math (per output channel o of the layer; W weight, b bias, x the layer's output before the folded op)
------------------------------------------------------------------------------------------------------
Every folded op is an affine map per channel, y[o] = s[o] * x[o] + t[o]:

* BatchNormalization (inference): s = gamma / sqrt(var + eps), t = beta - mean * s
* Mul by a per-channel constant c:  s = c, t = 0
* Add of a per-channel constant c:  s = 1, t = c

and the layer absorbs it:

* Conv:          W'[o, ...] = s[o] * W[o, ...];                    b' = s * b + t
* ConvTranspose: W has shape [C_in, C_out / group, k...]; output channel o = g * (C_out / group) + j, so
                 W viewed as [group, C_in / group, C_out / group, k...] is scaled by s viewed as
                 [group, 1, C_out / group, 1...];                   b' = s * b + t
* Gemm:          Y = alpha * A @ B~ + beta * C with B~ = B^T when transB; column o of B~ is scaled by s[o];
                 C' = s * (beta * C) + t (broadcast to the output's last axis) and beta' = 1.

MatMul + Add -> Gemm: Y = A @ B + C equals Gemm(A, B, C) when A and B are 2-D and C broadcasts one way to
the output shape (M, N), which is Gemm's rule for C.

Constant folding evaluates any deterministic default-domain node whose inputs are all constants (with onnx's
reference evaluator) and stores the result as an initializer; `Constant` nodes become initializers and `Shape`
of a tensor with a fully static shape becomes a constant. Two folds are held back on purpose, because they are
how a model stores weights compactly: DequantizeLinear of a weight, whatever its size (with it the layer is
the QDQ pattern a runtime executes as an int8 kernel; folded, even a small depthwise layer would run in
float), and widening Cast of a weight larger than 1 KiB. A node computing more than 1 KiB from a weight above
1 KiB that other nodes read too (the Transpose of a tied embedding for the output layer) stays as well: folded,
the model would store that weight twice.

No-ops: Identity; Dropout (inference, mask unused); Reshape whose input already has the static target shape;
Cast to the type the tensor already has; Cast A->B->A when B holds every value of A exactly; Transpose pairs
(composed into one Transpose, or removed when the composition is the identity).

Subgraphs (If/Loop/Scan bodies) are left unchanged and a note says so; a top-level tensor they read counts as
used. Symbolic dimensions are fine: rewrites that need a static shape are skipped where it is not static.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
from onnx import ModelProto, NodeProto, TensorProto, helper, numpy_helper

from edgefit.analysis.dtypes import dtype_name
from edgefit.analysis.weights import NONDETERMINISTIC_OPS
from edgefit.model import collector_paused, has_subgraph, node_attribute
from edgefit.passes.base import (
    GraphEditor,
    Pass,
    PassOptions,
    PassResult,
    Progress,
    copy_model,
    is_static,
    node_label,
)
from edgefit.shapes import ShapeTable, infer_symbolic_shapes

_AFFINE_HOSTS = ("Conv", "ConvTranspose", "Gemm")
# Ops that decompress a stored weight: folding them would inflate the file for nothing.
_STORAGE_EXPANDERS = {"DequantizeLinear", "Cast"}
_KEEP_EXPANDED_ABOVE_BYTES = 1024
_MAX_FOLDED_BYTES = 256 * 2**20

# (from, to): every value of `from` is exactly representable in `to`, so Cast from->to->from is the identity.
_P = TensorProto
_LOSSLESS_WIDENING = {
    (_P.FLOAT16, _P.FLOAT), (_P.FLOAT16, _P.DOUBLE), (_P.BFLOAT16, _P.FLOAT), (_P.BFLOAT16, _P.DOUBLE),
    (_P.FLOAT, _P.DOUBLE),
    (_P.INT8, _P.INT16), (_P.INT8, _P.INT32), (_P.INT8, _P.INT64), (_P.INT16, _P.INT32), (_P.INT16, _P.INT64),
    (_P.INT32, _P.INT64), (_P.UINT8, _P.UINT16), (_P.UINT8, _P.UINT32), (_P.UINT8, _P.UINT64),
    (_P.UINT8, _P.INT16), (_P.UINT8, _P.INT32), (_P.UINT8, _P.INT64), (_P.UINT16, _P.UINT32),
    (_P.UINT16, _P.INT32), (_P.UINT16, _P.INT64), (_P.UINT32, _P.INT64), (_P.UINT32, _P.UINT64),
    (_P.INT8, _P.FLOAT), (_P.UINT8, _P.FLOAT), (_P.INT16, _P.FLOAT), (_P.UINT16, _P.FLOAT),
    (_P.INT8, _P.DOUBLE), (_P.UINT8, _P.DOUBLE), (_P.INT16, _P.DOUBLE), (_P.UINT16, _P.DOUBLE),
    (_P.INT32, _P.DOUBLE), (_P.UINT32, _P.DOUBLE), (_P.BOOL, _P.INT32), (_P.BOOL, _P.INT64),
    (_P.BOOL, _P.UINT8), (_P.BOOL, _P.INT8), (_P.BOOL, _P.FLOAT),
}


@dataclass(frozen=True)
class FuseStats:
    nodes_before: int
    nodes_after: int
    rewrites: dict[str, int]              # what was folded or removed, e.g. {"batchnorm_folded": 9}
    initializers_removed: int
    notes: tuple[str, ...] = ()
    name: str = "fuse"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "nodes_before": self.nodes_before, "nodes_after": self.nodes_after,
                "rewrites": dict(self.rewrites), "initializers_removed": self.initializers_removed,
                "notes": list(self.notes)}

    def render(self, console) -> None:
        done = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(self.rewrites.items()))
        console.print(f"  nodes {self.nodes_before} -> {self.nodes_after}; {done or 'nothing to fuse'}; "
                      f"{self.initializers_removed} unused initializers removed")


class Fuse(Pass):
    """Fold constants, BatchNorm/Mul/Add into Conv/ConvTranspose/Gemm, MatMul+Add into Gemm; drop no-ops."""

    name = "fuse"
    usage = "fuse"
    ensures = frozenset({"folded constants"})

    def run(self, model: ModelProto, options: PassOptions, progress: Progress | None) -> PassResult:
        with collector_paused():
            return _fuse(model)


PASS = Fuse


def fuse(model: ModelProto) -> PassResult:
    """Fold constants, BatchNorm/Mul/Add into Conv/ConvTranspose/Gemm, MatMul+Add into Gemm; drop no-ops."""
    return Fuse().apply(model)


def _fuse(model: ModelProto) -> PassResult:
    result = copy_model(model)
    graph = result.graph
    nodes_before = len(graph.node)
    opsets = {o.domain or "": o.version for o in result.opset_import}
    rewrites: Counter[str] = Counter()
    held_back: dict[str, str] = {}
    while True:
        # Shape inference sees the graph as the last round left it; each round's edits are written back at its end.
        info = infer_symbolic_shapes(result)
        editor = GraphEditor(graph)
        changed = (_fold_constants(editor, info, opsets, rewrites)
                   + _remove_noops(editor, info, rewrites)
                   + _fold_affine_into_hosts(editor, rewrites, held_back)
                   + _matmul_add_to_gemm(editor, info, rewrites))
        if not changed:
            break
        editor.commit()
    dead_nodes, dead_initializers = editor.remove_dead()
    editor.commit()
    if dead_nodes:
        rewrites["dead_nodes_removed"] += dead_nodes
    notes = [f"{node_label(n)} ({n.op_type}): its subgraphs are left unchanged (fuse rewrites the top-level graph)"
             for n in graph.node if has_subgraph(n)]
    names = {n.name for n in graph.node}
    notes += [reason for name, reason in held_back.items() if name in names]
    stats = FuseStats(nodes_before, len(graph.node), dict(rewrites), dead_initializers, tuple(notes))
    return PassResult(result, stats)


# ---- constant folding --------------------------------------------------------------------------------

def _fold_constants(editor: GraphEditor, info: ShapeTable, opsets: dict[str, int], rewrites: Counter) -> int:
    folded = 0
    for node in editor.nodes():
        if node.op_type == "Constant" and all(o in editor.output_names for o in node.output):
            continue   # a Constant that is itself a graph output is as folded as it gets
        values = _constant_outputs(node, editor, info, opsets)
        if values is None:
            continue
        for name, value in zip(node.output, values):
            if name and editor.is_read(name):
                tensor = numpy_helper.from_array(np.asarray(value), name)
                if name in editor.output_names:
                    # A graph output cannot be an initializer alone: keep it produced by a Constant node.
                    editor.insert_before(node, helper.make_node("Constant", [], [name], value=tensor, name=node.name))
                else:
                    editor.add_tensor(tensor)
        editor.remove(node)
        kind = {"Constant": "constant_nodes_to_initializers", "Shape": "static_shapes_folded"}.get(
            node.op_type, "constants_folded")
        rewrites[kind] += 1
        folded += 1
    return folded


def _constant_outputs(node: NodeProto, editor: GraphEditor, info: ShapeTable,
                      opsets: dict[str, int]) -> list[np.ndarray] | None:
    """The node's output values when they follow from constants alone, else None."""
    if node.domain not in ("", "ai.onnx") or node.op_type in NONDETERMINISTIC_OPS or has_subgraph(node):
        return None
    if node.op_type == "Shape":
        shape = info.dims(node.input[0])
        if not is_static(shape):
            return None
        start, end = node_attribute(node, "start", 0), node_attribute(node, "end", None)
        return [np.array(shape[start:end], dtype=np.int64)]
    if node.op_type != "Constant" and (not node.input or not all(n == "" or editor.is_constant(n)
                                                                  for n in node.input)):
        return None
    inputs = {n: editor.constant(n) for n in node.input if n}
    try:
        from onnx.reference import ReferenceEvaluator

        values = ReferenceEvaluator(node, opsets=opsets).run(None, inputs)
    except Exception:  # noqa: BLE001 - an op the reference evaluator lacks simply stays unfolded
        return None
    input_bytes = sum(v.nbytes for v in inputs.values())
    out_bytes = sum(np.asarray(v).nbytes for v in values)
    if out_bytes > _MAX_FOLDED_BYTES:
        return None
    if node.op_type == "DequantizeLinear":
        return None   # DequantizeLinear(int8 weight) -> layer is the QDQ pattern runtimes run as an int8 kernel
    if node.op_type in _STORAGE_EXPANDERS and out_bytes > max(input_bytes, _KEEP_EXPANDED_ABOVE_BYTES):
        return None
    if out_bytes > _KEEP_EXPANDED_ABOVE_BYTES and any(
            value.nbytes > _KEEP_EXPANDED_ABOVE_BYTES and _read_elsewhere(name, node, editor)
            for name, value in inputs.items()):
        return None   # the weight stays for its other readers (a tied embedding): folding would store it twice
    return [np.asarray(v) for v in values]


def _read_elsewhere(name: str, node: NodeProto, editor: GraphEditor) -> bool:
    """Does a node other than `node` (or the graph's outputs) read `name`?"""
    return name in editor.output_names or any(list(reader.output) != list(node.output)
                                              for reader in editor.consumers(name))


# ---- no-op removal -----------------------------------------------------------------------------------

def _remove_noops(editor: GraphEditor, info: ShapeTable, rewrites: Counter) -> int:
    removed = 0
    for node in editor.nodes():
        if not editor.alive(node):
            continue
        kind, source = _noop_source(node, editor, info)
        if kind is None:
            continue
        if kind == "transpose_pairs_composed":
            _compose_transposes(node, editor, info)
        elif not editor.bypass(node, source):
            continue
        rewrites[kind] += 1
        removed += 1
    return removed


def _noop_source(node: NodeProto, editor: GraphEditor, info: ShapeTable) -> tuple[str | None, str]:
    """(kind of removal, the tensor the node's output equals) or (None, '')."""
    op, x = node.op_type, (node.input[0] if node.input else "")
    if node.domain not in ("", "ai.onnx") or not x:
        return None, ""
    if op == "Identity":
        return "identity_removed", x
    if op == "Dropout":
        mask_used = len(node.output) > 1 and node.output[1] and editor.is_read(node.output[1])
        training = node.input[2] if len(node.input) > 2 else ""
        if mask_used or (training and not (editor.is_constant(training) and not editor.constant(training).any())):
            return None, ""
        return "dropout_removed", x
    if op == "Reshape":
        before, after = info.dims(x), info.dims(node.output[0])
        if is_static(before) and before == after:
            return "noop_reshape_removed", x
        return None, ""
    if op == "Cast":
        to = node_attribute(node, "to")
        if to is not None and info.dtype(x) == dtype_name(to):
            return "noop_cast_removed", x
        first = editor.producer.get(x)
        if first is not None and first.op_type == "Cast" and first.input[0]:
            origin = first.input[0]
            middle = node_attribute(first, "to")
            if (to, middle) in _LOSSLESS_WIDENING and info.dtype(origin) == dtype_name(to):
                return "cast_pairs_removed", origin
        return None, ""
    if op == "Transpose":
        first = editor.producer.get(x)
        if first is None or first.op_type != "Transpose":
            return None, ""
        composed = _composed_perm(first, node, info)
        if composed is None:
            return None, ""
        if composed == sorted(composed):
            return "transpose_pairs_removed", first.input[0]
        return "transpose_pairs_composed", ""
    return None, ""


def _perm(node: NodeProto, rank: int | None) -> list[int] | None:
    perm = node_attribute(node, "perm")
    if perm is not None:
        return list(perm)
    return None if rank is None else list(reversed(range(rank)))


def _composed_perm(first: NodeProto, second: NodeProto, info: ShapeTable) -> list[int] | None:
    shape = info.dims(first.input[0])
    rank = None if shape is None else len(shape)
    p1, p2 = _perm(first, rank), _perm(second, rank)
    if p1 is None or p2 is None or len(p1) != len(p2):
        return None
    # out[i] = mid[p2[i]] = in[p1[p2[i]]]
    return [p1[i] for i in p2]


def _compose_transposes(second: NodeProto, editor: GraphEditor, info: ShapeTable) -> None:
    first = editor.producer[second.input[0]]
    composed = _composed_perm(first, second, info)
    second.input[0] = first.input[0]
    for k, attr in enumerate(second.attribute):
        if attr.name == "perm":
            del second.attribute[k]
            break
    second.attribute.append(helper.make_attribute("perm", composed))
    editor.rewired(second)


# ---- BatchNorm / Mul / Add into Conv, ConvTranspose, Gemm --------------------------------------------

def _fold_affine_into_hosts(editor: GraphEditor, rewrites: Counter,
                            held_back: dict[str, str]) -> int:
    folded = 0
    for node in editor.nodes():
        if not editor.alive(node) or node.op_type not in ("BatchNormalization", "Mul", "Add"):
            continue
        for position, x in enumerate(node.input[:2] if node.op_type != "BatchNormalization" else node.input[:1]):
            host = editor.producer.get(x)
            if host is None or host.op_type not in _AFFINE_HOSTS or editor.sole_consumer(x) is not node:
                if node.op_type == "BatchNormalization":
                    source = host.op_type if host is not None else "a graph input"
                    held_back[node.name] = (f"{node_label(node)} (BatchNormalization) stays: its input comes from "
                                            f"{source}, not from a Conv/ConvTranspose/Gemm read by it alone")
                continue
            affine = _affine_of(node, position, editor, host)
            if affine is None or not _absorb(host, *affine, editor):
                continue
            if not editor.bypass(node, x):
                continue
            kind = {"BatchNormalization": "batchnorm_folded", "Mul": "mul_folded", "Add": "add_folded"}[node.op_type]
            rewrites[kind] += 1
            held_back.pop(node.name, None)
            folded += 1
            break
    return folded


def _affine_of(node: NodeProto, x_position: int, editor: GraphEditor,
               host: NodeProto) -> tuple[np.ndarray, np.ndarray] | None:
    """(s, t) per output channel of `host` with node(x) = s * x + t, or None when the node is not such a map."""
    weight = editor.constant(host.input[1]) if len(host.input) > 1 else None
    if weight is None:
        return None
    host_rank = 2 if host.op_type == "Gemm" else weight.ndim
    if host.op_type == "Conv":
        channels = weight.shape[0]
    elif host.op_type == "ConvTranspose":
        channels = weight.shape[1] * node_attribute(host, "group", 1)
    else:
        channels = weight.shape[0] if node_attribute(host, "transB", 0) else weight.shape[1]
    if node.op_type == "BatchNormalization":
        if len([o for o in node.output if o]) != 1 or node_attribute(node, "training_mode", 0):
            return None
        params = [editor.constant(n) for n in node.input[1:5]]
        if any(p is None for p in params):
            return None
        gamma, beta, mean, var = (p.astype(np.float64) for p in params)
        scale = gamma / np.sqrt(var + node_attribute(node, "epsilon", 1e-5))
        return scale, beta - mean * scale
    other = node.input[1 - x_position]
    value = editor.constant(other)
    if value is None or value.dtype.kind != "f":
        return None
    vector = _per_channel_vector(value, channels, host_rank)
    if vector is None:
        return None
    if node.op_type == "Mul":
        return vector, np.zeros(channels)
    return np.ones(channels), vector


def _per_channel_vector(value: np.ndarray, channels: int, rank: int) -> np.ndarray | None:
    """When broadcasting `value` against the host's [N, C, ...] output (of `rank`) varies it along the
    channel axis 1 only, return it as a [C] vector; None otherwise (it would change the output's shape or
    vary along another axis)."""
    if value.ndim > rank:
        return None
    if value.size == 1:
        return np.full(channels, float(value.reshape(-1)[0]))
    padded = (1,) * (rank - value.ndim) + value.shape
    if any(d != 1 for k, d in enumerate(padded) if k != 1) or padded[1] not in (1, channels):
        return None
    return np.broadcast_to(value.reshape(-1).astype(np.float64), (channels,)).copy()


def _absorb(host: NodeProto, scale: np.ndarray, shift: np.ndarray, editor: GraphEditor) -> bool:
    """Rewrite host's weight and bias so that host'(x) = scale * host(x) + shift. False when not possible."""
    weight = editor.constant(host.input[1])
    bias_name = host.input[2] if len(host.input) > 2 else ""
    bias = editor.constant(bias_name) if bias_name else None
    if weight is None or weight.dtype.kind != "f" or (bias_name and bias is None):
        return False
    dtype = weight.dtype
    w = weight.astype(np.float64)
    n = scale.shape[0]
    if host.op_type == "Conv":
        new_weight = w * scale.reshape((n,) + (1,) * (w.ndim - 1))
    elif host.op_type == "ConvTranspose":
        group = node_attribute(host, "group", 1)
        grouped = w.reshape((group, w.shape[0] // group, w.shape[1]) + w.shape[2:])
        new_weight = (grouped * scale.reshape((group, 1, w.shape[1]) + (1,) * (w.ndim - 2))).reshape(w.shape)
    else:
        if node_attribute(host, "transB", 0):
            new_weight = w * scale[:, None]
        else:
            new_weight = w * scale[None, :]
    if host.op_type == "Gemm":
        c = np.zeros(1) if bias is None else node_attribute(host, "beta", 1.0) * bias.astype(np.float64)
        if c.ndim > 2:
            return False
        new_bias = c * scale + shift if c.ndim < 2 or c.shape[-1] in (1, n) else None
        if new_bias is None:
            return False
    else:
        b = np.zeros(n) if bias is None else bias.astype(np.float64)
        new_bias = b * scale + shift
    del host.input[1:]
    host.input.append(editor.add_initializer(f"{host.name or host.op_type}_weight_fused", new_weight.astype(dtype)))
    host.input.append(editor.add_initializer(f"{host.name or host.op_type}_bias_fused", new_bias.astype(dtype)))
    if host.op_type == "Gemm":
        for k, attr in enumerate(host.attribute):
            if attr.name == "beta":
                del host.attribute[k]
                break
    editor.rewired(host)
    return True


# ---- MatMul + Add -> Gemm ----------------------------------------------------------------------------

def _matmul_add_to_gemm(editor: GraphEditor, info: ShapeTable, rewrites: Counter) -> int:
    fused = 0
    for matmul in editor.nodes():
        if matmul.op_type != "MatMul" or not editor.alive(matmul):
            continue
        add = editor.sole_consumer(matmul.output[0])
        if add is None or add.op_type != "Add":
            continue
        a, b = matmul.input
        c = add.input[1] if add.input[0] == matmul.output[0] else add.input[0]
        if not _gemm_compatible(info, a, b, c, matmul.output[0]):
            continue
        gemm = helper.make_node("Gemm", [a, b, c], list(add.output), name=matmul.name or add.name)
        editor.insert_before(add, gemm)
        editor.remove(add)
        editor.remove(matmul)
        rewrites["matmul_add_to_gemm"] += 1
        fused += 1
    return fused


_GEMM_TYPES = {dtype_name(t) for t in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE,
                                       TensorProto.BFLOAT16)}


def _gemm_compatible(info: ShapeTable, a: str, b: str, c: str, product: str) -> bool:
    a_shape, b_shape, c_shape, out = info.dims(a), info.dims(b), info.dims(c), info.dims(product)
    if a_shape is None or b_shape is None or c_shape is None or out is None:
        return False
    if len(a_shape) != 2 or len(b_shape) != 2 or len(c_shape) > 2 or len(out) != 2:
        return False
    if info.dtype(a) not in _GEMM_TYPES or info.dtype(c) != info.dtype(a):
        return False
    padded = (1,) * (2 - len(c_shape)) + tuple(c_shape)
    # Gemm broadcasts C one way only: each dim of C is 1 or the matching (known) output dim.
    return all(d == 1 or (isinstance(d, int) and d == o) for d, o in zip(padded, out))
