"""Activation memory: tensor lifetimes over an execution order, an arena plan, and a memory-aware order.

The planner mirrors what TensorFlow Lite Micro's greedy planner does: every non-constant tensor is its own
buffer, alive from the step that produces it (graph inputs: from step 0) to its last reader (graph outputs: to
the end), placed largest-first at the lowest aligned offset that no time-overlapping buffer uses.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from edgefit.analysis.dtypes import FLOAT_DTYPES


@dataclass(slots=True)   # not frozen: one per tensor, and frozen dataclasses are three times slower to build
class Buffer:
    name: str
    elements: int
    dtype: str
    bytes: int
    first: int   # step that creates it
    last: int    # last step that needs it (inclusive)

    def at_float_precision(self, element_bytes: float) -> "Buffer":
        if self.dtype not in FLOAT_DTYPES:
            return self
        return Buffer(self.name, self.elements, self.dtype, math.ceil(self.elements * element_bytes), self.first,
                      self.last)


@dataclass(frozen=True)
class ArenaPlan:
    size: int                      # bytes the arena needs
    offsets: dict[str, int]        # buffer name -> byte offset in the arena
    peak_step: int | None          # a step at which the arena's used extent is reached
    live_at_peak: tuple[str, ...]  # buffers alive at that step, largest first


def _align(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


def plan_arena(buffers: Sequence[Buffer], alignment: int = 16) -> ArenaPlan:
    """Greedy-by-size placement; buffers overlap in memory only if their lifetimes are disjoint."""
    if not buffers:
        return ArenaPlan(0, {}, None, ())
    steps = max(b.last for b in buffers) + 1
    # Placed buffers indexed by step, so finding time-overlapping ones costs their lifetimes, not all buffers.
    placed_at: list[list[int]] = [[] for _ in range(steps)]
    offsets = [0] * len(buffers)
    aligned = [_align(b.bytes, alignment) for b in buffers]
    order = sorted(range(len(buffers)), key=lambda i: (-buffers[i].bytes, buffers[i].first, buffers[i].name))
    size = 0
    for i in order:
        buf = buffers[i]
        first, last, need = buf.first, buf.last, aligned[i]
        if first == last:
            neighbours = placed_at[first]
        else:
            neighbours = {j for t in range(first, last + 1) for j in placed_at[t]}
        offset = 0
        if neighbours:
            for start, end in sorted([(offsets[j], offsets[j] + aligned[j]) for j in neighbours]):
                if start - offset >= need:
                    break
                if end > offset:
                    offset = end
        offsets[i] = offset
        if offset + need > size:
            size = offset + need
        for t in range(first, last + 1):
            placed_at[t].append(i)
    # The step holding the most live bytes (the earliest of equals): the node that sets the peak. (The step
    # whose buffers reach highest in the arena can be a step where a tiny buffer merely sits above a gap.)
    delta = [0] * (steps + 1)
    for i, buf in enumerate(buffers):
        delta[buf.first] += aligned[i]
        delta[buf.last + 1] -= aligned[i]
    live_bytes = list(itertools.accumulate(delta[:steps]))
    peak_step = live_bytes.index(max(live_bytes))
    live = sorted((b for b in buffers if b.first <= peak_step <= b.last), key=lambda b: -b.bytes)
    return ArenaPlan(size, {b.name: offsets[i] for i, b in enumerate(buffers)}, peak_step,
                     tuple(b.name for b in live))


def live_bytes_peak(buffers: Sequence[Buffer]) -> int:
    """Largest sum of simultaneously live buffer bytes: what perfect placement would need for this order."""
    if not buffers:
        return 0
    steps = max(b.last for b in buffers) + 2
    delta = [0] * steps
    for b in buffers:
        delta[b.first] += b.bytes
        delta[b.last + 1] -= b.bytes
    peak = running = 0
    for d in delta:
        running += d
        peak = max(peak, running)
    return peak


@dataclass(slots=True)   # not frozen, like Buffer
class Step:
    """One node for the planner: the activation tensors it reads and writes, and scratch it needs while running."""

    name: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    workspace_bytes: int = 0
    # (input, "view" | "inplace"): a runtime that shares storage may give the first output this input's buffer.
    shares: tuple[str, str] | None = None


# Ops whose output is the input's bytes reinterpreted: runtimes that share storage alias them.
VIEW_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"})
# Elementwise ops that can overwrite their first input when nothing reads it afterwards.
INPLACE_OPS = frozenset({"Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "HardSigmoid", "HardSwish", "Elu", "Selu",
                         "Softplus", "Neg", "Abs", "Exp", "Log", "Sqrt", "Add", "Sub", "Mul", "Div",
                         "BatchNormalization", "QuantizeLinear", "DequantizeLinear", "Cast"})


def shared_storage(buffers: Sequence[Buffer], steps: Sequence[Step], order: Sequence[int],
                   keep: frozenset[str]) -> list[Buffer]:
    """The buffers a runtime that shares storage allocates: each view joins its input's buffer, and an in-place
    op's output takes its input's buffer when that input dies at this step, fits, and is not a graph input or
    output (`keep`), which runtimes never overwrite. Modelled on onnxruntime's allocation planner."""
    by_name = {b.name: b for b in buffers}
    root: dict[str, str] = {name: name for name in by_name}
    group = {name: [b.first, b.last, b.bytes, b.elements, b.dtype] for name, b in by_name.items()}

    def find(name: str) -> str:
        while root[name] != name:
            root[name] = root[root[name]]
            name = root[name]
        return name

    for position, node in enumerate(order):
        step = steps[node]
        if step.shares is None or not step.writes:
            continue
        source, kind = step.shares
        target = step.writes[0]
        if source not in by_name or target not in by_name:
            continue
        kept, taken = find(source), find(target)
        kept_group, taken_group = group[kept], group[taken]
        if kind == "inplace" and (kept_group[1] != position or source in keep or target in keep
                                  or taken_group[2] > kept_group[2]):
            continue
        root[taken] = kept
        kept_group[0] = min(kept_group[0], taken_group[0])
        kept_group[1] = max(kept_group[1], taken_group[1])
        if taken_group[2] > kept_group[2]:
            kept_group[2:] = taken_group[2:]
        del group[taken]
    return [Buffer(name, elements, dtype, size, first, last)
            for name, (first, last, size, elements, dtype) in group.items()]


