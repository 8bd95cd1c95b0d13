#!/usr/bin/env python3
"""Regenerate edgefit's bundled sample models.

Usage::

    python sample_models/build.py

Writes, next to this script:

* ``kws_dscnn.onnx``, ``vww_mobilenet_v1_025.onnx``, ``ic_resnet8.onnx`` and
  ``ad_autoencoder.onnx``: the four MLPerf Tiny reference architectures
  (re-expressed from the layer descriptions of the MLPerf Tiny reference
  ``keras_model.py`` files) with seeded random weights.  They exist for
  footprint analysis, not accuracy.  BatchNormalization is kept as real
  ``BatchNormalization`` nodes so that BN-folding passes have work to do.
* ``digits_cnn.onnx``: a tiny CNN really trained here, in pure numpy, on
  scikit-learn's bundled 8x8 handwritten digits, plus ``digits_eval.npz``
  (held-out set) and ``digits_calib.npz`` (calibration images).
* ``README.md``: a description of each model, including the parameter counts
  and the measured digits test accuracy.

The script is deterministic: fixed seeds, no network access, no timestamps,
so running it twice produces byte-identical files.  scikit-learn is needed
only here (the ``samples`` extra); the generated files are committed.
"""

from __future__ import annotations

import os

# Single-threaded BLAS keeps floating-point reductions in a fixed order, so
# the trained digits weights do not depend on the machine's core count.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import io  # noqa: E402
import time  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

OUT_DIR = Path(__file__).resolve().parent
OPSET = 13
IR_VERSION = 8
PRODUCER = "edgefit sample_models/build.py"
BN_EPSILON = 1e-3  # Keras BatchNormalization default
DIGITS_EPOCHS = 40
MLPERF_SOURCE = (
    "Source: MLPerf Tiny reference implementation (mlcommons/tiny, "
    "benchmark/training/*/keras_model.py), re-expressed in ONNX by "
    "edgefit sample_models/build.py. Weights are seeded random (He-normal), "
    "for footprint analysis only, not accuracy. Dropout is the identity at "
    "inference and is omitted."
)


# --------------------------------------------------------------------------
# Graph construction helpers
# --------------------------------------------------------------------------


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TensorFlow/Keras 'same' padding: (output size, pad_begin, pad_end)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


