"""Cost rules, one op family at a time, on models small enough to count by hand."""

import pytest
from onnx import helper

import edgefit
from helpers import model, weight


def only_layer(m, **kwargs):
    fp = edgefit.analyze(m, **kwargs)
    return fp, {layer.op_type: layer for layer in fp.layers}


def test_conv_with_bias():
    # out 1x8x30x30 (3x3, no pad); per output: 3*3*3 = 27 MACs -> 7200 * 27 = 194,400.
    # FLOPs = 2 * MACs + one bias add per output = 388,800 + 7,200.
    m = model([helper.make_node("Conv", ["x", "w", "b"], ["y"])], [("x", [1, 3, 32, 32])], [("y", None)],
              [weight("w", 8, 3, 3, 3), weight("b", 8)])
    fp, layers = only_layer(m)
    assert fp.macs == 194_400
    assert fp.flops == 388_800 + 7_200
    assert fp.params == 8 * 27 + 8
    assert fp.weight_bytes == (216 + 8) * 4
    assert layers["Conv"].output_bytes == 7_200 * 4


def test_depthwise_strided_dilated_conv():
    # Depthwise 16 groups, 3x3, dilation 2, stride 2, pad 2: out 16 x 16 x 16 = 4096 outputs, 9 MACs each.
    m = model([helper.make_node("Conv", ["x", "w"], ["y"], group=16, strides=[2, 2], dilations=[2, 2],
                                pads=[2, 2, 2, 2])],
              [("x", [1, 16, 32, 32])], [("y", None)], [weight("w", 16, 1, 3, 3)])
    fp, _ = only_layer(m)
    assert fp.macs == 4096 * 9
    assert fp.params == 144


def test_grouped_conv():
    # 2 groups: W [8, 2, 1, 1] on 4 input channels; out 1x8x5x5 = 200 outputs x 2 MACs.
    m = model([helper.make_node("Conv", ["x", "w"], ["y"], group=2)], [("x", [1, 4, 5, 5])], [("y", None)],
              [weight("w", 8, 2, 1, 1)])
    assert edgefit.analyze(m).macs == 400


def test_conv_transpose():
    # Input 1x4x5x5 = 100 elements, each scattered to C_out(6) x 2 x 2 = 24 outputs.
    m = model([helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2])], [("x", [1, 4, 5, 5])],
              [("y", None)], [weight("w", 4, 6, 2, 2)])
    fp = edgefit.analyze(m)
    assert fp.macs == 2_400
    assert fp.outputs["y"] == [1, 6, 10, 10]


def test_gemm_transposed_with_bias():
    # A 2x64, B^T given as 10x64: M=2, N=10, K=64 -> 1,280 MACs; bias adds 20 FLOPs.
    m = model([helper.make_node("Gemm", ["a", "b", "c"], ["y"], transB=1)], [("a", [2, 64])], [("y", None)],
              [weight("b", 10, 64), weight("c", 10)])
    fp = edgefit.analyze(m)
    assert fp.macs == 1_280
    assert fp.flops == 2_560 + 20
    assert fp.params == 650


def test_batched_broadcast_matmul():
    # [4, 1, 8, 16] x [3, 16, 5] -> [4, 3, 8, 5] = 480 outputs, K = 16.
    m = model([helper.make_node("MatMul", ["a", "b"], ["y"])], [("a", [4, 1, 8, 16]), ("b", [3, 16, 5])],
              [("y", None)])
    fp = edgefit.analyze(m)
    assert fp.macs == 480 * 16
    assert fp.params == 0


def test_matmul_vector():
    m = model([helper.make_node("MatMul", ["a", "w"], ["y"])], [("a", [7])], [("y", None)], [weight("w", 7, 3)])
    assert edgefit.analyze(m).macs == 21


def test_attention_matmul_chain():
    # Q K^T: [1,4,16,8] x [1,4,8,16] -> 1024 outputs x 8; softmax; P V: [1,4,16,16] x [1,4,16,8] -> 512 x 16.
    nodes = [helper.make_node("MatMul", ["q", "kt"], ["s"]), helper.make_node("Softmax", ["s"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "v"], ["o"])]
    m = model(nodes, [("q", [1, 4, 16, 8]), ("kt", [1, 4, 8, 16]), ("v", [1, 4, 16, 8])], [("o", None)])
    fp = edgefit.analyze(m)
    assert fp.macs == 1024 * 8 + 512 * 16
    assert fp.flops == 2 * fp.macs + 3 * 1024


