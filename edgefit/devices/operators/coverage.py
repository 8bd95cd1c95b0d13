"""Judging a model's nodes against a runtime's operator list (see edgefit.devices.operators for the statuses)."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import ModelProto, NodeProto, TensorProto, numpy_helper

from edgefit.analysis.footprint import AnalysedGraph, Footprint
from edgefit.devices.estimate import host_fallback_s
from edgefit.devices.operators import (
    TENSOR_TYPES,
    WINDOW_RULES,
    Lowering,
    LoweringForm,
    OperatorList,
    load_operator_list,
)
from edgefit.model import has_subgraph, node_attribute

_ALL_STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")


@dataclass(frozen=True)
class NodeCoverage:
    layer: str
    op_type: str
    status: str      # supported | unsupported | violates | unknown
    reason: str = ""
    builtins: tuple[str, ...] = ()   # what the runtime's converter makes of it (lists with a lowering table)

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "op_type": self.op_type, "status": self.status, "reason": self.reason,
                "builtins": list(self.builtins)}


@dataclass(frozen=True)
class Coverage:
    """One model on one runtime's operator list."""

    runtime: str
    title: str
    kind: str
    source: str
    precision: str
    nodes: tuple[NodeCoverage, ...]
    revision: str = ""
    fallback_layers: tuple[str, ...] = ()        # accelerators: layers that run on the host CPU
    host_failures: tuple[NodeCoverage, ...] = ()  # fallback layers the host's runtime cannot run either
    fallback_latency_s: float | None = None      # their estimated time on the host core; None: no estimate

    @property
    def not_running(self) -> tuple[NodeCoverage, ...]:
        """Nodes the runtime cannot execute: unsupported or violating a constraint."""
        return tuple(n for n in self.nodes if n.status in ("unsupported", "violates"))

    @property
    def unknown(self) -> tuple[NodeCoverage, ...]:
        return tuple(n for n in self.nodes if n.status == "unknown")

    @property
    def runs(self) -> bool:
        """False when the model cannot run at all: an MCU runtime missing a kernel or a constraint."""
        return (self.kind != "mcu" or not self.not_running) and not self.host_failures

    @property
    def verdict(self) -> str:
        """supported | does-not-run | fallback | unknown (some node could not be judged, none fails)."""
        if not self.runs:
            return "does-not-run"
        if self.fallback_layers:
            return "fallback"
        return "unknown" if self.unknown else "supported"

    def to_dict(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "title": self.title, "kind": self.kind, "source": self.source,
                "revision": self.revision, "precision": self.precision, "verdict": self.verdict, "nodes": len(self.nodes),
                "not_running": [n.to_dict() for n in self.not_running],
                "unknown": [n.to_dict() for n in self.unknown],
                "fallback_layers": list(self.fallback_layers),
                "host_failures": [n.to_dict() for n in self.host_failures],
                "fallback_latency_ms": None if self.fallback_latency_s is None else self.fallback_latency_s * 1e3}


