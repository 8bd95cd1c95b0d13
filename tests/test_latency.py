"""Latency features by layer class on small graphs, with MACs, elements and op counts worked out by hand."""

import numpy as np
import pytest
from helpers import model, weight
from onnx import TensorProto, helper

from edgefit.analysis.footprint import analyze
from edgefit.devices.estimate import model_precision
from edgefit.devices.latency import (
    FEATURE_NAMES,
    LatencyCoefficients,
    LatencyFeatures,
    latency_features,
    latency_precision,
    layer_class,
)


def conv_bn_relu_dw_fc():
    """x 1x4x8x8 -> Conv 3x3 pad 1 (8 out) -> BN -> Relu -> depthwise 3x3 pad 1 (group 8) -> Relu
    -> GlobalAveragePool -> Flatten -> Gemm 8->10 -> Softmax.

    conv MACs: 8 out channels x 64 positions x (4 in x 9) = 18,432
    depthwise MACs: 8 channels x 64 positions x 9 = 4,608
    Gemm MACs: 8 x 10 = 80
    conv weight elements: the standard conv's 8 x 4 x 3 x 3 = 288 (depthwise weights are not counted)
    Dispatched ops: Conv(+BN folded, Relu fused), DepthwiseConv(+Relu), pool, Flatten (a reshape), Gemm, Softmax = 6
    Elementwise elements written: pool 8 + Softmax 10 = 18; the Flatten is the pool output's only reader, so the
    runtime hands the buffer over: no bytes moved
    """
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "s", "b", "m", "v"], ["n1"]),
        helper.make_node("Relu", ["n1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], group=8),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "w3"], ["g"], transB=1),
        helper.make_node("Softmax", ["g"], ["y"]),
    ]
    inits = [weight("w1", 8, 4, 3, 3), weight("w2", 8, 1, 3, 3), weight("w3", 10, 8),
             weight("s", 8), weight("b", 8), weight("m", 8), *[helper.make_tensor("v", TensorProto.FLOAT, [8], [1.0] * 8)]]
    return model(nodes, [("x", [1, 4, 8, 8])], [("y", [1, 10])], inits)


def test_features_by_class_with_folded_bn_and_fused_relu():
    footprint = analyze(conv_bn_relu_dw_fc())
    features = latency_features(footprint, "fp32")
    assert features == LatencyFeatures(conv_macs=18_432, depthwise_macs=4_608, fc_macs=80, integer_macs=0,
                                       elementwise_elements=18, transcendental_elements=0, moved_bytes=0,
                                       lrn_elements=0, uncached_bytes=0, conv_weight_elements=288, ops=6)
    assert list(features.vector()) == [18_432, 4_608, 80, 0, 18, 0, 0, 0, 0, 288, 6, 1.0]
    classes = [layer_class(layer.op_type, layer) for layer in footprint.layers]
    assert classes == ["conv", "elementwise", "elementwise", "depthwise", "elementwise", "elementwise",
                       "movement", "fc", "elementwise"]


def test_relu_stays_an_op_when_its_input_is_shared():
    """Conv output read by both a Relu and an Add: the Relu cannot be fused (the Add needs the raw value).
    Ops: Conv, Relu, Add = 3; elementwise elements: Relu 2x4x4=32 + Add 32 = 64; conv MACs 2x16x(1x1x1) = 32."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Add", ["c", "r"], ["y"]),
    ]
    footprint = analyze(model(nodes, [("x", [1, 1, 4, 4])], [("y", [1, 2, 4, 4])], [weight("w", 2, 1, 1, 1)]))
    assert latency_features(footprint, "fp32") == LatencyFeatures(32, 0, 0, 0, 64, 0, 0, 0, 0, 2, 3)


def test_relu_fuses_into_add_and_bias_add_folds_into_matmul():
    """MatMul (1x6 @ 6x4: 24 MACs) -> bias Add -> Relu: one FULLY_CONNECTED with a fused activation; then a
    residual Add with a graph input and a Relu after it: one ADD with a fused activation (TFLite's
    fused_activation_function). Ops: FC, Add = 2; elementwise: the Add's 4 elements."""
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["a"]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("Add", ["r", "z"], ["s"]),
        helper.make_node("Relu", ["s"], ["y"]),
    ]
    footprint = analyze(model(nodes, [("x", [1, 6]), ("z", [1, 4])], [("y", [1, 4])], [weight("w", 6, 4), weight("b", 4)]))
    assert latency_features(footprint, "fp32") == LatencyFeatures(0, 0, 24, 0, 4, 0, 0, 0, 0, 0, 2)


