"""What every pass shares: the Pass protocol, the options and result it takes and returns, and a small editable
view of one ONNX graph.

A pass is one class in one file of edgefit/passes, exported there as `PASS` (edgefit.passes.registry finds it):
it declares its `name`, parses its own `--passes` arguments, states what it `requires` of its input and what it
`ensures` (or `removes`), and its stats render themselves. Passes work on a private copy of the model
(`copy_model`) and return it; `Pass.apply` proves the caller's model was not touched, for every pass.
"""

from __future__ import annotations

import copy
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import onnx
from onnx import GraphProto, ModelProto, NodeProto, TensorProto, numpy_helper

from edgefit.errors import ConfigError
from edgefit.fidelity import Progress
from edgefit.model import has_subgraph, index_graph, subgraph_outer_reads
from edgefit.shapes import Dims

if TYPE_CHECKING:
    from rich.console import Console

    from edgefit.fidelity import SampleSet
    from edgefit.passes.quantize import QuantizationCache


class PassStats(Protocol):
    """Per-pass numbers; `notes` says in one line each what the pass skipped and why."""

    name: str
    notes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]: ...

    def render(self, console: Console) -> None:
        """The pass's own lines of the terminal report (its notes are printed after them)."""


@dataclass(frozen=True)
class PassResult:
    model: ModelProto
    stats: PassStats


@dataclass(frozen=True)
class PassOptions:
    """Settings shared by the passes of one run (a pass spec's own arguments take precedence)."""

    sparsity: float = 0.5
    per_layer: bool = False
    structured: bool = False
    skip: tuple[str, ...] = ()
    mode: str = "int8"
    method: str = "minmax"
    symmetric_activations: bool = True
    exclude: tuple[str, ...] = ()
    int8_op_types: tuple[str, ...] | None = None
    quantize_heads: bool = False                   # quantize the model's output heads too (default: float)
    wide_nodes: tuple[str, ...] = ()               # nodes whose activations get 16 bits in an int8 model
    calibration: SampleSet | None = None           # None: synthetic calibration (with a warning)
    # Pre-processing and calibration ranges kept across quantizations of one model (edgefit.passes.quantize).
    quantization_cache: QuantizationCache | None = None
    input_shapes: dict[str, list[int]] | None = None
    dims: dict[str, int] | None = None
    assume_dims: int | None = None                 # see edgefit.shapes.resolve_shapes
    decompose_ops: tuple[str, ...] | None = None   # ops decompose rewrites; None: what operator_list cannot run
    operator_list: str | None = None               # the target runtime's operator list (devices/operators/NAME)
    input_values: dict[str, list[float]] | None = None   # --input-value: decides If conditions, fills samples

    @property
    def shape_bindings(self) -> dict[str, Any]:
        """What binds the input shapes and the known input values, as the keyword arguments that analyze,
        resolve_shapes, select_samples and synthetic_samples take: one place for every call to thread them."""
        return {"input_shapes": self.input_shapes, "dims": self.dims, "assume_dims": self.assume_dims,
                "input_values": self.input_values}


class Pass(ABC):
    """One optimisation pass. Subclasses set the class attributes and implement `run`.

    `requires` / `ensures` / `removes` are properties of a model (plain words, e.g. "float weights"): a pipeline
    refuses a pass whose requirement an earlier pass of the same run removed (`quantize,prune` would prune
    nothing: quantized weights are no longer float).
    """

    name: ClassVar[str]
    usage: ClassVar[str]                           # how --passes spells it, e.g. "prune:SPARSITY[:structured]"
    requires: ClassVar[frozenset[str]] = frozenset()
    ensures: ClassVar[frozenset[str]] = frozenset()
    removes: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def parse_args(cls, args: Sequence[str], spec: str) -> dict[str, Any]:
        """The PassOptions fields that `--passes` arguments (`prune:0.5:structured` -> ["0.5", "structured"])
        set; the default takes none."""
        if args:
            raise ConfigError(f"--passes {spec!r}: unexpected argument {args[0]!r}")
        return {}

    @abstractmethod
    def run(self, model: ModelProto, options: PassOptions, progress: Progress | None) -> PassResult:
        """The pass itself, on a model it must not modify (copy it first)."""

    def apply(self, model: ModelProto, options: PassOptions = PassOptions(),
              progress: Progress | None = None) -> PassResult:
        """Run the pass and prove it left `model` untouched."""
        digest = model_digest(model)
        result = self.run(model, options, progress)
        if model_digest(model) != digest:
            raise RuntimeError(f"edgefit bug: pass {self.name} modified its input model")
        return result


