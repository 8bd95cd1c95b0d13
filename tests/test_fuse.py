"""fuse: every rewrite keeps the model's function (checked in onnxruntime, rtol 1e-4) and emits standard ONNX."""

import numpy as np
import onnx
import pytest
from helpers import model, weight
from onnx import TensorProto, helper, numpy_helper

from edgefit.passes import fuse
from edgefit.passes.base import model_digest
from edgefit.runtime import session

RNG = np.random.default_rng(7)


def run(proto, feeds):
    return session(proto).run(None, feeds)


def fused_equivalent(proto, feeds):
    """Fuse, check the result is valid standard ONNX that computes the same outputs; return the result."""
    digest = model_digest(proto)
    result = fuse(proto)
    assert model_digest(proto) == digest, "fuse modified its input"
    onnx.checker.check_model(result.model, full_check=True)
    assert {o.domain for o in result.model.opset_import} <= {"", "ai.onnx"}
    assert all(n.domain in ("", "ai.onnx") for n in result.model.graph.node)
    for expected, got in zip(run(proto, feeds), run(result.model, feeds)):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    return result


def ops(proto):
    return [n.op_type for n in proto.graph.node]


def bn_params(prefix, channels):
    return [numpy_helper.from_array(RNG.uniform(0.5, 2.0, channels).astype(np.float32), f"{prefix}_scale"),
            numpy_helper.from_array(RNG.standard_normal(channels).astype(np.float32), f"{prefix}_bias"),
            numpy_helper.from_array(RNG.standard_normal(channels).astype(np.float32), f"{prefix}_mean"),
            numpy_helper.from_array(RNG.uniform(0.1, 3.0, channels).astype(np.float32), f"{prefix}_var")]


def bn_node(x, prefix, out):
    return helper.make_node("BatchNormalization", [x] + [f"{prefix}_{k}" for k in ("scale", "bias", "mean", "var")],
                            [out], epsilon=1e-3, name=prefix)


def image(*shape):
    return {"x": RNG.standard_normal(shape).astype(np.float32)}


@pytest.mark.parametrize("with_bias", [True, False])
def test_conv_batchnorm_folds_into_conv(with_bias):
    inputs = ["x", "W", "B"] if with_bias else ["x", "W"]
    proto = model([helper.make_node("Conv", inputs, ["c"], pads=[1, 1, 1, 1], name="conv"), bn_node("c", "bn", "y")],
                  [("x", ["N", 3, 8, 8])], [("y", ["N", 6, 8, 8])],
                  [weight("W", 6, 3, 3, 3), *bn_params("bn", 6)] + ([weight("B", 6, seed=1)] if with_bias else []))
    result = fused_equivalent(proto, image(2, 3, 8, 8))
    assert ops(result.model) == ["Conv"]
    assert result.stats.rewrites == {"batchnorm_folded": 1}
    assert result.stats.initializers_removed == (6 if with_bias else 5)


def test_grouped_conv_transpose_batchnorm_folds():
    proto = model([helper.make_node("ConvTranspose", ["x", "W"], ["c"], group=2, strides=[2, 2], name="up"),
                   bn_node("c", "bn", "y")],
                  [("x", [1, 4, 5, 5])], [("y", [1, 6, 10, 10])], [weight("W", 4, 3, 2, 2), *bn_params("bn", 6)])
    result = fused_equivalent(proto, image(1, 4, 5, 5))
    assert ops(result.model) == ["ConvTranspose"]


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_batchnorm_folds_into_gemm(trans_b):
    b_shape = (5, 7) if trans_b else (7, 5)
    proto = model([helper.make_node("Gemm", ["x", "B", "C"], ["g"], transB=trans_b, alpha=0.5, beta=2.0, name="fc"),
                   bn_node("g", "bn", "y")],
                  [("x", ["N", 7])], [("y", ["N", 5])], [weight("B", *b_shape), weight("C", 5, seed=3),
                                                         *bn_params("bn", 5)])
    result = fused_equivalent(proto, image(3, 7))
    assert ops(result.model) == ["Gemm"]


def test_matmul_add_becomes_gemm():
    proto = model([helper.make_node("MatMul", ["x", "W"], ["m"]), helper.make_node("Add", ["bias", "m"], ["y"])],
                  [("x", ["N", 16])], [("y", ["N", 4])], [weight("W", 16, 4), weight("bias", 4, seed=2)])
    result = fused_equivalent(proto, image(5, 16))
    assert ops(result.model) == ["Gemm"]
    assert result.stats.rewrites == {"matmul_add_to_gemm": 1}


