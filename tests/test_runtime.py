"""edgefit's onnxruntime sessions: large weights are handed over as arrays, with the same results."""

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