class GraphBuilder:
    """Tiny helper that appends NCHW nodes and tracks tensor shapes."""

    def __init__(self, seed: int, input_shape: list[int | str], input_name: str = "input"):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.shapes: dict[str, list] = {input_name: list(input_shape)}
        self.input_name = input_name

    # -- parameters -------------------------------------------------------
    def _init(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(array, dtype=np.float32), name))
        return name

    def _he(self, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
        return self.rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)

    def _bias(self, n: int) -> np.ndarray:
        return self.rng.normal(0.0, 0.01, size=n)

    # -- layers -----------------------------------------------------------
    def conv(self, x: str, name: str, out_ch: int, kernel: tuple[int, int],
             stride: int = 1, depthwise: bool = False) -> str:
        """Keras Conv2D / DepthwiseConv2D with padding='same' and a bias."""
        n, c, h, w = self.shapes[x]
        kh, kw = kernel
        group = c if depthwise else 1
        if depthwise:
            out_ch = c
        oh, pt, pb = same_pads(h, kh, stride)
        ow, pl, pr = same_pads(w, kw, stride)
        wshape = (out_ch, c // group, kh, kw)
        weight = self._init(f"{name}.weight", self._he(wshape, (c // group) * kh * kw))
        bias = self._init(f"{name}.bias", self._bias(out_ch))
        attrs = dict(kernel_shape=[kh, kw], strides=[stride, stride], pads=[pt, pl, pb, pr],
                     dilations=[1, 1], group=group)
        self.nodes.append(helper.make_node("Conv", [x, weight, bias], [name], name=name, **attrs))
        self.shapes[name] = [n, out_ch, oh, ow]
        return name

    def gemm(self, x: str, name: str, out_features: int) -> str:
        """Keras Dense as Gemm(transB=1) with weight [out, in] and a bias."""
        n, fin = self.shapes[x]
        weight = self._init(f"{name}.weight", self._he((out_features, fin), fin))
        bias = self._init(f"{name}.bias", self._bias(out_features))
        self.nodes.append(helper.make_node("Gemm", [x, weight, bias], [name], name=name,
                                           alpha=1.0, beta=1.0, transB=1))
        self.shapes[name] = [n, out_features]
        return name

    def bn(self, x: str, name: str | None = None) -> str:
        name = name or f"{x}_bn"
        c = self.shapes[x][1]
        scale = self._init(f"{name}.scale", self.rng.uniform(0.8, 1.2, size=c))
        bias = self._init(f"{name}.bias", self.rng.normal(0.0, 0.05, size=c))
        mean = self._init(f"{name}.mean", self.rng.normal(0.0, 0.1, size=c))
        var = self._init(f"{name}.var", self.rng.uniform(0.5, 1.5, size=c))
        self.nodes.append(helper.make_node("BatchNormalization", [x, scale, bias, mean, var],
                                           [name], name=name, epsilon=BN_EPSILON))
        self.shapes[name] = list(self.shapes[x])
        return name

    def relu(self, x: str, name: str | None = None) -> str:
        name = name or f"{x}_relu"
        self.nodes.append(helper.make_node("Relu", [x], [name], name=name))
        self.shapes[name] = list(self.shapes[x])
        return name

    def add(self, a: str, b: str, name: str) -> str:
        assert self.shapes[a] == self.shapes[b], (self.shapes[a], self.shapes[b])
        self.nodes.append(helper.make_node("Add", [a, b], [name], name=name))
        self.shapes[name] = list(self.shapes[a])
        return name

    def avgpool_full(self, x: str, name: str = "avgpool") -> str:
        n, c, h, w = self.shapes[x]
        self.nodes.append(helper.make_node("AveragePool", [x], [name], name=name,
                                           kernel_shape=[h, w], strides=[h, w], pads=[0, 0, 0, 0]))
        self.shapes[name] = [n, c, 1, 1]
        return name

    def flatten(self, x: str, name: str = "flatten") -> str:
        shape = self.shapes[x]
        self.nodes.append(helper.make_node("Flatten", [x], [name], name=name, axis=1))
        self.shapes[name] = [shape[0], int(np.prod(shape[1:]))]
        return name

    def softmax(self, x: str, name: str = "softmax") -> str:
        self.nodes.append(helper.make_node("Softmax", [x], [name], name=name, axis=-1))
        self.shapes[name] = list(self.shapes[x])
        return name

    # -- model ------------------------------------------------------------
    def finish(self, output: str, graph_name: str, doc: str, output_name: str = "output") -> onnx.ModelProto:
        # Rename the last node's output to the public graph-output name.
        last = self.nodes[-1]
        assert last.output[0] == output
        last.output[0] = output_name
        self.shapes[output_name] = self.shapes[output]
        graph = helper.make_graph(
            self.nodes,
            graph_name,
            [helper.make_tensor_value_info(self.input_name, TensorProto.FLOAT, self.shapes[self.input_name])],
            [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, self.shapes[output_name])],
            initializer=self.initializers,
            doc_string=doc,
        )
        return make_model(graph)


def make_model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name=PRODUCER, producer_version="1")
    model.ir_version = IR_VERSION
    model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return model


# --------------------------------------------------------------------------
# The four MLPerf Tiny reference models
# --------------------------------------------------------------------------


def build_kws_dscnn() -> onnx.ModelProto:
    b = GraphBuilder(seed=1001, input_shape=[1, 1, 49, 10])
    x = b.conv("input", "conv1", 64, (10, 4), stride=2)
    x = b.relu(b.bn(x))
    for i in range(1, 5):
        x = b.conv(x, f"block{i}_dw", 0, (3, 3), depthwise=True)
        x = b.relu(b.bn(x))
        x = b.conv(x, f"block{i}_pw", 64, (1, 1))
        x = b.relu(b.bn(x))
    x = b.avgpool_full(x)  # 25x5 map -> 1x1
    x = b.flatten(x)
    x = b.softmax(b.gemm(x, "fc", 12))
    doc = ("Keyword spotting DS-CNN (MLPerf Tiny KWS reference): input 1x1x49x10 MFCC "
           "(49 frames x 10 coefficients, NCHW); Conv 64 10x4 stride 2 'same' + BN + ReLU; "
           "4 x [DepthwiseConv 3x3 'same' + BN + ReLU + Conv 1x1 64 + BN + ReLU]; "
           "AveragePool 25x5; Flatten; Dense 12 + Softmax. " + MLPERF_SOURCE)
    return b.finish(x, "kws_dscnn", doc)


def build_vww_mobilenet_v1_025() -> onnx.ModelProto:
    b = GraphBuilder(seed=1002, input_shape=[1, 3, 96, 96])
    x = b.conv("input", "conv1", 8, (3, 3), stride=2)
    x = b.relu(b.bn(x))
    # (pointwise filters, depthwise stride) for MobileNetV1 with alpha = 0.25
    blocks = [(16, 1), (32, 2), (32, 1), (64, 2), (64, 1), (128, 2),
              (128, 1), (128, 1), (128, 1), (128, 1), (128, 1), (256, 2), (256, 1)]
    for i, (filters, stride) in enumerate(blocks, start=1):
        x = b.conv(x, f"block{i}_dw", 0, (3, 3), stride=stride, depthwise=True)
        x = b.relu(b.bn(x))
        x = b.conv(x, f"block{i}_pw", filters, (1, 1))
        x = b.relu(b.bn(x))
    x = b.avgpool_full(x)  # 3x3 map -> 1x1
    x = b.flatten(x)
    x = b.softmax(b.gemm(x, "fc", 2))
    doc = ("Visual wake words MobileNetV1 width multiplier 0.25 (MLPerf Tiny VWW reference): "
           "input 1x3x96x96 RGB (NCHW); Conv 8 3x3 stride 2 + BN + ReLU; 13 depthwise-separable "
           "blocks [DepthwiseConv 3x3 + BN + ReLU + Conv 1x1 + BN + ReLU] with 16-32-32-64-64-128"
           "-128x5-256-256 filters; AveragePool 3x3; Flatten; Dense 2 + Softmax. " + MLPERF_SOURCE)
    return b.finish(x, "vww_mobilenet_v1_025", doc)


def build_ic_resnet8() -> onnx.ModelProto:
    b = GraphBuilder(seed=1003, input_shape=[1, 3, 32, 32])
    x = b.conv("input", "conv1", 16, (3, 3))
    x = b.relu(b.bn(x))
    for stage, (filters, stride) in enumerate([(16, 1), (32, 2), (64, 2)], start=1):
        y = b.conv(x, f"stage{stage}_conv1", filters, (3, 3), stride=stride)
        y = b.relu(b.bn(y))
        y = b.conv(y, f"stage{stage}_conv2", filters, (3, 3))
        y = b.bn(y)
        if stride != 1 or b.shapes[x][1] != filters:
            x = b.conv(x, f"stage{stage}_shortcut", filters, (1, 1), stride=stride)
        x = b.relu(b.add(x, y, f"stage{stage}_add"))
    x = b.avgpool_full(x)  # 8x8 map -> 1x1
    x = b.flatten(x)
    x = b.softmax(b.gemm(x, "fc", 10))
    doc = ("Image classification ResNet-8 for CIFAR-10 (MLPerf Tiny IC reference): input 1x3x32x32 "
           "(NCHW); Conv 16 3x3 + BN + ReLU; 3 residual stages of 16/32/64 filters, each "
           "[Conv 3x3 + BN + ReLU + Conv 3x3 + BN] + shortcut (1x1 Conv stride 2 when the shape "
           "changes) + Add + ReLU; AveragePool 8x8; Flatten; Dense 10 + Softmax. " + MLPERF_SOURCE)
    return b.finish(x, "ic_resnet8", doc)


def build_ad_autoencoder() -> onnx.ModelProto:
    b = GraphBuilder(seed=1004, input_shape=[1, 640])
    x = "input"
    widths = [128, 128, 128, 128, 8, 128, 128, 128, 128]
    for i, width in enumerate(widths, start=1):
        x = b.gemm(x, f"dense{i}", width)
        x = b.relu(b.bn(x))
    x = b.gemm(x, "dense_out", 640)
    doc = ("Anomaly detection fully-connected autoencoder (MLPerf Tiny AD reference): input 1x640 "
           "(5 frames x 128 log-mel bins); Dense 128 x4, bottleneck Dense 8, Dense 128 x4, each "
           "+ BN + ReLU; Dense 640 output (linear). Dense is Gemm(transB=1), BN on 2-D tensors is "
           "BatchNormalization. " + MLPERF_SOURCE)
    return b.finish(x, "ad_autoencoder", doc)


# --------------------------------------------------------------------------
# Parameter counting (plain onnx; mirrors tests/test_sample_models.py)
# --------------------------------------------------------------------------


def param_counts(model: onnx.ModelProto) -> tuple[int, int]:
    """(params with BN, params with BN folded into the preceding Conv/Gemm)."""
    sizes = {t.name: int(np.prod(t.dims, dtype=np.int64)) for t in model.graph.initializer}
    total = sum(sizes.values())
    producer = {out: node for node in model.graph.node for out in node.output}
    bn_params = added_bias = 0
    for node in model.graph.node:
        if node.op_type != "BatchNormalization":
            continue
        bn_params += sum(sizes[name] for name in node.input[1:5])
        prev = producer.get(node.input[0])
        if prev is not None and prev.op_type in ("Conv", "Gemm") and (len(prev.input) < 3 or not prev.input[2]):
            added_bias += sizes[node.input[1]]
    return total, total - bn_params + added_bias


# --------------------------------------------------------------------------
# Digits CNN: trained in pure numpy
# --------------------------------------------------------------------------


def im2col(x: np.ndarray, k: int, stride: int, pad: int) -> tuple[np.ndarray, int, int]:
    """(N, C, H, W) -> (N*Ho*Wo, C*k*k), column order matching ONNX Conv weights."""
    n, c, h, w = x.shape
    ho = (h + 2 * pad - k) // stride + 1
    wo = (w + 2 * pad - k) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cols = np.empty((n, c, k, k, ho, wo), dtype=x.dtype)
    for i in range(k):
        for j in range(k):
            cols[:, :, i, j] = xp[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride]
    return cols.transpose(0, 4, 5, 1, 2, 3).reshape(n * ho * wo, c * k * k), ho, wo


def col2im(dcols: np.ndarray, shape: tuple[int, ...], k: int, stride: int, pad: int) -> np.ndarray:
    n, c, h, w = shape
    ho = (h + 2 * pad - k) // stride + 1
    wo = (w + 2 * pad - k) // stride + 1
    d = dcols.reshape(n, ho, wo, c, k, k).transpose(0, 3, 4, 5, 1, 2)
    dxp = np.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=dcols.dtype)
    for i in range(k):
        for j in range(k):
            dxp[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride] += d[:, :, i, j]
    return dxp[:, :, pad:pad + h, pad:pad + w]


def conv_forward(x, weight, bias, stride, pad):
    cols, ho, wo = im2col(x, weight.shape[2], stride, pad)
    out = cols @ weight.reshape(weight.shape[0], -1).T + bias
    return out.reshape(x.shape[0], ho, wo, -1).transpose(0, 3, 1, 2), cols


def conv_backward(dout, cols, x_shape, weight, stride, pad):
    cout = weight.shape[0]
    dmat = dout.transpose(0, 2, 3, 1).reshape(-1, cout)
    dweight = (dmat.T @ cols).reshape(weight.shape)
    dbias = dmat.sum(axis=0)
    dx = col2im(dmat @ weight.reshape(cout, -1), x_shape, weight.shape[2], stride, pad)
    return dx, dweight, dbias


DIGITS_LAYERS = (("conv1", 1, 1), ("conv2", 2, 1))  # (name, stride, pad); kernels are 3x3


def digits_forward(params: dict[str, np.ndarray], x: np.ndarray, keep: bool = False):
    cache = {}
    h, cache["cols1"] = conv_forward(x, params["conv1.weight"], params["conv1.bias"], 1, 1)
    h1 = np.maximum(h, 0)
    h, cache["cols2"] = conv_forward(h1, params["conv2.weight"], params["conv2.bias"], 2, 1)
    h2 = np.maximum(h, 0)
    flat = h2.reshape(x.shape[0], -1)
    logits = flat @ params["fc.weight"].T + params["fc.bias"]
    if keep:
        cache.update(x=x, h1=h1, h2=h2, flat=flat)
        return logits, cache
    return logits


def digits_backward(params, cache, dlogits):
    grads = {}
    grads["fc.weight"] = dlogits.T @ cache["flat"]
    grads["fc.bias"] = dlogits.sum(axis=0)
    dh2 = (dlogits @ params["fc.weight"]).reshape(cache["h2"].shape) * (cache["h2"] > 0)
    dh1, grads["conv2.weight"], grads["conv2.bias"] = conv_backward(
        dh2, cache["cols2"], cache["h1"].shape, params["conv2.weight"], 2, 1)
    dh1 = dh1 * (cache["h1"] > 0)
    _, grads["conv1.weight"], grads["conv1.bias"] = conv_backward(
        dh1, cache["cols1"], cache["x"].shape, params["conv1.weight"], 1, 1)
    return grads


def train_digits(x_train, y_train, seed=0, epochs=None, batch_size=32, lr=3e-3, weight_decay=1e-4):
    epochs = DIGITS_EPOCHS if epochs is None else epochs
    rng = np.random.default_rng(seed)

    def he(shape, fan_in):
        return rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)

    params = {
        "conv1.weight": he((8, 1, 3, 3), 9), "conv1.bias": np.zeros(8),
        "conv2.weight": he((16, 8, 3, 3), 72), "conv2.bias": np.zeros(16),
        "fc.weight": he((10, 256), 256) * 0.5, "fc.bias": np.zeros(10),
    }
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(v) for k, v in params.items()}
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    step = 0
    n = x_train.shape[0]
    for epoch in range(epochs):
        order = rng.permutation(n)
        lr_t = lr * 0.5 * (1 + np.cos(np.pi * epoch / epochs))  # cosine decay
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            xb, yb = x_train[idx], y_train[idx]
            logits, cache = digits_forward(params, xb, keep=True)
            z = logits - logits.max(axis=1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(len(idx)), yb] -= 1.0
            grads = digits_backward(params, cache, p / len(idx))
            step += 1
            for k in params:
                g = grads[k] + (weight_decay * params[k] if k.endswith("weight") else 0.0)
                m[k] = beta1 * m[k] + (1 - beta1) * g
                v[k] = beta2 * v[k] + (1 - beta2) * g * g
                mhat = m[k] / (1 - beta1 ** step)
                vhat = v[k] / (1 - beta2 ** step)
                params[k] = params[k] - lr_t * mhat / (np.sqrt(vhat) + eps)
    return {k: val.astype(np.float32) for k, val in params.items()}