def copy_model(model: ModelProto) -> ModelProto:
    """The copy a pass edits. Models older than IR version 4 come back as IR 4 with their initializers no
    longer listed as graph inputs: IR 3 had to list every weight as an input, IR 4 reads an initializer that
    is also an input as overridable (not constant), so without this no weight of an old model could be
    folded or pruned. Runtimes already treat IR 3 initializers as constants, so behaviour is unchanged."""
    result = copy.deepcopy(model)
    if result.ir_version < 4:
        weights = {t.name for t in result.graph.initializer}
        inputs = [i for i in result.graph.input if i.name not in weights]
        del result.graph.input[:]
        result.graph.input.extend(inputs)
        result.ir_version = 4
    return result


def model_digest(model: ModelProto) -> str:
    """A hash of the serialized model, to prove a pass left its input alone.

    Piece by piece: protobuf refuses to serialize a message of 2 GiB or more, which a model (or one tensor) with
    large in-memory weights is; such a message is hashed field by field, its bytes fields directly.
    """
    digest = hashlib.sha256()

    def feed(message) -> None:
        # Containers go field by field; other messages whole unless they hold huge bytes (a failed attempt at
        # serializing costs as much as a successful one).
        name = message.DESCRIPTOR.name
        if name not in ("ModelProto", "GraphProto") and not (name == "TensorProto" and len(message.raw_data) > 2**30):
            try:
                digest.update(message.SerializeToString(deterministic=True))
                return
            except Exception:  # noqa: BLE001 - google.protobuf.message.EncodeError: 2 GiB or more
                pass
        for field, value in message.ListFields():
            digest.update(field.name.encode())
            values = value if field.is_repeated else [value]
            for item in values:
                if field.message_type is not None:
                    feed(item)
                elif isinstance(item, bytes):
                    digest.update(item)
                else:
                    digest.update(repr(item).encode())

    feed(model)
    return digest.hexdigest()


def node_label(node: NodeProto) -> str:
    return node.name or f"{node.op_type}({node.output[0] if node.output else ''})"


def ensure_node_names(graph: GraphProto) -> None:
    """Give unnamed nodes unique names so reports, --skip and --exclude can refer to them."""
    taken = {n.name for n in graph.node if n.name}
    for node in graph.node:
        if not node.name:
            base = f"{node.op_type}_{node.output[0] if node.output else 'node'}"
            name, k = base, 1
            while name in taken:
                name, k = f"{base}_{k}", k + 1
            node.name = name
            taken.add(name)


