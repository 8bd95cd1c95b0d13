"""Patch-based (tiled) execution of a CNN's first stage, after MCUNetV2 (Lin et al., NeurIPS 2021).

In most CNNs the first layers hold the largest activations: high resolution, few channels. Run layer by layer,
the arena must hold a whole input and a whole output of the worst of them. Run patch by patch, the stage computes
one spatial tile of its output at a time from the matching window of its input, so only patch-sized
intermediates are alive; the tiles assemble the stage output, and the rest of the network runs as usual.

The price is recomputation: neighbouring tiles need overlapping input windows (the receptive field grows by
dilation x (kernel - 1) per layer, times the strides before it), and the overlap is computed once per patch.

What is modelled (per spatial axis, for an output window [a, b) of a node):
  Conv / QLinearConv / MaxPool / AveragePool (kernel k, stride s, begin pad p, dilation d) read input rows
  [a*s - p, (b-1)*s - p + d*(k-1) + 1), clipped to the tensor; the part outside it is the node's padding, so a
  patch pads only where it touches the real border. Elementwise ops (activations, BatchNormalization, Q/DQ,
  Add/Mul of stage tensors or of per-channel constants, channel Concat) read the same window they write.
  A tensor read by several nodes of the stage is computed over the union (bounding box) of their windows.

Memory of patch execution (every buffer aligned like the analysis's arena):
  phase 1, the patch loop: the whole input (a graph input, resident as in the layer-by-layer arena)
    + the assembled stage output + the arena of one patch (its input window copied out, and its intermediates
    planned like any graph; the last node writes its tile straight into the stage output), for the largest patch;
  phase 2: the rest of the network planned as usual, starting from the stage output.
  Peak = max(phase 1, phase 2).
Extra MACs: a node's MACs scale with its output area, so each patch costs node MACs x window area / full area.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from onnx import ModelProto, NodeProto

from edgefit.analysis.dtypes import FLOAT_DTYPES, PRECISION_BYTES, tensor_bytes
from edgefit.analysis.footprint import Footprint, computing_nodes
from edgefit.analysis.memory import Step, _aligned, plan_steps
from edgefit.model import node_attribute
from edgefit.shapes import TensorInfo, resolve_shapes

_WINDOW_OPS = frozenset({"Conv", "QLinearConv", "MaxPool", "AveragePool", "LpPool"})
_ELEMENTWISE_OPS = frozenset({
    "Relu", "LeakyRelu", "PRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Clip", "Elu", "Selu", "Softplus",
    "Mish", "Gelu", "Neg", "Abs", "Exp", "Sqrt", "Identity", "Dropout", "BatchNormalization", "QuantizeLinear",
    "DequantizeLinear", "Cast", "Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Concat"})
_MAX_GRID = 8
_ALIGNMENT = 16

Region = tuple[int, int, int, int]   # rows [r0, r1), columns [c0, c1)


@dataclass(frozen=True)
class PatchRun:
    """One patch: the tile of the stage output it makes, the input window it reads, and per stage node the
    window it computes and the pads (top, left, bottom, right) it applies where the window meets the border."""

    tile: Region
    input_window: Region
    windows: dict[int, Region]                      # node index -> output window
    pads: dict[int, tuple[int, int, int, int]]      # window nodes only


@dataclass(frozen=True)
class PatchPlan:
    grid: int                   # the stage output split into grid x grid tiles
    layers: int                 # nodes in the patched stage (the first `layers` computing nodes)
    stage_output: str
    peak_bytes: int             # arena of patch-based execution: max(patch_phase_bytes, rest_bytes)
    patch_phase_bytes: int      # input + stage output + the largest patch's arena
    largest_patch_bytes: int
    rest_bytes: int             # the rest of the network, planned from the stage output on
    unpatched_bytes: int        # arena of layer-by-layer execution at the same precision
    macs: int                   # with the recomputed overlaps
    base_macs: int

    @property
    def extra_macs_pct(self) -> float:
        return (self.macs - self.base_macs) / self.base_macs * 100 if self.base_macs else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"grid": self.grid, "layers": self.layers, "stage_output": self.stage_output,
                "peak_bytes": self.peak_bytes, "unpatched_bytes": self.unpatched_bytes,
                "patch_phase_bytes": self.patch_phase_bytes, "largest_patch_bytes": self.largest_patch_bytes,
                "rest_bytes": self.rest_bytes, "macs": self.macs, "base_macs": self.base_macs,
                "extra_macs_pct": round(self.extra_macs_pct, 2)}


@dataclass(frozen=True)
class PatchAdvice:
    limit_bytes: int | None              # activation RAM the device leaves; None: no limit asked about
    smallest: PatchPlan | None           # the lowest peak any plan reaches (ties: fewer MACs)
    cheapest_fitting: PatchPlan | None   # the fewest MACs among plans within the limit (ties: lower peak)
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"limit_bytes": self.limit_bytes,
                "smallest": self.smallest.to_dict() if self.smallest else None,
                "cheapest_fitting": self.cheapest_fitting.to_dict() if self.cheapest_fitting else None,
                "notes": list(self.notes)}


@dataclass
class _Node:
    index: int
    proto: NodeProto
    reads: tuple[str, ...]      # non-constant inputs
    writes: tuple[str, ...]
    macs: int
    window: tuple[tuple[int, int, int, int], tuple[int, int, int, int]] | None = None  # per axis (k, s, p, d)


@dataclass
class _Stage:
    """The first `layers` computing nodes, whose only tensor read later is `output`."""

    layers: int
    output: str


@dataclass
class _Network:
    proto: ModelProto
    nodes: list[_Node]
    shapes: dict[str, TensorInfo]
    graph_input: str
    graph_outputs: tuple[str, ...]
    stages: list[_Stage] = field(default_factory=list)
    element_bytes: float | None = None   # float activations at this size; None: the model's own dtypes

    def nbytes(self, name: str, elements: int | None = None) -> int:
        info = self.shapes[name]
        count = info.elements if elements is None else elements
        if self.element_bytes is not None and info.dtype in FLOAT_DTYPES:
            return math.ceil(count * self.element_bytes)
        return tensor_bytes(count, info.dtype) or 0

    def window_bytes(self, name: str, region: Region) -> int:
        shape = self.shapes[name].shape
        return self.nbytes(name, shape[0] * shape[1] * (region[1] - region[0]) * (region[3] - region[2]))


def _window(node: NodeProto, in_shape: Sequence[int], out_shape: Sequence[int],
            weight_shape: Sequence[int] | None):
    """Per spatial axis (kernel, stride, begin pad, dilation) of a 2-D window op; None if not patchable."""
    if node.op_type in ("Conv", "QLinearConv"):
        if weight_shape is None or len(weight_shape) != 4:
            return None
        kernel = list(weight_shape[2:])
    else:
        kernel = list(node_attribute(node, "kernel_shape", []))
        if node_attribute(node, "ceil_mode", 0) or len(kernel) != 2:
            return None
    strides = list(node_attribute(node, "strides", [1, 1]))
    dilations = list(node_attribute(node, "dilations", [1, 1]))
    pads = list(node_attribute(node, "pads", [0, 0, 0, 0]))
    auto_pad = node_attribute(node, "auto_pad", "NOTSET")
    axes = []
    for axis in range(2):
        k, s, d = kernel[axis], strides[axis], dilations[axis]
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            total = max(0, (out_shape[2 + axis] - 1) * s + d * (k - 1) + 1 - in_shape[2 + axis])
            begin = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
        elif auto_pad == "VALID":
            begin = 0
        else:
            begin = pads[axis]
        axes.append((k, s, begin, d))
    return tuple(axes)


def _elementwise_ok(node: NodeProto, network_shapes: dict[str, TensorInfo], reads: Sequence[str],
                    out_shape: Sequence[int]) -> bool:
    """Reads the window it writes: every stage input has the output's spatial size, every constant is flat
    over the spatial axes, a Concat joins channels."""
    if node.op_type == "Concat" and node_attribute(node, "axis", 1) not in (1, -3):
        return False
    # These ops take bounds, scales or per-channel statistics after their first input, never spatial data.
    first_only = node.op_type in ("Clip", "QuantizeLinear", "DequantizeLinear", "BatchNormalization")
    for name in node.input[:1] if first_only else node.input:
        if not name:
            continue
        info = network_shapes.get(name)
        if info is None or info.shape is None:
            return False
        shape = info.shape
        if name in reads:
            if len(shape) != 4 or tuple(shape[2:]) != tuple(out_shape[2:]):
                return False
        elif any(size != 1 for size in shape[-2:]):   # a constant broadcasts over the trailing (spatial) axes
            return False
    return True


def _network(model: ModelProto, footprint: Footprint) -> _Network | None:
    """The model's computing nodes with what patching needs, or None when it has no single 4-D input."""
    graph = model.graph
    index, view, computing = computing_nodes(graph)
    inputs = [i.name for i in graph.input if i.name not in view.constants]
    if len(inputs) != 1:
        return None
    shapes = resolve_shapes(model, {k: list(v) for k, v in footprint.inputs.items()}, weights_loaded=False,
                            index=index).scopes[""]
    if len(computing) != len(footprint.layers):   # the footprint counted another graph
        return None
    nodes = []
    for i, layer in zip(computing, footprint.layers):
        node = index.nodes[i]
        reads = tuple(dict.fromkeys(n for n in index.reads[i] if n and n not in view.constants))
        nodes.append(_Node(i, node, reads, tuple(o for o in index.outputs[i] if o), layer.macs or 0))
    info = shapes.get(inputs[0])
    if info is None or info.shape is None or len(info.shape) != 4:
        return None
    network = _Network(model, nodes, shapes, inputs[0], tuple(o.name for o in graph.output))
    network.stages = _stages(network)
    return network


