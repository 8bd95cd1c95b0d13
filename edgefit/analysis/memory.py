"""Activation memory: tensor lifetimes over an execution order, an arena plan, and a memory-aware order.

The planner mirrors what TensorFlow Lite Micro's greedy planner does: every non-constant tensor is its own
buffer, alive from the step that produces it (graph inputs: from step 0) to its last reader (graph outputs: to
the end), placed largest-first at the lowest aligned offset that no time-overlapping buffer uses.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from edgefit.analysis.dtypes import FLOAT_DTYPES


@dataclass(slots=True)   # not frozen: one per tensor, and frozen dataclasses are three times slower to build
class Buffer:
    name: str
    elements: int
    dtype: str
    bytes: int
    first: int   # step that creates it
    last: int    # last step that needs it (inclusive)

    def bytes_at(self, element_bytes: float) -> int:
        """Its size if floats were stored with `element_bytes` per element (other dtypes keep theirs)."""
        return math.ceil(self.elements * element_bytes) if self.dtype in FLOAT_DTYPES else self.bytes

    def at_float_precision(self, element_bytes: float) -> "Buffer":
        if self.dtype not in FLOAT_DTYPES:
            return self
        return Buffer(self.name, self.elements, self.dtype, self.bytes_at(element_bytes), self.first, self.last)


@dataclass(frozen=True)
class ArenaPlan:
    size: int                      # bytes the arena needs
    offsets: dict[str, int]        # buffer name -> byte offset in the arena
    peak_step: int | None          # the step holding the most live bytes (the earliest of equals)
    live_at_peak: tuple[str, ...]  # buffers alive at that step, largest first


def _aligned(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


def plan_arena(buffers: Sequence[Buffer], alignment: int = 16) -> ArenaPlan:
    """Greedy-by-size placement; buffers overlap in memory only if their lifetimes are disjoint."""
    if not buffers:
        return ArenaPlan(0, {}, None, ())
    size, offsets, peak_step, live = _place([b.bytes for b in buffers], [b.first for b in buffers],
                                            [b.last for b in buffers], [b.name for b in buffers], alignment)
    return ArenaPlan(size, {b.name: offsets[i] for i, b in enumerate(buffers)}, peak_step,
                     tuple(buffers[i].name for i in live))


def _place(nbytes: list[int], first: list[int], last: list[int], names: list[str],
           alignment: int) -> tuple[int, list[int], int, list[int]]:
    """plan_arena on parallel lists: (arena size, offsets, peak step, indices live at it, largest first)."""
    steps = max(last) + 1
    aligned = [_aligned(n, alignment) for n in nbytes]
    # Largest first; ties by creation step, then name, so that equal inputs give equal plans.
    order = [i for *_, i in sorted(zip([-n for n in nbytes], first, names, range(len(nbytes))))]
    offsets = greedy_offsets(order, aligned, first, last)
    size = max((offsets[i] + aligned[i] for i in range(len(nbytes))), default=0)
    # The step holding the most live bytes (the earliest of equals): the node that sets the peak. (The step
    # whose buffers reach highest in the arena can be a step where a tiny buffer merely sits above a gap.)
    live_bytes = list(itertools.accumulate(_step_deltas(aligned, first, last, steps)))
    peak_step = live_bytes.index(max(live_bytes))
    live = sorted((i for i in range(len(nbytes)) if first[i] <= peak_step <= last[i]), key=lambda i: -nbytes[i])
    return size, offsets, peak_step, live


def greedy_offsets(order: Sequence[int], aligned: list[int], first: list[int], last: list[int]) -> list[int]:
    """Place buffers in `order`, each at the lowest offset where it overlaps no placed buffer alive at the same
    time (the greedy-by-size planners of TFLite Micro and edgefit differ only in the order they pass)."""
    if not aligned:
        return []
    steps = max(last) + 1
    # Finding the placed buffers that overlap one in time, step by step, costs the buffers live over its lifetime:
    # little on deep graphs, cubic on wide ones (thousands of branches alive until one Concat). There, testing
    # every placed buffer at once with numpy is far cheaper.
    live_count = list(itertools.accumulate(_step_deltas([1] * len(aligned), first, last, steps)))
    running = [0, *itertools.accumulate(live_count)]
    visits = sum(running[last[i] + 1] - running[first[i]] for i in range(len(aligned)))
    if visits > 64 * len(aligned) and max(aligned) * len(aligned) < 2**62:
        return _offsets_by_overlap(list(order), aligned, first, last)
    return _offsets_by_step(list(order), aligned, first, last, steps)


def _step_deltas(amounts: list[int], first: list[int], last: list[int], steps: int) -> list[int]:
    """Per step, what comes alive minus what died the step before: accumulated, the amount live at each step."""
    delta = [0] * (steps + 1)
    for i, amount in enumerate(amounts):
        delta[first[i]] += amount
        delta[last[i] + 1] -= amount
    return delta[:steps]


def _lowest_gap(spans: list[tuple[int, int]], need: int) -> int:
    """The lowest offset where `need` bytes fit between the (start, end) spans already placed there."""
    offset = 0
    for start, end in sorted(spans):
        if start - offset >= need:
            break
        if end > offset:
            offset = end
    return offset


def _offsets_by_step(order: list[int], aligned: list[int], first: list[int], last: list[int],
                     steps: int) -> list[int]:
    """Greedy placement finding time-overlapping buffers through an index of the placed ones by step."""
    placed_at: list[list[int]] = [[] for _ in range(steps)]
    offsets = [0] * len(aligned)
    ends = [0] * len(aligned)
    for i in order:
        start_step, end_step, need = first[i], last[i], aligned[i]
        if start_step == end_step:
            neighbours = placed_at[start_step]
        else:
            neighbours = set(placed_at[start_step])
            for t in range(start_step + 1, end_step + 1):
                neighbours.update(placed_at[t])
        offset = _lowest_gap([(offsets[j], ends[j]) for j in neighbours], need) if neighbours else 0
        offsets[i] = offset
        ends[i] = offset + need
        for t in range(start_step, end_step + 1):
            placed_at[t].append(i)
    return offsets


def _offsets_by_overlap(order: list[int], aligned: list[int], first: list[int], last: list[int]) -> list[int]:
    """The same greedy placement, testing all placed buffers for time overlap at once (numpy)."""
    count = len(order)
    placed_first = np.empty(count, np.int64)
    placed_last = np.empty(count, np.int64)
    placed_start = np.empty(count, np.int64)
    placed_end = np.empty(count, np.int64)
    offsets = [0] * count
    for k, i in enumerate(order):
        need = aligned[i]
        overlapping = (placed_first[:k] <= last[i]) & (placed_last[:k] >= first[i])
        starts, ends = placed_start[:k][overlapping], placed_end[:k][overlapping]
        offset = 0
        if starts.size:
            by_start = np.argsort(starts, kind="stable")
            starts, ends = starts[by_start], ends[by_start]
            # Before span j the offset has been pushed to the highest end so far (0 before the first); the first
            # span that starts at least `need` above that leaves the gap, else the offset ends above them all.
            reached = np.maximum.accumulate(ends)
            before = np.concatenate(([0], reached[:-1]))
            fits = np.flatnonzero(starts - before >= need)
            offset = int(before[fits[0]]) if fits.size else int(reached[-1])
        offsets[i] = offset
        placed_first[k], placed_last[k], placed_start[k], placed_end[k] = first[i], last[i], offset, offset + need
    return offsets


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



class _Numbered:
    """Steps with their sized tensors numbered 0..n-1 (graph inputs first, then outputs in step order): the
    planner's loops then index lists instead of hashing names, which matters on graphs of 10,000+ nodes."""

    def __init__(self, steps: Sequence[Step], sizes: dict[str, tuple[int, str, int]], graph_inputs: Sequence[str],
                 graph_outputs: Sequence[str]):
        self.steps = steps
        ids: dict[str, int] = {}
        names: list[str] = []
        for name in graph_inputs:
            if name in sizes and name not in ids:
                ids[name] = len(names)
                names.append(name)
        self.inputs = list(range(len(names)))
        writes: list[list[int]] = []
        producer = [-1] * len(names)   # tensor -> the step writing it (-1: a graph input)
        self.all_sized = True          # every tensor a step reads or writes has a size (and so a number)
        for i, step in enumerate(steps):
            numbered = []
            for name in step.writes:
                if name in sizes:
                    k = ids.get(name)
                    if k is None:
                        k = ids[name] = len(names)
                        names.append(name)
                        producer.append(i)
                    numbered.append(k)
                else:
                    self.all_sized = False
            writes.append(numbered)
        get = ids.get
        # Distinct reads only: a node reading a tensor twice frees or needs it once.
        self.reads = [list({k for k in map(get, step.reads) if k is not None}) for step in steps]
        self.producer = producer
        self.writes = writes
        self.ids, self.names = ids, names
        self.sizes = sizes
        self.nbytes = [sizes[name][2] for name in names]
        self.outputs = {ids[name] for name in graph_outputs if name in ids}
        self.with_workspace = [i for i, step in enumerate(steps) if step.workspace_bytes]

    def lifetimes(self, order: Sequence[int]) -> tuple[list[int], list[int]]:
        """(first, last) step position of every tensor when running the steps in `order`; -1: never made."""
        first = [-1] * len(self.names)
        last = [0] * len(self.names)
        for k in self.inputs:
            first[k] = 0
        reads, writes = self.reads, self.writes
        for pos, node in enumerate(order):
            for k in writes[node]:
                if first[k] < 0:
                    first[k] = last[k] = pos
            for k in reads[node]:
                if first[k] >= 0 and last[k] < pos:
                    last[k] = pos
        end = max(len(order) - 1, 0)
        for k in self.outputs:
            if first[k] >= 0:
                last[k] = end
        return first, last

    def _made(self, order: Sequence[int]) -> tuple[list[int], list[int], list[int]]:
        """(tensors made when running in `order`, in the order they come alive; first; last)."""
        first, last = self.lifetimes(order)
        made = sorted([k for k in range(len(self.names)) if first[k] >= 0], key=first.__getitem__)
        return made, first, last

    def buffers(self, order: Sequence[int]) -> list[Buffer]:
        """Buffers in the order they come alive (inputs first), then each node's workspace."""
        made, first, last = self._made(order)
        names, sizes = self.names, self.sizes
        return [Buffer(names[k], *sizes[names[k]], first[k], last[k]) for k in made] + self._workspaces(order)

    def arena(self, order: Sequence[int], alignment: int) -> tuple[int, Callable[[], tuple[list[Buffer], ArenaPlan]]]:
        """The arena size of running in `order`, and a function giving (buffers, plan_arena's plan) for it: the
        Buffer objects are worth building only for the order that wins."""
        made, first, last = self._made(order)
        workspaces = self._workspaces(order)
        names = [self.names[k] for k in made] + [w.name for w in workspaces]
        if not names:
            return 0, lambda: ([], ArenaPlan(0, {}, None, ()))
        size, offsets, peak_step, live = _place(
            [self.nbytes[k] for k in made] + [w.bytes for w in workspaces],
            [first[k] for k in made] + [w.first for w in workspaces],
            [last[k] for k in made] + [w.last for w in workspaces], names, alignment)

        def plan() -> tuple[list[Buffer], ArenaPlan]:
            sizes = self.sizes
            buffers = [Buffer(self.names[k], *sizes[self.names[k]], first[k], last[k]) for k in made] + workspaces
            return buffers, ArenaPlan(size, dict(zip(names, offsets)), peak_step, tuple(names[i] for i in live))
        return size, plan

    def live_peak(self, order: Sequence[int], alignment: int) -> int:
        """Most aligned bytes live at one step in `order`: a lower bound on the arena plan_arena gives it."""
        first, last = self.lifetimes(order)
        delta = [0] * (len(order) + 1)
        for k, need in enumerate(self.nbytes):
            if first[k] >= 0:
                need = _aligned(need, alignment)
                delta[first[k]] += need
                delta[last[k] + 1] -= need
        for workspace in self._workspaces(order):
            delta[workspace.first] += _aligned(workspace.bytes, alignment)
            delta[workspace.first + 1] -= _aligned(workspace.bytes, alignment)
        return max(itertools.accumulate(delta), default=0)

    def lower_bound(self) -> int:
        nbytes = self.nbytes
        bound = 0
        for node, step in enumerate(self.steps):
            need = step.workspace_bytes
            for k in self.reads[node]:
                need += nbytes[k]
            for k in self.writes[node]:   # outputs are distinct: each name is written once
                need += nbytes[k]
            if need > bound:
                bound = need
        return bound

    def file_order_is_only_order(self) -> bool:
        """Does every step read something the step before it wrote? Then no other topological order exists."""
        previous: tuple[str, ...] = ()
        for position, step in enumerate(self.steps):
            if position and not any(name in previous for name in step.reads):
                return False
            previous = step.writes
        return True

    def memory_aware_order(self) -> list[int]:
        """Greedy list scheduling: always run, among all ready steps, the one that grows live memory least (ties:
        the lowest index). Growths sit in a heap and are re-pushed when they change, so wide graphs with
        thousands of ready steps cost O(edges log steps), not a scan of the ready set per step."""
        steps = self.steps
        dependents: list[list[int]] = [[] for _ in steps]
        waiting = [0] * len(steps)
        if self.all_sized:   # every dependency runs through a numbered tensor
            producer = self.producer
            step_reads = [[producer[k] for k in reads] for reads in self.reads]
        else:
            producers: dict[str, int] = {}
            for i, step in enumerate(steps):
                for name in step.writes:
                    producers.setdefault(name, i)
            step_reads = [[producers.get(name, -1) for name in step.reads] for step in steps]
        for i, sources in enumerate(step_reads):
            deps = set(sources)
            deps.discard(-1)
            deps.discard(i)
            waiting[i] = len(deps)
            for source in deps:
                dependents[source].append(i)
        readers: list[list[int]] = [[] for _ in self.names]   # tensor -> the steps reading it
        for i, reads in enumerate(self.reads):
            for k in reads:
                readers[k].append(i)
        remaining = [len(r) for r in readers]   # tensor -> steps still to read it
        nbytes, keep = self.nbytes, self.outputs
        # A step's growth: what it allocates minus the tensors it is the last reader of (graph outputs stay).
        growth = [sum(map(nbytes.__getitem__, writes)) for writes in self.writes]
        for k, count in enumerate(remaining):
            if count == 1 and k not in keep:
                growth[readers[k][0]] -= nbytes[k]
        ready = [(growth[i], i) for i in range(len(steps)) if waiting[i] == 0]
        heapq.heapify(ready)
        done = [False] * len(steps)
        order: list[int] = []
        while ready:
            current, chosen = heapq.heappop(ready)
            if done[chosen] or current != growth[chosen]:   # an entry superseded by a re-push
                continue
            done[chosen] = True
            order.append(chosen)
            for k in self.reads[chosen]:
                remaining[k] -= 1
                if remaining[k] == 1 and k not in keep:
                    # The one step still to read k now frees it when it runs.
                    last_reader = next(j for j in readers[k] if not done[j])
                    growth[last_reader] -= nbytes[k]
                    if waiting[last_reader] == 0:
                        heapq.heappush(ready, (growth[last_reader], last_reader))
            for j in dependents[chosen]:
                waiting[j] -= 1
                if waiting[j] == 0:
                    heapq.heappush(ready, (growth[j], j))
        return order

    def shared_buffers(self, order: Sequence[int]) -> list[Buffer]:
        """The buffers a runtime that shares storage allocates: each view joins its input's buffer, and an
        in-place op's output takes its input's buffer when that input dies at this step, fits, and is not a graph
        input or output, which runtimes never overwrite. Modelled on onnxruntime's allocation planner."""
        first, last = self.lifetimes(order)
        count = len(self.names)
        root = list(range(count))
        nbytes = list(self.nbytes)
        carrier = list(range(count))   # the tensor whose element type and count describe the group's buffer
        keep = set(self.inputs) | self.outputs

        def find(k: int) -> int:
            while root[k] != k:
                root[k] = root[root[k]]
                k = root[k]
            return k

        ids, sizes = self.ids, self.sizes
        for position, node in enumerate(order):
            step = self.steps[node]
            if step.shares is None or not step.writes:
                continue
            source, kind = step.shares
            source_id, target_id = ids.get(source), ids.get(step.writes[0])
            if source_id is None or target_id is None or first[source_id] < 0 or first[target_id] < 0:
                continue
            kept, taken = find(source_id), find(target_id)
            if kind == "inplace" and (last[kept] != position or source_id in keep or target_id in keep
                                      or nbytes[taken] > nbytes[kept]):
                continue
            root[taken] = kept
            first[kept] = min(first[kept], first[taken])
            last[kept] = max(last[kept], last[taken])
            if nbytes[taken] > nbytes[kept]:
                nbytes[kept], carrier[kept] = nbytes[taken], carrier[taken]
        groups = [k for k in range(count) if root[k] == k and first[k] >= 0]
        shared = [Buffer(self.names[k], sizes[self.names[carrier[k]]][0], sizes[self.names[carrier[k]]][1],
                         nbytes[k], first[k], last[k]) for k in groups]
        return shared + self._workspaces(order)

    def _workspaces(self, order: Sequence[int]) -> list[Buffer]:
        if not self.with_workspace:
            return []
        position = {node: pos for pos, node in enumerate(order)}
        return sorted((Buffer(f"{self.steps[node].name}/workspace", 0, "uint8", self.steps[node].workspace_bytes,
                              position[node], position[node]) for node in self.with_workspace),
                      key=lambda b: b.first)


