"""Footprint: every number edgefit reports for one model at one set of resolved input shapes."""

from __future__ import annotations

import copy
import dataclasses
import os
import weakref
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import onnx.inliner
from onnx import GraphProto, ModelProto, NodeProto, TensorProto, numpy_helper

from edgefit.analysis.dtypes import DTYPE_BYTES, FLOAT_DTYPES, PRECISION_BYTES, tensor_bytes
from edgefit.analysis.macs import OpContext, UnknownCost, cost_rule, node_cost
from edgefit.analysis.memory import INPLACE_OPS, VIEW_OPS, Buffer, Step, plan_arena, plan_steps
from edgefit.analysis.weights import WEIGHT_SLOTS, ConstantView, WeightTally, constant_view
from edgefit.errors import ShapeError
from edgefit.known_values import BranchChoice
from edgefit.model import (
    GraphIndex,
    LoadedModel,
    collector_paused,
    default_opset,
    external_location,
    index_graph,
    initializer_names,
    iter_graphs,
    iter_tensors,
    load_model,
    metadata_only_copy,
    node_attribute,
    node_subgraphs,
    subgraph_scope,
    validate,
)
from edgefit.shapes import ShapeTable, TensorInfo, resolve_shapes, shape_derived_int


@dataclass(slots=True)   # not frozen: one per node, and frozen dataclasses are three times slower to build
class LayerStats:
    """One computing node of the top-level graph (control-flow nodes carry their subgraphs' totals)."""

    name: str
    op_type: str
    params: int
    weight_bytes: int
    macs: int | None            # None: unknown (the reason is in Footprint.unknowns)
    flops: int | None
    input_bytes: int | None     # non-constant inputs the node reads
    output_bytes: int | None    # outputs it writes
    dtype: str                  # element type of its first output, e.g. "float32", "int8"
    branches: dict[str, dict[str, int | None]] = field(default_factory=dict)  # If/Loop/Scan: per subgraph
    group: int = 1              # convolutions' `group` attribute (> 1: grouped or depthwise)
    inputs_from: tuple[int, ...] = ()   # positions in the same layer list of the layers whose outputs it reads


@dataclass(slots=True)   # not frozen, like LayerStats: one per node
class OpSite:
    """Where one top-level layer sits in the graph (index-aligned with Footprint.layers): what a runtime's memory
    model needs to rebuild the graph it would run (fusing activations into their producer, folding BatchNorm)."""

    reads: tuple[str, ...]              # non-constant inputs
    writes: tuple[str, ...]             # outputs
    constants: int                      # constant (weight) inputs it reads
    output_shape: tuple[int, ...] | None  # of its first output
    kernel: tuple[int, ...] | None      # Conv's weight shape (out, in / group, kh, kw)
    exponent: float | None = None       # Pow's exponent when it is a constant scalar (x**2 is a multiply, x**0.75 not)


@dataclass(frozen=True)
class LiveTensor:
    name: str
    bytes: int


