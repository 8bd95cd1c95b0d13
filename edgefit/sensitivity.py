"""Where quantization loses fidelity, in one pass: regions of the graph ranked by the error they add.

A *region* is a connected group of nodes that a runtime computes as one thing and that is worth keeping in
float (or at 16-bit activations) as a whole:

* `layernorm`: a LayerNorm written out as ReduceMean -> Sub -> Pow -> ReduceMean -> Add -> Sqrt -> Div (Paddle,
  older PyTorch exports), with the affine Mul / Add after it;
* `attention`: MatMul -> [scale] -> [mask Add] -> Softmax -> MatMul of two activations, with the Transposes,
  Reshapes, Squeezes, Slices and Gathers that split q/k/v into heads (and a constant scale on q) and merge them
  back;
* `activation`: x * f(x) where f is a chain of one-input elementwise ops on x (HardSwish as Add/Clip/Div/Mul,
  Swish as Sigmoid/Mul, x * HardSigmoid(x));
* `layer`: a weight layer (Conv, Gemm, MatMul with a constant operand) with the bias Add that follows it;
* `op`: any other node, on its own -- every op type is a candidate.

The output heads (the nodes between the last weight layers and the model outputs) are found by `output_heads`;
quantization keeps them in float unless asked.

The measure: the float model and the fully quantized one run once on the same samples, every activation of both
is compared (SQNR: signal power over error power, in dB), and each region is charged the SQNR it loses between
its inputs and its outputs (`drop_db`). onnxruntime's qdq_loss_debug pairs tensors the same way
(create_activation_matching) but first collects every activation of every sample in memory (collect_activations);
here the sums of squares are accumulated per batch, so memory stays at one batch of activations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from onnx import ModelProto, NodeProto

from edgefit.analysis.weights import LINEAR_LAYER_OPS
from edgefit.fidelity import SampleSet

# Ops that only move or reshape data: they join an attention block when they feed or follow its MatMuls.
LAYOUT_OPS = frozenset({"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Slice", "Gather", "Split", "Flatten"})
# Elementwise ops of one activation (their other inputs constant): the f of an x * f(x) activation chain.
_ACTIVATION_STEPS = frozenset({"Add", "Sub", "Mul", "Div", "Clip", "Relu", "Sigmoid", "HardSigmoid", "Tanh",
                               "Min", "Max"})
_LAYERNORM_CHAIN = ("Sub", "Pow", "ReduceMean", "Add", "Sqrt", "Div")


@dataclass(frozen=True)
class Heads:
    """The model's output heads: nodes kept in float, and the weight layers' outputs that stay unquantized."""

    nodes: tuple[str, ...]
    float_tensors: tuple[str, ...]


@dataclass(frozen=True)
class Region:
    name: str                      # kind:first node
    kind: str                      # layernorm | attention | activation | layer | op
    nodes: tuple[str, ...]         # node names, in graph order
    inputs: tuple[str, ...]        # activations read from outside the region
    outputs: tuple[str, ...]       # activations read outside the region (or model outputs)
    weight_elements: int = 0       # elements of the weights its nodes read: what keeping it in float costs
    op_types: frozenset[str] = frozenset()   # of its nodes: which runtimes have 16-bit kernels for all of them

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "nodes": list(self.nodes),
                "weight_elements": self.weight_elements}


@dataclass(frozen=True)
class RegionError:
    region: Region
    input_sqnr_db: float
    output_sqnr_db: float

    @property
    def drop_db(self) -> float:
        return self.input_sqnr_db - self.output_sqnr_db

    def to_dict(self) -> dict[str, Any]:
        return {**self.region.to_dict(), "input_sqnr_db": _finite(self.input_sqnr_db),
                "output_sqnr_db": _finite(self.output_sqnr_db), "drop_db": _finite(self.drop_db)}


@dataclass(frozen=True)
class Sensitivity:
    """Regions worst first (largest SQNR drop), and the outputs' SQNR of the fully quantized model."""

    ranked: tuple[RegionError, ...]
    output_sqnr_db: float
    samples: int

    def float_order(self) -> tuple[Region, ...]:
        """The regions that lose SQNR, in the order they go back to float: those without weights first (float
        costs them no weight bytes), worst first; then weight layers by SQNR lost per weight element, so that a
        small layer that loses much (a depthwise 3x3 conv right after the stem: 144 weights, the largest share of
        PP-OCRv4 rec's A16W8 loss) comes before a large one that loses a little more."""
        losing = [r for r in self.ranked if r.drop_db > 0]
        free = [r.region for r in losing if r.region.weight_elements == 0]
        priced = sorted((r for r in losing if r.region.weight_elements > 0),
                        key=lambda r: -r.drop_db / r.region.weight_elements)
        return tuple(free + [r.region for r in priced])

    def wide_order(self) -> tuple[Region, ...]:
        """The regions that lose SQNR, worst first: the order they get 16-bit activations in an int8 model (which
        costs activation bytes, not weight bytes, so a region's weights do not price it)."""
        return tuple(r.region for r in self.ranked if r.drop_db > 0)

    def to_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "output_sqnr_db": _finite(self.output_sqnr_db),
                "regions": [r.to_dict() for r in self.ranked]}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


