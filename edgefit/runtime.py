"""onnxruntime sessions for edgefit's own runs (shape fallback, fidelity, calibration). Imported lazily."""

from __future__ import annotations

import re

from onnx import ModelProto

_IR_TOO_NEW = re.compile(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)")


def session(proto: ModelProto, *, optimize: bool = False):
    """An onnxruntime CPU session for an in-memory model.

    onnx releases stamp newer IR versions on models than the installed onnxruntime may accept, although the
    graph itself uses nothing newer; then the session is built from a copy stamped with the newest IR version
    onnxruntime names in its error.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as error:
        match = _IR_TOO_NEW.search(str(error))
        if match is None:
            raise
        stamped = ModelProto()
        stamped.CopyFrom(proto)
        stamped.ir_version = int(match.group(2))
        return ort.InferenceSession(stamped.SerializeToString(), options, providers=["CPUExecutionProvider"])
