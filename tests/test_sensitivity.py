"""Regions, output heads and the one-pass sensitivity measure, on small graphs built to the patterns Paddle and
PyTorch exporters write (PP-OCRv4's decomposed LayerNorm, HardSwish as Add/Clip/Div/Mul, SVTR attention)."""

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from edgefit.fidelity import SampleSet
from edgefit.passes.quantize import quantize
from edgefit.sensitivity import Region, RegionError, Sensitivity, find_regions, measure, output_heads

RNG = np.random.default_rng(0)


def _const(name, value):
    return numpy_helper.from_array(np.asarray(value, np.float32), name)


def _model(nodes, inits, inputs, outputs, opset=13):
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _layernorm_model():
    """MatMul -> Paddle's LayerNorm (ReduceMean, Sub, Pow, ReduceMean, Add eps, Sqrt, Div, Mul gamma, Add beta)
    -> MatMul -> Softmax: x [1, 4, 8]."""
    n = helper.make_node
    nodes = [
        n("MatMul", ["x", "w1"], ["h"], name="mm1"),
        n("ReduceMean", ["h"], ["mean"], name="mean", axes=[-1]),
        n("Sub", ["h", "mean"], ["centered"], name="sub"),
        n("Pow", ["centered", "two"], ["squared"], name="pow"),
        n("ReduceMean", ["squared"], ["var"], name="var", axes=[-1]),
        n("Add", ["var", "eps"], ["var_eps"], name="add_eps"),
        n("Sqrt", ["var_eps"], ["std"], name="sqrt"),
        n("Div", ["centered", "std"], ["normed"], name="div"),
        n("Mul", ["normed", "gamma"], ["scaled"], name="gamma_mul"),
        n("Add", ["scaled", "beta"], ["ln"], name="beta_add"),
        n("MatMul", ["ln", "w2"], ["logits"], name="mm2"),
        n("Softmax", ["logits"], ["probs"], name="softmax", axis=-1),
    ]
    inits = [_const("w1", RNG.standard_normal((8, 8))), _const("two", 2.0), _const("eps", 1e-5),
             _const("gamma", np.ones(8)), _const("beta", np.zeros(8)), _const("w2", RNG.standard_normal((8, 5)))]
    return _model(nodes, inits, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
                  [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 4, 5])])


def test_a_decomposed_layernorm_is_one_region_and_the_softmax_head_none():
    model = _layernorm_model()
    heads = output_heads(model)
    assert heads.nodes == ("softmax",) and heads.float_tensors == ("logits",)
    regions = {r.name: r for r in find_regions(model, skip=heads.nodes)}
    assert set(regions) == {"layer:mm1", "layernorm:mean", "layer:mm2"}
    norm = regions["layernorm:mean"]
    assert norm.nodes == ("mean", "sub", "pow", "var", "add_eps", "sqrt", "div", "gamma_mul", "beta_add")
    assert norm.inputs == ("h",) and norm.outputs == ("ln",)
    assert regions["layer:mm2"].outputs == ("logits",)
    # what float costs: w1 8x8; two, eps (1 each) and gamma, beta (8 each); w2 8x5
    assert [regions[k].weight_elements for k in ("layer:mm1", "layernorm:mean", "layer:mm2")] == [64, 18, 40]


def test_hardswish_chain_is_one_activation_region():
    """Paddle's HardSwish: x * Clip(x + 3, 0, 6) / 6, after a Conv (1x2x4x4 input)."""
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w"], ["c"], name="conv"),
        n("Add", ["c", "three"], ["c3"], name="hs_add"),
        n("Clip", ["c3", "zero", "six"], ["clipped"], name="hs_clip"),
        n("Div", ["clipped", "six"], ["gate"], name="hs_div"),
        n("Mul", ["c", "gate"], ["act"], name="hs_mul"),
        n("Conv", ["act", "w2"], ["y"], name="conv2"),
    ]
    inits = [_const("w", RNG.standard_normal((3, 2, 1, 1))), _const("three", 3.0), _const("zero", 0.0),
             _const("six", 6.0), _const("w2", RNG.standard_normal((2, 3, 1, 1)))]
    model = _model(nodes, inits, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])])
    regions = {r.name: r.nodes for r in find_regions(model)}
    assert regions == {"layer:conv": ("conv",), "activation:hs_add": ("hs_add", "hs_clip", "hs_div", "hs_mul"),
                       "layer:conv2": ("conv2",)}
    assert output_heads(model).nodes == () and output_heads(model).float_tensors == ("y",)