class _Graph:
    """Producers, consumers and constants of a graph's named nodes."""

    def __init__(self, model: ModelProto):
        graph = model.graph
        self.nodes = [n for n in graph.node if n.op_type != "Constant"]
        self.constants = {t.name for t in graph.initializer} | {o for n in graph.node if n.op_type == "Constant"
                                                                 for o in n.output}
        for node in graph.node:   # computed from constants alone (a tied embedding's Transpose(E)): a weight too
            if node.input and all(not i or i in self.constants for i in node.input):
                self.constants.update(node.output)
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.consumers: dict[str, list[NodeProto]] = {}
        for node in self.nodes:
            for name in dict.fromkeys(node.input):
                if name:
                    self.consumers.setdefault(name, []).append(node)
        self.outputs = {v.name for v in graph.output}
        self.order = {n.name: k for k, n in enumerate(self.nodes)}
        self.weight_sizes = {t.name: math.prod(t.dims) for t in graph.initializer}
        self.weight_sizes.update({n.output[0]: math.prod(a.t.dims) for n in graph.node if n.op_type == "Constant"
                                  for a in n.attribute if a.name == "value"})

    def activations(self, node: NodeProto) -> list[str]:
        return [i for i in node.input if i and i not in self.constants]

    def only_consumer(self, tensor: str, op_type: str) -> NodeProto | None:
        readers = self.consumers.get(tensor, [])
        if len(readers) == 1 and readers[0].op_type == op_type and tensor not in self.outputs:
            return readers[0]
        return None

    def is_weight_layer(self, node: NodeProto) -> bool:
        return node.op_type in LINEAR_LAYER_OPS and any(i in self.constants for i in node.input[:2])


def output_heads(model: ModelProto) -> Heads:
    """The nodes after the last weight layers on every way to an output: a node is head when everything that reads
    its outputs is head or a model output, and it is no weight layer; a weight layer read only by the head (or
    as an output) keeps its int8 weights but its output stays float."""
    graph = _Graph(model)
    head: set[str] = set()
    float_tensors: list[str] = []
    for node in reversed(graph.nodes):   # readers come after their producers
        outputs = [o for o in node.output if o]
        readers = [r for o in outputs for r in graph.consumers.get(o, [])]
        if not any(o in graph.outputs for o in outputs) and not readers:
            continue
        if not all(r.name in head for r in readers):
            continue
        if graph.is_weight_layer(node):
            float_tensors += outputs
        else:
            head.add(node.name)
    return Heads(tuple(n.name for n in graph.nodes if n.name in head), tuple(sorted(float_tensors)))


