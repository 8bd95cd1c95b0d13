"""Checks on the bundled sample models in sample_models/.

Parameter counts are computed here with plain onnx/numpy (independently of
edgefit's analyzer). Needs onnx, onnxruntime and numpy only (no scikit-learn).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"

# name -> (input shape, output shape, params with BN, params with BN folded)
MLPERF_MODELS = {
    "kws_dscnn": ((1, 1, 49, 10), (1, 12), 24_908, 22_604),
    "vww_mobilenet_v1_025": ((1, 3, 96, 96), (1, 2), 221_794, 210_850),
    "ic_resnet8": ((1, 3, 32, 32), (1, 10), 78_666, 77_706),
    "ad_autoencoder": ((1, 640), (1, 640), 269_992, 265_864),
}


def _load(name: str) -> onnx.ModelProto:
    return onnx.load(str(SAMPLES / f"{name}.onnx"))


def _sizes(model: onnx.ModelProto) -> dict[str, int]:
    return {t.name: int(np.prod(t.dims, dtype=np.int64)) for t in model.graph.initializer}


def param_counts(model: onnx.ModelProto) -> tuple[int, int]:
    """(total, BN-folded) parameter counts.

    total: sum of all initializer sizes (BN scale/bias/mean/var all count).
    folded: total - BN params + a bias vector for every Conv/Gemm that feeds a
    BN but has no bias of its own.
    """
    sizes = _sizes(model)
    total = sum(sizes.values())
    producer = {out: node for node in model.graph.node for out in node.output}
    bn_params = added = 0
    for node in model.graph.node:
        if node.op_type != "BatchNormalization":
            continue
        bn_params += sum(sizes[name] for name in node.input[1:5])
        prev = producer.get(node.input[0])
        if prev is not None and prev.op_type in ("Conv", "Gemm") and (len(prev.input) < 3 or not prev.input[2]):
            added += sizes[node.input[1]]
    return total, total - bn_params + added


def _session(name: str) -> ort.InferenceSession:
    return ort.InferenceSession(str(SAMPLES / f"{name}.onnx"), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", sorted(MLPERF_MODELS))
def test_mlperf_param_counts(name):
    _, _, with_bn, folded = MLPERF_MODELS[name]
    model = _load(name)
    # real, unfolded BatchNormalization nodes are present
    assert any(n.op_type == "BatchNormalization" for n in model.graph.node)
    assert param_counts(model) == (with_bn, folded)


@pytest.mark.parametrize("name", sorted(MLPERF_MODELS))
def test_mlperf_model_valid_and_runs(name):
    in_shape, out_shape, _, _ = MLPERF_MODELS[name]
    model = _load(name)
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 8
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 13)]
    assert "MLPerf Tiny" in model.graph.doc_string and "keras_model.py" in model.graph.doc_string

    (graph_input,) = model.graph.input
    assert graph_input.name == "input"
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = tuple(d.dim_value for d in graph_input.type.tensor_type.shape.dim)
    assert dims == in_shape  # batch dim fixed to 1

    assert all(t.data_type == onnx.TensorProto.FLOAT for t in model.graph.initializer)

    (out,) = _session(name).run(None, {"input": np.zeros(in_shape, dtype=np.float32)})
    assert out.shape == out_shape
    assert np.all(np.isfinite(out))
    if name != "ad_autoencoder":  # classifiers end in Softmax
        np.testing.assert_allclose(out.sum(axis=-1), 1.0, rtol=1e-5)


def test_digits_model_valid():
    model = _load("digits_cnn")
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 8
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 13)]
    assert model.graph.doc_string
    (graph_input,) = model.graph.input
    assert graph_input.name == "input"
    dims = [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    assert dims == ["batch", 1, 8, 8]
    assert param_counts(model) == (3_818, 3_818)

    (out,) = _session("digits_cnn").run(None, {"input": np.zeros((1, 1, 8, 8), dtype=np.float32)})
    assert out.shape == (1, 10)


def test_digits_accuracy():
    with np.load(SAMPLES / "digits_eval.npz") as data:
        x, labels = data["input"], data["labels"]
    assert x.dtype == np.float32 and x.ndim == 4 and x.shape[1:] == (1, 8, 8)
    assert labels.dtype == np.int64 and labels.shape == (x.shape[0],)
    assert x.min() >= 0.0 and x.max() <= 1.0
    (logits,) = _session("digits_cnn").run(None, {"input": x})
    accuracy = float((logits.argmax(axis=1) == labels).mean())
    assert accuracy >= 0.95


def test_digits_calibration_set():
    with np.load(SAMPLES / "digits_calib.npz") as data:
        x = data["input"]
    assert x.dtype == np.float32 and x.shape == (100, 1, 8, 8)
    assert x.min() >= 0.0 and x.max() <= 1.0
