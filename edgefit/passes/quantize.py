"""Quantize with onnxruntime.quantization: static int8 or A16W8 (QDQ), dynamic int8, or fp16.

* `int8` (static, the default): QDQ format, per-channel symmetric int8 weights, int8 activations (symmetric by
  default, asymmetric on request) whose ranges come from calibration (MinMax, Entropy or Percentile). The target
  runs integer kernels end to end.
* `a16w8`: the same with 16-bit activations (int16 symmetric, uint16 asymmetric) and int8 weights, for runtimes
  with int16-activation kernels (TFLM's int16x8 kernels, onnxruntime's CPU provider); 256 times finer
  activation steps for the same weight bytes.
* `dynamic`: int8 weights, activations quantized at run time per batch; for MatMul / LSTM / GRU / Attention
  heavy models (Conv stays float: onnxruntime's CPU ConvInteger does not take int8 weights).
* `fp16`: float16 weights and compute with float32 model inputs/outputs, for GPUs and neural engines
  (onnxruntime.transformers' float16 converter; ops onnxruntime cannot run in fp16 stay float32).

Static modes keep the model's output heads in float unless asked (`quantize_heads`): the nodes after the last
weight layers on the way to an output (Softmax, Sigmoid, a bias Add, detection decoding ...) are not quantized
and the last weight layers' outputs are not requantized (their weights are int8): a Softmax output quantized to
int8 moves probabilities in steps of 1/127, which flips a close argmax.

Before static quantization, onnxruntime's quant pre-processing runs symbolic and onnx shape inference (its graph
optimisation step is skipped: `fuse` does that in plain ONNX), so activations of every op get a range.
Pre-processing and calibration run once per model and calibration method: a QuantizationCache keeps both for
every further quantization of the same model (the fit search quantizes one model many times).
"""

from __future__ import annotations

import io
import logging
import os
import re
import tempfile
import warnings
from collections import Counter
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
from onnx import ModelProto

from edgefit.analysis.weights import LINEAR_LAYER_OPS
from edgefit.errors import ConfigError, PassError
from edgefit.guard import first_line
from edgefit.fidelity import SampleSet, feed_samples, synthetic_samples
from edgefit.model import (copy_fields, default_opset, has_subgraph, index_graph, iter_graphs, metadata_only_copy,
                           serialized_size, sort_nodes)
from edgefit.passes.base import (
    Pass,
    PassOptions,
    PassResult,
    Progress,
    copy_model,
    ensure_node_names,
    node_label,
)

MODES = ("int8", "a16w8", "dynamic", "fp16")
STATIC_MODES = ("int8", "a16w8")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
_DYNAMIC_OP_TYPES = ("MatMul", "Gemm", "LSTM", "GRU", "Attention", "Gather", "EmbedLayerNormalization")
_EXTERNAL_ABOVE = 2**31 - 2**24
_MAX_RUNTIME_NOTES = 5
_MAX_LISTED_FLOAT_LAYERS = 12
_QUANTIZER_IR_VERSION = 10
SYNTHETIC_WARNING = ("calibrated on synthetic random inputs: activation ranges may not match real data and "
                     "accuracy may suffer; pass --calib with real samples")


@dataclass(frozen=True)
class QuantizeStats:
    mode: str
    calibration: str | None            # "user", "synthetic" or None (no calibration needed)
    calibration_samples: int
    method: str | None                 # calibration method for int8
    symmetric_activations: bool | None  # int8 only
    quantized_layers: tuple[str, ...]  # weight layers now computed at the new precision
    float_layers: tuple[str, ...]      # weight layers left in float32, with the reason
    ops_before: dict[str, int]
    ops_after: dict[str, int]
    notes: tuple[str, ...] = ()
    float_heads: tuple[str, ...] | None = None   # static modes: head nodes kept in float (empty: heads quantized)
    activation_bits: int | None = None          # static modes: 8 or 16
    wide_nodes: int = 0                         # nodes given 16-bit activations in an int8 model
    name: str = "quantize"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "mode": self.mode, "calibration": self.calibration,
                "calibration_samples": self.calibration_samples, "method": self.method,
                "symmetric_activations": self.symmetric_activations, "activation_bits": self.activation_bits,
                "float_heads": None if self.float_heads is None else list(self.float_heads),
                "wide_nodes": self.wide_nodes,
                "quantized_layers": list(self.quantized_layers), "float_layers": list(self.float_layers),
                "ops_before": self.ops_before, "ops_after": self.ops_after, "notes": list(self.notes)}

    def render(self, console) -> None:
        from rich.markup import escape

        source = ""
        if self.calibration:
            source = f", calibrated ({self.method}) on {self.calibration_samples} {self.calibration} samples"
        console.print(f"  mode {self.mode}{source}; {len(self.quantized_layers)} layer(s) quantized, "
                      f"{len(self.float_layers)} kept in float")
        if self.float_heads is not None:
            console.print("  output heads quantized (--quantize-heads)" if not self.float_heads else
                          f"  output heads kept in float: {escape(', '.join(self.float_heads[:8]))}"
                          + (f" and {len(self.float_heads) - 8} more" if len(self.float_heads) > 8 else ""))
        if self.wide_nodes:
            console.print(f"  {self.wide_nodes} node(s) with 16-bit activations")
        for line in self.float_layers[:_MAX_LISTED_FLOAT_LAYERS]:
            console.print(f"  [dim]{escape(line)}[/]")