def find_regions(model: ModelProto, skip: Sequence[str] = ()) -> tuple[Region, ...]:
    """Every computing node of the graph in exactly one region (nodes named in `skip`, e.g. the float heads,
    in none), in graph order of their first node. Nodes must be named (edgefit.passes.base.ensure_node_names)."""
    graph = _Graph(model)
    owner: dict[str, str] = {}
    groups: dict[str, tuple[str, list[str]]] = {}
    skipped = set(skip)

    def claim(kind: str, nodes: list[NodeProto]) -> None:
        names = [n.name for n in nodes if n.name not in owner and n.name not in skipped]
        if not names:
            return
        first = min(names, key=graph.order.__getitem__)
        groups[first] = (kind, names)
        for name in names:
            owner[name] = first

    for node in graph.nodes:
        if node.op_type == "ReduceMean":
            claim("layernorm", _layernorm(graph, node))
    for node in graph.nodes:
        if node.op_type == "Softmax":
            claim("attention", _attention(graph, node))
    for node in graph.nodes:
        if node.op_type == "Mul":
            claim("activation", _activation_chain(graph, node))
    for node in graph.nodes:
        if graph.is_weight_layer(node):
            bias = graph.only_consumer(node.output[0], "Add")
            claim("layer", [node] + ([bias] if bias is not None and len(graph.activations(bias)) == 1 else []))
    for node in graph.nodes:
        claim("op", [node])
    regions = []
    by_name = {n.name: n for n in graph.nodes}
    for first in sorted(groups, key=graph.order.__getitem__):
        kind, names = groups[first]
        names = sorted(names, key=graph.order.__getitem__)
        members = set(names)
        produced = {o for name in names for o in by_name[name].output}
        inputs = dict.fromkeys(i for name in names for i in graph.activations(by_name[name]) if i not in produced)
        outputs = dict.fromkeys(o for o in produced if o in graph.outputs or any(
            r.name not in members for r in graph.consumers.get(o, [])))
        read = {i for name in names for i in by_name[name].input if i in graph.weight_sizes}
        regions.append(Region(f"{kind}:{first}", kind, tuple(names), tuple(inputs), tuple(outputs),
                              sum(graph.weight_sizes[w] for w in read),
                              frozenset(by_name[name].op_type for name in names)))
    return tuple(regions)


def _layernorm(graph: _Graph, mean: NodeProto) -> list[NodeProto]:
    """ReduceMean(x) -> Sub(x, mean) -> Pow -> ReduceMean -> Add(eps) -> Sqrt -> Div(centered, std), then the
    affine Mul(gamma) and Add(beta) when they follow; [] when `mean` does not open that chain."""
    source = mean.input[0]
    sub = next((n for n in graph.consumers.get(mean.output[0], [])
                if n.op_type == "Sub" and n.input[0] == source), None)
    if sub is None:
        return []
    chain, current = [mean, sub], sub
    for op_type in _LAYERNORM_CHAIN[1:]:
        step = next((n for n in graph.consumers.get(current.output[0], []) if n.op_type == op_type), None)
        if step is None:
            return []
        if op_type == "Div" and step.input[0] != sub.output[0]:
            return []
        chain.append(step)
        current = step
    for op_type in ("Mul", "Add"):   # the affine part, when its operand is a constant
        step = graph.only_consumer(current.output[0], op_type)
        if step is None or len(graph.activations(step)) != 1:
            break
        chain.append(step)
        current = step
    return chain


def _attention(graph: _Graph, softmax: NodeProto) -> list[NodeProto]:
    """MatMul(q, k) -> [Mul/Div scale] -> [Add mask] -> Softmax -> MatMul(p, v), both MatMuls of two activations,
    with the layout ops around them; [] when the Softmax is not in such a block."""
    scores = graph.producer.get(softmax.input[0])
    between = []
    while scores is not None and scores.op_type in ("Mul", "Div", "Add") and len(between) < 2:
        between.append(scores)
        scores = graph.producer.get(graph.activations(scores)[0]) if graph.activations(scores) else None
    mix = graph.only_consumer(softmax.output[0], "MatMul")
    if scores is None or scores.op_type != "MatMul" or mix is None or any(
            len(graph.activations(m)) != 2 for m in (scores, mix)):
        return []
    block = [scores, *between, softmax, mix]
    members = {n.name for n in block}
    frontier = [i for m in (scores, mix) for i in graph.activations(m) if i != softmax.output[0]]
    while frontier:   # back through the layout ops that split q, k and v into heads
        node = graph.producer.get(frontier.pop())
        scaling = node is not None and node.op_type in ("Mul", "Div") and len(graph.activations(node)) == 1
        if node is None or not (node.op_type in LAYOUT_OPS or scaling) or node.name in members:
            continue
        block.append(node)
        members.add(node.name)
        frontier += graph.activations(node)
    current = mix
    while True:   # forward through the layout ops that merge the heads
        step = next((graph.only_consumer(current.output[0], op) for op in ("Transpose", "Reshape")
                     if graph.only_consumer(current.output[0], op) is not None), None)
        if step is None:
            break
        block.append(step)
        current = step
    return block