@dataclass(frozen=True)
class Footprint:
    model_path: str | None
    opset: int
    params: int
    params_by_dtype: dict[str, int]
    weight_bytes: int
    weight_bytes_by_dtype: dict[str, int]
    macs: int
    flops: int
    peak_activation_bytes: int          # arena size of the best execution order found
    file_order_peak_bytes: int          # arena size when nodes run in file order
    activation_lower_bound_bytes: int   # no schedule or placement can go below this
    peak_node: str | None               # node running when the arena is fullest
    live_at_peak: tuple[LiveTensor, ...]
    inputs: dict[str, list[int]]        # resolved shapes
    outputs: dict[str, list[int] | None]
    layers: tuple[LayerStats, ...]
    op_histogram: dict[str, int]
    unknowns: tuple[str, ...]           # reasons some number is incomplete; empty means every figure is exact
    warnings: tuple[str, ...]
    shape_source: str                   # "onnx shape inference" or "onnx shape inference + onnxruntime run"
    buffers: tuple[Buffer, ...]         # activation tensors with lifetimes in the best order (for re-planning)
    alignment: int = 16
    # Indices into graph.node of the computing nodes in the best order found (constant-only nodes left out): what
    # the reorder pass writes into the file.
    execution_order: tuple[int, ...] = ()
    ops: tuple[OpSite, ...] = ()        # one per layer of the top-level graph
    # For each If/Loop/Scan (nested ones too): which branch was counted and why, or how often the body was.
    control_flow: tuple[str, ...] = ()
    # Builds the buffers of a runtime that shares storage (views alias their input, elementwise ops run in
    # place), as onnxruntime's planner does. Only targets whose runtime really does it ask for them, so they are
    # made on first use (see shared_buffers). None: not available.
    shared_planner: Callable[[], list[Buffer]] | None = field(default=None, repr=False, compare=False)
    # The buffers' lifetimes when nodes run in file order: only a report that draws both orders asks for them.
    file_order_planner: Callable[[], list[Buffer]] | None = field(default=None, repr=False, compare=False)
    # Re-planned arena sizes by (precision, shared storage): checking one model on every device asks for the
    # same few plans dozens of times, and a plan of a large graph costs tens of milliseconds.
    _arena_cache: dict[tuple[str, bool], int] = field(default_factory=dict, init=False, repr=False, compare=False)
    _shared_buffers: list[tuple[Buffer, ...]] = field(default_factory=list, init=False, repr=False, compare=False)

    @property
    def shared_buffers(self) -> tuple[Buffer, ...]:
        """Buffers when the runtime shares storage; empty when not available."""
        if not self._shared_buffers:
            self._shared_buffers.append(tuple(self.shared_planner()) if self.shared_planner else ())
        return self._shared_buffers[0]

    def file_order_buffers(self) -> tuple[Buffer, ...]:
        """Buffers with lifetimes in file order (equal to `buffers` when the file order is the best order)."""
        return tuple(self.file_order_planner()) if self.file_order_planner else self.buffers

    @property
    def dominant_dtype(self) -> str:
        """The dtype holding most weight bytes ('float32' for an empty model)."""
        if not self.weight_bytes_by_dtype:
            return "float32"
        return max(self.weight_bytes_by_dtype.items(), key=lambda kv: kv[1])[0]

    def activation_bytes_at(self, precision: str | None, *, shared_storage: bool = False) -> int:
        """Arena size if floating-point activations were stored at `precision` ('fp32', 'fp16', 'int8').

        None keeps the model's own dtypes. Integer and bool tensors keep their size either way.
        `shared_storage`: for a runtime that aliases views and runs elementwise ops in place.
        """
        shared = shared_storage and bool(self.shared_buffers)
        if precision is None and not shared:
            return self.peak_activation_bytes
        key = (precision or "model", shared)
        if key not in self._arena_cache and precision is not None and not self._resized_at(precision):
            # Every float activation is stored at `precision` already (fp32 of an fp32 model): the model's own plan.
            self._arena_cache[key] = self.activation_bytes_at(None, shared_storage=shared)
        if key not in self._arena_cache:
            buffers = self.shared_buffers if shared else self.buffers
            if precision is not None:
                buffers = [b.at_float_precision(PRECISION_BYTES[precision]) for b in buffers]
            size = plan_arena(buffers, alignment=self.alignment).size
            if shared:
                # Sharing is an option a runtime takes, never a cost: where the merged buffers place worse (greedy
                # placement can fragment around a long-lived merged buffer), the plan without sharing still holds.
                size = min(size, self.activation_bytes_at(precision))
            self._arena_cache[key] = size
        return self._arena_cache[key]

    def _resized_at(self, precision: str) -> bool:
        """Does storing floats at `precision` change the size of any activation buffer?"""
        element_bytes = PRECISION_BYTES[precision]
        return any(b.bytes_at(element_bytes) != b.bytes for b in self.buffers)

    @property
    def shared_storage_peak_bytes(self) -> int | None:
        """The arena for a runtime that shares storage (planned on first use); None when not computed."""
        return self.activation_bytes_at(None, shared_storage=True) if self.shared_buffers else None

    def weight_bytes_at(self, precision: str | None) -> int:
        """Weight storage if floating-point weights were stored at `precision`; quantized weights stay as they are."""
        if precision is None:
            return self.weight_bytes
        element_bytes = PRECISION_BYTES[precision]
        total = 0.0
        for dtype, nbytes in self.weight_bytes_by_dtype.items():
            size = DTYPE_BYTES.get(dtype)
            if dtype in FLOAT_DTYPES and size:
                total += nbytes / size * element_bytes
            else:
                total += nbytes
        return int(total)

    @collector_paused()   # a dict per layer: tens of thousands on a large graph
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the keys of DESIGN.md section 3 (and more)."""
        # Buffers and planners are for re-planning, not for reporting (and a large graph has tens of thousands);
        # layers are converted field by field: dataclasses.asdict deep-copies every value, 10x slower.
        data = copy.deepcopy({f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                              if f.name not in ("buffers", "shared_planner", "file_order_planner", "layers",
                                                "live_at_peak", "execution_order", "ops")
                              and not f.name.startswith("_")})
        names = [f.name for f in dataclasses.fields(LayerStats)]
        data["layers"] = [{name: getattr(layer, name) for name in names} for layer in self.layers]
        for layer in data["layers"]:
            layer["branches"] = copy.deepcopy(layer["branches"])
        data["live_at_peak"] = [dataclasses.asdict(t) for t in self.live_at_peak]
        data["shared_storage_peak_bytes"] = self.shared_storage_peak_bytes
        # A layer whose cost is unknown counts 0 in the totals: then they are lower bounds, and JSON says so.
        data["macs_is_lower_bound"] = any(layer.macs is None for layer in self.layers)
        data["flops_is_lower_bound"] = any(layer.flops is None for layer in self.layers)
        return data



@dataclass
class _GraphStats:
    layers: list[LayerStats]
    macs: int | None
    flops: int | None
    params: int
    weight_bytes: int
    arena_bytes: int
    file_order_arena_bytes: int
    lower_bound_bytes: int
    peak_node: str | None = None
    live_at_peak: tuple[LiveTensor, ...] = ()
    buffers: tuple[Buffer, ...] = ()
    shared_planner: Callable[[], list[Buffer]] | None = None
    file_order_planner: Callable[[], list[Buffer]] | None = None
    order: tuple[int, ...] = ()   # node indices in the planned order
    sites: tuple[OpSite, ...] = ()


class _Analysis:
    """Walks the main graph and its subgraphs once, collecting layers, costs, weights and memory."""

    def __init__(self, proto: ModelProto, shapes: ShapeTable, alignment: int):
        self.proto = proto
        self.shapes = shapes
        self.alignment = alignment
        self.tally = WeightTally()
        self.unknown_nodes: dict[str, list[str]] = {}   # reason -> node names
        self.histogram: Counter[str] = Counter()
        self.unsized: list[str] = []
        self.control_flow: list[str] = []   # what was counted for each If/Loop/Scan, and why
        self.top_view: ConstantView | None = None

    def graph(self, graph: GraphProto, scope: str, outer_constants: frozenset[str],
              outer_names: frozenset[str], index: GraphIndex | None = None) -> _GraphStats:
        index = index or index_graph(graph, outer_names)
        view = constant_view(graph, index, outer_constants)
        if not scope:
            self.top_view = view
        table = self.shapes.scopes.get(scope, {})
        lookup = self._lookup_in(scope, table)
        # Names a subgraph may read from here; only control-flow nodes need them.
        visible = (outer_names | {i.name for i in graph.input} | initializer_names(graph) | {
            o for names in index.outputs for o in names if o}) if index.with_subgraphs else outer_names
        constants = view.constants
        histogram: dict[str, int] = {}
        add_consumer = self.tally.add_consumer
        nodes, node_inputs, node_outputs, node_reads = index.nodes, index.inputs, index.outputs, index.reads
        layers: list[LayerStats] = []
        layer_writing: dict[str, int] = {}   # tensor -> position of the layer that writes it
        steps: list[Step] = []
        step_nodes: list[int] = []
        macs_total: int | None = 0
        flops_total: int | None = 0
        params_total = bytes_total = 0
        sites: list[OpSite] | None = None if scope else []
        for i in index.order:
            if i in view.folded_nodes:
                continue
            node = nodes[i]
            op_type, domain = node.op_type, node.domain
            inputs, outputs, all_reads = node_inputs[i], node_outputs[i], node_reads[i]
            label = node.name or f"{op_type}_{i}"
            key = op_type if domain in ("", "ai.onnx") else f"{domain}.{op_type}"
            histogram[key] = histogram.get(key, 0) + 1
            if constants.isdisjoint(all_reads):
                params = weight_bytes = 0
                reads = all_reads
            else:
                params, weight_bytes = add_consumer(graph, view, lookup, node, inputs, all_reads)
                reads = tuple([n for n in all_reads if n not in constants])
            if domain == "ai.onnx.ml":   # classical-ML ops keep what they learned in attributes
                held_params, held_bytes = self.tally.add_attribute_weights(node)
                params += held_params
                weight_bytes += held_bytes
            branches: dict[str, dict[str, int | None]] = {}
            workspace = 0
            if i in index.with_subgraphs:
                macs, flops, branch_params, branch_bytes, workspace, branches = self._control_flow(
                    node, i, label, scope, node_subgraphs(node), constants, visible)
                params += branch_params
                weight_bytes += branch_bytes
            else:
                macs, flops = self._cost(node, label, [lookup(n) if n else None for n in inputs],
                                         [lookup(n) if n else None for n in outputs])
            writes = outputs if "" not in outputs else tuple([o for o in outputs if o])
            steps.append(Step(label, reads, writes, workspace, _storage_sharing(domain, op_type, inputs, constants)))
            step_nodes.append(i)
            first_written = lookup(writes[0]) if writes else None
            inputs_from = tuple(dict.fromkeys([layer_writing[n] for n in reads if n in layer_writing]))
            for name in writes:
                layer_writing[name] = len(layers)
            layers.append(LayerStats(
                label, op_type, params, weight_bytes, macs, flops, _total_bytes(lookup, reads),
                _total_bytes(lookup, writes), first_written.dtype if first_written is not None else "unknown",
                branches, _group(node) if op_type in _GROUPED_OPS else 1, inputs_from))
            if sites is not None:
                sites.append(_op_site(node, reads, writes, len(all_reads) - len(reads), first_written, lookup,
                                      _pow_exponent(graph, view, node) if op_type == "Pow" else None))
            if macs is None or macs_total is None:
                macs_total = None
            else:
                macs_total += macs
            if flops is None or flops_total is None:
                flops_total = None
            else:
                flops_total += flops
            params_total += params
            bytes_total += weight_bytes
        for key, count in histogram.items():
            self.histogram[key] += count
        stats = _GraphStats(layers, macs_total, flops_total, params_total, bytes_total, 0, 0, 0,
                            sites=tuple(sites or ()))
        self._plan_memory(graph, scope, table, view, steps, stats)
        stats.order = tuple(step_nodes[k] for k in stats.order)
        return stats

    def _lookup_in(self, scope: str, table: dict[str, TensorInfo]) -> Callable[[str], TensorInfo | None]:
        """shapes.lookup for one scope, with the scope's own table (where nearly every name is) tried first."""
        if not scope:
            return table.get
        shapes = self.shapes

        def lookup(name: str) -> TensorInfo | None:
            info = table.get(name)
            return info if info is not None else shapes.lookup(name, scope)
        return lookup

    def _cost(self, node: NodeProto, label: str, inputs: list[TensorInfo | None],
              outputs: list[TensorInfo | None]) -> tuple[int | None, int | None]:
        try:
            return node_cost(OpContext(node, inputs, outputs))
        except UnknownCost as reason:
            if node.domain in ("", "ai.onnx") and cost_rule(node) is None:
                # Every standard op that multiplies-accumulates has a rule, so MACs are 0; only FLOPs are unknown.
                self.unknown_nodes.setdefault(f"FLOPs not counted: {reason}", []).append(label)
                return 0, None
            self.unknown_nodes.setdefault(f"MACs/FLOPs not counted: {reason}", []).append(label)
            return None, None

    def _control_flow(self, node: NodeProto, position: int, label: str, scope: str,
                      subgraphs: list[tuple[str, GraphProto]], constants: set[str], visible: frozenset[str] | set[str]):
        choice = self.shapes.branch_choices.get((scope, node.output[0])) if node.op_type == "If" else None
        branch_stats = {}
        for name, sub in subgraphs:
            args = (sub, subgraph_scope(scope, position, node, name), frozenset(constants), frozenset(visible))
            if choice is not None and name != choice.branch:
                # The branch not taken: its weights are stored in the model (params count them); what it would
                # cost, and what about that cost is unknown, does not apply to these inputs.
                with self._unknowns_dropped():
                    branch_stats[name] = self.graph(*args)
            else:
                branch_stats[name] = self.graph(*args)
        branches = {name: {"macs": s.macs, "flops": s.flops, "params": s.params, "peak_activation_bytes": s.arena_bytes}
                    for name, s in branch_stats.items()}
        params = sum(s.params for s in branch_stats.values())
        weight_bytes = sum(s.weight_bytes for s in branch_stats.values())
        workspace = max(s.arena_bytes for s in branch_stats.values())
        macs_each = [s.macs for s in branch_stats.values()]
        flops_each = [s.flops for s in branch_stats.values()]
        if choice is not None:
            taken = branch_stats[choice.branch]
            macs, flops, workspace = taken.macs, taken.flops, taken.arena_bytes
            self.control_flow.append(f"{label} (If): {choice.branch} taken, its condition known from "
                                     f"{_condition_source(choice)}; only that branch is counted")
        elif node.op_type == "If":
            # One inference runs one branch: budget for the costlier.
            macs = None if None in macs_each else max(macs_each)
            flops = None if None in flops_each else max(flops_each)
            costlier = max(branch_stats, key=lambda name: branch_stats[name].macs or 0)
            self.control_flow.append(
                f"{label} (If): condition depends on {self._condition_inputs(scope, node)}; both branches analysed, "
                "the costlier counts" + (f" ({costlier})" if macs is not None else ""))
        else:
            trips = self._trip_count(node, scope)
            if trips is None:
                body = macs_each[0]
                self.unknown_nodes.setdefault(
                    f"{node.op_type} trip count unknown (body: {body if body is not None else 'unknown'} MACs "
                    f"per iteration)", []).append(label)
                macs = flops = None
                self.control_flow.append(f"{label} ({node.op_type}): trip count unknown; MACs not counted")
            else:
                branches["trip_count"] = {"value": trips}
                macs = None if macs_each[0] is None else macs_each[0] * trips
                flops = None if flops_each[0] is None else flops_each[0] * trips
                self.control_flow.append(f"{label} ({node.op_type}): body counted {trips:,} time(s)")
        return macs, flops, params, weight_bytes, workspace, branches

    def _condition_inputs(self, scope: str, node: NodeProto) -> str:
        """What an undecided If's condition reads, and the --input-value that would decide it when every input
        it reads is a scalar or 1-D (what the option gives; a data tensor is no setting to pass)."""
        inputs = self.shapes.condition_inputs.get((scope, node.output[0]), ())
        if not inputs:
            return "input data"
        named = ", ".join(f"{name!r}" for name in inputs)
        if any(len(self.shapes.inputs.get(name, ())) > 1 for name in inputs):
            return f"input data ({named})"
        options = " ".join(f"--input-value {name}=VALUE" for name in inputs)
        return (f"input{'s' if len(inputs) > 1 else ''} {named}: pass {options} to count only the branch it "
                "takes")

    @contextmanager
    def _unknowns_dropped(self):
        """Analyse a subgraph without adding to the unknowns and control-flow notes."""
        unknown_nodes = {reason: list(nodes) for reason, nodes in self.unknown_nodes.items()}
        unsized, notes = len(self.unsized), len(self.control_flow)
        try:
            yield
        finally:
            self.unknown_nodes = unknown_nodes
            del self.unsized[unsized:]
            del self.control_flow[notes:]

    def _trip_count(self, node: NodeProto, scope: str) -> int | None:
        if node.op_type == "Loop":
            if not node.input or not node.input[0]:
                return None
            count = constant_int(self.proto, node.input[0])
            if count is None and not scope:
                count = shape_derived_int(self.proto, node.input[0], self.shapes.inputs)
            return count
        if node.op_type == "Scan":
            num_scan_inputs = node_attribute(node, "num_scan_inputs", 0)
            if not num_scan_inputs:
                return None
            first_scan = node.input[len(node.input) - num_scan_inputs]
            info = self.shapes.lookup(first_scan, scope)
            axes = list(node_attribute(node, "scan_input_axes", [0]))
            opset = default_opset(self.proto)
            if info is None or info.shape is None:
                return None
            if opset < 9:   # Scan-8: inputs are [batch, sequence, ...] and the body runs per item and step
                return info.shape[0] * info.shape[1] if len(info.shape) > 1 else None
            axis = axes[0] if axes[0] >= 0 else axes[0] + len(info.shape)
            return info.shape[axis] if 0 <= axis < len(info.shape) else None
        return None

    def _plan_memory(self, graph: GraphProto, scope: str, table: dict, view: ConstantView, steps: list[Step],
                     stats: _GraphStats) -> None:
        sizes: dict[str, tuple[int, str, int]] = {}
        names = [i.name for i in graph.input if i.name not in view.constants] + [w for s in steps for w in s.writes]
        for name in names:
            info = table.get(name)
            size = None if info is None or info.shape is None else tensor_bytes(info.elements, info.dtype)
            if size is None:
                self.unsized.append(name)
            else:
                sizes[name] = (info.elements, info.dtype, size)
        inputs = [i.name for i in graph.input if i.name not in view.constants]
        plan = plan_steps(steps, sizes, inputs, [o.name for o in graph.output], self.alignment)
        stats.arena_bytes = plan.arena.size
        stats.file_order_arena_bytes = plan.file_order_size
        stats.lower_bound_bytes = plan.lower_bound
        stats.buffers = tuple(plan.buffers)
        stats.shared_planner = plan.shared_buffers
        stats.file_order_planner = plan.file_order_buffers
        stats.order = tuple(plan.order)
        if plan.arena.peak_step is not None and plan.order:
            stats.peak_node = steps[plan.order[min(plan.arena.peak_step, len(plan.order) - 1)]].name
        by_name = {b.name: b.bytes for b in plan.buffers}
        stats.live_at_peak = tuple(LiveTensor(n, by_name[n]) for n in plan.arena.live_at_peak)