def mode_for_precisions(precisions: tuple[str, ...] | list[str]) -> str:
    """The quantization mode a device with these supported precisions benefits from most."""
    if "int8" in precisions:
        return "int8"
    if "fp16" in precisions:
        return "fp16"
    raise PassError(f"the target supports only {', '.join(precisions) or 'no listed precision'}: "
                    "neither int8 nor fp16, so there is nothing to quantize to")


class Quantize(Pass):
    """onnxruntime quantization in mode int8 / a16w8 (static QDQ, calibrated), dynamic or fp16."""

    name = "quantize"
    usage = "quantize[:int8|:a16w8|:dynamic|:fp16][:minmax|:entropy|:percentile]"
    requires = frozenset({"float weights"})
    removes = frozenset({"float weights"})

    @classmethod
    def parse_args(cls, args, spec: str) -> dict[str, Any]:
        chosen: dict[str, Any] = {}
        for arg in args:
            if arg in MODES:
                chosen["mode"] = arg
            elif arg in CALIBRATION_METHODS:
                chosen["method"] = arg
            else:
                raise ConfigError(f"--passes {spec!r}: unexpected argument {arg!r}")
        return chosen

    def run(self, model: ModelProto, options: PassOptions, progress: Progress | None) -> PassResult:
        """Without calibration samples, static modes calibrate on synthetic inputs (and the stats say so)."""
        calibration = options.calibration
        if options.mode in STATIC_MODES and calibration is None:
            calibration = synthetic_samples(model, **options.shape_bindings)
        return _quantize(model, options, calibration, progress)

PASS = Quantize


def quantize(model: ModelProto, mode: str = "int8", *, calibration: SampleSet | None = None,
             method: str = "minmax", exclude: tuple[str, ...] = (), int8_op_types: tuple[str, ...] | None = None,
             symmetric_activations: bool = True, quantize_heads: bool = False, wide_nodes: tuple[str, ...] = (),
             cache: QuantizationCache | None = None, progress: Progress | None = None) -> PassResult:
    """Quantize a float model. `calibration` is required for the static modes (use fidelity.synthetic_samples
    when there is no real data; the stats then carry a warning). `exclude` holds node names or op types kept in
    float; `int8_op_types` limits int8 to the op types the target can run in int8; `wide_nodes` get 16-bit
    activations in an int8 model. Symmetric activations (zero point 0) suit integer accelerators; asymmetric
    ones spend all 256 levels on e.g. a ReLU's [0, max] range, which is about 6 dB more SQNR on such tensors.
    The output heads stay float unless `quantize_heads`. `cache` keeps pre-processing and calibration for
    further quantizations of the same model."""
    if mode in STATIC_MODES and calibration is None:
        raise PassError(f"static {mode} quantization needs calibration samples")
    options = PassOptions(mode=mode, calibration=calibration, method=method, exclude=tuple(exclude),
                          int8_op_types=int8_op_types, symmetric_activations=symmetric_activations,
                          quantize_heads=quantize_heads, wide_nodes=tuple(wide_nodes), quantization_cache=cache)
    return Quantize().apply(model, options, progress)


def _quantize(model: ModelProto, options: PassOptions, calibration: SampleSet | None,
              progress: Progress | None) -> PassResult:
    mode, method = options.mode, options.method
    if mode not in MODES:
        raise PassError(f"unknown quantization mode {mode!r}; choose one of {', '.join(MODES)}")
    if method not in CALIBRATION_METHODS:
        raise PassError(f"unknown calibration method {method!r}; choose one of {', '.join(CALIBRATION_METHODS)}")
    _refuse_quantized(model)
    static = mode in STATIC_MODES
    cache = options.quantization_cache
    prepared = None if static and cache is not None and cache.holds(model, calibration) else copy_model(model)
    if prepared is not None:
        ensure_node_names(prepared.graph)
        # onnx stamps the newest IR version it knows on new models; onnxruntime's quantizer reloads its temp files
        # with onnxruntime, which may know only older ones. IR 10 covers every type and feature quantization uses.
        prepared.ir_version = min(prepared.ir_version, _QUANTIZER_IR_VERSION)
    notes: list[str] = []
    if static:
        own_cache = cache is None
        cache = QuantizationCache() if own_cache else cache
        try:
            preparation = cache.prepare(model, prepared, calibration)
            del prepared
            notes += preparation.notes
            with _captured_warnings(notes):
                result, heads = preparation.quantize(options, progress)
            outline = preparation.outline
        finally:
            if own_cache:
                cache.close()
    else:
        heads = None
        excluded_names = _resolve_exclude(prepared, options.exclude)
        if mode == "dynamic":
            prepared = _upgrade_opset(prepared, notes)
            _float16_to_float32(prepared, notes)
        # What the stats need of the float model is its nodes: its weights are released as soon as onnxruntime
        # has them (a file for dynamic, the converter's own model for fp16), so they are not held twice more.
        outline = _outline(prepared)
        with tempfile.TemporaryDirectory(prefix="edgefit-quantize-") as folder, _captured_warnings(notes):
            if mode == "dynamic":
                source = _preprocess(prepared, Path(folder), notes)
                del prepared
                result = _quantize_dynamic(source, Path(folder), excluded_names)
            else:
                result = _convert_fp16(prepared, options.exclude, excluded_names)
                del prepared
    excluded = _resolve_exclude(outline, options.exclude)
    quantized, floating = _layer_precisions(outline, result, mode, excluded)
    notes += _subgraph_notes(result)
    if not quantized:
        notes.append(f"no layer was quantized in mode {mode}")
    stats = QuantizeStats(
        mode, calibration.source if static and calibration else None,
        calibration.samples if static and calibration else 0, method if static else None,
        options.symmetric_activations if static else None,
        tuple(quantized), tuple(floating), dict(Counter(n.op_type for n in outline.graph.node)),
        dict(Counter(n.op_type for n in result.graph.node)), tuple(notes),
        float_heads=heads, activation_bits=(16 if mode == "a16w8" else 8) if static else None,
        wide_nodes=len(options.wide_nodes))
    return PassResult(result, stats)