def _spatial(network: _Network, name: str) -> tuple[int, ...] | None:
    info = network.shapes.get(name)
    return info.shape if info is not None and info.shape is not None and len(info.shape) == 4 else None


def _stages(network: _Network) -> list[_Stage]:
    """Every cut after the first k patchable nodes that leaves exactly one stage tensor for the rest."""
    produced = {network.graph_input}
    stages = []
    readers_after: dict[str, int] = {}   # tensor -> position of its last reader
    for position, node in enumerate(network.nodes):
        for name in node.reads:
            readers_after[name] = position
    for position, node in enumerate(network.nodes):
        if len(node.writes) != 1 or not node.reads or not all(name in produced for name in node.reads):
            break
        out_shape = _spatial(network, node.writes[0])
        in_shape = _spatial(network, node.reads[0])
        if out_shape is None or in_shape is None or any(_spatial(network, r) is None for r in node.reads):
            break
        if node.proto.op_type in _WINDOW_OPS and node.proto.domain in ("", "ai.onnx"):
            weight_slot = 3 if node.proto.op_type == "QLinearConv" else 1
            weight = node.proto.input[weight_slot] if len(node.proto.input) > weight_slot else None
            weight_info = network.shapes.get(weight) if weight else None
            node.window = _window(node.proto, in_shape, out_shape,
                                  weight_info.shape if weight_info is not None else None)
            if node.window is None or len(node.reads) != 1:
                break
        elif not (node.proto.op_type in _ELEMENTWISE_OPS and node.proto.domain in ("", "ai.onnx")
                  and _elementwise_ok(node.proto, network.shapes, node.reads, out_shape)):
            break
        produced.add(node.writes[0])
        crossing = [name for name in produced
                    if readers_after.get(name, -1) > position or name in network.graph_outputs]
        if crossing == [node.writes[0]] and network.graph_input not in network.graph_outputs:
            stages.append(_Stage(position + 1, node.writes[0]))
    return stages


