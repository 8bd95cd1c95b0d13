"""How a runtime spends RAM around the model: one memory model per runtime, named by the profile's `memory_model`.

Every model splits the memory a user must give the runtime into
    head  = the planned activations (Footprint.activation_bytes_at, or the runtime's own plan where it differs)
    tail  = what the runtime keeps beside them, term by term (breakdown)
    arena = head + tail

TensorFlow Lite Micro ("tflm") puts both in the one `tensor_arena` the application declares; `AllocateTensors`
fails when it is too small, so that model is an upper bound of what TFLM's RecordingMicroAllocator reports. Head
and tail are counted on the graph the TFLite converter would hand TFLM (see `tflite_graph`): activations fused
into the op producing their input, BatchNorm and constant Mul/Add folded into the Conv/Gemm before them, Identity
and Dropout gone, at int8 the QuantizeLinear/DequantizeLinear pairs gone (the tensors themselves are int8), and
Flatten/Reshape kept as a RESHAPE op. The tail's bytes are the struct sizes of the sources named below as the
`tflite-micro` Python package lays them out (a 64-bit host): a 32-bit microcontroller has 4-byte pointers, so
its real tail is somewhat smaller and the figure stays a safe arena size there.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # profiles check `memory_model` against MEMORY_MODELS, and `profiles list` must not load onnx
    from edgefit.analysis.footprint import Footprint

# The memory models, by the name a profile gives in `memory_model`.
MEMORY_MODELS: tuple[str, ...] = ("tflm", "tflm-cmsis-nn", "tflite", "onnxruntime", "coreml", "tensorrt", "static")


@dataclass(frozen=True)
class RuntimeMemory:
    """The memory a runtime needs for one model at one precision, in bytes."""

    model: str
    head_bytes: int                     # planned activation arena
    tail_bytes: int                     # runtime bookkeeping beside it (sum of breakdown)
    breakdown: Mapping[str, int] = field(default_factory=dict)   # tail term -> bytes
    source: str = ""

    @property
    def arena_bytes(self) -> int:
        return self.head_bytes + self.tail_bytes

    def to_dict(self) -> dict[str, object]:
        return {"memory_model": self.model, "head_bytes": self.head_bytes, "tail_bytes": self.tail_bytes,
                "arena_bytes": self.arena_bytes, "breakdown": dict(self.breakdown), "source": self.source}


# ---------------------------------------------------------------------------------------------------------------
# The graph the TFLite converter produces

@dataclass(frozen=True, slots=True)
class TfliteOp:
    kind: str              # CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, RESHAPE, ... or OTHER:<onnx op>
    channels: int          # output channels: axis 1 of an ONNX NCHW image, else the last axis
    constants: int         # constant input tensors (weights, bias, shape)
    reads: tuple[str, ...]     # activation tensors, by the ONNX name of the tensor holding them
    writes: tuple[str, ...]
    window: tuple[int, ...] = ()   # a conv's input channels per group and kernel height and width

    @property
    def outputs(self) -> int:
        return len(self.writes)


@dataclass(frozen=True)
class TfliteGraph:
    ops: tuple[TfliteOp, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    @property
    def tensors(self) -> int:
        """Every tensor of the subgraph: TFLM gives each, constants included, an eval struct."""
        return len(self.inputs) + sum(op.outputs + op.constants for op in self.ops)


_DROPPED = frozenset({"Identity", "Dropout"})
_QDQ = frozenset({"QuantizeLinear", "DequantizeLinear"})
_AFFINE = frozenset({"Conv", "Gemm", "MatMul"})
# TFLite kernels carry a fused activation (TfLiteFusedActivation). A Clip is fused only when its bounds are those
# of RELU6 or RELU_N1_TO_1, which the graph view does not hold: it stays an op, which can only overcount.
_FUSABLE_ACTIVATIONS = frozenset({"Relu"})
_ACTIVATION_HOSTS = _AFFINE | {"Add", "Sub", "Mul"}
_CONSTANT_FOLDS = frozenset({"BatchNormalization", "Mul", "Add", "Sub", "Div"})
_KIND = {
    "Gemm": "FULLY_CONNECTED", "MatMul": "FULLY_CONNECTED",
    "Flatten": "RESHAPE", "Reshape": "RESHAPE", "Squeeze": "RESHAPE", "Unsqueeze": "RESHAPE",
    "AveragePool": "AVERAGE_POOL_2D", "GlobalAveragePool": "AVERAGE_POOL_2D",
    "MaxPool": "MAX_POOL_2D", "GlobalMaxPool": "MAX_POOL_2D",
    "Softmax": "SOFTMAX", "Add": "ADD", "Sub": "SUB", "Mul": "MUL",
}
# Weights and bias: the converter gives every Conv/FullyConnected a bias tensor (BatchNorm folding makes one).
_CONSTANTS = {"CONV_2D": 2, "DEPTHWISE_CONV_2D": 2, "FULLY_CONNECTED": 2, "RESHAPE": 1}


def tflite_graph(footprint: Footprint, precision: str | None) -> TfliteGraph:
    """The ops the TFLite converter would emit for the footprint's top-level graph."""
    # Both TFLM memory models ask for it at each precision a check judges.
    return _memo(footprint, ("graph", precision), lambda: _convert(footprint, precision))