def test_matmul_add_on_3d_input_stays():
    proto = model([helper.make_node("MatMul", ["x", "W"], ["m"]), helper.make_node("Add", ["m", "bias"], ["y"])],
                  [("x", [2, 3, 16])], [("y", [2, 3, 4])], [weight("W", 16, 4), weight("bias", 4, seed=2)])
    result = fused_equivalent(proto, image(2, 3, 16))
    assert ops(result.model) == ["MatMul", "Add"]


def test_constant_node_weights_become_initializers_and_fold():
    w = RNG.standard_normal((4, 2, 3, 3)).astype(np.float32)
    proto = model([helper.make_node("Constant", [], ["W"], value=numpy_helper.from_array(w, "W")),
                   helper.make_node("Constant", [], ["s"], value_float=0.5),
                   helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
                   helper.make_node("Mul", ["c", "s"], ["y"])],
                  [("x", [1, 2, 6, 6])], [("y", [1, 4, 4, 4])])
    result = fused_equivalent(proto, image(1, 2, 6, 6))
    assert ops(result.model) == ["Conv"]
    assert result.stats.rewrites["constant_nodes_to_initializers"] == 2
    assert result.stats.rewrites["mul_folded"] == 1


def test_constant_of_shape_bias_is_folded():
    shape = numpy_helper.from_array(np.array([8], dtype=np.int64), "bias_shape")
    fill = numpy_helper.from_array(np.array([0.25], dtype=np.float32), "fill")
    proto = model([helper.make_node("ConstantOfShape", ["bias_shape"], ["bias"], value=fill),
                   helper.make_node("Gemm", ["x", "W", "bias"], ["y"], transB=1)],
                  [("x", ["N", 3])], [("y", ["N", 8])], [shape, weight("W", 8, 3)])
    result = fused_equivalent(proto, image(4, 3))
    assert ops(result.model) == ["Gemm"]
    assert result.stats.rewrites["constants_folded"] == 1
    assert {t.name for t in result.model.graph.initializer} == {"bias", "W"}


def test_per_channel_mul_and_add_fold_into_conv():
    scale = numpy_helper.from_array(RNG.standard_normal((1, 4, 1, 1)).astype(np.float32), "scale")
    shift = numpy_helper.from_array(RNG.standard_normal((4, 1, 1)).astype(np.float32), "shift")
    proto = model([helper.make_node("Conv", ["x", "W", "B"], ["c"]), helper.make_node("Mul", ["scale", "c"], ["m"]),
                   helper.make_node("Add", ["m", "shift"], ["y"])],
                  [("x", [1, 3, 5, 5])], [("y", [1, 4, 3, 3])], [weight("W", 4, 3, 3, 3), weight("B", 4), scale, shift])
    result = fused_equivalent(proto, image(1, 3, 5, 5))
    assert ops(result.model) == ["Conv"]


def test_spatially_varying_mul_is_not_folded():
    mask = numpy_helper.from_array(RNG.standard_normal((1, 1, 3, 3)).astype(np.float32), "mask")
    proto = model([helper.make_node("Conv", ["x", "W"], ["c"]), helper.make_node("Mul", ["c", "mask"], ["y"])],
                  [("x", [1, 3, 5, 5])], [("y", [1, 4, 3, 3])], [weight("W", 4, 3, 3, 3), mask])
    assert ops(fused_equivalent(proto, image(1, 3, 5, 5)).model) == ["Conv", "Mul"]


def test_noops_are_removed():
    target = numpy_helper.from_array(np.array([2, 6], dtype=np.int64), "target")
    proto = model([helper.make_node("Identity", ["x"], ["a"]),
                   helper.make_node("Dropout", ["a"], ["b"]),
                   helper.make_node("Reshape", ["b", "target"], ["c"]),
                   helper.make_node("Cast", ["c"], ["d"], to=TensorProto.FLOAT),
                   helper.make_node("Cast", ["d"], ["e"], to=TensorProto.DOUBLE),
                   helper.make_node("Cast", ["e"], ["f"], to=TensorProto.FLOAT),
                   helper.make_node("Transpose", ["f"], ["g"], perm=[1, 0]),
                   helper.make_node("Transpose", ["g"], ["h"], perm=[1, 0]),
                   helper.make_node("Relu", ["h"], ["y"])],
                  [("x", [2, 6])], [("y", [2, 6])], [target])
    result = fused_equivalent(proto, image(2, 6))
    assert ops(result.model) == ["Relu"]
    assert result.model.graph.node[0].input[0] == "x"
    assert not result.model.graph.initializer


