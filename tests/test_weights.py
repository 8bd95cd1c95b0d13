"""What counts as a weight (edgefit.analysis.weights): Constant nodes, folded constants, QDQ, shared and tied weights,
configuration constants, subgraphs.
"""

from __future__ import annotations

import numpy as np
import onnx
from helpers import build, const, layer, qdq_conv, rng_f32, save, vi
from onnx import TensorProto, helper

import edgefit

F, I64, I8, F16, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT8, TensorProto.FLOAT16, TensorProto.BOOL


def _small_conv(dtype):
    np_dtype = onnx.helper.tensor_dtype_to_np_dtype(dtype)
    inits = [const("W", rng_f32(4, 3, 3, 3).astype(np_dtype)), const("Bias", np.zeros(4, np_dtype))]
    nodes = [helper.make_node("Conv", ["x", "W", "Bias"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    return build(nodes, [vi("x", dtype, [1, 3, 8, 8])], [vi("y", dtype, [1, 4, 6, 6])], inits)


def test_weights_in_constant_nodes_only(tmp_path):
    sparse_values = const("sv", np.array([1.0, 2.0, 3.0], np.float32))
    sparse_indices = const("si", np.array([0, 5, 287], np.int64))          # linear indices into [144, 2]
    nodes = [
        helper.make_node("Constant", [], ["W"], value=const("Wt", rng_f32(4, 3, 3, 3))),
        helper.make_node("Constant", [], ["Bias"], value_floats=[0.1, 0.2, 0.3, 0.4]),
        helper.make_node("Constant", [], ["S"], value_ints=[1, 144]),
        helper.make_node("Constant", [], ["M"],
                         sparse_value=helper.make_sparse_tensor(sparse_values, sparse_indices, [144, 2])),
        helper.make_node("Conv", ["x", "W", "Bias"], ["c"], name="conv"),
        helper.make_node("Reshape", ["c", "S"], ["r"], name="flat"),
        helper.make_node("MatMul", ["r", "M"], ["y"], name="fc"),
    ]
    model = build(nodes, [vi("x", F, [1, 3, 8, 8])], [vi("y", F, [1, 2])])
    fp = edgefit.analyze(save(model, tmp_path))
    # params: W 4*3*3*3 = 108, Bias 4 (value_floats), M dense 144*2 = 288 (sparse_value); S is int64 shape data.
    assert fp.params == 108 + 4 + 288 == 400
    assert layer(fp, "conv").params == 112 and layer(fp, "fc").params == 288 and layer(fp, "flat").params == 0
    # weight bytes as stored: W 108*4 = 432, Bias 4*4 = 16, S 2 int64 = 16,
    # M sparse: 3 float32 values (12) + 3 int64 indices (24) = 36.
    assert fp.weight_bytes == 432 + 16 + 16 + 36 == 500
    # Conv 3x8x8 -> 4x6x6 (no padding): 144 outputs x (3*3*3 = 27) = 3888; MatMul [1,144]x[144,2]: 1*2*144 = 288.
    assert layer(fp, "conv").macs == 3888
    assert layer(fp, "fc").macs == 288
    assert fp.macs == 3888 + 288 == 4176
    # Constant nodes are weights, not layers.
    assert [l.op_type for l in fp.layers] == ["Conv", "Reshape", "MatMul"]
    assert fp.unknowns == ()


def test_weight_made_by_constant_of_shape(tmp_path):
    nodes = [
        helper.make_node("Constant", [], ["shape"], value=const("s", np.array([16, 3, 3, 3], np.int64))),
        helper.make_node("ConstantOfShape", ["shape"], ["W"], value=const("v", np.array([0.01], np.float32))),
        helper.make_node("Conv", ["x", "W"], ["y"], name="conv"),
    ]
    model = build(nodes, [vi("x", F, [1, 3, 8, 8])], [vi("y", F, [1, 16, 6, 6])])
    fp = edgefit.analyze(save(model, tmp_path))
    # W = 16*3*3*3 = 432 float32 params; a deployed model holds the expanded tensor: 432*4 = 1728 bytes.
    assert fp.params == 432
    assert fp.weight_bytes == 1728
    # 16*6*6 = 576 outputs x 27 = 15552 MACs.
    assert fp.macs == 15552
    assert [l.op_type for l in fp.layers] == ["Conv"]


def test_cast_reshape_transpose_of_constants_fold_into_one_weight(tmp_path):
    inits = [const("W16", rng_f32(6, 4).astype(np.float16)), const("shape", np.array([3, 8], np.int64))]
    nodes = [
        helper.make_node("Cast", ["W16"], ["W32"], to=F),
        helper.make_node("Reshape", ["W32", "shape"], ["W38"]),
        helper.make_node("Transpose", ["W38"], ["W83"], perm=[1, 0]),
        helper.make_node("MatMul", ["x", "W83"], ["y"], name="mm"),
    ]
    model = build(nodes, [vi("x", F, [2, 8])], [vi("y", F, [2, 3])], inits)
    fp = edgefit.analyze(save(model, tmp_path))
    # The MatMul consumes one [8,3] weight: 24 params.
    assert fp.params == 24
    # Stored: W16 24 fp16 = 48 bytes + the reshape target, 2 int64 = 16 bytes.
    assert fp.weight_bytes == 48 + 16 == 64
    assert fp.params_by_dtype == {"float16": 24}                 # stored as fp16, computed in fp32
    # [2,8] x [8,3]: 2*3*8 = 48 MACs.
    assert fp.macs == 48
    assert [l.name for l in fp.layers] == ["mm"]


def test_qdq_weight_counted_once(tmp_path):
    fp = edgefit.analyze(save(qdq_conv(tmp_path), tmp_path))
    # params: the 216 quantized weights once (not again as the dequantized float tensor) + 8 bias = 224.
    assert fp.params == 224
    # bytes: 216 int8 + 8*4 scale + 8*1 zero point + 8*4 bias = 216 + 32 + 8 + 32 = 288.
    assert fp.weight_bytes == 288
    assert fp.weight_bytes_by_dtype == {"int8": 216 + 8, "float32": 32 + 32}
    assert fp.params_by_dtype == {"int8": 216, "float32": 8}     # by the dtype the weight is stored in
    # Conv 3x4x4 -> 8x4x4 (pad 1): 128 outputs x 27 = 3456 MACs.
    assert fp.macs == 3456
    assert [l.op_type for l in fp.layers] == ["Conv"]


def test_fp16_model_halves_weight_bytes(tmp_path):
    fp32 = edgefit.analyze(save(_small_conv(F), tmp_path, "a.onnx"))
    fp16 = edgefit.analyze(save(_small_conv(F16), tmp_path, "b.onnx"))
    # params 108 + 4 = 112 either way; bytes 112*4 = 448 vs 112*2 = 224.
    assert fp32.params == fp16.params == 112
    assert fp32.weight_bytes == 448 and fp16.weight_bytes == 224
    assert fp16.weight_bytes_by_dtype == {"float16": 224}
    assert fp32.macs == fp16.macs == 144 * 27
    # Activations halve too: x 192 elements, c and y 144 each. fp32: x 768 + c 576 at the conv, then c 576 + y 576
    # at the relu -> 1344 and 1152; the arena is 768 + 576 = 1344 (all multiples of 16). fp16: 384 + 288 = 672.
    assert fp32.peak_activation_bytes == 1344
    assert fp16.peak_activation_bytes == 672


def test_shared_weight_counted_once(tmp_path):
    inits = [const("W", rng_f32(4, 4))]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm1"),
             helper.make_node("MatMul", ["h", "W"], ["y"], name="mm2")]
    model = build(nodes, [vi("x", F, [1, 4])], [vi("y", F, [1, 4])], inits)
    fp = edgefit.analyze(save(model, tmp_path))
    # W is 16 float32 = 64 bytes, attributed to its first consumer only.
    assert fp.params == 16 and fp.weight_bytes == 64
    assert layer(fp, "mm1").params == 16 and layer(fp, "mm2").params == 0
    # Two [1,4]x[4,4] products: 16 + 16 = 32 MACs.
    assert fp.macs == 32


def test_weights_inside_nested_subgraphs_and_outer_weights_counted_once(tmp_path):
    # Outer If whose then branch holds an inner If; W (outer, 4x4 = 16) is read at every level,
    # Wi (2*4 = 8... as a [4,2] initializer inside the inner then branch) only there.
    inner_then = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["a"]),
                                    helper.make_node("MatMul", ["a", "Wi"], ["it_out"])], "it", [],
                                   [vi("it_out", F, [1, 2])], initializer=[const("Wi", rng_f32(4, 2))])
    inner_else = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["b"]),
                                    helper.make_node("Slice", ["b", "st", "en", "ax"], ["ie_out"])], "ie", [],
                                   [vi("ie_out", F, [1, 2])])
    outer_then = helper.make_graph([helper.make_node("If", ["cond"], ["ot_out"], name="inner_if",
                                                     then_branch=inner_then, else_branch=inner_else)],
                                   "ot", [], [vi("ot_out", F, [1, 2])])
    outer_else = helper.make_graph([helper.make_node("MatMul", ["x", "W2"], ["oe_out"])], "oe", [],
                                   [vi("oe_out", F, [1, 2])])
    nodes = [helper.make_node("If", ["cond"], ["y"], name="outer_if", then_branch=outer_then,
                              else_branch=outer_else)]
    inits = [const("W", rng_f32(4, 4)), const("W2", rng_f32(4, 2)), const("st", np.array([0], np.int64)),
             const("en", np.array([2], np.int64)), const("ax", np.array([1], np.int64))]
    model = build(nodes, [vi("cond", B, []), vi("x", F, [1, 4])], [vi("y", F, [1, 2])], inits)
    fp = edgefit.analyze(save(model, tmp_path))
    # params: W 16 + Wi 8 + W2 8 = 32 (st/en/ax are int64 slice bounds, not parameters).
    assert fp.params == 32
    # bytes: 32 float32 = 128, + st/en/ax 3 int64 = 24 -> 152.
    assert fp.weight_bytes == 152
    # inner then: 16 + 8 = 24 MACs; inner else: 16 MACs -> inner If 24. outer else: [1,4]x[4,2] = 8 -> outer 24.
    assert layer(fp, "outer_if").macs == 24
    assert layer(fp, "outer_if").branches["else_branch"]["macs"] == 8


