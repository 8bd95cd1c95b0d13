"""onnxruntime sessions for edgefit's own runs (shape fallback, fidelity, calibration). Imported lazily."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
from onnx import ModelProto, TensorProto, numpy_helper

from edgefit.model import copy_fields, serialized_size

_IR_TOO_NEW = re.compile(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)")
# Protobuf cannot serialize a message over 2 GiB, so larger models go to onnxruntime as a file + external data.
_SERIALIZE_LIMIT = 2**31 - 2**24
# Above this much in-memory weight data, the weights reach onnxruntime as arrays it uses in place
# (add_external_initializers) rather than inside the serialized model, which onnxruntime would parse into copies
# of its own: a model with 512 MB of weights then peaks at 1.5 GB instead of 3 GB, and one over protobuf's
# 2 GiB limit needs no temporary file.
_HAND_OVER_ABOVE_BYTES = 64 * 2**20
# Single tensors below this stay inside the model (shapes, scales, biases): handing them over gains nothing.
_HAND_OVER_TENSOR_BYTES = 4096
# Element types numpy holds natively, so onnxruntime can use the array's memory as the tensor.
_NATIVE_TYPES = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.INT8, TensorProto.UINT8,
                 TensorProto.INT16, TensorProto.UINT16, TensorProto.INT32, TensorProto.UINT32, TensorProto.INT64,
                 TensorProto.UINT64, TensorProto.BOOL}


def session(proto: ModelProto, *, optimize: bool = False, threads: int | None = None, exact_int8: bool = True):
    """An onnxruntime CPU session for an in-memory model; `threads` caps its intra-op thread pool (None: the
    onnxruntime default, one thread per core).

    With `optimize`, onnxruntime runs QDQ models with its integer kernels. On x86 CPUs without VNNI (AVX2, and
    AVX-512 without VNNI) its fast uint8 x int8 kernel adds pairs of products in saturating 16-bit arithmetic
    (255 * 127 * 2 = 64,770 is clamped to 32,767), which wrecks int8 outputs: the digits model's int8 SQNR fell
    from 38 dB to 10 dB on an AVX2 EPYC. `exact_int8` (the default) sets onnxruntime's switch to its exact uint8 x
    uint8 kernels there (slower; no effect on other CPUs), and keeps fused 8-bit-weight MatMuls from
    re-quantizing 16-bit activations to int8, so fidelity measures the model, not the host's arithmetic.
    Timing turns it off to time the kernels a deployment on the host would use.

    onnx releases stamp newer IR versions on models than the installed onnxruntime may accept, although the
    graph itself uses nothing newer; then the session is built stamped with the newest IR version onnxruntime
    names in its error.
    """
    try:
        return _open_stamped(proto, optimize, threads, exact_int8)
    except Exception:
        if not (optimize and exact_int8):
            raise
        # The switch's graph rewrite (s8 -> u8 weights) fails on some models ("AddInitializedOrtValue Attempt to
        # replace the existing tensor", onnxruntime 1.32, a torch-exported transformer whose quantized weights share
        # initializers). Without graph optimisation onnxruntime runs the QDQ graph as written, DequantizeLinear ->
        # float op -> QuantizeLinear: the same quantized values, computed exactly, only slower.
        return _open_stamped(proto, False, threads, exact_int8)


def _open_stamped(proto: ModelProto, optimize: bool, threads: int | None, exact_int8: bool):
    try:
        return _open(proto, optimize, proto.ir_version, threads, exact_int8)
    except Exception as error:
        match = _IR_TOO_NEW.search(str(error))
        if match is None:
            raise
        return _open(proto, optimize, int(match.group(2)), threads, exact_int8)


def _open(proto: ModelProto, optimize: bool, ir_version: int, threads: int | None, exact_int8: bool):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4   # fatal only: our own messages explain failures in one line
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if exact_int8:
        # onnxruntime_session_options_config_keys.h: kOrtSessionOptionsAvx2PrecisionMode (read when the graph is
        # optimised, where the s8 weights of the integer kernels become u8; a no-op on CPUs that do not overflow).
        options.add_session_config_entry("session.x64quantprecision", "1")
        # kOrtSessionOptionsQDQMatMulNBitsAccuracyLevel (same header): an optimised session turns DequantizeLinear
        # (8-bit weight) -> MatMul/Gemm into MatMulNBits, which at its default accuracy level 4 re-quantizes its
        # float input to int8 blocks at run time. A 16-bit activation then computes at 8 bits: in onnxruntime
        # 1.32.0 a Gemm reading a feature 1000x larger than the others fell to cosine 0.47 (0.9999 at level 1).
        # Level 1 computes in fp32, so fidelity measures the model's 16-bit activations as written.
        options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "1")
    providers = ["CPUExecutionProvider"]
    handed = [t for t in proto.graph.initializer if t.data_location != TensorProto.EXTERNAL
              and t.data_type in _NATIVE_TYPES and serialized_size(t) >= _HAND_OVER_TENSOR_BYTES]
    if sum(serialized_size(t) for t in handed) >= _HAND_OVER_ABOVE_BYTES:
        light, arrays = _without_weights(proto, handed)
        light.ir_version = ir_version
        values = [ort.OrtValue.ortvalue_from_numpy(array) for array in arrays]
        options.add_external_initializers([t.name for t in handed], values)
        # Pre-packing would copy every weight once more into onnxruntime's own layout.
        options.add_session_config_entry("session.disable_prepacking", "1")
        if serialized_size(light) < _SERIALIZE_LIMIT:
            created = ort.InferenceSession(light.SerializeToString(), options, providers=providers)
            # onnxruntime uses the arrays' memory for the session's lifetime, so they must live exactly as long.
            created.edgefit_weights = (arrays, values)
            return created
    if serialized_size(proto) < _SERIALIZE_LIMIT and ir_version == proto.ir_version:
        return ort.InferenceSession(proto.SerializeToString(), options, providers=providers)
    import onnx

    copy = ModelProto()
    copy.CopyFrom(proto)   # convert_model_to_external_data rewrites tensors in place; keep the caller's intact
    copy.ir_version = ir_version
    if serialized_size(copy) < _SERIALIZE_LIMIT:
        return ort.InferenceSession(copy.SerializeToString(), options, providers=providers)
    with tempfile.TemporaryDirectory(prefix="edgefit-") as folder:
        path = Path(folder) / "model.onnx"
        onnx.save_model(copy, str(path), save_as_external_data=True, location="model.onnx.data")
        # onnxruntime reads initializers into its own memory while building the session, so the folder can go.
        return ort.InferenceSession(str(path), options, providers=providers)


def _without_weights(proto: ModelProto, handed: list[TensorProto]) -> tuple[ModelProto, list[np.ndarray]]:
    """The model with the `handed` weights as placeholders for add_external_initializers, and their arrays."""
    light = ModelProto()
    copy_fields(proto, light, skip=("graph",))
    copy_fields(proto.graph, light.graph, skip=("initializer",))
    names = {t.name for t in handed}
    arrays = []
    for tensor in proto.graph.initializer:
        if tensor.name not in names:
            light.graph.initializer.add().CopyFrom(tensor)
            continue
        arrays.append(np.ascontiguousarray(numpy_helper.to_array(tensor)))
        stub = light.graph.initializer.add()
        stub.name, stub.data_type = tensor.name, tensor.data_type
        stub.dims.extend(tensor.dims)
        stub.data_location = TensorProto.EXTERNAL   # never read: the session is given the array instead
        stub.external_data.add(key="location", value="handed-over-by-edgefit")
    return light, arrays
