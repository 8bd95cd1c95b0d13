"""Reorder: store the nodes in the memory-aware execution order the planner finds, when that lowers the arena a
runtime needs if it runs the nodes as the file lists them.

TensorFlow Lite Micro runs operators in the order the converted file lists them, and onnxruntime's sequential
executor follows the stored topological order: on a branchy graph (a residual block, an Inception-style module,
a U-Net skip) the file order can keep a large branch alive while another runs, and the arena grows for it. The
analysis already finds an order with a smaller arena (edgefit.analysis.memory.memory_aware_order, chosen only
when its planned arena is smaller); this pass writes that order into the node list so the runtime follows it.

Only the order of graph.node changes: no node, attribute, tensor or name is touched, so the model computes the
same values with the same kernels and its outputs are bit-identical. Nodes that compute constants only (the
planner leaves them out) run as early as their inputs allow.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

from onnx import ModelProto

from edgefit.fidelity import Progress
from edgefit.model import index_graph
from edgefit.passes.base import Pass, PassOptions, PassResult, copy_model


@dataclass(frozen=True)
class ReorderStats:
    file_order_peak_before: int   # arena when the runtime runs the input's node list as stored
    file_order_peak_after: int    # the same for the result
    lower_bound: int              # no order or placement goes below it
    nodes_moved: int              # nodes whose position in the list changed
    notes: tuple[str, ...] = ()
    name: str = "reorder"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "file_order_peak_before": self.file_order_peak_before,
                "file_order_peak_after": self.file_order_peak_after, "lower_bound": self.lower_bound,
                "nodes_moved": self.nodes_moved, "notes": list(self.notes)}

    def render(self, console) -> None:
        from edgefit.report.quantities import format_bytes

        console.print(f"  file-order arena {format_bytes(self.file_order_peak_before)} -> "
                      f"{format_bytes(self.file_order_peak_after)} ({self.nodes_moved} nodes moved; lower bound "
                      f"{format_bytes(self.lower_bound)})")


class Reorder(Pass):
    """Store the nodes in the memory-aware execution order when it lowers the file-order arena."""

    name = "reorder"
    usage = "reorder"

    def run(self, model: ModelProto, options: PassOptions, progress: Progress | None) -> PassResult:
        return _reorder(model, options.shape_bindings)


PASS = Reorder


def reorder(model: ModelProto, input_shapes: dict[str, list[int]] | None = None,
            dims: dict[str, int] | None = None) -> PassResult:
    """Write the planner's memory-aware order into the main graph's node list when it lowers the file-order arena."""
    return Reorder().apply(model, PassOptions(input_shapes=input_shapes, dims=dims))


def _reorder(model: ModelProto, shape_bindings: dict[str, Any]) -> PassResult:
    """`shape_bindings`: PassOptions.shape_bindings (input shapes, dims, input values)."""
    from edgefit.analysis.footprint import analyze

    footprint = analyze(model, **shape_bindings)
    before = footprint.file_order_peak_bytes
    result = copy_model(model)
    if footprint.peak_activation_bytes >= before:
        note = ("file order already reaches the activation lower bound" if before <= footprint.activation_lower_bound_bytes
                else "no execution order found with a smaller arena than the file order")
        return PassResult(result, ReorderStats(before, before, footprint.activation_lower_bound_bytes, 0, (note,)))
    order = _full_order(model, footprint.execution_order)
    nodes = [result.graph.node[i] for i in order]
    moved = sum(1 for position, i in enumerate(order) if position != i)
    copies = [type(node)() for node in nodes]
    for copy, node in zip(copies, nodes):
        copy.CopyFrom(node)
    del result.graph.node[:]
    result.graph.node.extend(copies)
    after = analyze(result, **shape_bindings).file_order_peak_bytes
    return PassResult(result, ReorderStats(before, after, footprint.activation_lower_bound_bytes, moved))


def _full_order(model: ModelProto, planned: tuple[int, ...]) -> list[int]:
    """Every node of the main graph in a topological order that runs the planned nodes in the planned order and
    each node the planner left out (constant-only computations) as soon as its inputs exist."""
    from edgefit.analysis.footprint import _inline_functions

    # `planned` indexes the graph the analysis saw, whose model-local function calls are inlined: a node ranks
    # where the last of its outputs is made (a call's outputs keep their names when inlined).
    analysed = _inline_functions(model, []) if model.functions else model
    made_at = {name: position for position, node in enumerate(planned)
               for name in analysed.graph.node[node].output if name}   # "" is an omitted optional output
    index = index_graph(model.graph)
    rank = {i: max(made_at[name] for name in node.output if name in made_at)
            for i, node in enumerate(index.nodes) if any(name in made_at for name in node.output)}
    count = len(index.nodes)
    waiting = [0] * count
    dependents: list[list[int]] = [[] for _ in range(count)]
    for i, reads in enumerate(index.reads):
        sources = {index.producer[name] for name in reads if name in index.producer} - {i}
        waiting[i] = len(sources)
        for source in sources:
            dependents[source].append(i)
    # Unplanned nodes rank before every planned one; ties keep file order.
    ready = [(rank.get(i, -1), i) for i in range(count) if waiting[i] == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        _, chosen = heapq.heappop(ready)
        order.append(chosen)
        for j in dependents[chosen]:
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, (rank.get(j, -1), j))
    return order