def lifetimes(steps: Sequence[Step], order: Sequence[int], sizes: dict[str, tuple[int, str, int]],
              graph_inputs: Sequence[str], graph_outputs: Sequence[str]) -> list[Buffer]:
    """Buffers with lifetimes for running `steps` in `order`. sizes: name -> (elements, dtype, bytes)."""
    end = max(len(order) - 1, 0)
    first: dict[str, int] = {name: 0 for name in graph_inputs}
    last: dict[str, int] = {name: 0 for name in graph_inputs}
    for pos, node in enumerate(order):
        step = steps[node]
        for name in step.writes:
            if name not in first:
                first[name] = last[name] = pos
        for name in step.reads:
            if name in first and last[name] < pos:
                last[name] = pos
    for name in graph_outputs:
        if name in first:
            last[name] = end
    buffers = [Buffer(name, *sizes[name], first[name], last[name]) for name in first if name in sizes]
    for pos, node in enumerate(order):
        if steps[node].workspace_bytes:
            buffers.append(Buffer(f"{steps[node].name}/workspace", 0, "uint8", steps[node].workspace_bytes, pos, pos))
    return buffers


def lower_bound(steps: Sequence[Step], sizes: dict[str, tuple[int, str, int]]) -> int:
    """max over nodes of (its activation inputs + outputs + workspace): no order or placement goes below it."""
    nbytes = {name: size[2] for name, size in sizes.items()}
    bound = 0
    for step in steps:
        need = sum(nbytes.get(n, 0) for n in {*step.reads, *step.writes}) + step.workspace_bytes
        if need > bound:
            bound = need
    return bound


def memory_aware_order(steps: Sequence[Step], sizes: dict[str, tuple[int, str, int]],
                       graph_outputs: Sequence[str], max_candidates: int = 64) -> list[int]:
    """A topological order that greedily runs, among the ready nodes, the one that grows live memory least.

    An exact minimum-peak schedule is NP-hard; this greedy list scheduler is what memory-aware
    compilers use as a first pass and is linear enough for graphs with tens of thousands of nodes.
    """
    producers: dict[str, int] = {}
    for i, step in enumerate(steps):
        for name in step.writes:
            producers.setdefault(name, i)
    distinct_reads = [set(step.reads) for step in steps]
    remaining_readers: dict[str, int] = {}   # name -> steps still to read it
    dependents: dict[int, set[int]] = {}
    waiting = [0] * len(steps)
    for i, reads in enumerate(distinct_reads):
        deps = set()
        for name in reads:
            remaining_readers[name] = remaining_readers.get(name, 0) + 1
            producer = producers.get(name)
            if producer is not None and producer != i:
                deps.add(producer)
        waiting[i] = len(deps)
        for producer in deps:
            dependents.setdefault(producer, set()).add(i)
    keep = set(graph_outputs)
    # What each step allocates never changes; what it frees depends on which readers remain, so only the
    # candidate frees (distinct reads with a known size that are not graph outputs) are kept for the search.
    nbytes = {name: size[2] for name, size in sizes.items()}
    allocated = [sum(nbytes.get(n, 0) for n in step.writes) for step in steps]
    freeable = [[(n, nbytes[n]) for n in reads if n in nbytes and n not in keep] for reads in distinct_reads]

    # The choice depends only on which nodes are ready (ties go to the lower index), not on how they are stored.
    ready = [i for i in range(len(steps)) if waiting[i] == 0]
    order: list[int] = []
    while ready:
        if len(ready) == 1:   # nothing to choose between
            chosen = ready.pop()
        else:
            # Among the max_candidates lowest indices, the least growth.
            candidates = ready if len(ready) <= max_candidates else heapq.nsmallest(max_candidates, ready)
            chosen = best = -1
            for i in candidates:
                growth = allocated[i] - sum(size for n, size in freeable[i] if remaining_readers.get(n) == 1)
                if chosen < 0 or growth < best or (growth == best and i < chosen):
                    chosen, best = i, growth
            ready.remove(chosen)
        order.append(chosen)
        for name in distinct_reads[chosen]:
            if name in remaining_readers:
                remaining_readers[name] -= 1
        for j in dependents.get(chosen, ()):
            waiting[j] -= 1
            if waiting[j] == 0:
                ready.append(j)
    return order