class ModelGraph:
    """What judging needs from the model: computing nodes aligned with the footprint's layers, shapes, constants.

    `analysed`: the footprint's own graph (edgefit.analysis.footprint.analysed_graph), which `model` then need not
    be: its nodes, constants and shapes are taken as the analysis found them, nothing is read or inferred again."""

    def __init__(self, model: ModelProto | None, footprint: Footprint, analysed: AnalysedGraph | None = None):
        from edgefit.analysis.footprint import computing_nodes
        from edgefit.shapes import resolve_shapes

        if analysed is not None:
            model, index, constants, order = (analysed.proto, analysed.index, analysed.view.constants,
                                              analysed.computing_nodes)
            self.shapes = analysed.shapes
        else:
            if model.functions:   # the footprint counted the functions' contents, inlined the same way
                import onnx.inliner

                try:
                    model = onnx.inliner.inline_local_functions(model)
                except Exception:  # noqa: BLE001 - the footprint then kept them as nodes too
                    pass
            index, view, order = computing_nodes(model.graph)
            constants = view.constants
            self.shapes = resolve_shapes(model, {k: list(v) for k, v in footprint.inputs.items()},
                                         weights_loaded=False, index=index).scopes[""]
        self.nodes = [index.nodes[i] for i in order]
        self.names = [index.inputs[i] + index.outputs[i] for i in order]   # each node's tensors, as stored
        self.constants = constants
        self.initializers = {t.name: t for t in model.graph.initializer}
        self.constant_nodes = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant" and n.output}
        # Judged nodes by (operator list, precision, declared custom ops): checking every profile asks for the same
        # few again and again.
        self.judged: dict[tuple[str, str, frozenset[str]], tuple[NodeCoverage, ...]] = {}
        self.values_read = False   # set by value(): a judgement that read a constant's values is the node's alone
        # Judged nodes by the verdicts of every kind: most lists support a model's few kinds alike, and building
        # tens of thousands of NodeCoverage per list would cost more than judging.
        self.alike: dict[tuple, tuple[NodeCoverage, ...]] = {}
        self._kinds: tuple[list[int], list[int]] | None = None

    @property
    def kinds(self) -> tuple[list[int], list[int]]:
        """(per node the number of its kind, per kind its first node). Nodes of a kind agree in everything judging
        reads but their names and constants' values: op, attributes, and per input and output whether it is
        constant, its shape and which of the node's tensors it repeats. Judging reads values only through value(),
        which marks the verdict as the node's own (see _judge_nodes)."""
        if self._kinds is None:
            constants, shapes = self.constants, self.shapes
            numbers: dict[tuple, int] = {}
            kinds, firsts = [], []
            for position, (node, names) in enumerate(zip(self.nodes, self.names)):
                seen: dict[str, int] = {}
                tensors = []
                for name in names:
                    info = shapes.get(name)
                    tensors.append((seen.setdefault(name, len(seen)), name in constants,
                                    None if info is None else info.shape))
                signature = (node.domain, node.op_type, tuple(a.SerializeToString() for a in node.attribute),
                             len(node.input), tuple(tensors))
                kind = numbers.setdefault(signature, len(numbers))
                if kind == len(firsts):
                    firsts.append(position)
                kinds.append(kind)
            self._kinds = kinds, firsts
        return self._kinds

    def shape(self, name: str) -> tuple[int, ...] | None:
        info = self.shapes.get(name)
        return None if info is None else info.shape

    def value(self, name: str) -> np.ndarray | None:
        """A small constant's values (pads, axes); None when not stored in the file."""
        self.values_read = True
        tensor = self.initializers.get(name)
        if tensor is None and name in self.constant_nodes:
            tensor = next((a.t for a in self.constant_nodes[name].attribute if a.name == "value"), None)
        if tensor is None or tensor.data_location == TensorProto.EXTERNAL:
            return None
        return numpy_helper.to_array(tensor)


def _in(values: Sequence[int], bounds: Sequence[int]) -> bool:
    return all(bounds[0] <= v <= bounds[1] for v in values)


