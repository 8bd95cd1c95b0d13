"""Prune: zero the smallest weights (unstructured) or remove whole output channels (structured).

Unstructured magnitude pruning zeroes exactly round(sparsity x n) weights of the Conv / ConvTranspose / Gemm /
MatMul weight tensors with the smallest |w|: per layer (each tensor on its own) or globally (one threshold over
all of them, so layers with many small weights lose more). The ONNX file stays dense and just as large; the
stats give the flash a runtime with sparse weight storage would need, per tensor the smaller of

* bitmask: ceil(n / 8) bytes of mask + nnz values
* CSR over [rows = output channels, cols = n / rows]: nnz values + nnz column indices + (rows + 1) row
  pointers, each index in the smallest unsigned integer that holds it,

or dense when neither is smaller.

Structured pruning removes the output channels with the smallest L1 norm of a Conv (group 1) or Gemm and
rewires what reads them: BatchNormalization parameters, per-channel constants of Mul/Add/Sub/Div/PRelu,
elementwise activations and pooling pass channels through, a depthwise Conv loses the same channels (and its
group shrinks), and the next Conv / ConvTranspose / Gemm / MatMul loses the matching input channels (through a
Flatten, each channel's block of features). A layer whose channels reach anything else -- a residual Add with
another tensor, Concat, Reshape, a graph output -- is left alone and the stats say why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from onnx import ModelProto, NodeProto, helper

from edgefit.analysis.weights import LINEAR_LAYER_OPS
from edgefit.errors import ConfigError, PassError
from edgefit.model import collector_paused, has_subgraph, node_attribute, set_attribute
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

SPARSE_RUNTIMES = (
    "Dense runtimes (onnxruntime, TensorFlow Lite Micro, CMSIS-NN, TensorRT) store and run pruned weights "
    "dense: the flash saving needs a runtime or build step with sparse weight storage (e.g. Neural Magic "
    "DeepSparse, XNNPACK sparse inference via TensorFlow Lite, TVM sparse conversion, or compressing the "
    "weights in flash and expanding them at load time); use --structured for a model that is smaller everywhere."
)


@dataclass(frozen=True)
class LayerSparsity:
    layer: str
    op_type: str
    weight: str
    elements: int
    zeros_before: int
    zeros_after: int
    dense_bytes: int
    sparse_bytes: int      # smallest of dense, bitmask and CSR storage
    sparse_format: str     # "bitmask", "csr" or "dense"

    @property
    def sparsity(self) -> float:
        return self.zeros_after / self.elements if self.elements else 0.0


@dataclass(frozen=True)
class LayerChannels:
    layer: str
    op_type: str
    channels_before: int
    channels_after: int
    rewired: tuple[str, ...]   # nodes whose inputs or parameters were cut to match


@dataclass(frozen=True)
class PruneStats:
    method: str                          # "unstructured-global", "unstructured-per-layer" or "structured"
    requested_sparsity: float
    # Zeroed weights / prunable weights; structured: removed channels / output channels of every Conv (group 1)
    # and Gemm with constant weights, cut or not.
    achieved_sparsity: float
    layers: tuple[LayerSparsity, ...] = ()
    channels: tuple[LayerChannels, ...] = ()
    skipped: tuple[str, ...] = ()        # "layer: reason"
    dense_weight_bytes: int = 0          # the pruned tensors as ONNX stores them
    sparse_weight_bytes: int = 0         # the same tensors in sparse storage
    notes: tuple[str, ...] = ()
    name: str = "prune"
    sparse_runtimes: str = field(default=SPARSE_RUNTIMES, repr=False)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "method": self.method,
                                "requested_sparsity": self.requested_sparsity,
                                "achieved_sparsity": round(self.achieved_sparsity, 6),
                                "skipped": list(self.skipped), "notes": list(self.notes)}
        if self.method == "structured":
            data["channels"] = [vars(c) | {"rewired": list(c.rewired)} for c in self.channels]
        else:
            data["layers"] = [vars(layer) | {"sparsity": round(layer.sparsity, 6)} for layer in self.layers]
            data["dense_weight_bytes"] = self.dense_weight_bytes
            data["sparse_weight_bytes"] = self.sparse_weight_bytes
            data["sparse_runtimes"] = self.sparse_runtimes
        return data

    def render(self, console) -> None:
        from rich.markup import escape
        from rich.table import Table

        from edgefit.report.quantities import format_bytes

        console.print(f"  {self.method}: requested {self.requested_sparsity:.0%}, achieved "
                      f"{self.achieved_sparsity:.2%}")
        table = Table(show_edge=False, pad_edge=False, box=None)
        if self.method == "structured":
            for column in ("layer", "op", "channels", "rewired"):
                table.add_column(column, justify="right" if column == "channels" else "left")
            for layer in self.channels:
                table.add_row(escape(layer.layer), escape(layer.op_type),
                              f"{layer.channels_before} -> {layer.channels_after}", escape(", ".join(layer.rewired)))
            console.print(table)
        else:
            for column in ("layer", "op", "weights", "sparsity", "dense", "sparse storage"):
                table.add_column(column, justify="left" if column in ("layer", "op") else "right")
            for layer in self.layers:
                table.add_row(escape(layer.layer), escape(layer.op_type), f"{layer.elements:,}",
                              f"{layer.sparsity:.1%}", format_bytes(layer.dense_bytes),
                              f"{format_bytes(layer.sparse_bytes)} {layer.sparse_format}")
            console.print(table)
            console.print(f"  pruned tensors: {format_bytes(self.dense_weight_bytes)} dense in the ONNX file, "
                          f"{format_bytes(self.sparse_weight_bytes)} in sparse storage")
            console.print(f"  [dim]{escape(self.sparse_runtimes)}[/]")
        for line in self.skipped:
            console.print(f"  [yellow]skipped[/] {escape(line)}")


class Prune(Pass):
    """Magnitude pruning; `skip` holds layer (node) names and/or 'first' / 'last' (the first/last prunable layer)."""

    name = "prune"
    usage = "prune:SPARSITY[:structured|:per-layer]"
    requires = frozenset({"float weights"})

    @classmethod
    def parse_args(cls, args, spec: str) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        for arg in args:
            if arg in ("structured", "per-layer"):
                changes[arg.replace("-", "_")] = True
                continue
            try:
                changes["sparsity"] = float(arg)
            except ValueError:
                raise ConfigError(f"--passes {spec!r}: expected {cls.usage}") from None
        return changes

    def run(self, model: ModelProto, options: PassOptions, progress: Progress | None) -> PassResult:
        if not 0.0 <= options.sparsity < 1.0:
            raise PassError(f"sparsity must be in [0, 1), got {options.sparsity}")
        with collector_paused():
            if options.structured:
                return _prune_structured(model, options.sparsity, options.skip)
            return _prune_unstructured(model, options.sparsity, options.per_layer, options.skip)


PASS = Prune


def prune(model: ModelProto, sparsity: float, *, per_layer: bool = False, skip: tuple[str, ...] = (),
          structured: bool = False) -> PassResult:
    """Magnitude pruning; `skip` holds layer (node) names and/or 'first' / 'last' (the first/last prunable layer)."""
    return Prune().apply(model, PassOptions(sparsity=sparsity, per_layer=per_layer, skip=tuple(skip),
                                            structured=structured))


def _subgraph_notes(model: ModelProto) -> list[str]:
    return [f"{node_label(n)} ({n.op_type}): weights inside its subgraphs are left as they are"
            for n in model.graph.node if has_subgraph(n)]


def _resolve_skip(skip: tuple[str, ...], candidates: list[str]) -> set[str]:
    names: set[str] = set()
    for entry in skip:
        if entry == "first" and candidates:
            names.add(candidates[0])
        elif entry == "last" and candidates:
            names.add(candidates[-1])
        elif entry in candidates:
            names.add(entry)
        else:
            shown = ", ".join(candidates[:12]) + (" ..." if len(candidates) > 12 else "")
            raise PassError(f"--skip {entry!r} names no prunable layer; prunable layers: {shown}")
    return names


# ---- unstructured ------------------------------------------------------------------------------------

def _weight_input(node: NodeProto, editor: GraphEditor) -> str | None:
    """The float constant weight a layer multiplies by, if it has one."""
    if node.op_type == "MatMul":
        positions = (1, 0)
    elif node.op_type in LINEAR_LAYER_OPS:
        positions = (1,)
    else:
        return None
    for k in positions:
        if k < len(node.input):
            value = editor.constant(node.input[k])
            if value is not None and value.dtype.kind == "f" and value.ndim >= 2:
                return node.input[k]
    return None


def _prune_unstructured(model: ModelProto, sparsity: float, per_layer: bool, skip: tuple[str, ...]) -> PassResult:
    result = copy_model(model)
    editor = GraphEditor(result.graph)
    layers: list[tuple[NodeProto, str]] = []
    seen: set[str] = set()
    notes = _subgraph_notes(result)
    for node in result.graph.node:
        weight = _weight_input(node, editor)
        if weight is None:
            if node.op_type in LINEAR_LAYER_OPS and any(
                    editor.producer.get(i) is not None and editor.producer[i].op_type == "DequantizeLinear"
                    for i in node.input[1:2]):
                notes.append(f"{node_label(node)}: weights are quantized; prune before quantizing")
            continue
        if weight in seen:
            notes.append(f"{node_label(node)} shares weight {weight!r} with an earlier layer; pruned once")
            continue
        seen.add(weight)
        layers.append((node, weight))
    skipped_names = _resolve_skip(skip, [node_label(n) for n, _ in layers])
    for node, weight in layers:
        if node_label(node) not in skipped_names:
            notes += [f"{weight!r} is also read inside the subgraphs of {node_label(reader)} ({reader.op_type}): "
                      "pruned there too" for reader in editor.consumers(weight)
                      if has_subgraph(reader) and weight not in reader.input]
    skipped = [f"{name}: skipped on request" for name in skipped_names]
    layers = [(n, w) for n, w in layers if node_label(n) not in skipped_names]
    if not layers:
        raise PassError("no Conv/ConvTranspose/Gemm/MatMul layer with constant float weights to prune")
    # One weight tensor at a time: masks come from a magnitude threshold (one over all layers, or one per layer)
    # instead of index arrays over every weight, so the pass never holds the model's weights twice more.
    groups = [[w for _, w in layers]] if not per_layer else [[w] for _, w in layers]
    thresholds: dict[str, list] = {}
    for group in groups:
        threshold = _threshold(editor, group, sparsity)
        for name in group:
            thresholds[name] = threshold   # shared [t, ties left]: ties go to the tensors in order
    stats_layers = []
    for node, weight in layers:
        before = editor.constant(weight)
        after = np.where(_below(before, thresholds[weight]), np.zeros((), before.dtype), before)
        stats_layers.append(_layer_sparsity(node, weight, before, after))
        del before
        editor.replace_initializer(weight, after)
        del after
    total = sum(s.elements for s in stats_layers)
    zeros = sum(s.zeros_after for s in stats_layers)
    stats = PruneStats("unstructured-per-layer" if per_layer else "unstructured-global", sparsity,
                       zeros / total, layers=tuple(stats_layers), skipped=tuple(sorted(skipped)),
                       dense_weight_bytes=sum(s.dense_bytes for s in stats_layers),
                       sparse_weight_bytes=sum(s.sparse_bytes for s in stats_layers), notes=tuple(notes))
    return PassResult(result, stats)


def _threshold(editor: GraphEditor, weights: list[str], sparsity: float) -> list:
    """[t, ties]: zeroing every |w| < t and the first `ties` weights with |w| == t (tensors and elements in
    order) zeroes exactly round(sparsity x n) of the smallest-magnitude weights of `weights` together."""
    tensors = [editor.initializers[name] for name in weights]
    sizes = [int(np.prod(t.dims, dtype=np.int64)) for t in tensors]
    # abs is exact in every float type and the widest type holds the others exactly, so it orders as float64.
    flat = np.empty(sum(sizes), dtype=np.result_type(*(helper.tensor_dtype_to_np_dtype(t.data_type)
                                                         for t in tensors)))
    start = 0
    for name, size in zip(weights, sizes):
        np.abs(editor.constant(name).reshape(-1), out=flat[start:start + size])
        start += size
    chosen = int(round(sparsity * flat.size))
    if chosen == 0:
        return [-np.inf, 0]
    flat.partition(chosen - 1)   # in place: the array is ours; everything before index chosen-1 is <= t
    threshold = flat[chosen - 1]
    return [threshold, chosen - int(np.count_nonzero(flat[:chosen] < threshold))]


def _below(values: np.ndarray, threshold: list) -> np.ndarray:
    """The mask of the weights to zero; uses up the ties it takes from the shared `threshold` entry."""
    magnitude = np.abs(values)
    mask = magnitude < threshold[0]
    if threshold[1] > 0:
        equal = np.flatnonzero(magnitude == threshold[0])[:threshold[1]]
        mask.reshape(-1)[equal] = True
        threshold[1] -= equal.size
    return mask


def _index_bytes(largest: int) -> int:
    for size in (1, 2, 4):
        if largest < 256 ** size:
            return size
    return 8


def sparse_storage(weight: np.ndarray) -> tuple[int, str]:
    """(bytes, format) of the smallest storage of `weight`: dense, bitmask or CSR (see module docstring)."""
    n, nnz, item = weight.size, int(np.count_nonzero(weight)), weight.itemsize
    rows = weight.shape[0] if weight.ndim else 1
    cols = n // max(rows, 1)
    options = {
        "dense": n * item,
        "bitmask": -(-n // 8) + nnz * item,
        "csr": nnz * item + nnz * _index_bytes(max(cols - 1, 0)) + (rows + 1) * _index_bytes(nnz),
    }
    best = min(options, key=lambda k: (options[k], k != "dense"))
    return options[best], best


def _layer_sparsity(node: NodeProto, weight: str, before: np.ndarray, after: np.ndarray) -> LayerSparsity:
    sparse_bytes, sparse_format = sparse_storage(after)
    return LayerSparsity(node_label(node), node.op_type, weight, int(before.size),
                         int(before.size - np.count_nonzero(before)), int(after.size - np.count_nonzero(after)),
                         int(after.nbytes), sparse_bytes, sparse_format)


# ---- structured --------------------------------------------------------------------------------------

_CHANNEL_PASSTHROUGH = {
    "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "HardSigmoid", "HardSwish", "Elu", "Selu", "Celu", "Softplus",
    "Softsign", "Gelu", "Mish", "Identity", "Dropout", "Abs", "Neg", "Exp", "Sqrt", "Erf", "ThresholdedRelu",
    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool",
}
_CHANNEL_CONSTANT_OPS = {"Mul", "Add", "Sub", "Div", "PRelu"}


class _Blocked(Exception):
    """A channel cut cannot be carried through the graph safely; the message says where and why."""


@dataclass
class _CutPlan:
    """Edits that remove channels, collected first so that a blocked cut leaves the model untouched."""

    slices: list[tuple[NodeProto, int, int, list[int]]] = field(default_factory=list)  # node, input, axis, keep
    groups: list[tuple[NodeProto, int]] = field(default_factory=list)                   # depthwise: new group
    rewired: list[str] = field(default_factory=list)


def _prune_structured(model: ModelProto, sparsity: float, skip: tuple[str, ...]) -> PassResult:
    result = copy_model(model)
    editor = GraphEditor(result.graph)
    shapes = infer_symbolic_shapes(result)
    hosts = [n for n in result.graph.node if n.op_type in ("Conv", "Gemm") and _weight_input(n, editor)]
    skipped_names = _resolve_skip(skip, [node_label(n) for n in hosts])
    skipped = [f"{name}: skipped on request" for name in sorted(skipped_names)]
    cut: list[LayerChannels] = []
    # The achieved sparsity is over every layer that could have been cut, not just the ones that were: one cut
    # SE squeeze among seven layers is 2% of the channels, not the 50% asked for.
    channels_total = sum(_output_channels(host, editor) for host in hosts if node_attribute(host, "group", 1) == 1)
    channels_removed = 0
    for host in hosts:
        label = node_label(host)
        if label in skipped_names:
            continue
        try:
            plan, channels, keep = _plan_cut(host, editor, shapes, sparsity)
        except _Blocked as reason:
            skipped.append(f"{label}: {reason}")
            continue
        _apply(plan, editor)
        channels_removed += channels - len(keep)
        cut.append(LayerChannels(label, host.op_type, channels, len(keep), tuple(plan.rewired)))
    if not cut:
        detail = "; ".join(skipped) or "no Conv/Gemm layers with constant weights"
        raise PassError(f"structured pruning can remove no channel safely: {detail}")
    editor.remove_dead()   # the weights the cuts replaced
    editor.commit()
    del result.graph.value_info[:]   # shapes along the cut paths changed; consumers re-infer them
    stats = PruneStats("structured", sparsity, channels_removed / channels_total, channels=tuple(cut),
                       skipped=tuple(skipped), notes=tuple(_subgraph_notes(result)))
    return PassResult(result, stats)


def _output_axis(host: NodeProto) -> int:
    """The axis of a Conv / Gemm weight that holds its output channels."""
    if host.op_type == "Conv":
        return 0
    return 0 if node_attribute(host, "transB", 0) else 1


def _output_channels(host: NodeProto, editor: GraphEditor) -> int:
    return editor.constant(host.input[1]).shape[_output_axis(host)]


def _plan_cut(host: NodeProto, editor: GraphEditor, shapes: ShapeTable, sparsity: float) -> tuple[_CutPlan, int, list[int]]:
    weight = editor.constant(host.input[1])
    group = node_attribute(host, "group", 1)
    if host.op_type == "Conv" and group != 1:
        raise _Blocked(f"grouped Conv (group={group}): its channels are cut with the layer feeding it")
    out_axis = _output_axis(host)
    channels = weight.shape[out_axis]
    remove = min(int(round(sparsity * channels)), channels - 1)
    if remove <= 0:
        raise _Blocked(f"{channels} channel(s): sparsity {sparsity} removes none")
    other_axes = tuple(a for a in range(weight.ndim) if a != out_axis)
    l1 = np.abs(weight).sum(axis=other_axes)
    keep = sorted(np.argsort(l1, kind="stable")[remove:].tolist())
    plan = _CutPlan()
    plan.slices.append((host, 1, out_axis, keep))
    if len(host.input) > 2 and host.input[2]:
        bias = editor.constant(host.input[2])
        if bias is None:
            raise _Blocked("its bias is not a constant")
        if bias.ndim and bias.shape[-1] == channels:
            plan.slices.append((host, 2, bias.ndim - 1, keep))
    _follow(host.output[0], keep, channels, editor, shapes, plan)
    return plan, channels, keep


def _follow(tensor: str, keep: list[int], total: int, editor: GraphEditor, shapes: ShapeTable, plan: _CutPlan) -> None:
    """Carry the cut of axis 1 of `tensor` (keeping `keep` of `total`) through every reader."""
    if tensor in editor.output_names:
        raise _Blocked(f"its channels reach the graph output {tensor!r}")
    for reader in editor.consumers(tensor):
        op, label = reader.op_type, node_label(reader)
        if tensor not in reader.input:
            raise _Blocked(f"{label} ({op}) reads the channels inside a subgraph")
        position = list(reader.input).index(tensor)
        if op == "BatchNormalization" and position == 0:
            plan.slices += [(reader, k, 0, keep) for k in range(1, 5)]
            plan.rewired.append(label)
            _follow(reader.output[0], keep, total, editor, shapes, plan)
        elif (op in _CHANNEL_PASSTHROUGH or op == "Pad" and _pads_spatial_only(reader, shapes.dims(tensor), editor)) \
                and position == 0:
            _follow(reader.output[0], keep, total, editor, shapes, plan)
        elif op in _CHANNEL_CONSTANT_OPS:
            _cut_channel_constant(reader, position, keep, total, editor, shapes, plan)
            _follow(reader.output[0], keep, total, editor, shapes, plan)
        elif op == "Flatten" and node_attribute(reader, "axis", 1) == 1:
            shape = shapes.dims(tensor)
            if shape is None or len(shape) < 2 or not is_static(shape[2:]):
                raise _Blocked(f"Flatten {label} reads a tensor whose spatial size is not static")
            block = int(np.prod(shape[2:], dtype=np.int64))
            features = [c * block + j for c in keep for j in range(block)]
            _follow(reader.output[0], features, total * block, editor, shapes, plan)
        elif op == "Conv" and position == 0:
            _cut_conv_input(reader, keep, total, editor, shapes, plan)
        elif op == "ConvTranspose" and position == 0 and node_attribute(reader, "group", 1) == 1:
            _require_constant(reader, 1, editor)
            plan.slices.append((reader, 1, 0, keep))
            plan.rewired.append(label)
        elif op == "Gemm" and position == 0 and not node_attribute(reader, "transA", 0):
            _require_constant(reader, 1, editor)
            plan.slices.append((reader, 1, 1 if node_attribute(reader, "transB", 0) else 0, keep))
            plan.rewired.append(label)
        elif op == "MatMul" and position == 0 and len((shapes.dims(tensor) or ())) == 2:
            weight = _require_constant(reader, 1, editor)
            if weight.ndim != 2:
                raise _Blocked(f"MatMul {label} has a {weight.ndim}-D weight")
            plan.slices.append((reader, 1, 0, keep))
            plan.rewired.append(label)
        elif op in ("Add", "Sub", "Mul", "Div", "Concat", "Sum", "Max", "Min"):
            raise _Blocked(f"its channels meet another tensor in {op} {label} (e.g. a residual connection) "
                           "that is not cut the same way")
        else:
            raise _Blocked(f"its channels reach {op} {label}, which structured pruning cannot rewire")


def _pads_spatial_only(pad: NodeProto, shape, editor: GraphEditor) -> bool:
    """A Pad that leaves axes 0 and 1 alone (tf2onnx writes one before each 'SAME' strided Conv) passes channels
    through: it pads every channel the same way, whatever its mode."""
    if len(pad.input) > 1 and pad.input[1]:
        pads = editor.constant(pad.input[1])
    else:
        pads = node_attribute(pad, "pads", None)
    if pads is None:
        return False
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    count = len(pads) // 2
    axes = list(range(count))
    if len(pad.input) > 3 and pad.input[3]:
        given = editor.constant(pad.input[3])
        if given is None or (shape is None and any(int(a) < 0 for a in given.reshape(-1))):
            return False
        axes = [int(a) % len(shape) if int(a) < 0 else int(a) for a in given.reshape(-1)]
    return all(begin == 0 and end == 0 for axis, begin, end in zip(axes, pads[:count], pads[count:]) if axis < 2)


def _require_constant(node: NodeProto, index: int, editor: GraphEditor) -> np.ndarray:
    value = editor.constant(node.input[index]) if index < len(node.input) else None
    if value is None:
        raise _Blocked(f"{node_label(node)} ({node.op_type}) has no constant weight to cut")
    return value


def _cut_conv_input(conv: NodeProto, keep: list[int], total: int, editor: GraphEditor, shapes: ShapeTable,
                    plan: _CutPlan) -> None:
    weight = _require_constant(conv, 1, editor)
    group = node_attribute(conv, "group", 1)
    label = node_label(conv)
    if group == 1:
        plan.slices.append((conv, 1, 1, keep))
        plan.rewired.append(label)
        return
    if group == total and weight.shape[0] == total and weight.shape[1] == 1:
        # Depthwise: channel c of the output reads only channel c of the input, so it goes too.
        plan.slices.append((conv, 1, 0, keep))
        if len(conv.input) > 2 and conv.input[2]:
            _require_constant(conv, 2, editor)
            plan.slices.append((conv, 2, 0, keep))
        plan.groups.append((conv, len(keep)))
        plan.rewired.append(label)
        _follow(conv.output[0], keep, total, editor, shapes, plan)
        return
    raise _Blocked(f"its channels reach grouped Conv {label} (group={group}), which is not depthwise")


def _cut_channel_constant(node: NodeProto, position: int, keep: list[int], total: int, editor: GraphEditor,
                          shapes: ShapeTable, plan: _CutPlan) -> None:
    """Slice the constant operand of an elementwise op where it varies along the channel axis."""
    if node.op_type in ("Sub", "Div", "PRelu") and position != 0:
        raise _Blocked(f"{node.op_type} {node_label(node)} uses the channels as its second operand")
    other_index = 1 - position
    value = editor.constant(node.input[other_index])
    if value is None:
        raise _Blocked(f"its channels meet another tensor in {node.op_type} {node_label(node)} (e.g. a residual "
                       "connection) that is not cut the same way")
    rank = len((shapes.dims(node.input[position]) or ())) or 4
    if value.ndim > rank:
        raise _Blocked(f"{node.op_type} {node_label(node)} broadcasts to a higher rank")
    if value.size == 1:
        return
    padded = (1,) * (rank - value.ndim) + value.shape
    if any(d != 1 for k, d in enumerate(padded) if k != 1):
        raise _Blocked(f"{node.op_type} {node_label(node)} has a constant that varies along a non-channel axis")
    if padded[1] == total:
        plan.slices.append((node, other_index, value.ndim - (rank - 1), keep))
        plan.rewired.append(node_label(node))


def _apply(plan: _CutPlan, editor: GraphEditor) -> None:
    for node, index, axis, keep in plan.slices:
        value = editor.constant(node.input[index])
        node.input[index] = editor.add_initializer(f"{node.input[index]}_pruned", np.take(value, keep, axis=axis))
        editor.rewired(node)
    for node, group in plan.groups:
        set_attribute(node, "group", group)