def _convert(footprint: Footprint, precision: str | None) -> TfliteGraph:
    from edgefit.analysis.footprint import OpSite  # imports onnx: see TYPE_CHECKING above

    layers = footprint.layers
    # A Footprint built by hand rather than by analyze has no graph view: each layer then stands as its own op.
    sites = footprint.ops or tuple(OpSite((), (layer.name,), 0, None, None) for layer in layers)
    writer = {name: i for i, site in enumerate(sites) for name in site.writes}
    readers: dict[str, int] = {}
    for site in sites:
        for name in site.reads:
            readers[name] = readers.get(name, 0) + 1
    aliases: dict[str, str] = {}

    def held_in(name: str) -> str:
        return aliases.get(name, name)

    merged = [False] * len(sites)
    for i, (layer, site) in enumerate(zip(layers, sites)):
        if len(site.reads) != 1 or not site.writes:
            continue
        source = held_in(site.reads[0])
        host = layers[writer[source]].op_type if source in writer else None
        # A graph output stays a tensor of its own: the caller reads it, so nothing fuses onto it in place.
        single_use = (host is not None and readers.get(site.reads[0], 0) == 1
                      and site.reads[0] not in footprint.outputs)
        op_type = layer.op_type
        if (op_type in _DROPPED or (precision == "int8" and op_type in _QDQ)
                or (single_use and op_type in _FUSABLE_ACTIVATIONS and host in _ACTIVATION_HOSTS)
                or (single_use and op_type in _CONSTANT_FOLDS and site.constants and host in _AFFINE)):
            merged[i] = True
            for name in site.writes:
                aliases[name] = source
    ops = []
    for i, (layer, site) in enumerate(zip(layers, sites)):
        if merged[i]:
            continue
        kind = _KIND.get(layer.op_type, f"OTHER:{layer.op_type}")
        shape = site.output_shape or ()
        if layer.op_type == "Conv":
            kind = "DEPTHWISE_CONV_2D" if layer.group > 1 else "CONV_2D"
        # ONNX convolutions and pools put channels on axis 1 at every rank (NCL, NCHW, NCDHW); other ops, last.
        spatial = kind in _PER_CHANNEL_KINDS or kind == "AVERAGE_POOL_2D"
        channels = shape[1] if spatial and len(shape) >= 3 else shape[-1] if shape else 0
        window = _conv_window(site.kernel)
        ops.append(TfliteOp(kind, channels, _CONSTANTS.get(kind, site.constants),
                            tuple(dict.fromkeys(held_in(n) for n in site.reads)), site.writes, window))
    return TfliteGraph(tuple(ops), tuple(footprint.inputs), tuple(held_in(n) for n in footprint.outputs))


def _conv_window(kernel: tuple[int, ...] | None) -> tuple[int, ...]:
    """(input channels per group, kernel height, width) of a Conv weight; the converter runs a 1-D convolution as
    a CONV_2D with a 1 x k kernel."""
    if kernel is None or len(kernel) not in (3, 4):
        return ()
    return tuple(kernel[1:]) if len(kernel) == 4 else (kernel[1], 1, kernel[2])


# ---------------------------------------------------------------------------------------------------------------
# TensorFlow Lite Micro