def build_digits_model(params: dict[str, np.ndarray], test_accuracy: float, n_test: int) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(params[k], k) for k in
             ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc.weight", "fc.bias")]
    conv = dict(kernel_shape=[3, 3], dilations=[1, 1], group=1, pads=[1, 1, 1, 1])
    nodes = [
        helper.make_node("Conv", ["input", "conv1.weight", "conv1.bias"], ["conv1"], name="conv1",
                         strides=[1, 1], **conv),
        helper.make_node("Relu", ["conv1"], ["conv1_relu"], name="conv1_relu"),
        helper.make_node("Conv", ["conv1_relu", "conv2.weight", "conv2.bias"], ["conv2"], name="conv2",
                         strides=[2, 2], **conv),
        helper.make_node("Relu", ["conv2"], ["conv2_relu"], name="conv2_relu"),
        helper.make_node("Flatten", ["conv2_relu"], ["flatten"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flatten", "fc.weight", "fc.bias"], ["logits"], name="fc",
                         alpha=1.0, beta=1.0, transB=1),
    ]
    doc = ("Digits CNN trained by edgefit sample_models/build.py in pure numpy (Adam, seed 0) on "
           "scikit-learn's bundled 8x8 handwritten digits (load_digits), pixels scaled to [0, 1]. "
           "Input batchx1x8x8 (NCHW); Conv 8 3x3 pad 1 + ReLU; Conv 16 3x3 stride 2 pad 1 + ReLU; "
           f"Flatten; Gemm 10 (logits). Test accuracy {test_accuracy:.4f} on {n_test} held-out "
           "images (digits_eval.npz).")
    graph = helper.make_graph(
        nodes, "digits_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        initializer=inits, doc_string=doc,
    )
    return make_model(graph)


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Like np.savez, but with fixed zip timestamps so output is byte-identical."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, array in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits as float32 Nx1x8x8 in [0, 1], split 80/20 with a fixed seed: (x_train, y_train,
    x_test, y_test). digits_eval.npz is the test part; every digits sample model trains on the train part."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover
        raise SystemExit("rebuilding the sample models needs scikit-learn: pip install 'edgefit[samples]'") from exc
    digits = load_digits()
    x_all = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]  # N x 1 x 8 x 8 in [0, 1]
    y_all = digits.target.astype(np.int64)
    order = np.random.default_rng(20240501).permutation(len(y_all))
    n_train = int(round(0.8 * len(y_all)))
    train_idx, test_idx = np.sort(order[:n_train]), np.sort(order[n_train:])
    return x_all[train_idx], y_all[train_idx], x_all[test_idx], y_all[test_idx]