def _rename_outer_reads(graph: GraphProto, old: str, new: str) -> None:
    """Rename reads of an enclosing-scope tensor inside a subgraph (unless the subgraph defines that name)."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    for node in graph.node:
        defined.update(node.output)
    if old in defined:
        return
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == old:
                node.input[k] = new
        _rename_in_subgraphs(node, old, new)
    for out in graph.output:
        if out.name == old:
            out.name = new


def _rename_in_subgraphs(node: NodeProto, old: str, new: str) -> None:
    for attr in node.attribute:
        subs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for sub in subs:
            _rename_outer_reads(sub, old, new)


def _delete_positions(container, positions: list[int]) -> None:
    """Delete the items at the ascending `positions` of a protobuf repeated field, a run of neighbours at a time:
    each deletion shifts the items after it, so deleting runs keeps the usual case (the weights a fold replaced sit
    together) linear, without copying the tensors that stay."""
    end = len(positions)
    while end:
        start = end - 1
        while start and positions[start - 1] == positions[start] - 1:
            start -= 1
        del container[positions[start]:positions[end - 1] + 1]
        end = start


class GraphEditor:
    """One graph being edited, with its producer and consumer maps kept current by every edit.

    Built from the same index analysis uses (edgefit.model.index_graph: producers, reads including subgraphs'
    outer reads), then updated in place: adding, removing or rewiring a node touches only that node's names, so a
    pass costs time in proportion to its edits, not to edits x graph size. The node order is a linked list;
    `commit()` writes the order and the removals back into the GraphProto (once per pass, not per edit).
    Initializers added are appended to the graph at once; removed ones are dropped at commit.
    """

    def __init__(self, graph: GraphProto):
        self.graph = graph
        index = index_graph(graph)
        self.input_names = {i.name for i in graph.input}
        self.output_names = {o.name for o in graph.output}
        # An initializer that is also a graph input can be overridden at run time: it is not a constant.
        self.initializers = {t.name: t for t in graph.initializer if t.name not in self.input_names}
        self._dropped_initializers: set[str] = set()
        self.producer: dict[str, NodeProto] = {}
        self._consumers: dict[str, dict[int, NodeProto]] = {}
        self._reads: dict[int, tuple[str, ...]] = {}
        self._next: dict[int, NodeProto | None] = {}
        self._prev: dict[int, NodeProto | None] = {}
        self._first: NodeProto | None = None
        self._last: NodeProto | None = None
        self._reordered = False
        for node, reads in zip(index.nodes, index.reads):
            self._append(node)
            self._link(node, tuple(dict.fromkeys(reads)))
        self._names = set(self.producer) | self.input_names | {t.name for t in graph.initializer} | {
            n.name for n in index.nodes}

    # ---- maps ------------------------------------------------------------------------------------
    def _link(self, node: NodeProto, reads: tuple[str, ...] | None = None) -> None:
        if reads is None:
            names = [n for n in node.input if n]
            if has_subgraph(node):
                names += sorted(subgraph_outer_reads(node) - set(names))
            reads = tuple(dict.fromkeys(names))
        self._reads[id(node)] = reads
        for name in node.output:
            if name:
                self.producer[name] = node
        for name in reads:
            self._consumers.setdefault(name, {})[id(node)] = node

    def _unlink(self, node: NodeProto) -> None:
        for name in node.output:
            if name and self.producer.get(name) is node:
                del self.producer[name]
        for name in self._reads.pop(id(node)):
            readers = self._consumers[name]
            del readers[id(node)]
            if not readers:
                del self._consumers[name]

    def consumers(self, name: str) -> list[NodeProto]:
        """The nodes reading `name` (subgraphs' reads of outer names included), in no particular order."""
        return list(self._consumers.get(name, {}).values())

    def is_read(self, name: str) -> bool:
        return name in self._consumers or name in self.output_names

    def rewired(self, node: NodeProto) -> None:
        """Call after changing a node's inputs or outputs in place: its map entries follow."""
        self._unlink(node)
        self._link(node)

    # ---- node order ------------------------------------------------------------------------------
    def _append(self, node: NodeProto) -> None:
        self._prev[id(node)], self._next[id(node)] = self._last, None
        if self._last is None:
            self._first = node
        else:
            self._next[id(self._last)] = node
        self._last = node

    def nodes(self) -> list[NodeProto]:
        """The live nodes in order (a snapshot: edits during iteration do not change it)."""
        order, node = [], self._first
        while node is not None:
            order.append(node)
            node = self._next[id(node)]
        return order

    def alive(self, node: NodeProto) -> bool:
        return id(node) in self._reads

    def remove(self, node: NodeProto) -> None:
        self._unlink(node)
        before, after = self._prev.pop(id(node)), self._next.pop(id(node))
        if before is None:
            self._first = after
        else:
            self._next[id(before)] = after
        if after is None:
            self._last = before
        else:
            self._prev[id(after)] = before
        self._reordered = True

    def insert_before(self, anchor: NodeProto, node: NodeProto) -> None:
        before = self._prev[id(anchor)]
        self._prev[id(node)], self._next[id(node)] = before, anchor
        self._prev[id(anchor)] = node
        if before is None:
            self._first = node
        else:
            self._next[id(before)] = node
        self._link(node)
        self._names.update(n for n in node.output if n)
        self._reordered = True

    def commit(self) -> None:
        """Write the node order and the dropped initializers into the GraphProto. The editor is spent after it
        (the graph's node messages are new objects); build a new one to edit further."""
        graph = self.graph
        if self._reordered:
            copies = []
            for node in self.nodes():
                copy_ = NodeProto()
                copy_.CopyFrom(node)
                copies.append(copy_)
            del graph.node[:]
            graph.node.extend(copies)
        if self._dropped_initializers:
            _delete_positions(graph.initializer, [k for k, t in enumerate(graph.initializer)
                                                  if t.name in self._dropped_initializers])
        self._reordered = False
        self._dropped_initializers = set()

    # ---- constants -------------------------------------------------------------------------------
    def constant(self, name: str) -> np.ndarray | None:
        tensor = self.initializers.get(name)
        return None if tensor is None else numpy_helper.to_array(tensor)

    def is_constant(self, name: str) -> bool:
        return name in self.initializers

    def add_initializer(self, base: str, array: np.ndarray) -> str:
        """Store `array` under a fresh name derived from `base` and return the name."""
        return self.add_tensor(numpy_helper.from_array(np.ascontiguousarray(array), self.fresh_name(base)))

    def add_tensor(self, tensor: TensorProto) -> str:
        """Add an initializer under the name it carries (a name this graph does not use yet)."""
        self.graph.initializer.append(tensor)
        self._names.add(tensor.name)
        self.initializers[tensor.name] = self.graph.initializer[-1]
        return tensor.name

    def replace_initializer(self, name: str, array: np.ndarray) -> None:
        """Overwrite an initializer in place (only for tensors this pass owns, e.g. read by one node)."""
        tensor = self.initializers[name]
        tensor.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(array), name))

    def fresh_name(self, base: str) -> str:
        name, k = base, 1
        while name in self._names:
            name, k = f"{base}_{k}", k + 1
        self._names.add(name)
        return name

    # ---- structure -------------------------------------------------------------------------------
    def sole_consumer(self, name: str) -> NodeProto | None:
        """The one node reading `name`, when exactly one does and it is not a graph output."""
        readers = self._consumers.get(name, {})
        if len(readers) != 1 or name in self.output_names:
            return None
        return next(iter(readers.values()))

    def replace_uses(self, old: str, new: str) -> None:
        for node in self.consumers(old):
            for k, name in enumerate(node.input):
                if name == old:
                    node.input[k] = new
            _rename_in_subgraphs(node, old, new)
            self.rewired(node)

    def bypass(self, node: NodeProto, source: str) -> bool:
        """Remove `node`, whose first output equals `source`; False (and no change) when it must stay.

        Readers of the node's output read `source` instead. When that output is a graph output, the tensor
        producing `source` is renamed to keep the graph's interface, which needs `source` to be an ordinary
        node output used nowhere else.
        """
        out = node.output[0]
        if out in self.output_names:
            producer = self.producer.get(source)
            if producer is None or source in self.output_names or len(self._consumers.get(source, {})) != 1:
                return False
            self.remove(node)
            for k, name in enumerate(producer.output):
                if name == source:
                    producer.output[k] = out
            self.rewired(producer)
            for vi in self.graph.value_info:
                if vi.name == source:
                    vi.name = out
        else:
            self.remove(node)
            self.replace_uses(out, source)
        return True

    def remove_dead(self) -> tuple[int, int]:
        """Drop nodes whose outputs nobody reads and initializers nobody reads: (nodes, initializers)."""
        def dead(node: NodeProto) -> bool:
            return self.alive(node) and not any(o and self.is_read(o) for o in node.output)

        pending = [n for n in self.nodes() if dead(n)]
        removed_nodes = 0
        while pending:
            node = pending.pop()
            if not dead(node):
                continue
            reads = self._reads[id(node)]
            self.remove(node)
            removed_nodes += 1
            pending += [p for p in (self.producer.get(name) for name in reads) if p is not None and dead(p)]
        unread = {t.name for t in self.graph.initializer
                  if t.name not in self._consumers and t.name not in self.output_names
                  and t.name not in self.input_names} - self._dropped_initializers
        for name in unread:
            self.initializers.pop(name, None)
        self._dropped_initializers |= unread
        live = set(self.producer) | self.input_names | (
            {t.name for t in self.graph.initializer} - self._dropped_initializers)
        _delete_positions(self.graph.value_info, [k for k, vi in enumerate(self.graph.value_info)
                                                  if vi.name not in live])
        return removed_nodes, len(unread)


def is_static(shape: Dims | None) -> bool:
    return shape is not None and all(isinstance(d, int) and d > 0 for d in shape)
