"""Latency of one inference as a runtime stack runs it: a linear model over what each layer class costs.

    latency = conv MACs x s/conv MAC + depthwise MACs x s/depthwise MAC + fc MACs x s/fc MAC
            + integer MACs x s/integer MAC + elementwise elements x s/element
            + transcendental elements x s/transcendental element + bytes moved x s/byte
            + LRN elements x s/LRN element + bytes beyond the last-level cache x s/uncached byte
            + conv weight elements x s/conv weight + operators dispatched x s/op + s/inference

The classes are those whose speed differs by kernel on microcontrollers and CPUs: standard convolutions (im2col +
GEMM kernels), depthwise/grouped convolutions (little reuse per weight, memory bound), fully-connected / matmul
(one pass over the weights), the integer matrix products of dynamic quantization (ConvInteger, MatMulInteger:
onnxruntime runs them on other kernels than float or QDQ int8, 3x slower per MAC than its float convolution on a
dynamic-quantized CRNN), data movement (Transpose, Concat, Slice, Gather, Pad, Resize, ...: no arithmetic, a cost
per byte copied, which ShuffleNet spends much of its time on), and everything else (elementwise, pooling,
normalisation, softmax, DynamicQuantizeLinear), which costs per element it writes. Elementwise functions that
call a scalar pow / log1p(exp) per element (a non-integer Pow, LRN's pow, Softplus) are their own class,
"transcendental": measured here in onnxruntime 1.32 over 256K fp32 elements, LRN 32 ns, Softplus 13 ns,
Pow(x, 0.75) 8.9 ns per element against 0.19 ns for an Add. The functions CPU runtimes vectorise with polynomial
approximations (Exp 0.44, Tanh 0.36, Sigmoid 0.37, Erf 0.78, Softmax 0.48, Sqrt 0.44, Pow(x, 2) 0.41 ns) stay
elementwise, and so do the scalar functions in between (Log 2.2, Sin 2.4, Elu 2.7, Selu 3.3, Cos 3.8 ns): one
coefficient fitted with relative error cannot serve a class whose members differ 15-fold (a first version with
Log in the class fitted 3 ns per element and missed the LRN and Softplus models by 60-78%). LRN is a class of its
own: 28.8 ns per element here whatever its window (size 1, 3, 5, 9 and 15 over 64K elements all ran 28.7-29.7 ns;
so its cost is per element, not window x elements), 3.5x a Pow(x, 0.75), which one transcendental rate cannot
serve (it charged LRN models -50% in leave-one-out). A Reshape (Flatten, Squeeze,
Unsqueeze) copies only when the runtime cannot hand its input buffer over: when another node reads that input too,
or it is a graph input (onnxruntime's allocation planner reuses the buffer otherwise); else it costs its dispatch. Measured MACs per cycle differ by class by 2x and more (MLPerf Tiny on the
TFLite Micro reference kernels: fully-connected 0.22 vs depthwise 0.10), which one MAC rate per device cannot say.

A convolution's weights: onnxruntime runs a standard or grouped Conv as im2col + a GEMM per group, [Cout/g x
Cin/g*k] weights times [Cin/g*k x positions]. Over many positions each weight is reused and the MACs set the time;
over few (1-D convolutions of audio models over 4-16 frames) each weight is loaded for a handful of MACs and the
weights set it: a Conv1d 129->128 k3 over 4 positions ran 21 us for 0.2 M MACs here, 2.4x what its MACs at the
conv rate say. Conv-class Conv layers therefore also charge each weight element (`conv_weight_elements`).
Per-op profiles of 153 generated convolutions (benchmarks/bench_conv_operands.py: 1-256 channels, 1-D and 2-D,
4-4096 positions, kernels 1-256) fit within +-25%: 50% with MACs alone, 50% with MACs + weights, 77% with MACs +
im2col + output elements, 82% with all four; but on the whole fitting models of the held-out benchmark the im2col
and output terms made leave-one-out worse (83% within +-25% with them, 86% without); the weights kept 86% and
lowered the mean error from 13.7% to 13.2% (the 1-D conv fitting models come within, two others drop just
outside), so only the weights are charged (`bench_calibrate_heldout.py --ablate`). Depthwise convolutions keep their own MAC rate (their weights are 1/positions of
their MACs).

Memory beyond the cache: when the device's last-level cache is known (the profile's `last_level_cache`, which
`calibrate --measure` reads from the host), bytes that cannot stay in it are charged an extra cost per byte on top
of their class's: the weights of fully-connected layers when the model's weights exceed the cache (between two
inferences every weight is touched, so none is still cached; a batch-1 matmul reuses each weight once, so it waits
for memory: AlexNet's 240 MB of fc weights ran 2.5x slower than its fc MACs at the in-cache rate), and the bytes an
elementwise or data-movement layer reads and writes when they exceed the cache (an Add over 16 Mi elements ran at
0.45 ns per element here against 0.17 over 1 MiB). Without a cache size nothing is charged so.

Dynamic quantization (onnxruntime.quantization.quantize_dynamic: DynamicQuantizeLinear, ConvInteger,
MatMulInteger) keeps activations in float: only the integer products run integer kernels, charged by the integer
class. Such a model is timed with its precision's float table (`latency_precision`), not the int8 one, whose rates
are those of a fully quantized model.

Operators are counted as the runtime dispatches them, not as the ONNX file lists them: the TFLite converter and
onnxruntime fold BatchNormalization and constant bias/scale Add/Sub/Mul into the convolution or matmul before it,
fuse a Relu/Clip into the op that produces its input (TFLite's `fused_activation_function`), drop Identity and
Dropout, and at int8 the QuantizeLinear/DequantizeLinear pairs of a QDQ model vanish into the integer kernels.
A fused or dropped layer costs neither an op nor elementwise work.

The coefficients are per runtime stack and precision (profiles' `[runtimes.<name>.<precision>]` tables), fitted to
published or the user's measurements; every one is >= 0.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import astuple, dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # profiles hold LatencyCoefficients, and `edgefit profiles list` must start without numpy/onnx
    import numpy as np

    from edgefit.analysis.footprint import Footprint, LayerStats, OpSite

LAYER_CLASSES = ("conv", "depthwise", "fc", "integer", "elementwise", "transcendental", "movement", "lrn")
# What a dispatched layer costs per unit: its class's work, the bytes it must stream beyond the cache, and a
# convolution's weights besides its MACs (see the module docstring).
WORK_KINDS = (*LAYER_CLASSES, "uncached", "conv_weights")
FEATURE_NAMES = ("conv_macs", "depthwise_macs", "fc_macs", "integer_macs", "elementwise_elements",
                 "transcendental_elements", "moved_bytes", "lrn_elements", "uncached_bytes", "conv_weight_elements",
                 "ops", "inference")

_CONV_OPS = frozenset({"Conv", "ConvTranspose", "QLinearConv", "FusedConv", "NhwcConv"})
_INTEGER_OPS = frozenset({"ConvInteger", "MatMulInteger"})   # dynamic quantization's integer products
_MOVEMENT_OPS = frozenset({"Transpose", "Concat", "Slice", "Gather", "GatherElements", "GatherND", "Pad", "Resize",
                           "Upsample", "Split", "Tile", "Expand", "DepthToSpace", "SpaceToDepth", "ReverseSequence"})
# Shape-only views: a copy only when the input buffer cannot be handed over (see the module docstring).
_VIEW_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze"})
_MAC_CLASSES = frozenset({"conv", "depthwise", "fc"})
# A math-library call per element (see the module docstring for the measured costs).
_TRANSCENDENTAL_OPS = frozenset({"Pow", "Softplus"})
# Pow by a constant small integer is a multiplication or two (onnxruntime special-cases 2 and 3: 0.41 and 0.68 ns
# per element, against 8.9 ns for 0.5 or 0.75).
_MULTIPLY_EXPONENTS = frozenset({1.0, 2.0, 3.0})
# Ops of a statically quantized model; with them a model runs on integer kernels throughout.
_STATIC_INT8_OPS = frozenset({"QuantizeLinear", "QLinearConv", "QLinearMatMul"})
_RECURRENT_OPS = frozenset({"LSTM", "GRU", "RNN"})
# Rows from which a matrix product reuses each weight enough to run as a GEMM (compute bound) rather than stream
# its weights: GEMM kernels (MLAS, CMSIS-NN, XNNPACK) tile 4-8 rows per pass over a weight panel.
_GEMM_ROWS = 8
# Removed by the converter (TFLite) / graph optimiser (onnxruntime) at every precision.
_DROPPED = frozenset({"Identity", "Dropout"})
# At int8 the runtime's integer kernels absorb a QDQ model's quantize/dequantize pairs.
_DROPPED_AT_INT8 = frozenset({"QuantizeLinear", "DequantizeLinear"})
# Folded into the weights and bias of the convolution / matmul that produces their input.
_FOLDED_INTO_WEIGHTS = frozenset({"BatchNormalization"})
_FOLDED_WHEN_CONSTANT = frozenset({"Add", "Sub", "Mul"})   # a bias or per-channel scale
# Activations TFLite expresses as the producer's fused_activation_function (onnxruntime fuses them likewise).
_FUSED_ACTIVATIONS = frozenset({"Relu", "Clip"})
# Non-MAC producers that carry a fused activation in TFLite (ADD, SUB, MUL, DIV, pools, CONCATENATION).
_TAKES_ACTIVATION = frozenset({"Add", "Sub", "Mul", "Div", "AveragePool", "MaxPool", "Concat"})


def layer_class(op_type: str, layer: LayerStats, site: OpSite | None = None) -> str:
    """The class of kernel that runs `layer`: one of LAYER_CLASSES (a view op, Reshape and the like, is 'movement'
    here; dispatched_work decides whether it copies). `site` (the layer's place in the graph) tells a depthwise
    convolution from a grouped one and a weight-streaming matrix product from a GEMM; without it every grouped
    convolution is depthwise and every matrix product fully-connected."""
    if op_type in _INTEGER_OPS:
        return "integer"
    if op_type in _CONV_OPS:
        # A grouped convolution with several input channels per group (ShuffleNet, ResNeXt) is `group` GEMMs that
        # reduce over those channels, the standard-convolution kernel; only one input channel per group
        # (depthwise) leaves no reduction across channels and is memory bound.
        kernel = site.kernel if site is not None else None
        return "depthwise" if layer.group > 1 and (kernel is None or kernel[1] == 1) else "conv"
    if layer.macs:   # Gemm, MatMul, Einsum, recurrent and attention ops: matrix products over weights or tensors
        # One row (a batch-1 layer) streams each weight once: memory bound, the fully-connected kernel. A product
        # over many rows (a sequence, attention scores) reuses every weight row-times and runs as a GEMM, the
        # convolution kernel (a CRNN's per-time-step Gemm over 64 rows ran at the conv rate, not the fc one).
        # Recurrent ops step through the sequence one row at a time whatever its length.
        shape = site.output_shape if site is not None else None
        rows = math.prod(shape[:-1]) if shape else 1
        return "conv" if rows >= _GEMM_ROWS and op_type not in _RECURRENT_OPS else "fc"
    if op_type in _MOVEMENT_OPS or op_type in _VIEW_OPS:
        return "movement"
    if op_type == "LRN":
        return "lrn"
    if op_type in _TRANSCENDENTAL_OPS:
        exponent = site.exponent if site is not None else None
        return "elementwise" if op_type == "Pow" and exponent in _MULTIPLY_EXPONENTS else "transcendental"
    return "elementwise"


def latency_precision(footprint: Footprint, precision: str) -> str:
    """The precision whose rates time `footprint` deployed at `precision`: a dynamically quantized model (integer
    products, no static quantization) computes everything but its ConvInteger / MatMulInteger in fp32."""
    if precision != "int8":
        return precision
    op_types = {layer.op_type for layer in footprint.layers}
    return "fp32" if op_types & _INTEGER_OPS and not op_types & _STATIC_INT8_OPS else precision


@dataclass(frozen=True)
class LatencyFeatures:
    """What one inference of one model costs, by layer class, at one precision."""

    conv_macs: float
    depthwise_macs: float
    fc_macs: float
    integer_macs: float           # MACs of ConvInteger / MatMulInteger (dynamic quantization)
    elementwise_elements: float   # elements written by elementwise / pooling / normalisation layers
    transcendental_elements: float  # elements written by layers needing a math-library call per element
    moved_bytes: float            # bytes written by data-movement layers at the precision (they read as many)
    lrn_elements: float           # elements written by LRN
    uncached_bytes: float         # bytes that stream from memory beyond the last-level cache
    conv_weight_elements: float   # weight elements of standard / grouped convolutions (conv class Conv ops)
    ops: int                      # operators the runtime dispatches (after folding, fusing and dropping)

    def vector(self) -> np.ndarray:
        """The features in FEATURE_NAMES order; the last entry, 1.0, multiplies the per-inference cost."""
        import numpy as np

        return np.array([*astuple(self), 1.0], dtype=np.float64)


_features_cache: dict[tuple[int, str, int | None], LatencyFeatures] = {}


def latency_features(footprint: Footprint, precision: str, cache_bytes: int | None = None) -> LatencyFeatures:
    """The features of `footprint` deployed at `precision` ('fp32', 'fp16', 'int8') on a device whose last-level
    cache holds `cache_bytes` (None: unknown, nothing is charged as uncached); cached per footprint."""
    key = (id(footprint), precision, cache_bytes)
    if key not in _features_cache:
        _features_cache[key] = _features(footprint, precision, cache_bytes)
        weakref.finalize(footprint, _features_cache.pop, key, None)   # lives as long as the footprint
    return _features_cache[key]


def _features(footprint: Footprint, precision: str, cache_bytes: int | None) -> LatencyFeatures:
    totals = dict.fromkeys(WORK_KINDS, 0.0)
    ops = 0
    for work in dispatched_work(footprint, precision, cache_bytes):
        if work is not None:
            for kind, amount in work.items():
                totals[kind] += amount
            ops += 1
    return LatencyFeatures(totals["conv"], totals["depthwise"], totals["fc"], totals["integer"],
                           totals["elementwise"], totals["transcendental"], totals["movement"], totals["lrn"],
                           totals["uncached"], totals["conv_weights"], ops)


def dispatched_work(footprint: Footprint, precision: str,
                    cache_bytes: int | None = None) -> list[dict[str, float] | None]:
    """Per layer of the footprint, what the runtime dispatches for it: {layer class: MACs, elements or bytes
    written} and, when some of its bytes stream from beyond a last-level cache of `cache_bytes`, {'uncached':
    those bytes}; or None when the layer is folded, fused into its producer or dropped, so it costs nothing of its
    own. A view (Reshape, ...) that needs no copy is dispatched with no work: {'movement': 0}."""
    from edgefit.analysis.dtypes import DTYPE_BYTES, FLOAT_DTYPES, PRECISION_BYTES

    layers = footprint.layers
    dropped_ops = _DROPPED | _DROPPED_AT_INT8 if precision == "int8" else _DROPPED
    # A graph output is read by the caller: nothing may be fused onto the layer that writes it.
    graph_outputs = set(footprint.outputs)
    consumers = [int(any(name in graph_outputs for name in site.writes)) for site in footprint.ops] or [0] * len(layers)
    for layer in layers:
        for source in layer.inputs_from:
            consumers[source] += 1
    # carrier[i]: the dispatched layer whose result layer i's output is: i itself when it is dispatched, the host it
    # was folded or fused into, or for a dropped layer whatever it passes on; -1 when that is a graph input or a
    # tensor other layers read too, onto which nothing may be fused.
    carrier = [-1] * len(layers)
    sites = footprint.ops if len(footprint.ops) == len(layers) else [None] * len(layers)
    classes = [layer_class(layer.op_type, layer, site) for layer, site in zip(layers, sites)]
    has_activation = [False] * len(layers)
    # Between two inferences every weight is read; when they exceed the cache none is still there for the next.
    weights_uncached = cache_bytes is not None and footprint.weight_bytes_at(precision) > cache_bytes
    weight_scale = footprint.weight_bytes_at(precision) / footprint.weight_bytes if footprint.weight_bytes else 1.0
    work: list[dict[str, float] | None] = []
    for i, layer in enumerate(layers):
        op_type = layer.op_type
        source = layer.inputs_from[0] if len(layer.inputs_from) == 1 else -1
        host = carrier[source] if source >= 0 and consumers[source] == 1 else -1
        if op_type in dropped_ops:
            carrier[i] = host
            work.append(None)
            continue
        if host >= 0 and not has_activation[host]:
            folds = classes[host] in _MAC_CLASSES and (
                op_type in _FOLDED_INTO_WEIGHTS or (op_type in _FOLDED_WHEN_CONSTANT and layer.params > 0))
            fuses = op_type in _FUSED_ACTIVATIONS and (
                classes[host] in _MAC_CLASSES or layers[host].op_type in _TAKES_ACTIVATION)
            if folds or fuses:
                carrier[i] = host
                has_activation[host] = has_activation[host] or fuses   # nothing folds in after an activation
                work.append(None)
                continue
        carrier[i] = i
        # Float tensors deployed at another precision move that precision's bytes.
        scale = (PRECISION_BYTES[precision] / DTYPE_BYTES[layer.dtype]
                 if layer.dtype in FLOAT_DTYPES and DTYPE_BYTES.get(layer.dtype) else 1.0)
        uncached = 0.0
        if classes[i] in _PER_ELEMENT_CLASSES:
            amount = _elements(layer, DTYPE_BYTES)
        elif classes[i] == "movement":
            copies = op_type not in _VIEW_OPS or not layer.inputs_from or consumers[layer.inputs_from[0]] > 1
            amount = float(layer.output_bytes or 0) * scale if copies else 0.0
        else:
            amount = float(layer.macs or 0)
            if classes[i] == "fc" and weights_uncached:
                uncached = layer.weight_bytes * weight_scale
        if classes[i] in (*_PER_ELEMENT_CLASSES, "movement") and amount and cache_bytes is not None:
            working_set = ((layer.input_bytes or 0) + (layer.output_bytes or 0)) * scale
            uncached = working_set if working_set > cache_bytes else 0.0
        entry = {classes[i]: amount}
        if uncached:
            entry["uncached"] = uncached
        kernel = sites[i].kernel if sites[i] is not None else None
        if classes[i] == "conv" and kernel and amount:   # a Conv whose weight shape is known
            entry["conv_weights"] = float(math.prod(kernel))
        work.append(entry)
    return work


_PER_ELEMENT_CLASSES = ("elementwise", "transcendental", "lrn")


def _elements(layer: LayerStats, dtype_bytes: dict[str, float]) -> float:
    size = dtype_bytes.get(layer.dtype)
    return layer.output_bytes / size if layer.output_bytes and size else 0.0


@dataclass(frozen=True)
class LatencyCoefficients:
    """Seconds per unit of each feature, in FEATURE_NAMES order; all >= 0."""

    s_per_conv_mac: float
    s_per_depthwise_mac: float
    s_per_fc_mac: float
    s_per_integer_mac: float
    s_per_elementwise_element: float
    s_per_transcendental_element: float
    s_per_moved_byte: float
    s_per_lrn_element: float
    s_per_uncached_byte: float
    s_per_conv_weight: float
    s_per_op: float
    s_per_inference: float

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if not value >= 0 or value == float("inf"):   # NaN fails the comparison
                raise ValueError(f"{field.name}: expected a finite, non-negative number of seconds, got {value!r}")

    def vector(self) -> np.ndarray:
        import numpy as np

        return np.array(astuple(self), dtype=np.float64)

    @classmethod
    def from_vector(cls, v) -> LatencyCoefficients:
        import numpy as np

        values = [float(x) for x in np.asarray(v, dtype=np.float64).reshape(-1)]
        if len(values) != len(FEATURE_NAMES):
            raise ValueError(f"expected {len(FEATURE_NAMES)} coefficients ({', '.join(FEATURE_NAMES)}), "
                             f"got {len(values)}")
        return cls(*values)

    def predict(self, features: LatencyFeatures) -> float:
        """Seconds for one inference with these features."""
        return sum(c * f for c, f in zip(astuple(self), (*astuple(features), 1.0)))