def build_digits() -> tuple[onnx.ModelProto, dict]:
    x_train, y_train, x_test, y_test = digits_split()

    t0 = time.perf_counter()
    params = train_digits(x_train.astype(np.float64), y_train)
    train_seconds = time.perf_counter() - t0

    # Reference accuracy: numpy float32 forward with the exported float32 weights.
    pred_np = digits_forward(params, x_test).argmax(axis=1)
    accuracy = float((pred_np == y_test).mean())
    train_acc = float((digits_forward(params, x_train).argmax(axis=1) == y_train).mean())

    model = build_digits_model(params, accuracy, len(y_test))

    import onnxruntime as ort
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    pred_ort = sess.run(None, {"input": x_test})[0].argmax(axis=1)
    if not np.array_equal(pred_ort, pred_np):
        raise SystemExit("onnxruntime predictions differ from the numpy reference")
    if accuracy < 0.95:
        raise SystemExit(f"digits test accuracy {accuracy:.4f} < 0.95")

    calib = x_train[np.random.default_rng(7).choice(len(x_train), size=100, replace=False)]
    save_npz(OUT_DIR / "digits_eval.npz", input=x_test.astype(np.float32), labels=y_test.astype(np.int64))
    save_npz(OUT_DIR / "digits_calib.npz", input=calib.astype(np.float32))
    info = dict(accuracy=accuracy, train_accuracy=train_acc, n_train=len(y_train), n_test=len(y_test),
                n_correct=int((pred_np == y_test).sum()), seconds=train_seconds)
    return model, info