TFLM_SOURCE = ("TFLM micro_allocator.cc (TfLiteEvalTensor per tensor, NodeAndRegistration per op, persistent "
               "TfLiteTensor per graph input/output), kernels/conv_common.cc and depthwise_conv_common.cc (per-channel "
               "output multiplier and shift, int32 each, at every precision); bytes measured with tflite-micro's "
               "RecordingMicroAllocator, see benchmarks/bench_tflm_arena.py")

_TFLM_ALIGNMENT = 16            # MicroArenaBufferAlignment(): kernels' persistent buffers are 16-byte aligned
_TFLM_FIXED = 528               # allocator, planner and interpreter objects: a measured tail less every other term
_TFLM_IO_TENSOR = 64            # sizeof(TfLiteTensor): the interpreter keeps one per graph input and output
_TFLM_IO_QUANTIZATION = 32      # TfLiteAffineQuantization + zero-point array of an int8 graph input/output
_TFLM_EVAL_TENSOR = 24          # sizeof(TfLiteEvalTensor): data and dims pointers plus the type
_TFLM_NODE = 64                 # sizeof(NodeAndRegistration)
# Builtin options (TfLiteConvParams ...) plus the kernel's OpData, 16-byte aligned: upper bounds of the tail each
# op added when measured one op at a time on the MLPerf Tiny models. Other ops get the largest: single-op graphs of
# fourteen more (pooling, elementwise, activations, concatenation, mean, pad, transpose, resize) measured <= 80 B.
_TFLM_OP_DATA = {
    "CONV_2D": 112, "DEPTHWISE_CONV_2D": 112, "FULLY_CONNECTED": 112, "AVERAGE_POOL_2D": 80, "MAX_POOL_2D": 80,
    "RESHAPE": 48, "SOFTMAX": 96, "ADD": 80, "SUB": 80, "MUL": 80,
}
_TFLM_OP_DATA_DEFAULT = max(_TFLM_OP_DATA.values())
_PER_CHANNEL_KINDS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D"})


