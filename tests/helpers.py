"""Small model builders for tests: graphs are spelled out with onnx.helper so every number can be checked by hand."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgefit.cli import main

F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL


def weight(name: str, *shape: int, dtype=np.float32, seed: int = 0) -> onnx.TensorProto:
    return numpy_helper.from_array(np.random.default_rng(seed).standard_normal(shape).astype(dtype), name)


def model(nodes, inputs, outputs, initializers=(), opset: int = 17, value_info=()) -> onnx.ModelProto:
    """inputs/outputs: (name, shape) or (name, shape, elem_type)."""
    def info(spec):
        name, shape, *elem = spec
        return helper.make_tensor_value_info(name, elem[0] if elem else TensorProto.FLOAT, shape)
    graph = helper.make_graph(nodes, "test", [info(i) for i in inputs], [info(o) for o in outputs],
                              list(initializers), value_info=list(value_info))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def vi(name: str, elem: int, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def build(nodes, inputs, outputs, inits=(), opset: int = 17, ir_version: int | None = None,
          extra_opsets=()) -> onnx.ModelProto:
    """A model from value infos (see vi); unlike model(), inputs/outputs are ValueInfoProtos already."""
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    built = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *extra_opsets])
    if ir_version is not None:
        built.ir_version = ir_version
    return built


def save(built: onnx.ModelProto, tmp_path, name: str = "m.onnx"):
    """Write the model's bytes as they are: no checks, since some test models are broken on purpose."""
    path = tmp_path / name
    path.write_bytes(built.SerializeToString())
    return path


def run_cli(capsys, *args) -> tuple[int, str, str]:
    rc = main(["analyze", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def good_model() -> onnx.ModelProto:
    """x [1,3,8,8] -> Conv (W [4,3,3,3], bias [4]) -> Relu -> y [1,4,6,6]."""
    w = numpy_helper.from_array(np.random.default_rng(0).random((4, 3, 3, 3)).astype(np.float32), "W")
    b = numpy_helper.from_array(np.zeros(4, np.float32), "b")
    nodes = [helper.make_node("Conv", ["x", "W", "b"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    return build(nodes, [vi("x", F, ["N", 3, 8, 8])], [vi("y", F, ["N", 4, 6, 6])], [w, b])


def assert_usage_error(capsys, *args, mentions: str = "") -> str:
    rc, out, err = run_cli(capsys, *args)
    assert rc == 2, (rc, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error:"), err
    assert "Traceback" not in out + err
    assert mentions.lower() in lines[0].lower(), lines[0]
    return lines[0]


def const(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def rng_f32(*shape):
    return np.random.default_rng(0).random(shape).astype(np.float32)


def layer(fp, name):
    return next(l for l in fp.layers if l.name == name)


def strict_json(text: str):
    """json.loads that refuses the NaN / Infinity literals Python writes but JSON does not have."""
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def symbolic_matmul():
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")]
    return build(nodes, [vi("x", F, ["N", 4])], [vi("y", F, ["N", 8])], [const("W", rng_f32(4, 8))])


def state_body(scan_output=False):
    nodes = [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
             helper.make_node("MatMul", ["h_in", "W"], ["h_out"], name="body_mm")]
    outputs = [vi("cond_out", B, []), vi("h_out", F, [1, 4])]
    if scan_output:
        nodes.append(helper.make_node("Relu", ["h_out"], ["s_out"]))
        outputs.append(vi("s_out", F, [1, 4]))
    return helper.make_graph(nodes, "body", [vi("i", I64, []), vi("cond_in", B, []), vi("h_in", F, [1, 4])], outputs)


def qdq_conv(tmp_path):
    inits = [
        const("Wq", np.arange(216, dtype=np.int8).reshape(8, 3, 3, 3)),     # 216 int8
        const("Ws", np.full(8, 0.02, np.float32)),                          # per-channel scale, 8 float32
        const("Wz", np.zeros(8, np.int8)),                                  # per-channel zero point, 8 int8
        const("Bias", np.zeros(8, np.float32)),                             # 8 float32
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["Wq", "Ws", "Wz"], ["W"], axis=0),
        helper.make_node("Conv", ["x", "W", "Bias"], ["y"], name="conv", pads=[1, 1, 1, 1]),
    ]
    return build(nodes, [vi("x", F, [1, 3, 4, 4])], [vi("y", F, [1, 8, 4, 4])], inits, opset=13)


def image_classifier(rescale: float | None = None) -> onnx.ModelProto:
    """A 4-class image classifier as torch.onnx exports one (x [1,3,32,32] -> Conv 3x3 -> Relu -> Conv 3x3 stride 2
    -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> Softmax), weights from seed 0. The first convolution's
    weights have a positive mean (0.3), as trained first layers have a brightness component: inputs in [0, 1)
    then make activations several times larger than N(0, 1) inputs do, which is what breaks a model calibrated
    on N(0, 1) alone. `rescale`: the graph starts with x / rescale (a model that takes raw pixel values)."""
    rng = np.random.default_rng(0)
    arrays = {"w1": rng.standard_normal((8, 3, 3, 3)) * 0.3 + 0.3, "b1": rng.standard_normal(8) * 0.1,
              "w2": rng.standard_normal((16, 8, 3, 3)) * 0.2, "b2": rng.standard_normal(16) * 0.1,
              "wg": rng.standard_normal((16, 4)) * 0.1, "bg": rng.standard_normal(4) * 0.1}
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in arrays.items()]
    nodes = []
    first = "x"
    if rescale is not None:
        inits.append(numpy_helper.from_array(np.array(rescale, np.float32), "scale"))
        nodes.append(helper.make_node("Div", ["x", "scale"], ["x_scaled"], name="rescale"))
        first = "x_scaled"
    nodes += [helper.make_node("Conv", [first, "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
              helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
              helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv2"),
              helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
              helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
              helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
              helper.make_node("Gemm", ["f", "wg", "bg"], ["logits"], name="fc"),
              helper.make_node("Softmax", ["logits"], ["probs"], axis=1, name="softmax")]
    return model(nodes, [("x", [1, 3, 32, 32])], [("probs", [1, 4])], inits)


def paddle_classifier() -> onnx.ModelProto:
    """A 2-class text-direction classifier as paddle2onnx writes ch_ppocr_mobile_v2.0_cls: input x declared
    [-1, 3, -1, -1] (dim_value -1 on every free axis), opset 11, IR 6, no declared output shape."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "w1"),
             numpy_helper.from_array((rng.standard_normal((2, 8)) * 0.5).astype(np.float32), "w2")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("GlobalAveragePool", ["r1"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "w2"], ["logits"], transB=1),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 1, 1])
    for dim, size in zip(x.type.tensor_type.shape.dim, (-1, 3, -1, -1)):
        dim.dim_value = size
    graph = helper.make_graph(nodes, "paddle", [x], [helper.make_tensor_value_info("probs", TensorProto.FLOAT, None)],
                              inits)
    built = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    built.ir_version = 6
    return built