# --------------------------------------------------------------------------
# README
# --------------------------------------------------------------------------


README_TEMPLATE = """\
# edgefit sample models

Generated by `python sample_models/build.py` (do not edit the files here by
hand; this README is generated too). The build is deterministic: fixed seeds,
no network, no timestamps, so rerunning it reproduces every file
byte-for-byte. Rebuilding needs scikit-learn (`pip install 'edgefit[samples]'`)
for the digits data set; using the committed files does not. All models are
ONNX opset {opset}, IR version {ir}, float32, NCHW, with graph input `input`.

The four MLPerf Tiny models re-express the architectures of the MLPerf Tiny
reference `keras_model.py` files (mlcommons/tiny) with **seeded random
weights** (He-normal kernels, small random biases, BN mean ~0 and variance
~1): they exist for footprint analysis, not accuracy. Every Conv/Dense has a
bias, as Keras layers do by default, and BatchNormalization is kept as real
`BatchNormalization` nodes (epsilon 1e-3) so that BN-folding passes have
something to fold. "Params with BN" counts all initializer elements (BN scale,
bias, mean and variance each count, as Keras counts them); "BN folded" is the
count after folding each BN into the preceding Conv/Gemm bias. Dropout is the
identity at inference and is omitted from the graphs.

**`kws_dscnn.onnx`**: keyword spotting DS-CNN. Input `1x1x49x10` (49 MFCC
frames x 10 coefficients). Conv 64 10x4 stride 2 'same' + BN + ReLU, then 4
blocks of [DepthwiseConv 3x3 'same' + BN + ReLU + Conv 1x1 64 + BN + ReLU],
AveragePool over the 25x5 map, Flatten, Dense 12 + Softmax; output `1x12`.
Params: **{kws[0]:,}** with BN, **{kws[1]:,}** with BN folded (MLPerf Tiny
reference: 24,908 / 22,604).

**`vww_mobilenet_v1_025.onnx`**: visual wake words MobileNetV1, width
multiplier 0.25. Input `1x3x96x96`. Conv 8 3x3 stride 2 + BN + ReLU, 13
depthwise-separable blocks (16, 32, 32, 64, 64, 128, 128 x5, 256, 256
pointwise filters; stride 2 at the 2nd, 4th, 6th and 12th), AveragePool over
the 3x3 map, Flatten, Dense 2 + Softmax; output `1x2`. Params:
**{vww[0]:,}** with BN, **{vww[1]:,}** with BN folded (reference: 221,794 /
210,850).

**`ic_resnet8.onnx`**: image classification ResNet-8 for CIFAR-10. Input
`1x3x32x32`. Conv 16 3x3 + BN + ReLU, then three residual stages with 16, 32
and 64 filters, each [Conv 3x3 + BN + ReLU + Conv 3x3 + BN] added to a
shortcut (identity in stage 1, 1x1 Conv stride 2 in stages 2 and 3) + ReLU,
AveragePool 8x8, Flatten, Dense 10 + Softmax; output `1x10`. Params:
**{ic[0]:,}** with BN, **{ic[1]:,}** with BN folded (reference: 78,666 /
77,706).

**`ad_autoencoder.onnx`**: anomaly detection fully-connected autoencoder.
Input `1x640` (5 frames x 128 log-mel bins). Dense 128 x4, bottleneck Dense 8,
Dense 128 x4, each + BN + ReLU, then a linear Dense 640; output `1x640`. Dense
layers are `Gemm(transB=1)` and BN on the 2-D activations is
`BatchNormalization`. Params: **{ad[0]:,}** with BN, **{ad[1]:,}** with BN
folded (reference: 269,992 / 265,864).

**`digits_cnn.onnx`** (+ `digits_eval.npz`, `digits_calib.npz`): a small CNN
really trained at build time, in pure numpy (im2col convolutions, Adam with
cosine learning-rate decay, minibatch 32, {epochs} epochs, seed 0), on
scikit-learn's bundled 8x8 handwritten digits (`load_digits`, pixels scaled to
[0, 1]), using a fixed 80/20 split ({n_train} train / {n_test} test images).
Input `batchx1x8x8` (symbolic batch dimension `batch`). Conv 8 3x3 pad 1 +
ReLU, Conv 16 3x3 stride 2 pad 1 + ReLU, Flatten, Gemm 10; output `logits`
(`batchx10`, no softmax). {digits_params:,} params, no BN. Measured test
accuracy: **{acc_pct:.2f}%** ({n_correct}/{n_test}), identical under numpy and
onnxruntime (train accuracy {train_pct:.2f}%). `digits_eval.npz` holds the
held-out set (`input`: float32 Nx1x8x8 in [0, 1], `labels`: int64 N);
`digits_calib.npz` holds 100 training images (`input`) for quantization
calibration.

To rebuild everything: `python sample_models/build.py`.
"""