# Per-channel QuantizeLinear/DequantizeLinear (the `axis` attribute) exist from opset 13.
_QDQ_MIN_OPSET = 13


def _upgrade_opset(model: ModelProto, notes: list[str]) -> ModelProto:
    """Older models go through onnx's version converter first: onnxruntime's quantizer writes per-channel
    QDQ nodes whatever the model's opset, and they are invalid below opset 13."""
    opset = default_opset(model, missing=_QDQ_MIN_OPSET)
    if opset >= _QDQ_MIN_OPSET:
        return model
    from onnx import version_converter

    try:
        upgraded = version_converter.convert_version(model, _QDQ_MIN_OPSET)
    except Exception as error:  # noqa: BLE001 - the converter raises several error types
        raise PassError(f"quantization needs opset {_QDQ_MIN_OPSET} and onnx could not convert this opset-{opset} "
                        f"model: {str(error).strip().splitlines()[0]}") from None
    notes.append(f"converted from opset {opset} to {_QDQ_MIN_OPSET} (needed for per-channel int8)")
    return upgraded


_FLOAT16 = onnx.TensorProto.FLOAT16
_FLOAT = onnx.TensorProto.FLOAT


def _float16_to_float32(model: ModelProto, notes: list[str]) -> None:
    """Compute in float32 inside a float16 model (in place; `model` is the pass's private copy).

    onnxruntime's quantizer writes float32 scales whatever the weights' type, and DequantizeLinear with float32
    scales cannot feed float16 ops, so an fp16 model would come out invalid. Every float16 weight, attribute
    tensor, Cast target and value type becomes float32; the model's float16 inputs and outputs keep their type
    through Cast nodes at the boundary, so the quantized model takes and returns what the original did.
    """
    graph = model.graph
    changed = 0
    for *_, sub in iter_graphs(graph):
        for tensor in sub.initializer:
            changed += _tensor_to_float32(tensor)
        for node in sub.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    changed += _tensor_to_float32(attr.t)
                elif attr.type == onnx.AttributeProto.INT and attr.name in ("to", "dtype") and attr.i == _FLOAT16:
                    attr.i, changed = _FLOAT, changed + 1
        boundary = () if sub is graph else (*sub.input, *sub.output)
        for value in (*sub.value_info, *boundary):
            if value.type.tensor_type.elem_type == _FLOAT16:
                value.type.tensor_type.elem_type, changed = _FLOAT, changed + 1
    if not changed and not any(v.type.tensor_type.elem_type == _FLOAT16 for v in (*graph.input, *graph.output)):
        return
    initializers = {t.name for t in graph.initializer}
    renames: dict[str, str] = {}
    casts_in, casts_out = [], []
    for value in graph.input:
        if value.type.tensor_type.elem_type == _FLOAT16 and value.name not in initializers:
            renames[value.name] = f"{value.name}__edgefit_fp32"
            casts_in.append(onnx.helper.make_node("Cast", [value.name], [renames[value.name]], to=_FLOAT,
                                                  name=f"{value.name}__edgefit_to_fp32"))
    for value in graph.output:
        if value.type.tensor_type.elem_type == _FLOAT16 and value.name not in renames and value.name not in {
                v.name for v in graph.input}:
            inner = f"{value.name}__edgefit_fp32"
            for node in graph.node:
                for k, name in enumerate(node.output):
                    if name == value.name:
                        node.output[k] = inner
            for tensor in graph.initializer:
                if tensor.name == value.name:
                    tensor.name = inner
            renames[value.name] = inner
            casts_out.append(onnx.helper.make_node("Cast", [inner], [value.name], to=_FLOAT16,
                                                   name=f"{value.name}__edgefit_to_fp16"))
    for *_, sub in iter_graphs(graph):
        for node in sub.node:
            for k, name in enumerate(node.input):
                if name in renames:
                    node.input[k] = renames[name]
    nodes = casts_in + list(graph.node) + casts_out
    graph.ClearField("node")
    graph.node.extend(nodes)
    notes.append("float16 model: weights and compute widened to float32 for quantization; float16 inputs and "
                 "outputs are kept through Cast nodes")


def _tensor_to_float32(tensor: onnx.TensorProto) -> int:
    if tensor.data_type != _FLOAT16:
        return 0
    from onnx import numpy_helper

    tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype("float32"), tensor.name))
    return 1


# edgefit runs onnxruntime's quantization pre-processing itself and notes when it could not; onnxruntime's advice
# to run it (printed twice, in two wordings) would only repeat that.
_PREPROCESSING_ADVICE = re.compile(r"Please consider (to run )?pre-processing", re.IGNORECASE)