def test_svtr_attention_is_one_region_with_its_head_split_and_merge():
    """SVTR's attention as Paddle exports it: qkv MatMul + bias, Reshape [1, 8, 3, 2, 4], Transpose to
    [3, 1, 2, 8, 4], Gather q/k/v, q * scale, k transposed, MatMul, Softmax, MatMul, Transpose back, Reshape,
    output projection."""
    n = helper.make_node
    nodes = [
        n("MatMul", ["x", "w_qkv"], ["qkv_mm"], name="qkv"),
        n("Add", ["qkv_mm", "b_qkv"], ["qkv_b"], name="qkv_bias"),
        n("Reshape", ["qkv_b", "split_shape"], ["qkv_r"], name="split_reshape"),
        n("Transpose", ["qkv_r"], ["qkv_t"], name="split_transpose", perm=[2, 0, 3, 1, 4]),
        n("Gather", ["qkv_t", "i0"], ["q"], name="take_q", axis=0),
        n("Gather", ["qkv_t", "i1"], ["k"], name="take_k", axis=0),
        n("Gather", ["qkv_t", "i2"], ["v"], name="take_v", axis=0),
        n("Mul", ["q", "scale"], ["q_scaled"], name="q_scale"),
        n("Transpose", ["k"], ["k_t"], name="k_transpose", perm=[0, 1, 3, 2]),
        n("MatMul", ["q_scaled", "k_t"], ["scores"], name="qk"),
        n("Softmax", ["scores"], ["attn"], name="attn_softmax", axis=-1),
        n("MatMul", ["attn", "v"], ["ctx"], name="av"),
        n("Transpose", ["ctx"], ["ctx_t"], name="merge_transpose", perm=[0, 2, 1, 3]),
        n("Reshape", ["ctx_t", "merge_shape"], ["merged"], name="merge_reshape"),
        n("MatMul", ["merged", "w_out"], ["y"], name="proj"),
    ]
    inits = [_const("w_qkv", RNG.standard_normal((8, 24))), _const("b_qkv", np.zeros(24)),
             numpy_helper.from_array(np.array([1, 8, 3, 2, 4], np.int64), "split_shape"),
             numpy_helper.from_array(np.array(0, np.int64), "i0"), numpy_helper.from_array(np.array(1, np.int64), "i1"),
             numpy_helper.from_array(np.array(2, np.int64), "i2"), _const("scale", 0.5),
             numpy_helper.from_array(np.array([1, 8, 8], np.int64), "merge_shape"),
             _const("w_out", RNG.standard_normal((8, 8)))]
    model = _model(nodes, inits, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8])])
    regions = {r.name: r.nodes for r in find_regions(model)}
    assert regions == {
        "layer:qkv": ("qkv", "qkv_bias"),
        "attention:split_reshape": ("split_reshape", "split_transpose", "take_q", "take_k", "take_v", "q_scale",
                                    "k_transpose", "qk", "attn_softmax", "av", "merge_transpose",
                                    "merge_reshape"),
        "layer:proj": ("proj",)}


def _sensitive_chain():
    """Gemm A ignores input feature 0, a thousand times larger than the others: int8 on A's input rounds every
    feature A reads to zero, so A's output loses all its signal; B after it only passes the loss on."""
    wa = RNG.standard_normal((16, 16)).astype(np.float32)
    wa[0, :] = 0
    n = helper.make_node
    nodes = [n("Gemm", ["x", "wa"], ["a"], name="A"), n("Relu", ["a"], ["r"], name="relu"),
             n("Gemm", ["r", "wb"], ["b"], name="B"), n("Relu", ["b"], ["y"], name="out_relu")]
    model = _model(nodes, [_const("wa", wa), _const("wb", RNG.standard_normal((16, 16)) * 0.1)],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 16])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 16])])
    x = RNG.standard_normal((8, 16)).astype(np.float32)
    x[:, 0] *= 1000
    return model, SampleSet(({"x": x},), 8, "user")


def test_the_region_that_loses_the_signal_ranks_first():
    model, samples = _sensitive_chain()
    quantized = quantize(model, calibration=samples, quantize_heads=True).model
    ranking = measure(model, quantized, samples, find_regions(model))
    by_name = {r.region.name: r for r in ranking.ranked}
    assert ranking.ranked[0].region.name == "layer:A"
    # x keeps feature 0 (its signal) through int8; A's output is the other features, rounded away: SQNR near 0 dB.
    assert by_name["layer:A"].input_sqnr_db > 30 and by_name["layer:A"].output_sqnr_db < 3
    assert by_name["layer:A"].drop_db > 27
    assert ranking.output_sqnr_db < 3 and ranking.samples == 8


def test_regions_go_back_to_float_weightless_first_then_by_loss_per_weight():
    def region(name, weights, input_db, output_db):
        return RegionError(Region(name, "op", (name,), ("a",), ("b",), weights), input_db, output_db)

    ranking = Sensitivity((region("big", 100_000, 40.0, 32.0),      # 8 dB over 100,000 weights
                           region("small", 144, 40.0, 35.0),        # 5 dB over 144 weights
                           region("softmax", 0, 30.0, 28.0),        # 2 dB, no weights
                           region("gaining", 64, 20.0, 21.0)),      # gains SQNR: not a candidate
                          output_sqnr_db=20.0, samples=8)
    assert [r.name for r in ranking.float_order()] == ["softmax", "small", "big"]