def _condition_source(choice: BranchChoice) -> str:
    sources = ([f"input value{'s' if len(choice.inputs) > 1 else ''} {', '.join(choice.inputs)}"] if choice.inputs
               else []) + (["tensor shapes"] if choice.from_shapes else [])
    return " and ".join(sources) or "constants"


def _op_site(node: NodeProto, reads: tuple[str, ...], writes: tuple[str, ...], constants: int,
             first_written: TensorInfo | None, lookup: Callable[[str], TensorInfo | None],
             exponent: float | None) -> OpSite:
    shape = tuple(first_written.shape) if first_written is not None and first_written.shape is not None else None
    weight = lookup(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
    return OpSite(reads, writes, constants, shape,
                  tuple(weight.shape) if weight is not None and weight.shape is not None else None, exponent)


def _pow_exponent(graph: GraphProto, view: ConstantView, node: NodeProto) -> float | None:
    """The exponent of a Pow node when it is a one-element initializer or Constant, else None (computed, or held
    in a form not read here)."""
    name = node.input[1] if len(node.input) > 1 else ""
    held = view.stored.get(name)
    tensor = None
    if held == "initializer":
        tensor = next((t for t in graph.initializer if t.name == name), None)
    elif held == "node" and name in view.producer:
        constant = graph.node[view.producer[name]]
        tensor = next((a.t for a in constant.attribute if a.name == "value"), None)
        scalar = next((a.f for a in constant.attribute if a.name == "value_float"), None)
        if scalar is not None:
            return float(scalar)
    if tensor is None or tensor.data_location == TensorProto.EXTERNAL:
        return None
    values = numpy_helper.to_array(tensor).reshape(-1)
    return float(values[0]) if values.size == 1 else None


# Ops with a `group` attribute: a group count above 1 makes a grouped (depthwise when one channel per group) conv.
_GROUPED_OPS = frozenset({"Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "FusedConv", "NhwcConv"})


def _group(node: NodeProto) -> int:
    return next((attr.i for attr in node.attribute if attr.name == "group"), 1)


def _storage_sharing(domain: str, op_type: str, inputs: tuple[str, ...], constants) -> tuple[str, str] | None:
    """Which input buffer a storage-sharing runtime may hand to this node's output, and how."""
    if domain not in ("", "ai.onnx") or not inputs or not inputs[0] or inputs[0] in constants:
        return None
    if op_type in VIEW_OPS:
        return inputs[0], "view"
    if op_type in INPLACE_OPS:
        return inputs[0], "inplace"
    return None


def _total_bytes(lookup: Callable[[str], TensorInfo | None], names: tuple[str, ...]) -> int | None:
    total = 0
    for name in names:
        info = lookup(name)
        size = None if info is None else info.nbytes
        if size is None:
            return None
        total += size
    return total


def computing_nodes(graph: GraphProto) -> tuple[GraphIndex, ConstantView, list[int]]:
    """The graph's index, its constants, and the indices of the nodes that compute at run time in execution order:
    the nodes behind Footprint.layers, one for one."""
    index = index_graph(graph)
    view = constant_view(graph, index)
    return index, view, [i for i in index.order if i not in view.folded_nodes]


def constant_int(proto: ModelProto, name: str) -> int | None:
    """Value of a scalar integer initializer or Constant node (e.g. a Loop's trip count), in any graph of the
    model: names are unique across scopes, so a subgraph's constant cannot be mistaken for another."""
    graphs = [graph for _, _, graph in iter_graphs(proto.graph)]
    for tensor in (t for graph in graphs for t in graph.initializer):
        if tensor.name == name and tensor.data_location != TensorProto.EXTERNAL:
            values = numpy_helper.to_array(tensor).reshape(-1)
            return int(values[0]) if values.size == 1 else None
    for node in (n for graph in graphs for n in graph.node):
        if node.op_type == "Constant" and name in node.output:
            for attr in node.attribute:
                if attr.name == "value":
                    values = numpy_helper.to_array(attr.t).reshape(-1)
                    return int(values[0]) if values.size == 1 else None
                if attr.name == "value_int":
                    return attr.i
    return None


_MAX_LISTED = 20


def _inline_functions(proto: ModelProto, notes: list[str]) -> ModelProto:
    """The model with its model-local functions expanded in place (onnx's inliner), so that their contents get
    cost rules, weights and memory like any other node; the model itself if the inliner cannot do it."""
    names = sorted({f.name for f in proto.functions})
    try:
        inlined = onnx.inliner.inline_local_functions(proto)
    except Exception as error:  # a function the inliner rejects stays a node without a cost rule
        notes.append(f"model-local functions {', '.join(names)} could not be inlined "
                     f"({str(error).strip().splitlines()[0][:120]}); their nodes are not costed")
        return proto
    notes.append(f"model-local function(s) {', '.join(names)} inlined to count what they compute")
    return inlined


def _unstored_weights(index: GraphIndex, graph: GraphProto) -> list[str]:
    """A note for graph inputs that sit where weights go (a Conv's kernel, a Gemm's B): a model exported without
    its parameters, whose params and weight bytes would otherwise read as a silent zero."""
    fed = {i.name for i in graph.input} - initializer_names(graph)
    found: dict[str, str] = {}
    for node, inputs in zip(index.nodes, index.inputs):
        for slot in WEIGHT_SLOTS.get(node.op_type, ()):
            if slot < len(inputs) and inputs[slot] in fed:
                found.setdefault(inputs[slot], node.op_type)
    if not found:
        return []
    shown = ", ".join(f"{name} ({op})" for name, op in list(found.items())[:5]) + (
        f" and {len(found) - 5} more" if len(found) > 5 else "")
    return [f"graph input(s) {shown} feed weight slots but the model stores no values for them (exported without "
            f"its parameters?): params and weight_bytes leave them out, activation RAM counts them as inputs"]


def analyze(model: str | os.PathLike | ModelProto | LoadedModel, input_shapes: dict[str, list[int]] | None = None,
            dims: dict[str, int] | None = None, *, alignment: int = 16, assume_dims: int | None = None,
            input_values: dict[str, list[float]] | None = None) -> Footprint:
    """The footprint of a model file (or an in-memory ModelProto) for the given input shapes. `assume_dims`:
    see edgefit.shapes.resolve_shapes (None: an unbound non-batch dimension is a ShapeError). `input_values`:
    values of inputs (e.g. {"sr": [16000]}) that decide which branch an `If` takes."""
    with collector_paused():
        return _analyze(model, input_shapes, dims, alignment, assume_dims, input_values)


def _analyze(model: str | os.PathLike | ModelProto | LoadedModel, input_shapes: dict[str, list[int]] | None,
             dims: dict[str, int] | None, alignment: int, assume_dims: int | None,
             input_values: dict[str, list[float]] | None = None) -> Footprint:
    if isinstance(model, LoadedModel):
        loaded = model
    elif isinstance(model, ModelProto):
        has_external = any(external_location(t) is not None for t in iter_tensors(model.graph))
        loaded = LoadedModel(model, None, has_external, weights_loaded=not has_external)
    else:
        loaded = load_model(model)
    if alignment < 1:
        raise ShapeError(f"alignment must be a positive number of bytes, got {alignment}")
    proto = loaded.proto
    source = str(loaded.path) if loaded.path else "model"
    notes: list[str] = []
    if proto.functions:
        proto = _inline_functions(proto, notes)
    index = index_graph(proto.graph)   # cycles and dangling inputs get our own clear message before the checker's
    light = metadata_only_copy(proto, index.order)   # one copy serves the checker and then shape inference
    validate(proto, source, index.order, light=light)
    shapes = resolve_shapes(proto, input_shapes, dims, weights_loaded=loaded.weights_loaded, index=index,
                            external_dir=loaded.path.parent if loaded.path and loaded.has_external_data else None,
                            light=light, assume_dims=assume_dims, input_values=input_values)
    walk = _Analysis(proto, shapes, alignment)
    stats = walk.graph(proto.graph, "", frozenset(), frozenset(), index)
    unknowns: list[str] = list(dict.fromkeys(walk.tally.unknowns))
    for reason, nodes in walk.unknown_nodes.items():
        shown = ", ".join(nodes[:5]) + (f" and {len(nodes) - 5} more" if len(nodes) > 5 else "")
        unknowns.append(f"{reason} ({len(nodes)} node{'s' if len(nodes) > 1 else ''}: {shown})")
    sequences = [name for name in walk.unsized if name in shapes.non_tensors]
    for names, what in (([n for n in walk.unsized if n not in shapes.non_tensors], "tensor(s) of unknown size"),
                        (sequences, "sequence/map value(s), whose size depends on the data")):
        if names:
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            unknowns.append(f"activation RAM excludes {len(names)} {what}: {shown}")
    table = shapes.scopes[""]
    footprint = Footprint(
        model_path=str(loaded.path) if loaded.path else None,
        opset=default_opset(proto),
        params=stats.params,
        params_by_dtype=dict(walk.tally.params_by_dtype),
        weight_bytes=stats.weight_bytes,
        weight_bytes_by_dtype=dict(walk.tally.bytes_by_dtype),
        macs=sum(layer.macs or 0 for layer in stats.layers),
        flops=sum(layer.flops or 0 for layer in stats.layers),
        peak_activation_bytes=stats.arena_bytes,
        file_order_peak_bytes=stats.file_order_arena_bytes,
        activation_lower_bound_bytes=stats.lower_bound_bytes,
        peak_node=stats.peak_node,
        live_at_peak=stats.live_at_peak,
        inputs=shapes.inputs,
        outputs={o.name: (list(table[o.name].shape) if o.name in table and table[o.name].shape is not None else None)
                 for o in proto.graph.output},
        layers=tuple(stats.layers),
        op_histogram=dict(walk.histogram.most_common()),
        unknowns=tuple(unknowns[:_MAX_LISTED] + ([f"... and {len(unknowns) - _MAX_LISTED} more"]
                                                  if len(unknowns) > _MAX_LISTED else [])),
        warnings=tuple(notes + shapes.warnings + _unstored_weights(index, proto.graph)) + (
            () if index.in_file_order else (
                "nodes are stored out of topological order; 'file order' means a stable topological order",)),
        shape_source=shapes.source,
        buffers=stats.buffers,
        alignment=alignment,
        shared_planner=stats.shared_planner,
        file_order_planner=stats.file_order_planner,
        execution_order=stats.order,
        ops=stats.sites,
        control_flow=tuple(walk.control_flow),
    )
    _analysed.clear()
    _analysed[id(footprint)] = AnalysedGraph(proto, index, walk.top_view, table)
    weakref.finalize(footprint, _analysed.pop, id(footprint), None)
    return footprint


@dataclass(frozen=True)
class AnalysedGraph:
    """The top-level graph as the analysis read it (model-local functions inlined), its index, constants and
    resolved shapes: what judging the footprint's nodes needs (edgefit.devices.operators.coverage.ModelGraph), so that a
    check right after the analysis neither reads the model nor infers its shapes a second time."""

    proto: ModelProto
    index: GraphIndex
    view: ConstantView
    shapes: dict[str, TensorInfo]

    @property
    def computing_nodes(self) -> list[int]:
        """Indices of the nodes behind Footprint.layers, in their order (as computing_nodes gives them)."""
        return [i for i in self.index.order if i not in self.view.folded_nodes]


# One slot, for the last footprint analysed: the graph it holds is the whole model, which should not stay in memory
# for as long as every footprint lives.
_analysed: dict[int, AnalysedGraph] = {}


def analysed_graph(footprint: Footprint) -> AnalysedGraph | None:
    """The graph behind `footprint` when it is the last footprint `analyze` made (not a copy of it), else None."""
    return _analysed.get(id(footprint))