def test_sparse_initializer(tmp_path):
    values = const("M", np.array([1.0, 2.0, 3.0, 4.0], np.float32))
    indices = const("M_idx", np.array([[0, 0], [1, 3], [2, 5], [9, 7]], np.int64))   # [nnz, rank] form
    nodes = [helper.make_node("MatMul", ["x", "M"], ["y"], name="mm")]
    graph = helper.make_graph(nodes, "g", [vi("x", F, [2, 10])], [vi("y", F, [2, 8])],
                              sparse_initializer=[helper.make_sparse_tensor(values, indices, [10, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    fp = edgefit.analyze(save(model, tmp_path))
    # Dense [10,8] = 80 params; stored: 4 float32 values (16) + 4x2 int64 indices (64) = 80 bytes.
    assert fp.params == 80
    assert fp.weight_bytes == 16 + 64
    # [2,10]x[10,8]: 2*8*10 = 160 MACs.
    assert fp.macs == 160
    assert fp.inputs == {"x": [2, 10]}


def test_outer_scope_folded_weight_read_only_in_subgraphs_counts_its_storage(tmp_path):
    # W16 (fp16 [4,8] = 32 params, 64 bytes) is cast to float32 in the main graph; only the If branches read it.
    then_g = helper.make_graph([helper.make_node("MatMul", ["x", "W32"], ["t"])], "then", [], [vi("t", F, [1, 8])])
    else_g = helper.make_graph([helper.make_node("MatMul", ["x", "W32"], ["e0"]),
                                helper.make_node("Relu", ["e0"], ["e"])], "else", [], [vi("e", F, [1, 8])])
    nodes = [helper.make_node("Cast", ["W16"], ["W32"], to=F),
             helper.make_node("If", ["cond"], ["y"], name="if", then_branch=then_g, else_branch=else_g)]
    model = build(nodes, [vi("cond", B, []), vi("x", F, [1, 4])], [vi("y", F, [1, 8])],
                  [const("W16", rng_f32(4, 8).astype(np.float16))])
    fp = edgefit.analyze(save(model, tmp_path))
    assert fp.params == 32
    assert fp.weight_bytes == 64                        # as stored (fp16), not as the float32 it is cast to
    assert fp.weight_bytes_by_dtype == {"float16": 64}
    # [1,4]x[4,8] = 32 MACs in either branch.
    assert fp.macs == 32
    assert [l.op_type for l in fp.layers] == ["If"]


def test_tied_embedding_read_through_transpose_is_counted_once(tmp_path):
    # E [100, 16] feeds Gather (embedding) and, transposed, the LM head MatMul: one stored table.
    # params 1600, weight bytes 6400; MACs: [1, 5, 16] x [16, 100] = 5 * 16 * 100 = 8000.
    nodes = [helper.make_node("Gather", ["E", "ids"], ["h"], name="embed"),
             helper.make_node("Transpose", ["E"], ["Et"], perm=[1, 0]),
             helper.make_node("MatMul", ["h", "Et"], ["logits"], name="lm_head")]
    graph = helper.make_graph(nodes, "g", [vi("ids", I64, [1, 5])], [vi("logits", F, None)],
                              [const("E", np.ones((100, 16), np.float32))])
    fp = edgefit.analyze(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert (fp.params, fp.weight_bytes, fp.macs) == (1600, 6400, 8000)
    assert [layer.params for layer in fp.layers] == [1600, 0]


def test_constant_node_weight_read_directly_and_through_identity_is_counted_once():
    # One 8x8 Constant read by Gemm and, through Identity, by MatMul: 64 params, 256 bytes.
    nodes = [helper.make_node("Constant", [], ["W"], value=const("Wv", np.ones((8, 8), np.float32))),
             helper.make_node("Identity", ["W"], ["W2"]),
             helper.make_node("Gemm", ["x", "W"], ["a"]), helper.make_node("MatMul", ["a", "W2"], ["y"])]
    graph = helper.make_graph(nodes, "g", [vi("x", F, [1, 8])], [vi("y", F, None)])
    fp = edgefit.analyze(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert (fp.params, fp.weight_bytes) == (64, 256)


def test_configuration_constants_are_stored_but_not_parameters():
    # Conv weight 4x3x3x3 = 108 and MatMul weight 8x4 = 32 are parameters (140). Clip bounds (2 floats), Pad's
    # value (1 float), Resize scales (4 floats), Dropout's ratio (1 float), a LayerNorm-style epsilon added as a
    # scalar (1 float) and the int64 pads (8) are configuration: stored (4 * (140 + 2 + 1 + 4 + 1 + 1) + 8 * 8 =
    # 660 bytes), not parameters.
    f32 = lambda name, value: const(name, np.array(value, np.float32))  # noqa: E731
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3]),
             helper.make_node("Clip", ["c", "lo", "hi"], ["r6"]),
             helper.make_node("Pad", ["r6", "pads", "pv"], ["p"], mode="constant"),
             helper.make_node("Resize", ["p", "", "scales"], ["y"], mode="nearest"),
             helper.make_node("MatMul", ["v", "mw"], ["m"]), helper.make_node("Dropout", ["m", "ratio"], ["d"]),
             helper.make_node("Add", ["d", "eps"], ["z"])]
    weights = [f32("w", np.ones((4, 3, 3, 3))), f32("lo", 0.0), f32("hi", 6.0),
               const("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)), f32("pv", 0.0),
               f32("scales", [1, 1, 2, 2]), f32("mw", np.ones((8, 4))), f32("ratio", 0.5), f32("eps", 1e-5)]
    graph = helper.make_graph(nodes, "g", [vi("x", F, [1, 3, 5, 5]), vi("v", F, [1, 8])],
                              [vi("y", F, None), vi("z", F, None)], weights)
    fp = edgefit.analyze(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert fp.params == 140 and fp.params_by_dtype == {"float32": 140}
    assert fp.weight_bytes == 660 and fp.weight_bytes_by_dtype == {"float32": 596, "int64": 64}


def test_a_learned_bias_vector_in_an_add_is_a_parameter():
    # Only one-value constants of elementwise ops are taken for hyperparameters: a [4] bias is learned.
    nodes = [helper.make_node("Add", ["x", "b"], ["y"])]
    graph = helper.make_graph(nodes, "g", [vi("x", F, [1, 4])], [vi("y", F, None)],
                              [const("b", np.ones(4, np.float32))])
    assert edgefit.analyze(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])).params == 4


def test_weights_fed_as_graph_inputs_are_noted(tmp_path):
    # Exported without parameters: Conv's kernel and bias are graph inputs, so nothing is stored (params 0).
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[3, 3])]
    model = build(nodes, [vi("x", F, [1, 3, 8, 8]), vi("w", F, [8, 3, 3, 3]), vi("b", F, [8])], [vi("y", F, None)])
    fp = edgefit.analyze(save(model, tmp_path))
    assert fp.params == 0
    assert any("w (Conv), b (Conv) feed weight slots" in w for w in fp.warnings)