def test_einsum():
    # "bij,bjk->bik" with b=2, i=3, j=4, k=5: 2*3*4*5 = 120 MACs.
    m = model([helper.make_node("Einsum", ["a", "b"], ["y"], equation="bij,bjk->bik")],
              [("a", [2, 3, 4]), ("b", [2, 4, 5])], [("y", None)], opset=17)
    assert edgefit.analyze(m).macs == 120


@pytest.mark.parametrize("op,gates", [("LSTM", 4), ("GRU", 3), ("RNN", 1)])
def test_recurrent_all_steps_and_directions(op, gates):
    # seq 10, batch 2, input 8, hidden 16, bidirectional: 2 * 10 * 2 * gates * 16 * (8 + 16).
    seq, batch, inp, hidden = 10, 2, 8, 16
    m = model([helper.make_node(op, ["x", "w", "r", "b"], ["y"], hidden_size=hidden, direction="bidirectional")],
              [("x", [seq, batch, inp])], [("y", None)],
              [weight("w", 2, gates * hidden, inp), weight("r", 2, gates * hidden, hidden),
               weight("b", 2, 2 * gates * hidden)])
    fp = edgefit.analyze(m)
    assert fp.macs == 2 * seq * batch * gates * hidden * (inp + hidden)
    assert fp.params == 2 * gates * hidden * (inp + hidden) + 2 * 2 * gates * hidden


def test_pooling_and_elementwise_flops():
    # MaxPool 2x2 stride 2 on 1x4x8x8 -> 1x4x4x4 = 64 outputs x 4 compares; Relu on 256; global average on 64.
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("GlobalAveragePool", ["p"], ["g"])]
    fp = edgefit.analyze(model(nodes, [("x", [1, 4, 8, 8])], [("g", None)]))
    assert fp.macs == 0
    assert fp.flops == 256 + 64 * 4 + 64


def test_batchnorm_and_layernorm_flops_and_params():
    nodes = [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"]),
             helper.make_node("LayerNormalization", ["y", "g", "beta"], ["z"], axis=-1)]
    init = [weight(n, 4) for n in ("s", "b", "m", "v")] + [weight("g", 6), weight("beta", 6)]
    fp = edgefit.analyze(model(nodes, [("x", [1, 4, 5, 6])], [("z", None)], init, opset=17))
    assert fp.params == 16 + 12
    assert fp.flops == 2 * 120 + 5 * 120


def test_layer_records_match_totals():
    m = model([helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["y"])],
              [("x", [1, 1, 4, 4])], [("y", None)], [weight("w", 2, 1, 3, 3)])
    fp = edgefit.analyze(m)
    assert sum(l.macs for l in fp.layers) == fp.macs == 2 * 2 * 2 * 9
    assert sum(l.params for l in fp.layers) == fp.params == 18
    assert [l.name for l in fp.layers] == ["Conv_0", "Relu_1"]


def test_mismatched_inner_dimensions_are_unknown_not_counted():
    # A [1, 16] x B^T [10, 64]: the model cannot run at this input shape, so no MACs are claimed for the Gemm.
    m = model([helper.make_node("Gemm", ["a", "b"], ["y"], transB=1)], [("a", [1, 16])], [("y", None)],
              [weight("b", 10, 64)])
    fp = edgefit.analyze(m)
    assert fp.layers[0].macs is None
    assert any("inner dimensions disagree" in reason for reason in fp.unknowns)


def test_sequence_ops_cost_nothing():
    # SequenceConstruct(a, b) -> SequenceErase (drops the last) -> ConcatFromSequence: data movement only.
    from onnx import TensorProto

    nodes = [helper.make_node("SequenceConstruct", ["a", "b"], ["s"]), helper.make_node("SequenceErase", ["s"], ["t"]),
             helper.make_node("ConcatFromSequence", ["t"], ["y"], axis=0)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3]) for n in "ab"],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    fp = edgefit.analyze(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert (fp.macs, fp.flops) == (0, 0)
    # Sequences are not tensors: their memory is honestly unknown, their cost is not.
    assert fp.unknowns == ("activation RAM excludes 2 sequence/map value(s), whose size depends on the data: s, t",)