@contextmanager
def _captured_warnings(notes: list[str]):
    """onnxruntime.quantization logs warnings on the root logger; the library never prints, so they become notes."""
    captured: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(record.getMessage().strip().splitlines()[0])

    root = logging.getLogger()
    handler, saved_handlers, saved_level = Collect(logging.WARNING), root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    # numpy's RuntimeWarnings from onnxruntime's calibrators (e.g. "All-NaN axis encountered" when an activation
    # is NaN on every sample) would print around the report: they become notes as well.
    recording = warnings.catch_warnings(record=True)
    raised = recording.__enter__()
    warnings.simplefilter("always")
    try:
        yield
    finally:
        recording.__exit__(None, None, None)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        captured.extend(f"{w.category.__name__}: {first_line(w.message)}" for w in raised)
        unique = [m for m in dict.fromkeys(captured) if not _PREPROCESSING_ADVICE.match(m)]
        notes.extend(f"onnxruntime: {message}" for message in unique[:_MAX_RUNTIME_NOTES])
        if len(unique) > _MAX_RUNTIME_NOTES:
            notes.append(f"onnxruntime: {len(unique) - _MAX_RUNTIME_NOTES} more warnings")


@contextmanager
def _working_directory(folder: Path):
    """Run a block in `folder` (contextlib.chdir, which needs Python 3.11)."""
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def _refuse_quantized(model: ModelProto) -> None:
    quantized_ops = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                     "MatMulInteger", "DynamicQuantizeLinear"}
    found = sorted({n.op_type for n in model.graph.node} & quantized_ops)
    if found:
        raise PassError(f"the model is already quantized (it has {', '.join(found)}); quantize the float model")


def _resolve_exclude(model: ModelProto, exclude: tuple[str, ...], option: str = "--exclude") -> set[str]:
    """Node names to keep in float (or, for `option` --wide, at 16 bits), from node names and op types."""
    by_type: dict[str, list[str]] = {}
    for node in model.graph.node:
        by_type.setdefault(node.op_type, []).append(node.name)
    names = {n.name for n in model.graph.node}
    chosen: set[str] = set()
    for entry in exclude:
        if entry in names:
            chosen.add(entry)
        elif entry in by_type:
            chosen.update(by_type[entry])
        else:
            raise PassError(f"{option} {entry!r} is neither a node name nor an op type of this model "
                            f"(op types: {', '.join(sorted(by_type))})")
    return chosen


def _save(model: ModelProto, path: Path) -> Path:
    big = serialized_size(model) > _EXTERNAL_ABOVE
    onnx.save_model(model, str(path), save_as_external_data=big, location=path.name + ".data" if big else None)
    return path


def _load(path: Path) -> ModelProto:
    model = onnx.load(str(path), load_external_data=True)
    sort_nodes(model)   # onnxruntime's quantizer may move an If above the producers its branches read
    return model