def _window_problem(node: NodeProto, rules: Mapping[str, Any], graph: ModelGraph) -> str | None:
    """Kernel, stride, dilation and batch limits of a conv/pool node; '' when something needed is not known."""
    x = graph.shape(node.input[0]) if node.input else None
    if x is None:
        return ""
    spatial = len(x) - 2
    if "spatial_dims" in rules and not _in([spatial], rules["spatial_dims"]):
        return f"{spatial}-D spatial input (runs {rules['spatial_dims'][0]}-{rules['spatial_dims'][1]}-D)"
    if rules.get("batch_one") and x[0] != 1:
        return f"batch {x[0]} (runs batch 1)"
    if node.op_type in ("Conv", "ConvTranspose", "QLinearConv"):
        weight = graph.shape(node.input[3 if node.op_type == "QLinearConv" else 1])
        kernel = list(weight[2:]) if weight is not None else None
    else:
        kernel = list(node_attribute(node, "kernel_shape", [])) or None
    strides = list(node_attribute(node, "strides", [1] * spatial))
    dilations = list(node_attribute(node, "dilations", [1] * spatial))
    # A window as large as its input yields one output: the stride never applies (compilers rewrite it as 1).
    whole = kernel is not None and list(kernel) == list(x[2:])
    if "strides" in rules and not whole and not _in(strides, rules["strides"]):
        return f"stride {'x'.join(map(str, strides))} (runs {rules['strides'][0]}-{rules['strides'][1]})"
    if "dilations" in rules and not _in(dilations, rules["dilations"]):
        return f"dilation {'x'.join(map(str, dilations))} (runs {rules['dilations'][0]}-{rules['dilations'][1]})"
    if kernel is None:
        return "" if {"kernel", "padded_kernel", "dilated_kernel_height", "dilated_kernel_area"} & set(rules) else None
    if "kernel" in rules and not _in(kernel, rules["kernel"]):
        return f"kernel {'x'.join(map(str, kernel))} (runs {rules['kernel'][0]}-{rules['kernel'][1]})"
    padded = any(node_attribute(node, "pads", [0])) or node_attribute(node, "auto_pad", "NOTSET") in ("SAME_UPPER",
                                                                                              "SAME_LOWER")
    if "padded_kernel" in rules and padded and not _in(kernel, rules["padded_kernel"]):
        bounds = rules["padded_kernel"]
        return f"padded kernel {'x'.join(map(str, kernel))} (runs {bounds[0]}-{bounds[1]} with padding)"
    dilated = [d * (k - 1) + 1 for k, d in zip(kernel, dilations)]
    if "dilated_kernel_height" in rules and dilated and not _in(dilated[:1], rules["dilated_kernel_height"]):
        return f"dilated kernel height {dilated[0]} (runs up to {rules['dilated_kernel_height'][1]})"
    if "dilated_kernel_area" in rules and not _in([math.prod(dilated)], rules["dilated_kernel_area"]):
        return f"dilated kernel area {math.prod(dilated)} (runs up to {rules['dilated_kernel_area'][1]})"
    return None


