"""Analysis of models shaped like real exporters write them: onnxruntime's own quantizer (QOperator contrib ops,
DynamicQuantizeLSTM) and optimizer (FusedMatMul, QuickGelu), detection heads (NonMaxSuppression), recurrent models
with initial states and Loop-carried state.

Every model is built here with onnx.helper; expected values are worked out by hand beside them.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgefit
from edgefit.errors import PassError
from helpers import build, vi

F, U8, I8, I32, I64 = TensorProto.FLOAT, TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32, TensorProto.INT64
MS = helper.make_opsetid("com.microsoft", 1)


def const(name, value, dtype):
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def weight(name, *shape, dtype=np.float32, seed=0):
    return numpy_helper.from_array((np.random.default_rng(seed).standard_normal(shape) * 10).astype(dtype), name)


def test_nms_thresholds_are_configuration_not_parameters():
    # NonMaxSuppression's max_output_boxes_per_class (int64), iou_threshold and score_threshold (float) configure
    # it: no parameters; they are stored, so 8 + 4 + 4 weight bytes.
    nodes = [helper.make_node("NonMaxSuppression", ["boxes", "scores", "max_out", "iou", "score_th"], ["sel"])]
    inits = [const("max_out", [50], np.int64), const("iou", [0.5], np.float32), const("score_th", [0.25], np.float32)]
    model = build(nodes, [vi("boxes", F, [1, 100, 4]), vi("scores", F, [1, 1, 100])], [vi("sel", I64, ["n", 3])],
                  inits, opset=13, ir_version=8)
    fp = edgefit.analyze(model)
    assert fp.params == 0
    assert fp.weight_bytes == 16


def test_recurrent_initial_states_and_loop_state_are_not_parameters():
    # LSTM seq 5, batch 2, input 3, hidden 4 with constant zero initial_h / initial_c: parameters are W 1x16x3 (48)
    # + R 1x16x4 (64) + B 1x32 (32) = 144, the states (2 x 8 zeros) are not. MACs 5 x 2 x 4 gates x 4 x (3 + 4) = 1,120.
    # A Loop (2 trips) whose carried accumulator starts from a constant 1x2x4 zeros: its body's Add reads no weight,
    # so the Loop adds no parameter either.
    body = helper.make_graph(
        [helper.make_node("Add", ["acc_in", "Yh"], ["acc_out"]), helper.make_node("Identity", ["c_in"], ["c_out"])],
        "body", [vi("i", I64, []), vi("c_in", TensorProto.BOOL, []), vi("acc_in", F, [1, 2, 4])],
        [vi("c_out", TensorProto.BOOL, []), vi("acc_out", F, [1, 2, 4])])
    nodes = [helper.make_node("LSTM", ["x", "W", "R", "B", "", "h0", "c0"], ["Y", "Yh"], hidden_size=4),
             helper.make_node("Loop", ["trips", "cond", "acc0"], ["acc"], body=body)]
    inits = [weight("W", 1, 16, 3), weight("R", 1, 16, 4), weight("B", 1, 32),
             const("h0", np.zeros((1, 2, 4)), np.float32), const("c0", np.zeros((1, 2, 4)), np.float32),
             const("trips", 2, np.int64), const("cond", True, np.bool_), const("acc0", np.zeros((1, 2, 4)), np.float32)]
    model = build(nodes, [vi("x", F, [5, 2, 3])], [vi("Y", F, [5, 1, 2, 4]), vi("acc", F, [1, 2, 4])], inits,
                  opset=14, ir_version=8)
    fp = edgefit.analyze(model)
    assert fp.params == 144
    assert fp.macs == 1120
    assert fp.weight_bytes == 144 * 4 + 2 * 32 + 8 + 1 + 32


def _qoperator_model():
    """What onnxruntime's quantize_static writes in QOperator format: x [2, 8] uint8 -> QGemm (B int8 8x4, int32
    bias 4) -> QLinearAdd with a uint8 constant [4] -> QLinearConcat with the QGemm output -> QLinearSoftmax."""
    scale = lambda name: const(name, 0.05, np.float32)      # noqa: E731
    zero = lambda name: const(name, 128, np.uint8)          # noqa: E731
    inits = [scale("xs"), zero("xz"), const("W", np.arange(32).reshape(8, 4) - 16, np.int8),
             const("ws", np.full(4, 0.01), np.float32), const("wz", np.zeros(4), np.int8),
             const("bias", [1, 2, 3, 4], np.int32), scale("ys"), zero("yz"),
             const("c", [1, 2, 3, 4], np.uint8), scale("cs"), zero("cz"), scale("as"), zero("az"),
             scale("ks"), zero("kz"), scale("ss"), zero("sz")]
    nodes = [helper.make_node("QGemm", ["x", "xs", "xz", "W", "ws", "wz", "bias", "ys", "yz"], ["y"],
                              domain="com.microsoft"),
             helper.make_node("QLinearAdd", ["y", "ys", "yz", "c", "cs", "cz", "as", "az"], ["a"],
                              domain="com.microsoft"),
             helper.make_node("QLinearConcat", ["ks", "kz", "a", "as", "az", "y", "ys", "yz"], ["k"], axis=1,
                              domain="com.microsoft"),
             helper.make_node("QLinearSoftmax", ["k", "ks", "kz", "ss", "sz"], ["s"], axis=-1, opset=13,
                              domain="com.microsoft")]
    return build(nodes, [vi("x", U8, [2, 8])], [vi("s", U8, [2, 8])], inits, opset=13, ir_version=8,
                 extra_opsets=[MS])


def test_onnxruntime_qoperator_scales_and_zero_points_are_not_parameters():
    # Parameters: QGemm's int8 weights 32 + int32 bias 4 + QLinearAdd's uint8 constant 4 = 40; every scale and zero
    # point is configuration. MACs: QGemm 2 x 4 x 8 = 64. FLOPs: 2 x 64 + 8 bias adds, Add 8, Concat 0, Softmax
    # 3 x 16.
    fp = edgefit.analyze(_qoperator_model())
    assert fp.params == 40
    assert fp.params_by_dtype == {"int8": 32, "int32": 4, "uint8": 4}
    assert fp.macs == 64
    assert fp.flops == 128 + 8 + 8 + 48
    assert not fp.unknowns


def test_fused_matmul_honours_its_transposes():
    # onnxruntime fuses Transpose(K) into the attention scores MatMul: FusedMatMul(q [2,3,5,4], k [2,3,6,4],
    # transB=1) -> [2,3,5,6], 2 x 3 x 5 x 6 x 4 = 720 MACs; then transA on a [2,3,4,5] operand: the same 720.
    nodes = [helper.make_node("FusedMatMul", ["q", "k"], ["s"], transB=1, alpha=0.5, domain="com.microsoft"),
             helper.make_node("FusedMatMul", ["qt", "k"], ["s2"], transA=1, transB=1, domain="com.microsoft")]
    model = build(nodes, [vi("q", F, [2, 3, 5, 4]), vi("k", F, [2, 3, 6, 4]), vi("qt", F, [2, 3, 4, 5])],
                  [vi("s", F, [2, 3, 5, 6]), vi("s2", F, [2, 3, 5, 6])], opset=13, ir_version=8, extra_opsets=[MS])
    fp = edgefit.analyze(model)
    assert not fp.unknowns
    assert [layer.macs for layer in fp.layers] == [720, 720]


def test_onnxruntime_dynamic_lstm_and_quick_gelu_are_costed():
    # quantize_dynamic turns a bidirectional LSTM (seq 4, batch 1, input 3, hidden 2) into DynamicQuantizeLSTM with
    # int8 W [2, 3, 8] and R [2, 2, 8]: MACs 2 directions x 4 x 1 x 4 gates x 2 x (3 + 2) = 320, as for the float
    # LSTM. Parameters 48 + 32 + B 2x16 = 112; the weight scales / zero points are not. ORT's QuickGelu costs 1 FLOP
    # per element.
    inits = [const("W", np.ones((2, 3, 8)), np.int8), const("R", np.ones((2, 2, 8)), np.int8), weight("B", 2, 16),
             const("Ws", [0.1, 0.1], np.float32), const("Wz", [0, 0], np.int8),
             const("Rs", [0.1, 0.1], np.float32), const("Rz", [0, 0], np.int8)]
    nodes = [helper.make_node("DynamicQuantizeLSTM", ["x", "W", "R", "B", "", "", "", "", "Ws", "Wz", "Rs", "Rz"],
                              ["Y"], hidden_size=2, direction="bidirectional", domain="com.microsoft"),
             helper.make_node("QuickGelu", ["Y"], ["g"], alpha=1.702, domain="com.microsoft")]
    model = build(nodes, [vi("x", F, [4, 1, 3])], [vi("g", F, [4, 2, 1, 2])], inits, opset=13, ir_version=8,
                  extra_opsets=[MS])
    fp = edgefit.analyze(model)
    assert not fp.unknowns
    assert fp.params == 112
    assert fp.macs == 320
    assert [layer.flops for layer in fp.layers][1] == 16


def test_fuse_keeps_a_tied_embedding_stored_once():
    # PyTorch exports a tied embedding as Gather(E) at the input and MatMul(h, Transpose(E)) at the output. Folding
    # that Transpose would store E [100, 16] (6,400 bytes) twice; it stays. A weight only its Transpose reads
    # (K [4, 100], 1,600 bytes) is still folded.
    from edgefit.passes import fuse

    nodes = [helper.make_node("Gather", ["E", "ids"], ["h"]),
             helper.make_node("Transpose", ["E"], ["Et"], perm=[1, 0]),
             helper.make_node("MatMul", ["h", "Et"], ["logits"]),
             helper.make_node("Transpose", ["K"], ["Kt"], perm=[1, 0]),
             helper.make_node("MatMul", ["logits", "Kt"], ["y"])]
    model = build(nodes, [vi("ids", I64, [1, 4])], [vi("y", F, [1, 4, 4])], [weight("E", 100, 16), weight("K", 4, 100)],
                  opset=17, ir_version=8)
    result = fuse(model)
    assert [n.op_type for n in result.model.graph.node] == ["Gather", "Transpose", "MatMul", "MatMul"]
    assert result.stats.rewrites == {"constants_folded": 1}
    assert edgefit.analyze(result.model).weight_bytes == edgefit.analyze(model).weight_bytes == (1600 + 400) * 4


def _tied_embedding_model():
    # ids [1, 4] -> Gather(E [50, 8]) -> MatMul(h, W [8, 8]) -> MatMul(., Transpose(E)) -> logits [1, 4, 50]:
    # parameters 400 + 64 = 464.
    nodes = [helper.make_node("Gather", ["E", "ids"], ["h"]), helper.make_node("MatMul", ["h", "W"], ["m"]),
             helper.make_node("Transpose", ["E"], ["Et"], perm=[1, 0]), helper.make_node("MatMul", ["m", "Et"], ["y"])]
    return build(nodes, [vi("ids", I64, [1, 4])], [vi("y", F, [1, 4, 50])], [weight("E", 50, 8), weight("W", 8, 8)],
                 opset=17, ir_version=8)


def test_onnxruntime_quantizers_keep_the_parameter_count(tmp_path):
    # quantize_static (QDQ) writes the tied embedding's output layer as Q(Transpose(DQ(E_int8))) -> DQ: the same
    # 400 parameters, not 400 more. quantize_dynamic (per channel) writes MatMulInteger + Mul(activation scale,
    # weight scales [8]): the weight scales are configuration. Both keep 464 parameters.
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_dynamic, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{"ids": np.array([[1, 2, 3, 4]], np.int64)}])

        def get_next(self):
            return next(self.feeds, None)

    source = tmp_path / "tied.onnx"
    source.write_bytes(_tied_embedding_model().SerializeToString())
    assert edgefit.analyze(source).params == 464
    quantize_static(str(source), str(tmp_path / "qdq.onnx"), Reader(), per_channel=False)
    qdq = edgefit.analyze(tmp_path / "qdq.onnx")
    assert qdq.params == 464 and qdq.params_by_dtype == {"int8": 464}
    quantize_dynamic(str(source), str(tmp_path / "dyn.onnx"), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul"])
    dynamic = edgefit.analyze(tmp_path / "dyn.onnx")
    assert any(layer.op_type == "MatMulInteger" for layer in dynamic.layers)
    assert dynamic.params == 464


def test_dimension_named_by_arithmetic_follows_the_dimensions_it_names():
    # Hugging Face Optimum names a decoder's attention_mask axis 'past_sequence_length + 1': with past 5 it is 6;
    # with --assume-dims 1, past is 1 (warned) and the mask 2, as the graph computes it. An unparsable or foreign
    # name stays a plain unbound dimension: an error naming it unless --assume-dims binds it.
    nodes = [helper.make_node("Relu", ["mask"], ["m"]), helper.make_node("Relu", ["past"], ["p"]),
             helper.make_node("Relu", ["other"], ["o"])]
    model = build(nodes, [vi("mask", F, ["batch", "past_sequence_length + 1"]),
                          vi("past", F, ["batch", 2, "past_sequence_length", 4]),
                          vi("other", F, ["2 * unknown_name", "batch-size"])],
                  [vi("m", F, None), vi("p", F, None), vi("o", F, None)], opset=17, ir_version=8)
    with pytest.raises(edgefit.ShapeError, match=r"input 'other' has unbound dimension\(s\) '2 \* unknown_name' "
                       r"\(axis 0\), 'batch-size' \(axis 1\) .*pass --input-shape "
                       r"other=<2 \* unknown_name>x<batch-size> \(or --assume-dims 1"):
        edgefit.analyze(model, dims={"batch": 3, "past_sequence_length": 5})
    fp = edgefit.analyze(model, dims={"batch": 3, "past_sequence_length": 5}, assume_dims=1)
    assert fp.inputs["mask"] == [3, 6] and fp.inputs["past"] == [3, 2, 5, 4] and fp.inputs["other"] == [1, 1]
    assert fp.warnings == ("unbound dimensions set to 1 by --assume-dims: 2 * unknown_name (in other), batch-size "
                           "(in other); the figures hold for that size only",)
    with pytest.raises(edgefit.ShapeError, match="'past_sequence_length' \\(axis 2\\).* or --dim past_sequence_length=VALUE"):
        edgefit.analyze(model, dims={"batch": 1}, input_shapes={"other": [1, 1]})
    fp = edgefit.analyze(model, dims={"batch": 1}, assume_dims=1)
    assert fp.inputs["mask"] == [1, 2] and fp.inputs["past"] == [1, 2, 1, 4]
    assert "past_sequence_length (in past)" in fp.warnings[0] and "+ 1" not in fp.warnings[0]


def _conv_pad_conv(pads):
    # tf2onnx's 'SAME' strided conv: x [1,3,8,8] -> Conv A (4 x 3x3x3, pads 1) -> Relu -> Pad -> Conv B (2 x 4x3x3,
    # stride 2, no pads) -> y [1,2,4,4].
    nodes = [helper.make_node("Conv", ["x", "A", "a"], ["h"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="A"),
             helper.make_node("Relu", ["h"], ["r"]), helper.make_node("Pad", ["r", "pads"], ["p"]),
             helper.make_node("Conv", ["p", "B", "b"], ["y"], kernel_shape=[3, 3], strides=[2, 2], name="B")]
    inits = [weight("A", 4, 3, 3, 3), weight("a", 4), weight("B", 2, 4, 3, 3), weight("b", 2),
             const("pads", pads, np.int64)]
    return build(nodes, [vi("x", F, [1, 3, 8, 8])], [vi("y", F, [1, 2, None, None])], inits, opset=13, ir_version=8)


def test_structured_pruning_passes_channels_through_a_spatial_pad():
    # Half of A's 4 channels go, and B loses the matching input channels: params A 2x27+2 = 56, B 2x2x9+2 = 38 (from
    # 112 + 74); MACs A 2 x 64 x 27 = 3,456 + B 2 x 16 x 18 = 576 (from 8,064). A Pad that pads channels blocks.
    import onnxruntime as ort

    from edgefit.passes import prune

    model = _conv_pad_conv([0, 0, 1, 1, 0, 0, 1, 1])
    result = prune(model, 0.5, structured=True)
    assert [(c.layer, c.channels_before, c.channels_after, c.rewired) for c in result.stats.channels] == [
        ("A", 4, 2, ("B",))]
    before, after = edgefit.analyze(model), edgefit.analyze(result.model)
    assert (before.params, before.macs, after.params, after.macs) == (186, 8064, 94, 4032)
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    y = ort.InferenceSession(result.model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert y[0].shape == (1, 2, 4, 4)
    with pytest.raises(PassError, match="A: its channels reach Pad"):
        prune(_conv_pad_conv([0, 1, 1, 1, 0, 1, 1, 1]), 0.5, structured=True)


def test_quantize_reports_activation_operand_matmuls_as_quantized():
    # onnxruntime's QDQ quantizer puts DequantizeLinear on both operands of the output layer MatMul(m, Transpose(E))
    # of a tied embedding (and of attention's Q.K^T): it runs as an int8 kernel, so it is reported as quantized.
    from edgefit.fidelity import synthetic_samples
    from edgefit.passes import quantize

    model = _tied_embedding_model()
    result = quantize(model, "int8", calibration=synthetic_samples(model))
    assert len(result.stats.quantized_layers) == 2
    assert not result.stats.float_layers