def qdq_conv_relu():
    """QDQ model: x -> Q -> DQ -> Conv(DQ(w_int8)) -> Relu -> Q -> DQ -> y; conv 1x1, 2->3 channels on 4x4:
    conv MACs = 3 x 16 x 2 = 96. The weight's DequantizeLinear is constant-folded (a weight, not a layer)."""
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "sc", "zp"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "sc", "zp"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "wsc", "wzp"], ["wd"]),
        helper.make_node("Conv", ["xd", "wd"], ["c"]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("QuantizeLinear", ["r", "sc", "zp"], ["rq"]),
        helper.make_node("DequantizeLinear", ["rq", "sc", "zp"], ["y"]),
    ]
    inits = [helper.make_tensor("sc", TensorProto.FLOAT, [], [0.1]), helper.make_tensor("zp", TensorProto.INT8, [], [0]),
             helper.make_tensor("wq", TensorProto.INT8, [3, 2, 1, 1], [1, 2, 3, 4, 5, 6]),
             helper.make_tensor("wsc", TensorProto.FLOAT, [], [0.05]), helper.make_tensor("wzp", TensorProto.INT8, [], [0])]
    return model(nodes, [("x", [1, 2, 4, 4])], [("y", [1, 3, 4, 4])], inits)


def test_qdq_pairs_vanish_at_int8_and_run_at_fp32():
    footprint = analyze(qdq_conv_relu())
    # int8: the Relu after the Conv fuses through nothing in between; Q/DQ cost nothing.
    assert latency_features(footprint, "int8") == LatencyFeatures(96, 0, 0, 0, 0, 0, 0, 0, 0, 6, 1)
    # fp32: Q(x) 32 + DQ 32 elements, Conv + fused Relu, Q 48 + DQ 48 elements: 5 ops, 160 elements.
    assert latency_features(footprint, "fp32") == LatencyFeatures(96, 0, 0, 0, 160, 0, 0, 0, 0, 6, 5)


