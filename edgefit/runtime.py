"""onnxruntime sessions for edgefit's own runs (shape fallback, fidelity, calibration). Imported lazily."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from onnx import ModelProto

from edgefit.model import serialized_size

_IR_TOO_NEW = re.compile(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)")
# Protobuf cannot serialize a message over 2 GiB, so larger models go to onnxruntime as a file + external data.
_SERIALIZE_LIMIT = 2**31 - 2**24


def session(proto: ModelProto, *, optimize: bool = False):
    """An onnxruntime CPU session for an in-memory model.

    onnx releases stamp newer IR versions on models than the installed onnxruntime may accept, although the
    graph itself uses nothing newer; then the session is built from a copy stamped with the newest IR version
    onnxruntime names in its error.
    """
    try:
        return _open(proto, optimize)
    except Exception as error:
        match = _IR_TOO_NEW.search(str(error))
        if match is None:
            raise
        stamped = ModelProto()
        stamped.CopyFrom(proto)
        stamped.ir_version = int(match.group(2))
        return _open(stamped, optimize)


def _open(proto: ModelProto, optimize: bool):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4   # fatal only: our own messages explain failures in one line
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    providers = ["CPUExecutionProvider"]
    if serialized_size(proto) < _SERIALIZE_LIMIT:
        return ort.InferenceSession(proto.SerializeToString(), options, providers=providers)
    import onnx

    with tempfile.TemporaryDirectory(prefix="edgefit-") as folder:
        path = Path(folder) / "model.onnx"
        copy = ModelProto()
        copy.CopyFrom(proto)   # convert_model_to_external_data rewrites tensors in place; keep the caller's intact
        onnx.save_model(copy, str(path), save_as_external_data=True, location="model.onnx.data")
        # onnxruntime reads initializers into its own memory while building the session, so the folder can go.
        return ort.InferenceSession(str(path), options, providers=providers)
