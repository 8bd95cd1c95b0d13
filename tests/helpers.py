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