def _input_window(window, out_region: Region, in_shape: Sequence[int]) -> tuple[Region, tuple[int, int, int, int]]:
    """The input window a window op reads to compute `out_region`, and the pads it applies (top, left, bottom,
    right): the part of its receptive field outside the tensor."""
    bounds, pads = [], [0, 0, 0, 0]
    for axis, (k, s, p, d) in enumerate(window):
        start, stop = out_region[2 * axis], out_region[2 * axis + 1]
        low, high = start * s - p, (stop - 1) * s - p + d * (k - 1) + 1
        size = in_shape[2 + axis]
        bounds += [max(0, low), min(size, high)]
        pads[axis], pads[2 + axis] = max(0, -low), max(0, high - size)
    return (bounds[0], bounds[1], bounds[2], bounds[3]), (pads[0], pads[1], pads[2], pads[3])


def _union(a: Region | None, b: Region) -> Region:
    if a is None:
        return b
    return min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])


def _run(network: _Network, stage: _Stage, tile: Region) -> PatchRun:
    needed: dict[str, Region] = {stage.output: tile}
    windows: dict[int, Region] = {}
    pads: dict[int, tuple[int, int, int, int]] = {}
    for node in reversed(network.nodes[:stage.layers]):
        region = needed.get(node.writes[0])
        if region is None:   # nothing downstream in the stage reads it
            continue
        windows[node.index] = region
        if node.window is not None:
            read, pads[node.index] = _input_window(node.window, region, network.shapes[node.reads[0]].shape)
            needed[node.reads[0]] = _union(needed.get(node.reads[0]), read)
        else:
            for name in node.reads:
                needed[name] = _union(needed.get(name), region)
    return PatchRun(tile, needed[network.graph_input], windows, pads)