@dataclass
class GraphPlan:
    """Everything the footprint reports about one graph's activation memory."""

    order: list[int]             # the execution order with the smaller arena (file order on ties)
    buffers: list[Buffer]        # lifetimes in that order
    arena: ArenaPlan
    file_order_size: int         # arena size in file order
    lower_bound: int
    shared_buffers: Callable[[], list[Buffer]]   # the buffers if the runtime shares storage, made when asked
    file_order_buffers: Callable[[], list[Buffer]]   # lifetimes in file order, made when asked (reports draw them)


def plan_steps(steps: Sequence[Step], sizes: dict[str, tuple[int, str, int]], graph_inputs: Sequence[str],
               graph_outputs: Sequence[str], alignment: int = 16) -> GraphPlan:
    """Plan the arena in file order and in a memory-aware order, keep the better, and model shared storage."""
    numbered = _Numbered(steps, sizes, graph_inputs, graph_outputs)
    file_order = list(range(len(steps)))
    best_order = file_order
    file_size, best_plan = numbered.arena(file_order, alignment)
    bound = numbered.lower_bound()
    # No order can beat one that reaches the bound, and a file order that is the only order has no rival.
    if file_size > bound and not numbered.file_order_is_only_order():
        order = numbered.memory_aware_order()
        # Placing buffers costs far more than summing live bytes, and no placement beats the bytes live at once:
        # plan the new order only when that bound leaves it a chance (and never the same order twice).
        if order != file_order and numbered.live_peak(order, alignment) < file_size:
            size, plan = numbered.arena(order, alignment)
            if size < file_size:
                best_order, best_plan = order, plan
    buffers, arena = best_plan()
    return GraphPlan(best_order, buffers, arena, file_size, bound,
                     functools.partial(numbered.shared_buffers, best_order),
                     functools.partial(numbered.buffers, file_order))


