"""edgefit's onnxruntime sessions: large weights are handed over as arrays, with the same results; int8 kernels
compute exact products."""

import numpy as np
import onnx
from helpers import model, weight
from onnx import helper

from edgefit import runtime


def mlp():
    """x [2, 64] -> MatMul 64x128 -> Add bias -> Relu -> MatMul 128x10, with an fp16 and an int64 constant too."""
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Add", ["h", "b1"], ["a"]),
             helper.make_node("Relu", ["a"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["y"]),
             helper.make_node("Cast", ["w3"], ["w3f"], to=onnx.TensorProto.FLOAT),
             helper.make_node("MatMul", ["r", "w3f"], ["z"])]
    return model(nodes, [("x", [2, 64])], [("y", None), ("z", None)],
                 [weight("w1", 64, 128, seed=1), weight("b1", 128, seed=2), weight("w2", 128, 10, seed=3),
                  weight("w3", 128, 10, dtype=np.float16, seed=4)])


def test_handed_over_weights_give_the_same_outputs(monkeypatch):
    proto = mlp()
    feed = {"x": np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)}
    inline = runtime.session(proto).run(None, feed)
    monkeypatch.setattr(runtime, "_HAND_OVER_ABOVE_BYTES", 1)
    monkeypatch.setattr(runtime, "_HAND_OVER_TENSOR_BYTES", 1000)   # w1, w2 and w3 (fp16); b1 (512 B) stays
    handed = runtime.session(proto)
    assert [len(part) for part in handed.edgefit_weights] == [3, 3]
    for expected, got in zip(inline, handed.run(None, feed)):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert len(proto.graph.initializer) == 4 and all(t.raw_data for t in proto.graph.initializer)   # untouched


def test_too_new_ir_version_is_restamped_without_copying_the_model():
    proto = mlp()
    proto.ir_version = 99
    session = runtime.session(proto)
    assert [o.name for o in session.get_outputs()] == ["y", "z"]
    assert proto.ir_version == 99


def qdq_matmul(depth: int):
    """x [1, depth] -> QDQ (int8, scale 1/127) -> MatMul by DQ(int8 weights all 127, scale 1/127) -> QDQ (scale
    depth/127), as onnxruntime's QDQ quantizer writes it. For x = 1: every int8 is 127 and y = depth exactly."""
    def scalar(name, value, dtype):
        return onnx.numpy_helper.from_array(np.array(value, dtype), name)
    inits = [scalar("xs", 1 / 127, np.float32), scalar("zp", 0, np.int8), scalar("ys", depth / 127, np.float32),
             onnx.numpy_helper.from_array(np.full((depth, 4), 127, np.int8), "wq"), scalar("ws", 1 / 127, np.float32)]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "zp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "zp"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "zp"], ["w"]),
             helper.make_node("MatMul", ["xd", "w"], ["m"]),
             helper.make_node("QuantizeLinear", ["m", "ys", "zp"], ["mq"]),
             helper.make_node("DequantizeLinear", ["mq", "ys", "zp"], ["y"])]
    return model(nodes, [("x", [1, depth])], [("y", [1, 4])], inits, opset=13)


def test_optimised_int8_sessions_compute_exact_products():
    """onnxruntime fuses the QDQ MatMul into an integer kernel and shifts x's int8 127 to uint8 255; on x86 CPUs
    without VNNI its fast uint8 x int8 kernel adds 255 * 127 + 255 * 127 = 64,770 in int16, clamped to 32,767.
    There, 32 clamped pairs minus the zero-point term 128 * 127 * 64 leave 8,160 instead of 1,032,256: y = 64/127
    (measured on an AVX2 EPYC). edgefit's sessions use the exact kernel, so y = 64 on every CPU."""
    proto = qdq_matmul(64)
    x = {"x": np.ones((1, 64), np.float32)}
    np.testing.assert_array_equal(runtime.session(proto, optimize=True).run(None, x)[0], np.full((1, 4), 64.0))
    np.testing.assert_array_equal(runtime.session(proto).run(None, x)[0], np.full((1, 4), 64.0))   # float QDQ


def test_quantized_transformer_the_exact_int8_rewrite_refuses_still_gets_its_fidelity(tmp_path, capsys):
    """onnxruntime 1.32's exact-int8 graph rewrite fails to load the int8 sample ViT (torch dynamo export:
    'AddInitializedOrtValue Attempt to replace the existing tensor'); fidelity then runs the QDQ graph unoptimised,
    which computes the same quantized values."""
    import json
    from pathlib import Path

    from edgefit.cli import main

    vit = Path(__file__).parent.parent / "sample_models" / "digits_vit.onnx"
    assert main(["quantize", str(vit), "-o", str(tmp_path / "vit.int8.onnx"), "--json"]) == 0
    fidelity = json.loads(capsys.readouterr().out)["fidelity"]
    assert fidelity["top1_agreement"] == 1.0 and fidelity["cosine"] > 0.99
    quantized = onnx.load(tmp_path / "vit.int8.onnx")
    assert sum(n.op_type == "DequantizeLinear" for n in quantized.graph.node) > 20   # really an int8 model