def _spatial_axes_problem(node: NodeProto, graph: ModelGraph) -> str | None:
    """Reductions and pads over the spatial axes (2, 3 of NCHW) only; '' when the axes cannot be read."""
    x = graph.shape(node.input[0]) if node.input else None
    if x is None:
        return ""
    rank = len(x)
    if node.op_type == "Pad":
        pads = node_attribute(node, "pads") if len(node.input) < 2 else graph.value(node.input[1])
        if pads is None:
            return ""
        pads = [int(p) for p in np.asarray(pads).reshape(-1)]
        axes = [a for a in range(rank) if pads[a] or pads[a + rank]]
    else:
        axes = node_attribute(node, "axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            value = graph.value(node.input[1])
            if value is None:
                return ""
            axes = value.reshape(-1).tolist()
        axes = range(rank) if axes is None else [a % rank for a in axes]
    outside = sorted(a for a in axes if a < 2)
    return f"works on axis {outside[0]} (runs the spatial axes only)" if outside else None


def _problem(node: NodeProto, rules: Mapping[str, Any], graph: ModelGraph) -> str | None:
    """Why `node` breaks one of its op's constraints; '' when it cannot be judged; None when all hold."""
    if WINDOW_RULES & set(rules):
        found = _window_problem(node, rules, graph)
        if found is not None:
            return found
    for slot in rules.get("constant_inputs", ()):
        if slot < len(node.input) and node.input[slot] and node.input[slot] not in graph.constants:
            return f"input {slot} is computed at run time (runs a constant weight)"
    for name, allowed in rules.get("attributes", {}).items():
        value = _attribute(node, name, graph)
        if value is not None and value not in allowed:
            return f"{name}={value} (runs {', '.join(map(str, allowed))})"
    if "rank" in rules:
        ranks = [graph.shape(name) for name in node.input if name]
        if any(shape is None for shape in ranks):
            return ""
        outside = next((len(shape) for shape in ranks if not _in([len(shape)], rules["rank"])), None)
        if outside is not None:
            low, high = rules["rank"]
            return f"{outside}-D input (runs {low}-D)" if low == high else f"{outside}-D input (runs {low}-{high}-D)"
    if rules.get("spatial_axes_only"):
        found = _spatial_axes_problem(node, graph)
        if found is not None:
            return found
    return None


def _tensor_problem(node: NodeProto, operators: OperatorList, graph: ModelGraph, precision: str) -> str | None:
    """The list's global limits (precision, rank, dimensions, static shapes); '' when a shape is unknown."""
    if operators.int8_only and precision != "int8":
        return f"runs int8 only (deployed at {precision})"
    for name in [*node.input, *node.output]:
        if not name or name in graph.constants:
            continue
        shape = graph.shape(name)
        if shape is None:
            return "" if operators.static_shapes or operators.max_rank else None
        if operators.max_rank is not None and len(shape) > operators.max_rank:
            return f"{len(shape)}-D tensor {name} (runs up to {operators.max_rank}-D)"
        if operators.max_dim is not None and any(d > operators.max_dim for d in shape):
            return f"tensor {name} has a dimension above {operators.max_dim}"
        keep = operators.max_nonunit_dims
        if keep is not None and any(d != 1 for d in shape[:-keep]):
            return f"tensor {name} {list(shape)} has more than {keep} non-unit innermost dimensions"
    return None


@functools.cache
def _default(op_type: str, domain: str, name: str) -> Any:
    """The ONNX schema's default for an attribute (newest opset); None when it has none or the op is unknown."""
    try:
        attribute = onnx.defs.get_schema(op_type, domain=domain).attributes[name].default_value
    except (onnx.defs.SchemaError, KeyError):
        return None
    if attribute.type == onnx.AttributeProto.UNDEFINED:
        return None
    value = onnx.helper.get_attribute_value(attribute)
    return value.decode() if isinstance(value, bytes) else value


def _attribute(node: NodeProto, name: str, graph: ModelGraph) -> Any:
    """A node's attribute as judging reads it: its value, else the ONNX default. Reshape's allowzero=1 only differs
    from 0 when the shape holds a 0, so with a stored shape free of zeros (torch's exporter writes allowzero=1 on
    every Reshape) it reads as 0."""
    value = node_attribute(node, name)
    if value is None:
        value = _default(node.op_type, node.domain, name)
    if node.op_type == "Reshape" and name == "allowzero" and value == 1:
        shape = graph.value(node.input[1]) if len(node.input) > 1 else None
        if shape is not None and not (shape == 0).any():
            return 0
    return value


def _stored(node: NodeProto, slot: int, graph: ModelGraph) -> np.ndarray | None:
    name = node.input[slot] if slot < len(node.input) else ""
    return graph.value(name) if name else None


def _holds(when: Mapping[str, Any], node: NodeProto, graph: ModelGraph) -> bool:
    """Whether every condition of a lowering form holds (the vocabulary: edgefit/devices/operators/lowering/*.toml);
    a condition that needs a value or shape the file does not give does not hold."""
    for condition, expected in when.items():
        if condition == "constant":
            if any(slot >= len(node.input) or node.input[slot] not in graph.constants for slot in expected):
                return False
        elif condition == "attributes":
            if any(_attribute(node, name, graph) not in allowed for name, allowed in expected.items()):
                return False
        elif condition == "scalar":
            for slot, allowed in expected.items():
                value = _stored(node, int(slot), graph)
                if value is None or value.size != 1 or not np.isclose(float(value.reshape(-1)[0]), allowed).any():
                    return False
        elif condition == "zero_in":
            value = _stored(node, expected, graph)
            if value is None or not (value == 0).any():
                return False
        elif condition == "last_axis":
            shape = graph.shape(node.input[0]) if node.input else None
            if shape is None or _attribute(node, "axis", graph) % max(len(shape), 1) != len(shape) - 1:
                return False
        elif condition == "inputs":
            if len([name for name in node.input if name]) != expected:
                return False
    return True


def _lowered(node: NodeProto, key: str, lowering: Lowering, graph: ModelGraph) -> LoweringForm | None:
    """The form the node lowers by (None: the converter has no entry for its op)."""
    forms = lowering.forms.get(key)
    return None if forms is None else next((form for form in forms if _holds(form.when, node, graph)), None)


def _missing_kernel(key: str, builtins: Sequence[str], operators: OperatorList, precision: str) -> str | None:
    """Why one of the builtins a node becomes does not run (said of the node: 'becomes GELU; GELU has no ... kernel:
    <what would make it run>'): no kernel, or none for the deployed tensor type."""
    hints = operators.hints
    tensor_type = TENSOR_TYPES.get(precision, precision)
    lowered = list(builtins) != [key]
    for builtin in builtins:
        hint = f": {hints[builtin]}" if builtin in hints else ""
        becomes = f"becomes {', '.join(builtins)}; {builtin} has" if lowered else "has"
        if builtin not in operators.ops:
            return f"{becomes} no {operators.title} kernel{hint}"
        types = operators.tensor_types.get(builtin)
        if types is not None and tensor_type not in types:
            return f"{becomes} no {tensor_type} kernel in {operators.title} (it runs {', '.join(types)}){hint}"
    return None


def _judge(node: NodeProto, label: str, operators: OperatorList, graph: ModelGraph, precision: str,
           custom_ops: frozenset[str]) -> NodeCoverage:
    domain = node.domain if node.domain not in ("", "ai.onnx") else ""
    key = node.op_type if not domain else f"{domain}.{node.op_type}"
    if key in custom_ops:
        return NodeCoverage(label, key, "supported", "custom kernel declared by the user")
    if operators.all_standard_ops and domain in _ALL_STANDARD_DOMAINS:
        return NodeCoverage(label, key, "supported")
    standard = domain in ("", "ai.onnx.ml")   # the domains a list enumerates
    builtins: tuple[str, ...] = ()
    if operators.lowering is not None:
        form = _lowered(node, key, operators.lowering, graph) if standard else None
        if form is None or form.refuse:
            return _not_listed(label, key, operators, standard, form.refuse if form else "")
        if form.unknown:
            return NodeCoverage(label, key, "unknown", form.unknown)
        builtins = form.builtins
    elif key not in operators.ops:
        return _not_listed(label, key, operators, standard, "")
    else:
        builtins = (key,)
    if has_subgraph(node):
        return NodeCoverage(label, key, "unknown", "the ops inside its subgraphs are not judged", builtins)
    shown = builtins if operators.lowering is not None else ()
    missing = _missing_kernel(key, builtins, operators, precision)
    if missing is not None:
        return NodeCoverage(label, key, "unsupported", missing, shown)
    found = _tensor_problem(node, operators, graph, precision)
    if found is None:
        found = _problem(node, operators.constraints.get(key, {}), graph)
    if found is None:
        return NodeCoverage(label, key, "supported", "", shown)
    if found == "":
        return NodeCoverage(label, key, "unknown", "a shape or constant its constraints need is not known", shown)
    return NodeCoverage(label, key, "violates", found, shown)


def _not_listed(label: str, key: str, operators: OperatorList, standard: bool, refused: str) -> NodeCoverage:
    """A node whose op the list (or its converter) does not take: unsupported where the list is complete, with what
    would make it run; unknown where the list is partial. Reasons are said of the node ('Erf (erf) has no ...')."""
    if refused:
        return NodeCoverage(label, key, "unsupported", f"cannot be converted: {refused} ({operators.lowering.title})")
    if not operators.complete:
        return NodeCoverage(label, key, "unknown", f"is not in edgefit's {operators.name} list")
    if not standard:
        return NodeCoverage(label, key, "unsupported", f"is a custom-domain op {operators.title} has no kernel for: "
                                                       f"declare a kernel you wrote with --custom-op {key}")
    # On a microcontroller the kernels are compiled in: one the user wrote for the op makes it run.
    declare = f": declare a kernel you wrote with --custom-op {key}" if operators.kind == "mcu" else ""
    if key in operators.hints:
        declare = f": {operators.hints[key]}"
    if operators.lowering is not None:
        return NodeCoverage(label, key, "unsupported", f"has no builtin form in edgefit's {operators.lowering.name} "
                                                       f"table, so no {operators.title} kernel{declare}")
    return NodeCoverage(label, key, "unsupported", f"has no {operators.title} kernel{declare}")


def _judge_nodes(graph: ModelGraph, labels: Sequence[str], operators: OperatorList, precision: str,
                 custom_ops: frozenset[str]) -> tuple[NodeCoverage, ...]:
    """Every node judged. The nodes of a kind (ModelGraph.kinds) share its first node's verdict, unless judging
    that one read a constant's values or gave a reason naming one of its tensors: a large graph repeats a few
    kinds of node thousands of times."""
    kinds, firsts = graph.kinds
    # per kind: (op, status, reason, builtins); None: judge each node
    verdicts: list[tuple[str, str, str, tuple[str, ...]] | None] = []
    for first in firsts:
        graph.values_read = False
        result = _judge(graph.nodes[first], labels[first], operators, graph, precision, custom_ops)
        own = graph.values_read or any(name and name in result.reason for name in (*graph.names[first], labels[first]))
        verdicts.append(None if own else (result.op_type, result.status, result.reason, result.builtins))
    alike = None if None in verdicts else tuple(verdicts)
    if alike in graph.alike:
        return graph.alike[alike]
    judged = tuple(NodeCoverage(label, *verdicts[kind]) if verdicts[kind] is not None
                   else _judge(node, label, operators, graph, precision, custom_ops)
                   for node, label, kind in zip(graph.nodes, labels, kinds))
    if alike is not None:
        graph.alike[alike] = judged
    return judged


def operator_coverage(graph: ModelGraph, footprint: Footprint, runtime: str | OperatorList, precision: str,
                      host: Any = None, custom_ops: Iterable[str] = ()) -> Coverage:
    """Judge every computing node of a model (its ModelGraph and footprint) against a runtime's operator list at
    the deployed `precision`. `host`: a DeviceProfile whose fp32 figures describe the CPU that runs fallbacks
    (edgefit.devices.estimate.host_fallback_s times them). `custom_ops`: ops ("DOMAIN.NAME", or a standard op's
    name) the user wrote a kernel for, judged supported."""
    operators = runtime if isinstance(runtime, OperatorList) else load_operator_list(runtime)
    declared = frozenset(custom_ops)
    layers = footprint.layers
    nodes = graph.judged.get((operators.name, precision, declared))
    if nodes is None:
        if len(graph.nodes) == len(layers):
            nodes = _judge_nodes(graph, [layer.name for layer in layers], operators, precision, declared)
        else:   # model-local functions the inliner refused: the nodes cannot be matched with the footprint's layers
            nodes = tuple(NodeCoverage(layer.name, layer.op_type, "unknown", "not matched with the model's nodes")
                          for layer in layers)
        graph.judged[(operators.name, precision, declared)] = nodes
    fallback: list[int] = []
    if operators.kind == "accelerator":
        failing = [i for i, n in enumerate(nodes) if n.status in ("unsupported", "violates")]
        if failing:
            fallback = failing if operators.fallback == "op" else list(range(failing[0], len(nodes)))
    host_failures: tuple[NodeCoverage, ...] = ()
    if fallback and operators.host is not None:   # what falls back must run on the host's runtime
        on_host = operator_coverage(graph, footprint, operators.host, precision, custom_ops=declared).nodes
        host_failures = tuple(on_host[i] for i in fallback if on_host[i].status in ("unsupported", "violates"))
    latency = (host_fallback_s(footprint, host, precision, {layers[i].name for i in fallback})
               if fallback and host is not None else None)
    return Coverage(operators.name, operators.title, operators.kind, operators.source, precision, nodes,
                    operators.revision, tuple(layers[i].name for i in fallback), host_failures, latency)