def lifetimes(steps: Sequence[Step], order: Sequence[int], sizes: dict[str, tuple[int, str, int]],
              graph_inputs: Sequence[str], graph_outputs: Sequence[str]) -> list[Buffer]:
    """Buffers with lifetimes for running `steps` in `order`. sizes: name -> (elements, dtype, bytes)."""
    return _Numbered(steps, sizes, graph_inputs, graph_outputs).buffers(order)


def lower_bound(steps: Sequence[Step], sizes: dict[str, tuple[int, str, int]]) -> int:
    """max over nodes of (its activation inputs + outputs + workspace): no order or placement goes below it."""
    return _Numbered(steps, sizes, list(sizes), []).lower_bound()


def memory_aware_order(steps: Sequence[Step], sizes: dict[str, tuple[int, str, int]],
                       graph_outputs: Sequence[str]) -> list[int]:
    """A topological order that greedily runs, among the ready nodes, the one that grows live memory least.

    An exact minimum-peak schedule is NP-hard; this greedy list scheduler is what memory-aware
    compilers use as a first pass and is linear enough for graphs with tens of thousands of nodes.
    """
    written = {name for step in steps for name in step.writes}
    graph_inputs = [name for name in sizes if name not in written]
    return _Numbered(steps, sizes, graph_inputs, graph_outputs).memory_aware_order()