def test_relu_after_qdq_between_fuses_at_int8():
    """Conv -> Q -> DQ -> Relu (as onnxruntime's quantizer leaves it when Relu is not folded): at int8 the Q/DQ
    vanish and the Relu fuses into the Conv (1 op); at fp32 Conv, Q, DQ, Relu run (4 ops)."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("QuantizeLinear", ["c", "sc", "zp"], ["cq"]),
        helper.make_node("DequantizeLinear", ["cq", "sc", "zp"], ["cd"]),
        helper.make_node("Relu", ["cd"], ["y"]),
    ]
    inits = [weight("w", 2, 1, 1, 1), helper.make_tensor("sc", TensorProto.FLOAT, [], [0.1]),
             helper.make_tensor("zp", TensorProto.INT8, [], [0])]
    footprint = analyze(model(nodes, [("x", [1, 1, 2, 2])], [("y", [1, 2, 2, 2])], inits))
    assert latency_features(footprint, "int8").ops == 1
    assert latency_features(footprint, "fp32") == LatencyFeatures(8, 0, 0, 0, 24, 0, 0, 0, 0, 2, 4)


def test_prediction_is_the_weighted_sum_in_seconds():
    coefficients = LatencyCoefficients(s_per_conv_mac=2e-9, s_per_depthwise_mac=5e-9, s_per_fc_mac=4e-9,
                                       s_per_integer_mac=3e-9, s_per_elementwise_element=10e-9,
                                       s_per_transcendental_element=30e-9, s_per_moved_byte=1e-9,
                                       s_per_lrn_element=50e-9, s_per_uncached_byte=0.1e-9, s_per_conv_weight=0.5e-9,
                                       s_per_op=20e-6, s_per_inference=100e-6)
    features = LatencyFeatures(conv_macs=18_432, depthwise_macs=4_608, fc_macs=80, integer_macs=1_000,
                               elementwise_elements=26, transcendental_elements=100, moved_bytes=512,
                               lrn_elements=40, uncached_bytes=40_000, conv_weight_elements=288, ops=6)
    # 36.864 us + 23.04 us + 0.32 us + 3 us + 0.26 us + 3 us + 0.512 us + 2 us + 4 us + 0.144 us + 120 us + 100 us
    assert coefficients.predict(features) == pytest.approx(293.14e-6, rel=1e-12)
    assert LatencyCoefficients.from_vector(coefficients.vector()) == coefficients
    assert len(coefficients.vector()) == len(FEATURE_NAMES) == len(features.vector())


@pytest.mark.parametrize("values", [[1e-9] * 7, [1e-9] * 7 + [-1e-9], [1e-9] * 7 + [float("nan")],
                                    [1e-9] * 7 + [float("inf")]])
def test_coefficients_reject_wrong_length_negative_and_non_finite(values):
    with pytest.raises(ValueError):
        LatencyCoefficients.from_vector(np.array(values))


# ---- features that explain time (issue 18, part 2) -----------------------------------------------------

def test_transpose_moves_its_bytes_and_a_reshape_copies_only_a_shared_input():
    """Transpose of a [1,8,4,4] fp32 tensor writes 128 elements x 4 bytes = 512 bytes (it reads as many). The
    Reshape after it is the Transpose output's only reader: no copy. The second Reshape reads x, a graph input,
    which the runtime cannot hand over: it copies 128 x 4 = 512 bytes. At int8, the float tensors move a quarter."""
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("Reshape", ["t", "shape"], ["y"]),
             helper.make_node("Reshape", ["x", "shape"], ["z"])]
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [1, 128])
    footprint = analyze(model(nodes, [("x", [1, 8, 4, 4])], [("y", [1, 128]), ("z", [1, 128])], [shape]))
    assert latency_features(footprint, "fp32") == LatencyFeatures(0, 0, 0, 0, 0, 0, 512 + 512, 0, 0, 0, 3)
    assert latency_features(footprint, "int8").moved_bytes == 128 + 128


def test_concat_slice_pad_move_bytes_at_their_output_size():
    """Concat of two [1,2,4,4] -> [1,4,4,4]: 64 x 4 = 256 bytes; Slice to [1,4,2,4]: 32 x 4 = 128; Pad by 1 on
    H and W -> [1,4,4,6]: 96 x 4 = 384. 3 ops, 768 bytes moved, no elementwise work."""
    nodes = [helper.make_node("Concat", ["a", "b"], ["c"], axis=1),
             helper.make_node("Slice", ["c", "starts", "ends", "axes"], ["s"]),
             helper.make_node("Pad", ["s", "pads"], ["y"])]
    inits = [helper.make_tensor("starts", TensorProto.INT64, [1], [0]),
             helper.make_tensor("ends", TensorProto.INT64, [1], [2]),
             helper.make_tensor("axes", TensorProto.INT64, [1], [2]),
             helper.make_tensor("pads", TensorProto.INT64, [8], [0, 0, 1, 1, 0, 0, 1, 1])]
    footprint = analyze(model(nodes, [("a", [1, 2, 4, 4]), ("b", [1, 2, 4, 4])], [("y", [1, 4, 4, 6])], inits))
    assert latency_features(footprint, "fp32") == LatencyFeatures(0, 0, 0, 0, 0, 0, 256 + 128 + 384, 0, 0, 0, 3)


def test_dynamic_quantization_ops_are_integer_macs():
    """quantize_dynamic's pattern: DynamicQuantizeLinear(x [1,3,6,6]) -> ConvInteger (4 out channels, 3x3, no
    padding -> [1,4,4,4]) -> Cast -> Mul by the scales. ConvInteger MACs: 4 x 16 positions x (3 x 9) = 1,728, counted
    as integer MACs, not conv. Elementwise elements are bytes written over the layer's element size: DQL writes
    108 uint8 + a 4-byte float scale + a 1-byte zero point = 113 bytes of uint8 = 113, Cast 64, Mul 64, the scale
    Mul 1: 242; 5 ops."""
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
             helper.make_node("ConvInteger", ["xq", "w", "xz", "wz"], ["acc"]),
             helper.make_node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["xs", "ws"], ["scale"]),
             helper.make_node("Mul", ["accf", "scale"], ["y"])]
    inits = [helper.make_tensor("w", TensorProto.UINT8, [4, 3, 3, 3], [128] * 108),
             helper.make_tensor("wz", TensorProto.UINT8, [], [128]),
             helper.make_tensor("ws", TensorProto.FLOAT, [], [0.01])]
    footprint = analyze(model(nodes, [("x", [1, 3, 6, 6])], [("y", [1, 4, 4, 4])], inits, opset=13))
    features = latency_features(footprint, "fp32")
    assert (features.conv_macs, features.integer_macs, features.ops) == (0, 1_728, 5)
    assert features.elementwise_elements == 242


def test_grouped_conv_with_several_channels_per_group_runs_as_a_conv():
    """x 1x8x4x4 -> Conv 1x1 group 4 (8 out, 2 input channels per group) -> depthwise 3x3 pad 1 (group 8).

    grouped MACs: 8 out x 16 positions x (2 in x 1) = 256, a reduction over channels: conv class
    depthwise MACs: 8 x 16 x 9 = 1,152 (one input channel per group): depthwise class
    """
    nodes = [helper.make_node("Conv", ["x", "w1"], ["g"], group=4),
             helper.make_node("Conv", ["g", "w2"], ["y"], pads=[1, 1, 1, 1], group=8)]
    footprint = analyze(model(nodes, [("x", [1, 8, 4, 4])], [("y", [1, 8, 4, 4])],
                              [weight("w1", 8, 2, 1, 1), weight("w2", 8, 1, 3, 3)]))
    assert latency_features(footprint, "fp32") == LatencyFeatures(256, 1_152, 0, 0, 0, 0, 0, 0, 0, 16, 2)
    assert [layer_class(layer.op_type, layer, site) for layer, site in zip(footprint.layers, footprint.ops)] \
        == ["conv", "depthwise"]
    # Without the graph site (the weight shape) every grouped conv is taken for depthwise, as before.
    assert [layer_class(layer.op_type, layer) for layer in footprint.layers] == ["depthwise", "depthwise"]


def test_matrix_product_over_many_rows_is_a_gemm_and_recurrent_ops_stay_fc():
    """Three products with one 6x4 weight: a [8, 6] input (8 rows, each weight reused 8 times: 8x6x4 = 192 MACs,
    run as a GEMM, conv class), a [7, 6] one (7 rows, below the 8-row GEMM threshold: 168 MACs, fc) and a [1, 6]
    one (batch 1, streams the weight: 24 MACs, fc). An LSTM over 8 steps (input 3, hidden 2, batch 1) writes 8 rows
    too, but steps one row at a time: 8 steps x 4 gates x 2 hidden x (3 + 2) = 320 MACs, fc."""
    nodes = [helper.make_node("MatMul", ["a", "w"], ["ya"]),
             helper.make_node("MatMul", ["b", "w"], ["yb"]),
             helper.make_node("MatMul", ["c", "w"], ["yc"]),
             helper.make_node("LSTM", ["s", "lw", "lr"], ["ys"], hidden_size=2)]
    footprint = analyze(model(
        nodes, [("a", [8, 6]), ("b", [7, 6]), ("c", [1, 6]), ("s", [8, 1, 3])],
        [("ya", [8, 4]), ("yb", [7, 4]), ("yc", [1, 4]), ("ys", [8, 1, 1, 2])],
        [weight("w", 6, 4), weight("lw", 1, 8, 3), weight("lr", 1, 8, 2)]))
    assert [layer.macs for layer in footprint.layers] == [192, 168, 24, 320]
    assert [layer_class(layer.op_type, layer, site) for layer, site in zip(footprint.layers, footprint.ops)] \
        == ["conv", "fc", "fc", "fc"]
    assert latency_features(footprint, "fp32") == LatencyFeatures(192, 0, 168 + 24 + 320, 0, 0, 0, 0, 0, 0, 0, 4)


def test_math_library_functions_are_transcendental_and_pow_by_a_small_integer_is_not():
    """x [1,4,4,4] (64 elements) -> LRN (size 3) -> Pow(., 0.75 initializer) -> Pow(., 2 from a Constant node)
    -> Softplus -> Sigmoid. Transcendental: Pow 0.75 64 + Softplus 64 = 128 elements; LRN (its own class) 64;
    elementwise: Pow by 2 (a multiply) 64 + Sigmoid (vectorised) 64 = 128; 5 ops, nothing fused (none of them
    takes an activation)."""
    nodes = [helper.make_node("LRN", ["x"], ["a"], size=3),
             helper.make_node("Pow", ["a", "e"], ["b"]),
             helper.make_node("Constant", [], ["two"], value=helper.make_tensor("v", TensorProto.FLOAT, [], [2.0])),
             helper.make_node("Pow", ["b", "two"], ["c"]),
             helper.make_node("Softplus", ["c"], ["d"]),
             helper.make_node("Sigmoid", ["d"], ["y"])]
    inits = [helper.make_tensor("e", TensorProto.FLOAT, [], [0.75])]
    footprint = analyze(model(nodes, [("x", [1, 4, 4, 4])], [("y", [1, 4, 4, 4])], inits))
    assert [site.exponent for site in footprint.ops] == [None, 0.75, 2.0, None, None]
    assert [layer_class(layer.op_type, layer, site) for layer, site in zip(footprint.layers, footprint.ops)] == \
        ["lrn", "transcendental", "elementwise", "transcendental", "elementwise"]
    assert latency_features(footprint, "fp32") == LatencyFeatures(0, 0, 0, 0, 128, 128, 0, 64, 0, 0, 5)


def test_lrn_elements_do_not_depend_on_its_window():
    """LRN over [1,6,5,5] (150 elements) with size 1 and with size 5: 150 LRN elements each (onnxruntime's LRN
    ran 28.8 ns per element for sizes 1 to 15 here: its cost is per element, not per window x element)."""
    for size in (1, 5):
        footprint = analyze(model([helper.make_node("LRN", ["x"], ["y"], size=size)], [("x", [1, 6, 5, 5])],
                                  [("y", [1, 6, 5, 5])]))
        assert latency_features(footprint, "fp32") == LatencyFeatures(0, 0, 0, 0, 0, 0, 0, 150, 0, 0, 1)


def test_conv_weight_elements_of_1d_grouped_and_strided_convs():
    """x [1,16,8] -> Conv1d k3 pad 1 (16->32) -> Conv1d k4 stride 4 group 4 (32->8) -> Conv1d k1 depthwise (8).

    Conv1d 16->32 k3: MACs 32 out x 8 positions x (16 x 3) = 12,288, weights 32 x 16 x 3 = 1,536
    grouped k4 s4 (8 in per group): 2 positions; MACs 8 x 2 x (8 x 4) = 512, weights 8 x 8 x 4 = 256
    depthwise k1: MACs 8 x 2 = 16, depthwise class, its weights not counted
    conv weight elements 1,536 + 256 = 1,792; 3 ops."""
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1]),
             helper.make_node("Conv", ["a", "w2"], ["b"], strides=[4], group=4),
             helper.make_node("Conv", ["b", "w3"], ["y"], group=8)]
    footprint = analyze(model(nodes, [("x", [1, 16, 8])], [("y", [1, 8, 2])],
                              [weight("w1", 32, 16, 3), weight("w2", 8, 8, 4), weight("w3", 8, 1, 1)]))
    assert latency_features(footprint, "fp32") == LatencyFeatures(12_288 + 512, 16, 0, 0, 0, 0, 0, 0, 0, 1_792, 3)


def test_pow_with_a_computed_exponent_is_transcendental():
    """Pow(x, e) with e a graph input: its value is unknown, so it may be anything: a math-library call."""
    nodes = [helper.make_node("Pow", ["x", "e"], ["y"])]
    footprint = analyze(model(nodes, [("x", [1, 8]), ("e", [1])], [("y", [1, 8])]))
    assert footprint.ops[0].exponent is None
    assert latency_features(footprint, "fp32").transcendental_elements == 8


def _gemm_64_to_32():
    """x [1,64] -> Gemm (w 64x32, bias 32) -> Relu: 2,048 fc MACs; weights (64 x 32 + 32) x 4 = 8,320 bytes."""
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["g"]), helper.make_node("Relu", ["g"], ["y"])]
    return analyze(model(nodes, [("x", [1, 64])], [("y", [1, 32])], [weight("w", 64, 32), weight("b", 32)]))


def test_fc_weights_beyond_the_cache_are_uncached_bytes():
    footprint = _gemm_64_to_32()
    # Unknown cache, or the weights fit (8,320 bytes is not more than 8,320): nothing is uncached.
    assert latency_features(footprint, "fp32") == LatencyFeatures(0, 0, 2_048, 0, 0, 0, 0, 0, 0, 0, 1)
    assert latency_features(footprint, "fp32", cache_bytes=8_320).uncached_bytes == 0
    # A 4 KiB cache: the model's weights exceed it, so the fc layer streams all 8,320 bytes of its weights, on top
    # of its MACs; at int8 they take 2,080 bytes and fit.
    assert latency_features(footprint, "fp32", cache_bytes=4_096) == LatencyFeatures(0, 0, 2_048, 0, 0, 0, 0, 0, 8_320, 0, 1)
    assert latency_features(footprint, "int8", cache_bytes=4_096).uncached_bytes == 0


def test_elementwise_working_set_beyond_the_cache_is_uncached_bytes():
    """Sigmoid over [1,1024] fp32 reads 4,096 and writes 4,096 bytes: a working set of 8,192 bytes. Transpose
    [1,32,32] -> [1,32,32] moves 4,096 bytes, working set 8,192 too."""
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Reshape", ["s", "shape"], ["r"]),
             helper.make_node("Transpose", ["r"], ["y"], perm=[0, 2, 1])]
    inits = [helper.make_tensor("shape", TensorProto.INT64, [3], [1, 32, 32])]
    footprint = analyze(model(nodes, [("x", [1, 1024])], [("y", [1, 32, 32])], inits))
    assert latency_features(footprint, "fp32", cache_bytes=8_192) == LatencyFeatures(0, 0, 0, 0, 1_024, 0, 4_096, 0, 0, 0, 3)
    assert latency_features(footprint, "fp32", cache_bytes=8_191) == \
        LatencyFeatures(0, 0, 0, 0, 1_024, 0, 4_096, 0, 8_192 + 8_192, 0, 3)
    # The Reshape hands its buffer over (no copy, no work): it streams nothing.
    assert latency_features(footprint, "int8", cache_bytes=2_047).uncached_bytes == 2_048 + 2_048


def test_dynamic_quantization_is_timed_with_the_float_table():
    """A quantize_dynamic model (uint8 weights dominate, so it is stored as int8) runs everything but its
    MatMulInteger in fp32: latency_precision sends it to the fp32 table; a QDQ model stays int8."""
    dynamic = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
               helper.make_node("MatMulInteger", ["xq", "w", "xz", "wz"], ["acc"]),
               helper.make_node("Cast", ["acc"], ["y"], to=TensorProto.FLOAT)]
    inits = [helper.make_tensor("w", TensorProto.UINT8, [16, 8], [128] * 128),
             helper.make_tensor("wz", TensorProto.UINT8, [], [128])]
    footprint = analyze(model(dynamic, [("x", [1, 16])], [("y", [1, 8])], inits, opset=13))
    assert model_precision(footprint) == "int8"
    assert latency_precision(footprint, "int8") == "fp32"
    assert latency_precision(footprint, "fp16") == "fp16"
    qdq = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
           helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
           helper.make_node("MatMul", ["d", "wf"], ["y"])]
    qdq_inits = [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]), helper.make_tensor("z", TensorProto.INT8, [], [0]),
                 weight("wf", 16, 8)]
    assert latency_precision(analyze(model(qdq, [("x", [1, 16])], [("y", [1, 8])], qdq_inits)), "int8") == "int8"