def _align(n: int, alignment: int = _TFLM_ALIGNMENT) -> int:
    return -(-n // alignment) * alignment


def _tflm_planned(footprint: Footprint, precision: str | None, graph: TfliteGraph,
                  scratch: Sequence[int] = ()) -> int:
    """tflm_head, planned once per footprint, precision and scratch: CMSIS-NN's kernels ask for no scratch at fp32,
    where the two TFLM models then plan the very same arena."""
    requests = tuple(scratch) if any(scratch) else ()
    return _memo(footprint, ("head", precision, requests),
                 lambda: tflm_head(footprint, precision, graph, requests))


def tflm_head(footprint: Footprint, precision: str | None, graph: TfliteGraph, scratch: Sequence[int] = ()) -> int:
    """TFLM's planned arena: GreedyMemoryPlanner (memory_planner/greedy_memory_planner.cc) on the lifetimes of
    micro_allocation_info.cc. Graph inputs live from scope 0, op k's outputs from scope k + 1, every tensor until
    the last op reading it, graph outputs to the end; sizes 16-byte aligned. Largest first, ties in reverse tensor
    order; each buffer goes at the lowest offset where it overlaps no placed buffer that is alive at the same time.
    `scratch`: bytes of the scratch buffer each op requests (RequestScratchBufferInArena), alive while it runs."""
    from edgefit.analysis.dtypes import PRECISION_BYTES  # imports onnx: see TYPE_CHECKING above
    from edgefit.analysis.memory import greedy_offsets

    sizes = {b.name: b.bytes_at(PRECISION_BYTES[precision]) if precision else b.bytes for b in footprint.buffers}
    span: dict[str, list[int]] = {name: [0, 0] for name in graph.inputs if name in sizes}
    for scope, nbytes in enumerate(scratch, start=1):
        if nbytes:
            sizes[f"scratch {scope}"] = nbytes
            span[f"scratch {scope}"] = [scope, scope]
    for scope, op in enumerate(graph.ops, start=1):
        for name in op.writes:
            if name in sizes:
                span.setdefault(name, [scope, scope])
        for name in op.reads:
            if name in span:
                span[name][1] = scope
    for name in graph.outputs:
        if name in span:
            span[name][1] = len(graph.ops)
    names = list(span)
    aligned = [_align(sizes[name]) for name in names]
    # Largest first, ties in reverse tensor order (a stable sort of the reversed list); the placement rule itself
    # is edgefit's own greedy planner's.
    order = sorted(reversed(range(len(names))), key=lambda i: -aligned[i])
    offsets = greedy_offsets(order, aligned, [span[n][0] for n in names], [span[n][1] for n in names])
    return max((offset + size for offset, size in zip(offsets, aligned)), default=0)


def _tflm_tail(graph: TfliteGraph, precision: str | None) -> dict[str, int]:
    io = len(graph.inputs) + len(graph.outputs)
    return {
        "fixed": _TFLM_FIXED,
        "io_tensors": io * (_TFLM_IO_TENSOR + (_TFLM_IO_QUANTIZATION if precision == "int8" else 0)),
        "eval_tensors": _align(graph.tensors * _TFLM_EVAL_TENSOR),
        "nodes": len(graph.ops) * _TFLM_NODE,
        "op_data": sum(_TFLM_OP_DATA.get(op.kind, _TFLM_OP_DATA_DEFAULT) for op in graph.ops),
        "per_channel": sum(2 * _align(4 * op.channels) for op in graph.ops if op.kind in _PER_CHANNEL_KINDS),
    }


def _tflm(footprint: Footprint, precision: str | None, head: int) -> tuple[int, dict[str, int]]:
    graph = tflite_graph(footprint, precision)
    return _tflm_planned(footprint, precision, graph) if footprint.ops else head, _tflm_tail(graph, precision)


def cmsis_nn_scratch(op: TfliteOp) -> int:
    """Bytes CMSIS-NN's int8 kernel requests with RequestScratchBufferInArena on a core with the DSP extension
    (Cortex-M4/M7/M33; kernels/cmsis_nn/*.cc and CMSIS-NN's arm_*_get_buffer_size). A 1x1 conv needs none when
    unstrided and unpadded, and a 3x3 depthwise conv none on its fast path: neither is known here, so both count."""
    if op.kind == "CONV_2D" and op.window:   # im2col of two output pixels, int16, columns padded to 4
        return 2 * _align(math.prod(op.window), 4) * 2
    if op.kind == "DEPTHWISE_CONV_2D" and op.window:   # arm_depthwise_conv_s8_opt: one int16 im2col column
        return op.channels * math.prod(op.window[1:]) * 2
    if op.kind == "AVERAGE_POOL_2D":   # arm_avgpool_s8: an int32 sum per channel
        return op.channels * 4
    return 0


_TFLM_SCRATCH_HANDLE = 8        # sizeof(ScratchBufferHandle): one data pointer per requested buffer


def _tflm_cmsis_nn(footprint: Footprint, precision: str | None, head: int) -> tuple[int, dict[str, int]]:
    graph = tflite_graph(footprint, precision)
    # CMSIS-NN serves int8 (and int16); float ops run TFLM's reference kernels, which ask for no scratch.
    scratch = [cmsis_nn_scratch(op) if precision == "int8" else 0 for op in graph.ops]
    tail = _tflm_tail(graph, precision)
    requested = sum(1 for nbytes in scratch if nbytes)
    if requested:
        tail["scratch_handles"] = _align(requested * _TFLM_SCRATCH_HANDLE)
    return _tflm_planned(footprint, precision, graph, scratch) if footprint.ops else head, tail


# ---------------------------------------------------------------------------------------------------------------
# Other runtimes: simpler models, each with its source

_TFLITE_TENSOR_ALIGNMENT = 64   # tensorflow/lite/arena_planner.cc: kDefaultTensorAlignment
_ORT_FIRST_REGION = 1 << 20     # onnxruntime/core/framework/bfc_arena.h: initial chunk of 1 MiB


def _tflite_tail(footprint: Footprint) -> dict[str, int]:
    # The head is planned at 16-byte alignment; TFLite aligns each tensor to 64 bytes, at most 48 more per tensor.
    return {"alignment": len(footprint.buffers) * (_TFLITE_TENSOR_ALIGNMENT - footprint.alignment)}


def _onnxruntime_tail(head: int) -> dict[str, int]:
    # The CPU BFC arena grows in regions that double from 1 MiB (arena_extend_strategy kNextPowerOfTwo) as the
    # first run allocates tensor by tensor, so it holds 1, 3, 7 ... MiB, and keeps them: the unused rest of the
    # last region is RAM the process has taken all the same.
    reserved = region = _ORT_FIRST_REGION
    while reserved < head:
        region *= 2
        reserved += region
    return {"arena_growth": reserved - head} if head else {}


_SOURCES = {
    "tflm": TFLM_SOURCE,
    "tflm-cmsis-nn": TFLM_SOURCE + "; CMSIS-NN scratch buffers: kernels/cmsis_nn/{conv,depthwise_conv,pooling}.cc "
                     "and CMSIS-NN arm_convolve_s8 / arm_depthwise_conv_s8_opt / arm_avgpool_s8 _get_buffer_size "
                     "(DSP extension)",
    "tflite": "TensorFlow Lite arena_planner.cc / simple_memory_arena.cc: tensors aligned to 64 bytes "
              "(kDefaultTensorAlignment) in one arena; interpreter structs live on the heap (runtime_ram)",
    "onnxruntime": "onnxruntime/core/framework/bfc_arena.cc: BFC arena extended in regions doubling from 1 MiB "
                   "(arena_extend_strategy = kNextPowerOfTwo, the default)",
    "coreml": "Core ML plans its buffers itself and documents no allocator: the planned activations only",
    "tensorrt": "TensorRT: ICudaEngine::getDeviceMemorySize() is fixed when the engine is built; the planned "
                "activations stand for it, tactic workspace not modelled",
    "static": "statically allocated buffers (hand-written C, XLA's ahead-of-time buffer assignment, STM32Cube.AI's "
              "generated C): the planned activations only. STM32Cube.AI plans one 'activations' buffer ahead of "
              "time and by default places the graph inputs and outputs in it (ST Edge AI Core docs: glossary, "
              "'Activations buffer'; embedded client API, --no-inputs-allocation / --no-outputs-allocation); its "
              "own in-place reuse can make that buffer smaller than planned here, its network context is runtime_ram",
}



# name -> (footprint, precision, planned head) -> (the runtime's head, its tail terms)
_MODELS: dict[str, Callable[[Footprint, str | None, int], tuple[int, dict[str, int]]]] = {
    "tflm": _tflm,
    "tflm-cmsis-nn": _tflm_cmsis_nn,
    "tflite": lambda fp, precision, head: (head, _tflite_tail(fp)),
    "onnxruntime": lambda fp, precision, head: (head, _onnxruntime_tail(head)),
    "coreml": lambda fp, precision, head: (head, {}),
    "tensorrt": lambda fp, precision, head: (head, {}),
    "static": lambda fp, precision, head: (head, {}),
}
assert tuple(_MODELS) == MEMORY_MODELS and tuple(_SOURCES) == MEMORY_MODELS


def runtime_memory(footprint: Footprint, model: str, precision: str | None, head_bytes: int) -> RuntimeMemory:
    """The memory runtime `model` needs for `footprint` at `precision`; `head_bytes` is the planned activation
    arena (Footprint.activation_bytes_at), which a model may re-plan on the graph its runtime really runs."""
    key = (id(footprint), model, precision, head_bytes)
    if key not in _memory_cache:
        head, tail = _MODELS[model](footprint, precision, head_bytes)
        _memory_cache[key] = RuntimeMemory(model, head, sum(tail.values()), MappingProxyType(tail), _SOURCES[model])
        weakref.finalize(footprint, _memory_cache.pop, key, None)   # the entry lives as long as the footprint
    return _memory_cache[key]


# One model checked against every profile asks for the same few (memory model, precision) plans again and again,
# and replaying TFLM's planner on a large graph costs tens of milliseconds.
_memory_cache: dict[tuple[int, str, str | None, int], RuntimeMemory] = {}
_parts_cache: dict[tuple[int, tuple], object] = {}   # converted graphs and planned heads, by footprint and key


def _memo(footprint: Footprint, key: tuple, make: Callable[[], object]):
    full = (id(footprint), key)
    if full not in _parts_cache:
        _parts_cache[full] = make()
        weakref.finalize(footprint, _parts_cache.pop, full, None)   # the entry lives as long as the footprint
    return _parts_cache[full]