def _preprocess(model: ModelProto, work: Path, notes: list[str]) -> Path:
    """onnxruntime's quant pre-processing (shape inference only), then the model saved for the quantizer.

    The pre-processing runs on a copy whose large weights are typed graph inputs (no shape rule needs their
    values): given the weights it holds several copies of them at once. What it adds -- value infos, also in
    subgraphs, and output shapes -- goes back into `model` (the pass's private copy). When it fails, the model
    is quantized as it is."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    light = metadata_only_copy(model)
    try:
        # Where symbolic shape inference cannot finish, onnxruntime saves its partial model as
        # sym_shape_infer_temp.onnx in the working directory: it runs from the pass's own temp folder instead.
        with _working_directory(work):
            quant_pre_process(light, str(work / "inferred.onnx"), skip_optimization=True)
        inferred = onnx.load(str(work / "inferred.onnx"))
    except Exception as error:  # noqa: BLE001 - symbolic shape inference fails on some exotic graphs
        reason = (first_line(error) if str(error).strip() else
                  f"onnxruntime's symbolic shape inference stopped on an internal {type(error).__name__}")
        notes.append(f"quantization pre-processing (shape inference) failed and was skipped: {reason}")
        return _save(model, work / "float.onnx")
    if _take_shapes(model, light, inferred):
        model.ClearField("metadata_props")   # with the pre-processing's mark, which onnxruntime's quantizer checks
        model.metadata_props.extend(inferred.metadata_props)
    else:
        notes.append("quantization pre-processing (shape inference) changed the graph's nodes; its shapes were "
                     "not used")
    return _save(model, work / "preprocessed.onnx")


def _take_shapes(model: ModelProto, light: ModelProto, inferred: ModelProto) -> bool:
    """Put what shape inference on `light` (metadata_only_copy(model)) found -- value infos, also those inside
    subgraphs, which live in the nodes, and output types -- into `model`; False when the graph differs."""
    graph, shaped = model.graph, inferred.graph
    if [n.output[:] for n in shaped.node] != [n.output[:] for n in graph.node] \
            or [o.name for o in shaped.output] != [o.name for o in graph.output]:
        return False
    stubs = {i.name for i in light.graph.input} - {i.name for i in graph.input}
    for field in ("node", "value_info", "output"):
        graph.ClearField(field)
        getattr(graph, field).extend(v for v in getattr(shaped, field) if field == "node" or v.name not in stubs)
    return True


class QuantizationCache:
    """Pre-processing and calibration ranges of the float models quantized so far, for quantizing one model many
    ways (which nodes, heads, 16-bit activations, calibration method) with pre-processing once per model and
    calibration once per model and method. Holds temp files until closed (or garbage-collected)."""

    def __init__(self) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="edgefit-quantize-")
        self._preparations: dict[tuple, _StaticPreparation] = {}

    @staticmethod
    def _key(model: ModelProto, calibration: SampleSet) -> tuple:
        # The graph's node outputs tell models apart as cheaply as it gets: a pass that changes weights (prune)
        # changes the graph (pruned channels) or is followed by quantization of a model built anew.
        return id(calibration), tuple(tuple(n.output) for n in model.graph.node), len(model.graph.initializer)

    def holds(self, model: ModelProto, calibration: SampleSet) -> bool:
        return self._key(model, calibration) in self._preparations

    def prepare(self, model: ModelProto, prepared: ModelProto | None, calibration: SampleSet) -> _StaticPreparation:
        """The preparation of `model` (`prepared`: the pass's named, IR-capped copy; None when held already)."""
        key = self._key(model, calibration)
        if key not in self._preparations:
            folder = Path(self._folder.name) / str(len(self._preparations))
            folder.mkdir()
            self._preparations[key] = _StaticPreparation(prepared, calibration, folder)
        return self._preparations[key]

    def close(self) -> None:
        self._preparations.clear()
        self._folder.cleanup()


class _StaticPreparation:
    """One float model made ready for onnxruntime's QDQ quantizer: opset, float32 compute, pre-processing (shape
    inference), its output heads, and calibration ranges per method, computed on first use."""

    def __init__(self, prepared: ModelProto, calibration: SampleSet, folder: Path):
        self.notes: list[str] = []
        self.calibration, self.folder = calibration, folder
        if calibration.source == "synthetic":
            self.notes.append(SYNTHETIC_WARNING)
        prepared = _upgrade_opset(prepared, self.notes)
        ensure_node_names(prepared.graph)   # nodes the version converter added have none
        _float16_to_float32(prepared, self.notes)
        from edgefit.sensitivity import output_heads

        self.heads = output_heads(prepared)
        self.outline = _outline(prepared)
        with _captured_warnings(self.notes):
            self.source = _preprocess(prepared, folder, self.notes)
        self._ranges: dict[str, Any] = {}
        self._complete: dict[tuple, ModelProto] = {}   # quantized with nothing but the heads kept float
        self._float_weights: dict[str, onnx.TensorProto] | None = None

    def ranges(self, method: str, progress: Progress | None):
        """onnxruntime's calibration ranges (TensorsData) for every activation of every quantizable op type."""
        if method not in self._ranges:
            self._ranges[method] = _calibrate(self.source, self.folder, self.calibration, method, progress)
        return self._ranges[method]

    def quantize(self, options: PassOptions, progress: Progress | None) -> tuple[ModelProto, tuple[str, ...]]:
        """The QDQ model for these options, and the head nodes kept in float (empty with quantize_heads).

        Excluded nodes are put back in float in a copy of the model quantized without them (one onnxruntime
        quantizer run per mode, method and heads): the quantizer takes seconds on a large model, the edit a
        fraction of one, and fit's float-region bisection asks for many exclusion sets of one recipe."""
        heads = () if options.quantize_heads else self.heads.nodes
        key = (options.mode, options.method, options.symmetric_activations, options.int8_op_types,
               options.wide_nodes, options.quantize_heads)
        if key not in self._complete:
            self._complete[key] = self._quantized(options, set(heads), progress)
        model = copy_model(self._complete[key])
        excluded = _resolve_exclude(self.outline, options.exclude) - set(heads)
        if excluded and not _restore_float(model, self.outline, self.float_weights(), excluded):
            model = self._quantized(options, excluded | set(heads), progress)   # a case the edit does not cover
        return model, heads

    def _quantized(self, options: PassOptions, excluded: set[str], progress: Progress | None) -> ModelProto:
        model = _quantize_with_ranges(self.source, self.ranges(options.method, progress), options, excluded,
                                      self._wide_tensors(options.wide_nodes))
        if not options.quantize_heads:
            _unquantize(model, set(self.heads.float_tensors))
        _read_in_float(model, excluded)
        return model

    def float_weights(self) -> dict[str, onnx.TensorProto]:
        """The pre-processed float model's weights, read from its file on first use."""
        if self._float_weights is None:
            self._float_weights = {t.name: t for t in _load(self.source).graph.initializer}
        return self._float_weights

    def _wide_tensors(self, nodes: tuple[str, ...]) -> tuple[str, ...]:
        """The activations the 16-bit nodes (names or op types) read and write (weights keep their 8 bits)."""
        if not nodes:
            return ()
        chosen = _resolve_exclude(self.outline, nodes, "--wide")
        # the outline has no initializers: a weight named here would get a 16-bit per-tensor override
        weights = set(self.float_weights())
        return tuple(sorted({name for node in self.outline.graph.node if node.name in chosen
                             for name in (*node.input, *node.output) if name and name not in weights}))


def _calibrate(source: Path, work: Path, calibration: SampleSet, method: str, progress: Progress | None):
    """Run onnxruntime's calibrator once over the samples: ranges for every activation (TensorsData)."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, create_calibrator

    feeds = calibration.feeds
    if method != "minmax" and len({feed_samples(f) for f in feeds}) > 1:
        # The histogram calibrators (entropy, percentile) stack every batch's outputs into one array, which
        # fails on a short last batch (100 samples: 32 + 32 + 32 + 4); they get one sample per run instead.
        feeds = tuple({name: value[k:k + 1] for name, value in feed.items()}
                      for feed in feeds for k in range(feed_samples(feed)))

    class SampleReader(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter(feeds)
            self._done = 0

        def get_next(self):
            feed = next(self._feeds, None)
            if feed is not None and progress is not None:
                self._done += feed_samples(feed)
                progress("calibrating", min(self._done, calibration.samples), calibration.samples)
            return feed

    import onnxruntime

    # The calibration sessions log warnings straight to stderr (e.g. "Removing initializer ..." for a graph
    # whose outputs need no computation); our notes carry what matters.
    onnxruntime.set_default_logger_severity(3)
    calibrate = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}[method]
    try:
        # onnxruntime's histogram calibrators print their progress to stdout, which must hold nothing but
        # --json's object; the report says what matters (method, samples).
        with redirect_stdout(io.StringIO()):
            calibrator = create_calibrator(
                source, _quantizable_op_types(), augmented_model_path=str(work / f"augmented-{method}.onnx"),
                calibrate_method=calibrate, use_external_data_format=source.stat().st_size > _EXTERNAL_ABOVE)
            calibrator.collect_data(SampleReader())
            return calibrator.compute_data()
    except Exception as error:  # noqa: BLE001 - surface onnxruntime's reason as a one-line PassError
        raise PassError(f"onnxruntime calibration failed: {str(error).strip().splitlines()[0]}") from None


def _quantizable_op_types() -> list[str]:
    """Every op type onnxruntime can quantize (quantize_static's default for op_types_to_quantize)."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(set(QLinearOpsRegistry) | set(QDQRegistry))


def _quantize_with_ranges(source: Path, ranges, options: PassOptions, excluded: set[str],
                          wide_tensors: tuple[str, ...]) -> ModelProto:
    """onnxruntime's QDQ quantizer on the pre-processed model with ranges calibrated before.

    What quantize_static does after calibrating (onnxruntime 1.32.0, quantization/quantize.py: shape inference
    on load, the opset update 16-bit types need, QDQQuantizer), without calibrating again: quantize_static
    always calibrates (its calibration_cache_path, which would skip that, is new in 1.32)."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer, update_opset_version

    symmetric = options.symmetric_activations
    wide = QuantType.QInt16 if symmetric else QuantType.QUInt16
    activation_type = wide if options.mode == "a16w8" else QuantType.QInt8
    overrides = {name: [{"quant_type": wide}] for name in wide_tensors} if activation_type != wide else {}
    extra = {"ActivationSymmetric": symmetric, "WeightSymmetric": True, "TensorQuantOverrides": overrides}
    op_types = list(options.int8_op_types) if options.int8_op_types is not None else _quantizable_op_types()
    try:
        model = load_model_with_shape_infer(source)
        model = update_opset_version(model, QuantType.QInt8, activation_type, tensor_quant_overrides=overrides)
        quantizer = QDQQuantizer(model, True, False, QuantType.QInt8, activation_type, ranges, [], sorted(excluded),
                                 op_types, extra)
        quantizer.quantize_model()
        result = quantizer.model.model
    except Exception as error:  # noqa: BLE001 - surface onnxruntime's reason as a one-line PassError
        raise PassError(f"onnxruntime static quantization failed: {str(error).strip().splitlines()[0]}") from None
    sort_nodes(result)   # onnxruntime's quantizer may move an If above the producers its branches read
    return result


def _unquantize(model: ModelProto, tensors: set[str]) -> None:
    """Take the QuantizeLinear -> DequantizeLinear pair off `tensors` (in place: the quantizer's own model), so
    that their readers get the float value. onnxruntime keeps an output float only per op type
    (OpTypesToExcludeOutputQuantization), not per tensor, which float heads need."""
    graph = model.graph
    producers = {name: node for node in graph.node for name in node.output}
    outputs = {value.name for value in graph.output}
    renames: dict[str, str] = {}
    dropped = []
    for dq in graph.node:
        q = producers.get(dq.input[0]) if dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear":
            continue
        before, after = q.input[0], dq.output[0]
        if before not in tensors and after not in tensors:
            continue
        dropped += [dq, q]
        if after in outputs:   # a graph output keeps its name: its producer writes it directly
            producers[before].output[list(producers[before].output).index(before)] = after
            renames[before] = after
        else:
            renames[after] = before
    for node in graph.node:
        for k, name in enumerate(node.input):
            node.input[k] = renames.get(name, name)
    for node in {id(n): n for n in dropped}.values():
        graph.node.remove(node)


def _restore_float(model: ModelProto, outline: ModelProto, float_weights: dict[str, onnx.TensorProto],
                   nodes: set[str]) -> bool:
    """Put `nodes` of a QDQ model back in float (in place; the pass's own copy): where one reads through a
    DequantizeLinear, it reads the activation before its QuantizeLinear (see _read_in_float for why) or the
    float weight the float model `outline` has at that input (added back from `float_weights`); its other
    inputs stay (16-bit QDQ upgrades the opset, which moves e.g. ReduceMean's axes into an input). The QDQ nodes
    and quantized weights nobody reads any more go. Readers of a float node's output that are quantized still
    read it through its QDQ pair, as the quantizer's own exclusion leaves them. False (model untouched) where
    the edit does not apply: a node with subgraphs, or a dequantized input with no float counterpart."""
    graph = model.graph
    originals = {n.name: n for n in outline.graph.node if n.name in nodes}
    targets = [n for n in graph.node if n.name in nodes]
    if len(originals) != len(nodes) or len(targets) != len(nodes) or any(
            has_subgraph(n) for n in originals.values()):
        return False
    producers = {name: node for node in graph.node for name in node.output}
    replacements: list[tuple[onnx.NodeProto, int, str]] = []
    weights: set[str] = set()
    for node in targets:
        original = originals[node.name].input
        for k, name in enumerate(node.input):
            dq = producers.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producers.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                replacements.append((node, k, q.input[0]))
            elif k < len(original) and original[k] in float_weights:
                replacements.append((node, k, original[k]))
                weights.add(original[k])
            else:
                return False
    for node, k, name in replacements:
        node.input[k] = name
    for dq in [producers[name] for name in weights if name in producers]:   # a bias DequantizeLinear may write
        graph.node.remove(dq)                                                # the float bias's own name
    stored = {t.name for t in graph.initializer}
    for name in sorted(weights - stored):
        copy = onnx.TensorProto()
        copy.CopyFrom(float_weights[name])
        graph.initializer.append(copy)
    _drop_unread_qdq(graph)
    read = {name for *_, sub in iter_graphs(graph) for n in sub.node for name in n.input}
    for tensor in [t for t in graph.initializer if t.name not in read]:
        graph.initializer.remove(tensor)
    return True


def _drop_unread_qdq(graph: onnx.GraphProto) -> None:
    """Remove the DequantizeLinear nodes nobody reads, then the QuantizeLinear nodes that fed only them."""
    outputs = {value.name for value in graph.output}
    for _ in range(2):
        read = outputs | {name for *_, sub in iter_graphs(graph) for n in sub.node for name in n.input}
        for node in [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                     and not any(o in read for o in n.output)]:
            graph.node.remove(node)


def _read_in_float(model: ModelProto, nodes: set[str]) -> None:
    """Nodes kept in float read their activations as computed, not through the QuantizeLinear ->
    DequantizeLinear pair onnxruntime's quantizer puts in front of them for other readers (in place: the
    quantizer's own model).

    Why: a float Conv / ConvTranspose / Gemm fed by a DequantizeLinear and feeding a QuantizeLinear does not stay
    float in onnxruntime. Its WeightBiasQuantization graph transformer (onnxruntime 1.32, basic optimisation
    level, core/optimizer/qdq_transformer/weight_bias_quantization.cc) quantizes the float weight per tensor to
    int8 and the bias to int32 at input scale x weight scale; with 16-bit activations that scale is so small that
    the bias overflows int32. On PP-OCRv4 rec, A16W8 with every Conv "in float" fell from cosine 0.9998
    (unoptimised session) to 0.81. Read in float, the layer has no DequantizeLinear input and is left alone."""
    graph = model.graph
    producers = {name: node for node in graph.node for name in node.output}
    for node in graph.node:
        if node.name not in nodes:
            continue
        for k, name in enumerate(node.input):
            dq = producers.get(name)
            q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[k] = q.input[0]
    _drop_unread_qdq(graph)


def _quantize_dynamic(source: Path, work: Path, excluded: set[str]) -> ModelProto:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = work / "dynamic.onnx"
    try:
        quantize_dynamic(str(source), str(target), op_types_to_quantize=list(_DYNAMIC_OP_TYPES), per_channel=True,
                         weight_type=QuantType.QInt8, nodes_to_exclude=sorted(excluded),
                         use_external_data_format=source.stat().st_size > _EXTERNAL_ABOVE)
    except Exception as error:  # noqa: BLE001 - see _quantize_static
        raise PassError(f"onnxruntime dynamic quantization failed: {str(error).strip().splitlines()[0]}") from None
    return _load(target)


def _convert_fp16(model: ModelProto, exclude: tuple[str, ...], excluded: set[str]) -> ModelProto:
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    op_types = {n.op_type for n in model.graph.node}
    blocked_types = list(DEFAULT_OP_BLOCK_LIST) + list(_FP16_BLOCKED) + [e for e in exclude if e in op_types]
    prepared, passthrough = _without_passthrough_outputs(model)   # the pass's private copy: edited in place
    # The converter's own type inference would serialize and re-parse the whole model, weights included.
    light = metadata_only_copy(prepared)
    try:
        inferred = onnx.shape_inference.infer_shapes(light)
    except Exception:  # noqa: BLE001 - onnx raises several error types; the converter then infers itself
        inferred = None
    inferred_here = inferred is not None and _take_shapes(prepared, light, inferred)
    del light, inferred
    try:
        converted = convert_float_to_float16(prepared, keep_io_types=True, op_block_list=blocked_types,
                                             node_block_list=sorted(excluded), disable_shape_infer=inferred_here)
    except Exception as error:  # noqa: BLE001 - see _quantize_static
        raise PassError(f"fp16 conversion failed: {str(error).strip().splitlines()[0]}") from None
    for position, output in passthrough:
        converted.graph.output.insert(position, output)
    _drop_cast_round_trips(converted)
    # The converter appends its input Casts after the nodes that read them; ONNX requires topological order.
    order = index_graph(converted.graph).order
    nodes = [converted.graph.node[i] for i in order]
    converted.graph.ClearField("node")
    converted.graph.node.extend(nodes)
    return converted


def _cast_target(node: onnx.NodeProto) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None


def _drop_cast_round_trips(model: ModelProto) -> None:
    """Where a node the converter keeps in float32 reads a float32 tensor (a graph input, another kept node's
    output), the converter casts it to float16 and straight back: a lossy round trip that computes nothing (an
    ai.onnx.ml model came out with its input rounded to float16 and "no layer quantized"). The reader reads the
    float32 tensor instead, and the casts nobody reads any more go (in place; the converter's own model)."""
    graph = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.value_info, *graph.output)
             if v.type.HasField("tensor_type")}
    producer = {name: node for node in graph.node for name in node.output}
    kept_names = {value.name for value in graph.output}
    bypass, pairs = {}, []
    for node in graph.node:
        first = producer.get(node.input[0]) if _cast_target(node) == _FLOAT else None
        if first is None or _cast_target(first) != _FLOAT16 or types.get(first.input[0]) != _FLOAT:
            continue
        if node.output[0] in kept_names:   # a graph output keeps its name: an Identity of the float32 tensor
            node.op_type, node.input[0] = "Identity", first.input[0]
            del node.attribute[:]
            pairs.append(first)
        else:
            bypass[node.output[0]] = first.input[0]
            pairs += [node, first]
    if not pairs:
        return
    for *_, sub in iter_graphs(graph):   # subgraphs may read the cast as an outer-scope name
        for node in sub.node:
            for k, name in enumerate(node.input):
                if name in bypass:
                    node.input[k] = bypass[name]
    for _ in range(2):   # the cast back to float32, then the cast to float16 if nothing else reads it
        read = kept_names | {name for *_, sub in iter_graphs(graph) for node in sub.node for name in node.input}
        dead = [node for node in graph.node if node in pairs and node.output[0] not in read]
        for node in dead:
            graph.node.remove(node)
        gone = {node.output[0] for node in dead}
        for value in [v for v in graph.value_info if v.name in gone]:
            graph.value_info.remove(value)


# The float16 converter retypes Optional values' contents but not the optional type itself, which onnxruntime
# then rejects ("Type (optional(tensor(float))) ... does not match expected type (optional(tensor(float16)))").
_FP16_BLOCKED = ("Optional", "OptionalGetElement", "OptionalHasElement")


def _without_passthrough_outputs(model: ModelProto) -> tuple[ModelProto, list[tuple[int, onnx.ValueInfoProto]]]:
    """Prepare graph outputs that no node produces for the float16 converter, which (with keep_io_types) writes a
    Cast producing every graph output, a second definition of a graph input or initializer of that name.

    A graph input passed straight through (kept float32 as every input is) is taken out of the outputs and
    returned with its position, to be put back after conversion. An initializer that is also an output is
    renamed and re-emitted by an Identity node, which the converter then handles like any computed output.
    """
    graph = model.graph
    produced = {name for node in graph.node for name in node.output}
    inputs = {value.name for value in graph.input}
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    passthrough: list[tuple[int, onnx.ValueInfoProto]] = []
    for position, output in enumerate(list(graph.output)):
        if output.name in produced:
            continue
        if output.name in inputs:
            kept = onnx.ValueInfoProto()
            kept.CopyFrom(output)
            passthrough.append((position, kept))
        elif output.name in initializers:
            stored = f"{output.name}__edgefit_weight"
            initializers[output.name].name = stored
            for *_, sub in iter_graphs(graph):   # subgraphs may read it as an outer-scope name
                for node, k, name in ((n, k, i) for n in sub.node for k, i in enumerate(n.input)):
                    if name == output.name:
                        node.input[k] = stored
            graph.node.append(onnx.helper.make_node("Identity", [stored], [output.name],
                                                    name=f"{output.name}__edgefit_output"))
    for position, _ in reversed(passthrough):
        del graph.output[position]
    return model, passthrough


def _outline(model: ModelProto) -> ModelProto:
    """The model without its initializers (nodes, subgraphs and value infos kept): enough for the stats."""
    outline = ModelProto()
    copy_fields(model, outline, skip=("graph",))
    copy_fields(model.graph, outline.graph, skip=("initializer",))
    return outline


def _subgraph_notes(model: ModelProto) -> list[str]:
    """Say, per control-flow node, whether anything inside its subgraphs changed precision."""
    from edgefit.model import iter_graphs

    notes = []
    for node in model.graph.node:
        if not has_subgraph(node):
            continue
        branches = [g for attr in node.attribute
                    for g in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs)]
        inner = [n for branch in branches for *_, sub in iter_graphs(branch) for n in sub.node]
        touched = any(n.op_type in ("QuantizeLinear", "DequantizeLinear", "Cast", "MatMulInteger") for n in inner)
        notes.append(f"{node_label(node)} ({node.op_type}): its subgraphs were "
                     f"{'partly converted by onnxruntime' if touched else 'left in float'}")
    return notes


def _layer_precisions(before: ModelProto, after: ModelProto, mode: str,
                      excluded: set[str]) -> tuple[list[str], list[str]]:
    """Weight layers (Conv/ConvTranspose/Gemm/MatMul of the input) that changed precision, and those that did not."""
    layers = [n for n in before.graph.node if n.op_type in LINEAR_LAYER_OPS]
    after_nodes = {n.name: n for n in after.graph.node}
    producers = {o: n for n in after.graph.node for o in n.output}
    float16_names = {t.name for t in after.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16}
    int8_weights = {t.name for t in after.graph.initializer if t.data_type == onnx.TensorProto.INT8}
    quantized, floating = [], []
    for layer in layers:
        label = node_label(layer)
        node = after_nodes.get(layer.name)
        if mode in STATIC_MODES:   # its weight is now an int8 initializer behind a DequantizeLinear, or both operands
            # come through DequantizeLinear (activation x activation, a requantized tied embedding): an int8 kernel
            dequantized = [producers.get(i) is not None and producers[i].op_type == "DequantizeLinear"
                           for i in (node.input[:2] if node is not None else ())]
            done = node is not None and (len(dequantized) == 2 and all(dequantized) or any(
                producers.get(i) is not None and producers[i].op_type == "DequantizeLinear"
                and producers[i].input[0] in int8_weights for i in node.input))
        elif mode == "dynamic":
            done = node is None or node.op_type != layer.op_type   # replaced by its integer form
        else:
            done = node is not None and any(i in float16_names for i in node.input)
        if done:
            quantized.append(label)
        else:
            floating.append(f"{label}: excluded" if layer.name in excluded else f"{label}: stays float")
    return quantized, floating