def _tiles(shape: Sequence[int], grid: int) -> list[Region]:
    rows = [shape[2] * i // grid for i in range(grid + 1)]
    cols = [shape[3] * i // grid for i in range(grid + 1)]
    return [(rows[i], rows[i + 1], cols[j], cols[j + 1]) for i in range(grid) for j in range(grid)]


def patch_schedule(model: ModelProto, footprint: Footprint, layers: int, grid: int) -> tuple[PatchRun, ...]:
    """The patches of running the first `layers` computing nodes in grid x grid tiles, in raster order."""
    network = _network(model, footprint)
    stage = next((s for s in network.stages if s.layers == layers), None) if network else None
    if stage is None:
        raise ValueError(f"the first {layers} computing nodes are not a patchable stage")
    return tuple(_run(network, stage, tile) for tile in _tiles(network.shapes[stage.output].shape, grid))


def _plan(network: _Network, stage: _Stage, grid: int, unpatched: int, base_macs: int,
          rest_bytes: int, patch_cache: dict) -> PatchPlan:
    stage_nodes = network.nodes[:stage.layers]
    steps = [Step(str(n.index), n.reads, n.writes) for n in stage_nodes]
    largest = 0
    macs = base_macs - sum(n.macs for n in stage_nodes)
    full_area = {n.index: math.prod(network.shapes[n.writes[0]].shape[2:]) for n in stage_nodes}
    for tile in _tiles(network.shapes[stage.output].shape, grid):
        run = _run(network, stage, tile)
        for node in stage_nodes:
            region = run.windows.get(node.index)
            if region is not None and node.macs:
                macs += node.macs * (region[1] - region[0]) * (region[3] - region[2]) // full_area[node.index]
        needed = {network.graph_input: run.input_window}
        for node in stage_nodes:
            if node.index in run.windows and node.writes[0] != stage.output:
                needed[node.writes[0]] = run.windows[node.index]
        key = tuple(sorted((name, region[1] - region[0], region[3] - region[2]) for name, region in needed.items()))
        if key not in patch_cache:
            sizes = {name: (0, "uint8", network.window_bytes(name, region)) for name, region in needed.items()}
            patch_cache[key] = plan_steps(steps, sizes, [network.graph_input], [], _ALIGNMENT).arena.size
        largest = max(largest, patch_cache[key])
    patch_phase = (_aligned(network.nbytes(network.graph_input), _ALIGNMENT)
                   + _aligned(network.nbytes(stage.output), _ALIGNMENT) + largest)
    return PatchPlan(grid, stage.layers, stage.output, max(patch_phase, rest_bytes), patch_phase, largest,
                     rest_bytes, unpatched, macs, base_macs)


def _rest_bytes(network: _Network, stage: _Stage) -> int:
    rest = network.nodes[stage.layers:]
    names = [stage.output] + [w for n in rest for w in n.writes]
    sizes = {name: (0, "uint8", network.nbytes(name)) for name in names
             if name in network.shapes and network.shapes[name].shape is not None}
    steps = [Step(str(n.index), n.reads, n.writes) for n in rest]
    return plan_steps(steps, sizes, [stage.output], list(network.graph_outputs), _ALIGNMENT).arena.size


def patch_plans(model: ModelProto, footprint: Footprint, precision: str | None = None,
                max_grid: int = _MAX_GRID) -> list[PatchPlan]:
    """Every (stage, grid) plan for 2 <= grid <= max_grid, with activations at `precision` (None: as stored)."""
    network = _network(model, footprint)
    if network is None or not network.stages:
        return []
    network.element_bytes = PRECISION_BYTES[precision] if precision else None
    unpatched = footprint.activation_bytes_at(precision)
    plans, cache = [], {}
    for stage in network.stages:
        rest = _rest_bytes(network, stage)
        if rest >= unpatched:   # the layers after the cut alone need the whole arena: no grid can help
            continue
        shape = network.shapes[stage.output].shape
        for grid in range(2, min(max_grid, shape[2], shape[3]) + 1):
            plans.append(_plan(network, stage, grid, unpatched, footprint.macs, rest, cache))
    return plans


def advise_patching(plans: Sequence[PatchPlan], limit_bytes: int | None = None) -> PatchAdvice:
    """From patch_plans' plans: the smallest arena patching reaches, and the cheapest plan within `limit_bytes`."""
    if not plans:
        return PatchAdvice(limit_bytes, None, None, (
            "no patchable first stage: the network does not start with a 4-D input read by spatial layers",))
    smallest = min(plans, key=lambda p: (p.peak_bytes, p.macs))
    fitting = [p for p in plans if limit_bytes is not None and p.peak_bytes <= limit_bytes]
    cheapest = min(fitting, key=lambda p: (p.macs, p.peak_bytes)) if fitting else None
    notes = ()
    if smallest.peak_bytes >= smallest.unpatched_bytes:
        notes = ("patching does not lower the arena: the largest activations are not in the first stage",)
    return PatchAdvice(limit_bytes, smallest, cheapest, notes)