def test_lossy_cast_pair_and_non_identity_transposes_are_kept_or_composed():
    proto = model([helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16),
                   helper.make_node("Cast", ["h"], ["f"], to=TensorProto.FLOAT),
                   helper.make_node("Transpose", ["f"], ["t"], perm=[1, 2, 0]),
                   helper.make_node("Transpose", ["t"], ["y"], perm=[1, 2, 0])],
                  [("x", [2, 3, 4])], [("y", [4, 2, 3])])
    result = fused_equivalent(proto, image(2, 3, 4))
    assert ops(result.model) == ["Cast", "Cast", "Transpose"]
    assert list(result.model.graph.node[-1].attribute[0].ints) == [2, 0, 1]


def test_identity_feeding_graph_output_keeps_output_name():
    proto = model([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Identity", ["r"], ["y"])],
                  [("x", [3])], [("y", [3])])
    result = fused_equivalent(proto, image(3))
    assert ops(result.model) == ["Relu"] and result.model.graph.node[0].output[0] == "y"


def test_dead_nodes_and_unused_initializers_are_removed():
    proto = model([helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Sigmoid", ["x"], ["unused"])],
                  [("x", [3])], [("y", [3])], [weight("orphan", 4)])
    result = fused_equivalent(proto, image(3))
    assert ops(result.model) == ["Relu"]
    assert result.stats.rewrites["dead_nodes_removed"] == 1 and result.stats.initializers_removed == 1


def test_if_subgraph_is_left_intact_and_reported():
    branch = helper.make_graph([helper.make_node("Identity", ["x"], ["out"])], "branch", [],
                               [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2])])
    zero = numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero")
    proto = model([helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
                   helper.make_node("Greater", ["s", "zero"], ["cond"]),
                   helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch, name="choose")],
                  [("x", [2])], [("y", [2])], [zero])
    result = fused_equivalent(proto, image(2))
    assert "If" in ops(result.model)
    assert any("choose" in note and "subgraphs" in note for note in result.stats.notes)


def test_batchnorm_that_cannot_fold_is_reported():
    proto = model([helper.make_node("Relu", ["x"], ["r"]), bn_node("r", "bn", "y")],
                  [("x", [1, 3, 2, 2])], [("y", [1, 3, 2, 2])], bn_params("bn", 3))
    result = fused_equivalent(proto, image(1, 3, 2, 2))
    assert any("bn (BatchNormalization) stays" in note for note in result.stats.notes)


@pytest.mark.parametrize("name", ["kws_dscnn", "ic_resnet8", "ad_autoencoder"])
def test_sample_models_fold_every_batchnorm(samples, name):
    proto = onnx.load(str(samples / f"{name}.onnx"))
    shape = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    result = fused_equivalent(proto, {"input": RNG.standard_normal(shape).astype(np.float32)})
    assert "BatchNormalization" not in ops(result.model)


def test_ir3_weights_listed_as_inputs_are_folded():
    # IR 3: the ConstantOfShape shape and the bias are initializers that are also graph inputs. They cannot be
    # overridden in IR 3, so fuse folds the generated weight into an initializer and returns an IR 4 model.
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from edgefit.passes import fuse
    from edgefit.runtime import session

    shape = numpy_helper.from_array(np.array([2, 3, 1, 1], np.int64), "w_shape")
    nodes = [helper.make_node("ConstantOfShape", ["w_shape"], ["w"],
                              value=numpy_helper.from_array(np.array([0.5], np.float32))),
             helper.make_node("Conv", ["x", "w"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4]),
                                           helper.make_tensor_value_info("w_shape", TensorProto.INT64, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])], [shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 3
    fused = fuse(model).model
    assert [n.op_type for n in fused.graph.node] == ["Conv"]
    assert fused.ir_version == 4 and [i.name for i in fused.graph.input] == ["x"]
    x = np.random.default_rng(0).standard_normal((1, 3, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(session(fused).run(None, {"x": x})[0], 0.5 * x.sum(axis=1, keepdims=True).repeat(2, 1),
                               rtol=1e-5, atol=1e-6)