def main() -> None:
    builders = {
        "kws_dscnn": build_kws_dscnn,
        "vww_mobilenet_v1_025": build_vww_mobilenet_v1_025,
        "ic_resnet8": build_ic_resnet8,
        "ad_autoencoder": build_ad_autoencoder,
    }
    counts = {}
    for name, build in builders.items():
        model = build()
        onnx.save_model(model, OUT_DIR / f"{name}.onnx")
        counts[name] = param_counts(model)
        print(f"{name}.onnx: {counts[name][0]:,} params with BN, {counts[name][1]:,} with BN folded")

    model, info = build_digits()
    onnx.save_model(model, OUT_DIR / "digits_cnn.onnx")
    digits_params = param_counts(model)[0]
    print(f"digits_cnn.onnx: {digits_params:,} params, test accuracy {info['accuracy']:.4f} "
          f"({info['n_correct']}/{info['n_test']}), trained in {info['seconds']:.1f} s")

    readme = README_TEMPLATE.format(
        opset=OPSET, ir=IR_VERSION,
        kws=counts["kws_dscnn"], vww=counts["vww_mobilenet_v1_025"],
        ic=counts["ic_resnet8"], ad=counts["ad_autoencoder"],
        epochs=DIGITS_EPOCHS, n_train=info["n_train"], n_test=info["n_test"],
        digits_params=digits_params, acc_pct=100 * info["accuracy"], n_correct=info["n_correct"],
        train_pct=100 * info["train_accuracy"],
    )
    path = OUT_DIR / "README.md"
    # build_transformer.py writes its model's section between these markers; it is kept as it is.
    begin, end = "<!-- digits_vit: written by build_transformer.py -->", "<!-- end digits_vit -->"
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    if begin in old and end in old:
        readme += "\n" + old[old.index(begin):old.index(end) + len(end)] + "\n"
    path.write_text(readme, encoding="utf-8")


if __name__ == "__main__":
    main()