def _activation_chain(graph: _Graph, mul: NodeProto) -> list[NodeProto]:
    """Mul(x, f(x)) with f a chain of one-activation elementwise ops starting at x; [] otherwise."""
    operands = graph.activations(mul)
    if len(operands) != 2:
        return []
    for x, fx in (operands, operands[::-1]):
        chain, current = [], graph.producer.get(fx)
        while current is not None and current.op_type in _ACTIVATION_STEPS and len(graph.activations(current)) == 1:
            chain.append(current)
            if current.input[0] == x:
                return [*reversed(chain), mul]
            current = graph.producer.get(graph.activations(current)[0])
    return []


# ---- the measure ---------------------------------------------------------------------------------------

def measure(float_model: ModelProto, quantized: ModelProto, samples: SampleSet,
            regions: Sequence[Region]) -> Sensitivity:
    """Run both models once on `samples` with every activation as an output; rank `regions` by the SQNR they
    lose. `quantized` is `float_model` through onnxruntime's QDQ quantizer (tensor names kept)."""
    tensors = sorted({t for r in regions for t in (*r.inputs, *r.outputs)} | {o.name for o in float_model.graph.output})
    float_names = {o for n in float_model.graph.node for o in n.output} | {i.name for i in float_model.graph.input}
    tensors = [t for t in tensors if t in float_names]
    as_quantized = _dequantized_names(quantized, set(tensors))
    signal = dict.fromkeys(tensors, 0.0)
    noise = dict.fromkeys(tensors, 0.0)
    float_session = _session_with_outputs(float_model, tensors)
    quant_session = _session_with_outputs(quantized, [as_quantized[t] for t in tensors])
    for feed in samples.feeds:
        reference = float_session.run(tensors, feed)
        candidate = quant_session.run([as_quantized[t] for t in tensors], feed)
        for name, a, b in zip(tensors, reference, candidate):
            if not np.issubdtype(np.asarray(a).dtype, np.floating):
                continue
            a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
            signal[name] += float(np.sum(a64 * a64))
            noise[name] += float(np.sum((a64 - b64) ** 2))
    sqnr = {t: _sqnr_db(signal[t], noise[t]) for t in tensors}

    def combined(names: Sequence[str]) -> float:
        kept = [t for t in names if t in sqnr]
        if not kept:
            return math.inf
        return _sqnr_db(sum(signal[t] for t in kept), sum(noise[t] for t in kept))

    ranked = [RegionError(r, combined(r.inputs), combined(r.outputs)) for r in regions]
    ranked.sort(key=lambda e: -e.drop_db if math.isfinite(e.drop_db) else -math.inf if e.drop_db > 0 else math.inf)
    outputs = [o.name for o in float_model.graph.output]
    return Sensitivity(tuple(ranked), combined(outputs), samples.samples)


def _sqnr_db(signal: float, noise: float) -> float:
    if noise <= 0:
        return math.inf
    if signal <= 0:
        return -math.inf
    return 10 * math.log10(signal / noise)


def _dequantized_names(quantized: ModelProto, tensors: set[str]) -> dict[str, str]:
    """Each float tensor's name in the QDQ model as its readers see it: the DequantizeLinear output after its
    QuantizeLinear when it has one (a model output keeps its name on the DequantizeLinear), else itself."""
    producers = {o: n for n in quantized.graph.node for o in n.output}
    names = {t: t for t in tensors}
    for dq in quantized.graph.node:
        q = producers.get(dq.input[0]) if dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear":
            continue
        before, after = q.input[0], dq.output[0]
        if after in tensors:
            continue   # a model output: already read under its own name
        if before in tensors:
            names[before] = after
    return names


def _session_with_outputs(model: ModelProto, names: Sequence[str]):
    """An onnxruntime session whose outputs are `names` (intermediate tensors included).

    Unoptimised, so every intermediate tensor stays as written and fetchable: QuantizeLinear / DequantizeLinear
    run as written, exact integer arithmetic simulated in float, which is what the candidates' fidelity runs
    get from onnxruntime's exact int8 kernels (edgefit.runtime.session)."""
    from onnx import helper

    from edgefit.runtime import session

    augmented = ModelProto()
    augmented.CopyFrom(model)
    present = {o.name for o in augmented.graph.output}
    augmented.graph.output.extend(helper.ValueInfoProto(name=n) for n in names if n not in present)
    return session(augmented)
