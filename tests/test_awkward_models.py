"""edgefit.analyze on awkward but legal models: where weights hide, control flow, odd shapes, external data.

Every model is built here with onnx.helper and saved into tmp_path; every expected number is worked out by hand
in the comment beside it.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgefit
from edgefit import ModelError, ShapeError
from helpers import build, save, vi

F, I64, I8, F16, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT8, TensorProto.FLOAT16, TensorProto.BOOL


def const(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def layer(fp, name):
    return next(l for l in fp.layers if l.name == name)


def rng_f32(*shape):
    return np.random.default_rng(0).random(shape).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# Where weights hide
# ---------------------------------------------------------------------------------------------------------------

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


def _qdq_conv(tmp_path):
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


def test_qdq_weight_counted_once(tmp_path):
    fp = edgefit.analyze(save(_qdq_conv(tmp_path), tmp_path))
    # params: the 216 quantized weights once (not again as the dequantized float tensor) + 8 bias = 224.
    assert fp.params == 224
    # bytes: 216 int8 + 8*4 scale + 8*1 zero point + 8*4 bias = 216 + 32 + 8 + 32 = 288.
    assert fp.weight_bytes == 288
    assert fp.weight_bytes_by_dtype == {"int8": 216 + 8, "float32": 32 + 32}
    assert fp.params_by_dtype == {"int8": 216, "float32": 8}     # by the dtype the weight is stored in
    # Conv 3x4x4 -> 8x4x4 (pad 1): 128 outputs x 27 = 3456 MACs.
    assert fp.macs == 3456
    assert [l.op_type for l in fp.layers] == ["Conv"]


def _small_conv(dtype):
    np_dtype = onnx.helper.tensor_dtype_to_np_dtype(dtype)
    inits = [const("W", rng_f32(4, 3, 3, 3).astype(np_dtype)), const("Bias", np.zeros(4, np_dtype))]
    nodes = [helper.make_node("Conv", ["x", "W", "Bias"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    return build(nodes, [vi("x", dtype, [1, 3, 8, 8])], [vi("y", dtype, [1, 4, 6, 6])], inits)


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


def _gemm_model(opset, ir_version, weights_as_inputs):
    inits = [const("W", rng_f32(3, 4)), const("b", np.zeros(3, np.float32))]
    inputs = [vi("x", F, [1, 4])]
    if weights_as_inputs:
        inputs += [vi("W", F, [3, 4]), vi("b", F, [3])]
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["y"], name="fc", transB=1)]
    return build(nodes, inputs, [vi("y", F, [1, 3])], inits, opset=opset, ir_version=ir_version)


def test_old_ir_with_initializers_listed_as_inputs_and_opset_7(tmp_path):
    fp = edgefit.analyze(save(_gemm_model(opset=7, ir_version=3, weights_as_inputs=True), tmp_path))
    # W 3*4 = 12 + b 3 = 15 params, 60 bytes; [1,4]x[4,3] = 12 MACs.
    assert fp.opset == 7
    assert fp.params == 15 and fp.weight_bytes == 60 and fp.macs == 12
    assert fp.inputs == {"x": [1, 4]}     # the weights are not inputs the user must feed
    # Arena: x 16 bytes + y 12 -> 16 aligned = 32; the weights are not activations.
    assert fp.peak_activation_bytes == 32
    # input_shapes may name only the real input.
    with pytest.raises(ShapeError):
        edgefit.analyze(save(_gemm_model(7, 3, True), tmp_path, "b.onnx"), input_shapes={"W": [3, 4]})


def test_newest_opset(tmp_path):
    newest = onnx.defs.onnx_opset_version()
    fp = edgefit.analyze(save(_gemm_model(opset=newest, ir_version=None, weights_as_inputs=False), tmp_path))
    assert fp.opset == newest
    assert fp.params == 15 and fp.weight_bytes == 60 and fp.macs == 12   # as above


# ---------------------------------------------------------------------------------------------------------------
# Control flow
# ---------------------------------------------------------------------------------------------------------------

def test_if_reports_both_branches_and_counts_the_costlier(tmp_path):
    # then: x @ W                       -> [1,4]x[4,8] = 32 MACs
    # else: (x @ W) @ We2               -> 32 + [1,8]x[8,8] = 32 + 64 = 96 MACs; We2 lives inside the else graph.
    then_g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["t_out"], name="t_mm")], "then", [],
                               [vi("t_out", F, [1, 8])])
    else_g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["e_h"], name="e_mm1"),
                                helper.make_node("MatMul", ["e_h", "We2"], ["e_out"], name="e_mm2")], "else", [],
                               [vi("e_out", F, [1, 8])], initializer=[const("We2", rng_f32(8, 8))])
    nodes = [helper.make_node("If", ["cond"], ["y"], name="if", then_branch=then_g, else_branch=else_g)]
    model = build(nodes, [vi("cond", B, []), vi("x", F, [1, 4])], [vi("y", F, [1, 8])],
                  [const("W", rng_f32(4, 8))])
    fp = edgefit.analyze(save(model, tmp_path))
    node = layer(fp, "if")
    assert node.branches["then_branch"]["macs"] == 32
    assert node.branches["else_branch"]["macs"] == 96
    assert node.macs == 96 and fp.macs == 96
    # W (4*8 = 32) is read from both branches but counted once; We2 8*8 = 64 inside else: 96 params, 384 bytes.
    assert fp.params == 96 and fp.weight_bytes == 384
    assert fp.unknowns == ()


def _loop_model(trip_count_input: bool):
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("MatMul", ["h_in", "W"], ["h_out"], name="body_mm")],
        "body", [vi("i", I64, []), vi("cond_in", B, []), vi("h_in", F, [1, 4])],
        [vi("cond_out", B, []), vi("h_out", F, [1, 4])])
    nodes = [helper.make_node("Loop", ["M", "", "x"], ["y"], name="loop", body=body)]
    inputs = [vi("x", F, [1, 4])]
    inits = [const("W", rng_f32(4, 4))]
    if trip_count_input:
        inputs.append(vi("M", I64, []))
    else:
        inits.append(const("M", np.array(5, np.int64)))
    return build(nodes, inputs, [vi("y", F, [1, 4])], inits)


def test_loop_with_constant_trip_count(tmp_path):
    fp = edgefit.analyze(save(_loop_model(trip_count_input=False), tmp_path))
    # Body: [1,4]x[4,4] = 16 MACs (32 FLOPs) per iteration, 5 iterations -> 80 MACs, 160 FLOPs.
    assert layer(fp, "loop").macs == 80
    assert layer(fp, "loop").flops == 160
    assert layer(fp, "loop").branches["trip_count"] == {"value": 5}
    assert fp.macs == 80
    assert fp.params == 16       # W, read from the body, once (M is an int64 count, not a parameter)
    assert fp.unknowns == ()


def test_loop_with_unknown_trip_count_is_an_honest_unknown(tmp_path):
    fp = edgefit.analyze(save(_loop_model(trip_count_input=True), tmp_path))
    assert layer(fp, "loop").macs is None
    reasons = [u for u in fp.unknowns if "trip count" in u]
    assert len(reasons) == 1
    assert "loop" in reasons[0] and "16 MACs per iteration" in reasons[0]
    assert fp.params == 16


def _state_body(scan_output=False):
    nodes = [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
             helper.make_node("MatMul", ["h_in", "W"], ["h_out"], name="body_mm")]
    outputs = [vi("cond_out", B, []), vi("h_out", F, [1, 4])]
    if scan_output:
        nodes.append(helper.make_node("Relu", ["h_out"], ["s_out"]))
        outputs.append(vi("s_out", F, [1, 4]))
    return helper.make_graph(nodes, "body", [vi("i", I64, []), vi("cond_in", B, []), vi("h_in", F, [1, 4])], outputs)


def test_loop_state_shape_reaches_the_nodes_after_the_loop(tmp_path):
    # Condition-only Loop (no trip count); onnx infers no shape for its state output, but the body maps
    # h [1,4] -> [1,4], so y is [1,4] and the Relu after it does 4 FLOPs -- without an onnxruntime run.
    nodes = [helper.make_node("Loop", ["", "c", "x"], ["y"], name="loop", body=_state_body()),
             helper.make_node("Relu", ["y"], ["z"], name="relu")]
    model = build(nodes, [vi("c", B, []), vi("x", F, [1, 4])], [vi("z", F, None)], [const("W", rng_f32(4, 4))])
    fp = edgefit.analyze(save(model, tmp_path))
    assert fp.outputs == {"z": [1, 4]}
    assert layer(fp, "relu").flops == 4
    assert fp.shape_source == "onnx shape inference"
    assert len(fp.unknowns) == 1 and "trip count unknown" in fp.unknowns[0]


def test_never_ending_loop_does_not_hang_the_onnxruntime_fallback(tmp_path, monkeypatch):
    # The synthetic condition is True and the body passes it on: the Loop never ends. Its scan output ys has a
    # data-dependent length, so the fallback runs -- and must give up, saying so.
    monkeypatch.setattr("edgefit.shapes._FALLBACK_TIMEOUT_S", 0.5)
    nodes = [helper.make_node("Loop", ["", "c", "x"], ["y", "ys"], name="loop", body=_state_body(scan_output=True))]
    model = build(nodes, [vi("c", B, []), vi("x", F, [1, 4])], [vi("y", F, None), vi("ys", F, None)],
                  [const("W", rng_f32(4, 4))])
    start = time.perf_counter()
    fp = edgefit.analyze(save(model, tmp_path))
    assert time.perf_counter() - start < 5
    assert any("stopped after 0.5 s" in w for w in fp.warnings)
    assert fp.outputs == {"y": [1, 4], "ys": None}
    assert layer(fp, "loop").macs is None
    assert any("ys" in u for u in fp.unknowns)     # its activation bytes are unknown, and said to be


def test_loop_trip_count_from_a_subgraph_initializer(tmp_path):
    # The Loop sits in the then-branch of an If, its trip count M3 = 3 is an initializer of that branch:
    # 3 x 16 = 48 MACs; the else-branch Relu has none.
    then_g = helper.make_graph([helper.make_node("Loop", ["M3", "", "x"], ["t"], name="inner_loop", body=_state_body())],
                               "then", [], [vi("t", F, [1, 4])], initializer=[const("M3", np.array(3, np.int64))])
    else_g = helper.make_graph([helper.make_node("Relu", ["x"], ["e"])], "else", [], [vi("e", F, [1, 4])])
    nodes = [helper.make_node("If", ["c"], ["y"], name="if", then_branch=then_g, else_branch=else_g)]
    model = build(nodes, [vi("c", B, []), vi("x", F, [1, 4])], [vi("y", F, [1, 4])], [const("W", rng_f32(4, 4))])
    fp = edgefit.analyze(save(model, tmp_path))
    assert layer(fp, "if").branches["then_branch"]["macs"] == 48
    assert fp.macs == 48
    assert fp.unknowns == ()


@pytest.mark.parametrize("axis, xs_shape, trips", [(0, [5, 1, 4], 5), (1, [1, 7, 4], 7), (-2, [1, 7, 4], 7)])
def test_scan_trip_count_from_scan_axis(tmp_path, axis, xs_shape, trips):
    body = helper.make_graph(
        [helper.make_node("Add", ["h_in", "x_t"], ["s"], name="body_add"),
         helper.make_node("MatMul", ["s", "W"], ["h_out"], name="body_mm"),
         helper.make_node("Identity", ["h_out"], ["y_t"])],
        "body", [vi("h_in", F, [1, 4]), vi("x_t", F, [1, 4])], [vi("h_out", F, [1, 4]), vi("y_t", F, [1, 4])])
    nodes = [helper.make_node("Scan", ["h0", "xs"], ["h_final", "ys"], name="scan", body=body, num_scan_inputs=1,
                              scan_input_axes=[axis])]
    ys_shape = [trips, 1, 4]
    model = build(nodes, [vi("h0", F, [1, 4]), vi("xs", F, xs_shape)],
                  [vi("h_final", F, [1, 4]), vi("ys", F, ys_shape)], [const("W", rng_f32(4, 4))])
    fp = edgefit.analyze(save(model, tmp_path))
    # Per iteration: MatMul [1,4]x[4,4] = 16 MACs; Add 4 FLOPs + MatMul 32 FLOPs = 36 FLOPs.
    assert layer(fp, "scan").branches["trip_count"] == {"value": trips}
    assert layer(fp, "scan").macs == 16 * trips
    assert layer(fp, "scan").flops == 36 * trips
    assert fp.params == 16
    assert fp.unknowns == ()


def test_branch_shape_that_follows_from_an_outer_constant_is_resolved(tmp_path):
    # else branch: e0 = x @ wb [1, 2], e = Tile(e0, rep) with rep = [1, 4] an outer initializer: e is [1, 8].
    # then branch: x @ wa, 8 x 8 = 64 MACs (the costlier); activation RAM knows every tensor.
    then_g = helper.make_graph([helper.make_node("MatMul", ["x", "wa"], ["t"])], "then", [], [vi("t", F, [1, 8])])
    else_g = helper.make_graph([helper.make_node("MatMul", ["x", "wb"], ["e0"]),
                                helper.make_node("Tile", ["e0", "rep"], ["e"])], "else", [], [vi("e", F, [1, 8])])
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0), helper.make_node("Greater", ["s", "z"], ["c"]),
             helper.make_node("If", ["c"], ["y"], name="if", then_branch=then_g, else_branch=else_g)]
    model = build(nodes, [vi("x", F, [1, 8])], [vi("y", F, [1, 8])],
                  [const("wa", rng_f32(8, 8)), const("wb", rng_f32(8, 2)), const("z", np.array(0, np.float32)),
                   const("rep", np.array([1, 4], np.int64))])
    fp = edgefit.analyze(save(model, tmp_path))
    assert fp.unknowns == ()
    assert fp.macs == 64
    assert layer(fp, "if").branches["else_branch"]["peak_activation_bytes"] == 16 + 32   # e0 + e, 16-aligned

    # The same with the repeats in a Constant node, as PyTorch's exporter writes them.
    rep_node = helper.make_node("Constant", [], ["rep"], value=const("rep_value", np.array([1, 4], np.int64)))
    model.graph.initializer.pop()
    model.graph.node.insert(0, rep_node)
    fp = edgefit.analyze(save(model, tmp_path, "constant_node.onnx"))
    assert fp.unknowns == () and fp.macs == 64


def test_scan_8_runs_its_body_per_batch_item_and_step(tmp_path):
    # Scan-8 inputs are [batch, seq, ...]: xs [2, 6, 4] runs the body 2 x 6 = 12 times; MatMul [4] x [4, 4] = 16
    # MACs each: 192.
    body = helper.make_graph([helper.make_node("MatMul", ["xi", "w"], ["m"]), helper.make_node("Add", ["st", "m"], ["st2"]),
                              helper.make_node("Identity", ["st2"], ["yo"])],
                             "b", [vi("st", F, [4]), vi("xi", F, [4])], [vi("st2", F, [4]), vi("yo", F, [4])])
    nodes = [helper.make_node("Scan", ["", "s0", "xs"], ["sf", "ys"], name="scan", body=body, num_scan_inputs=1)]
    model = build(nodes, [vi("s0", F, [2, 4]), vi("xs", F, [2, 6, 4])], [vi("sf", F, [2, 4]), vi("ys", F, [2, 6, 4])],
                  [const("w", rng_f32(4, 4))], opset=8)
    fp = edgefit.analyze(save(model, tmp_path))
    assert layer(fp, "scan").branches["trip_count"] == {"value": 12}
    assert fp.macs == 192


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


# ---------------------------------------------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------------------------------------------

def _symbolic_matmul():
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")]
    return build(nodes, [vi("x", F, ["N", 4])], [vi("y", F, ["N", 8])], [const("W", rng_f32(4, 8))])


def test_symbolic_dim_bound_by_dims(tmp_path):
    fp = edgefit.analyze(save(_symbolic_matmul(), tmp_path), dims={"N": 3})
    # [3,4]x[4,8]: 3*8*4 = 96 MACs; x 48 bytes, y 96 bytes -> arena 144.
    assert fp.inputs == {"x": [3, 4]}
    assert fp.macs == 96
    assert fp.outputs == {"y": [3, 8]}
    assert fp.peak_activation_bytes == 48 + 96
    assert not any("unbound" in w for w in fp.warnings)


def test_unbound_batch_dim_defaults_to_one_with_a_warning_naming_it(tmp_path):
    fp = edgefit.analyze(save(_symbolic_matmul(), tmp_path))
    # N (a leading, batch-like axis) -> 1: [1,4]x[4,8] = 32 MACs.
    assert fp.inputs == {"x": [1, 4]}
    assert fp.macs == 32
    warning = next(w for w in fp.warnings if "batch dimension" in w)
    assert "N of x" in warning and "--dim" in warning


def test_input_shapes_override_declared_shape(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")]
    model = build(nodes, [vi("x", F, [1, 4])], [vi("y", F, [1, 8])], [const("W", rng_f32(4, 8))])
    path = save(model, tmp_path)
    fp = edgefit.analyze(path, input_shapes={"x": [5, 4]})
    # [5,4]x[4,8]: 5*8*4 = 160 MACs; the stale declared output [1,8] is not trusted.
    assert fp.inputs == {"x": [5, 4]}
    assert fp.macs == 160
    assert fp.outputs == {"y": [5, 8]}
    assert any("axis 0" in w for w in fp.warnings)
    # input_shapes also beats --dim for the same input.
    fp = edgefit.analyze(save(_symbolic_matmul(), tmp_path, "s.onnx"), input_shapes={"x": [2, 4]}, dims={"N": 9})
    assert fp.inputs == {"x": [2, 4]} and fp.macs == 2 * 8 * 4


def test_declared_minus_one_dim_is_unbound_not_negative(tmp_path):
    # Paddle and other exporters write dim_value -1 for "dynamic": a leading one is a batch (1, with a warning).
    model = _symbolic_matmul()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -1
    fp = edgefit.analyze(save(model, tmp_path))
    assert fp.inputs == {"x": [1, 4]}
    assert fp.macs == 32            # [1,4]x[4,8]
    assert any("batch dimension set to 1 (axis 0 of x)" in w for w in fp.warnings)


def test_dim_matching_nothing_warns(tmp_path):
    fp = edgefit.analyze(save(_symbolic_matmul(), tmp_path), dims={"N": 2, "batch": 4})
    assert fp.inputs == {"x": [2, 4]}
    assert any("batch" in w and "matches no symbolic dimension" in w for w in fp.warnings)


def test_conv_channel_mismatch_is_an_unknown_not_a_number(tmp_path):
    # W [4,3,3,3] expects 3 input channels; the user pins 5. Shape inference does not object, the cost rule must.
    nodes = [helper.make_node("Conv", ["x", "W"], ["y"], name="conv")]
    model = build(nodes, [vi("x", F, [1, 3, 8, 8])], [vi("y", F, [1, 4, 6, 6])], [const("W", rng_f32(4, 3, 3, 3))])
    fp = edgefit.analyze(save(model, tmp_path), input_shapes={"x": [1, 5, 8, 8]})
    assert layer(fp, "conv").macs is None
    assert any("5 channels" in u and "conv" in u for u in fp.unknowns)
    # Grouped: 6 input channels, group 2, W [4,3,3,3] is consistent: 4*6*6 = 144 outputs x 27 = 3888 MACs.
    grouped = build([helper.make_node("Conv", ["x", "W"], ["y"], name="conv", group=2)],
                    [vi("x", F, [1, 6, 8, 8])], [vi("y", F, None)], [const("W", rng_f32(4, 3, 3, 3))])
    fp = edgefit.analyze(save(grouped, tmp_path, "g.onnx"))
    assert layer(fp, "conv").macs == 3888 and fp.unknowns == ()


def test_reshape_chain_needing_data_propagation(tmp_path):
    inits = [const("W", rng_f32(12, 5)), const("zero", np.array([0], np.int64)),
             const("minus1", np.array([-1], np.int64))]
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "zero"], ["n"], name="gather", axis=0),
        helper.make_node("Concat", ["n", "minus1"], ["target"], name="concat", axis=0),
        helper.make_node("Reshape", ["x", "target"], ["r"], name="reshape"),
        helper.make_node("MatMul", ["r", "W"], ["y"], name="mm"),
    ]
    model = build(nodes, [vi("x", F, ["N", 3, 4])], [vi("y", F, ["N", 5])], inits)
    fp = edgefit.analyze(save(model, tmp_path), dims={"N": 2})
    # x [2,3,4] -> r [2,12]; [2,12]x[12,5] = 2*5*12 = 120 MACs.
    assert layer(fp, "mm").macs == 120
    assert fp.outputs == {"y": [2, 5]}
    assert fp.shape_source == "onnx shape inference"     # solved by data propagation, no onnxruntime run
    assert fp.unknowns == ()


def test_data_dependent_shape_resolved_by_onnxruntime(tmp_path):
    nodes = [
        helper.make_node("NonZero", ["x"], ["nz"], name="nonzero"),          # [2, K], K data-dependent
        helper.make_node("Cast", ["nz"], ["nzf"], name="cast", to=F),
        helper.make_node("Transpose", ["nzf"], ["t"], name="transpose", perm=[1, 0]),   # [K, 2]
        helper.make_node("MatMul", ["t", "W"], ["y"], name="mm"),             # [K, 3]
    ]
    model = build(nodes, [vi("x", F, [2, 3])], [vi("y", F, None)], [const("W", rng_f32(2, 3))])
    fp = edgefit.analyze(save(model, tmp_path))
    # The synthetic input is all non-zero, so K = 6: [6,2]x[2,3] = 6*3*2 = 36 MACs.
    assert "onnxruntime" in fp.shape_source
    assert layer(fp, "mm").macs == 36
    assert fp.outputs == {"y": [6, 3]}
    assert any("synthetic" in w for w in fp.warnings)


def test_input_without_declared_shape_asks_for_input_shape(tmp_path):
    x = onnx.ValueInfoProto(name="x")
    x.type.tensor_type.elem_type = F
    model = build([helper.make_node("Relu", ["x"], ["y"])], [x], [vi("y", F, None)])
    path = save(model, tmp_path)
    with pytest.raises(ShapeError, match="--input-shape x="):
        edgefit.analyze(path)
    # ... and with it the model analyses: Relu over 2*3 = 6 elements = 6 FLOPs.
    assert edgefit.analyze(path, input_shapes={"x": [2, 3]}).flops == 6


def test_enormous_shape_is_computed_not_allocated(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    model = build(nodes, [vi("x", F, [1, 3, 100000, 100000])], [vi("y", F, [1, 8, 100000, 100000])],
                  [const("W", rng_f32(8, 3, 3, 3))])
    start = time.perf_counter()
    fp = edgefit.analyze(save(model, tmp_path))
    assert time.perf_counter() - start < 5
    hw = 100000 * 100000
    # Conv: 8*hw outputs x 27 = 2.16e12 MACs exactly.
    assert fp.macs == 8 * hw * 27 == 2_160_000_000_000
    # x 3*hw*4 = 1.2e11 bytes, c and y 8*hw*4 = 3.2e11 bytes each. At the conv x + c = 4.4e11; at the relu
    # c + y = 6.4e11 (x is dead). Greedy placement: c at 0, y at 3.2e11, x at 3.2e11 (disjoint from y) -> 6.4e11.
    assert fp.activation_lower_bound_bytes == 640_000_000_000
    assert fp.peak_activation_bytes == 640_000_000_000
    assert fp.unknowns == ()


# ---------------------------------------------------------------------------------------------------------------
# External data
# ---------------------------------------------------------------------------------------------------------------

def _mlp():
    inits = [const("W1", rng_f32(64, 64)), const("b1", np.zeros(64, np.float32)), const("W2", rng_f32(64, 10))]
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], name="fc1"),
             helper.make_node("Relu", ["h"], ["a"], name="relu"),
             helper.make_node("MatMul", ["a", "W2"], ["y"], name="fc2")]
    return build(nodes, [vi("x", F, [1, 64])], [vi("y", F, [1, 10])], inits)


def _save_external(model, folder: Path, location="weights.bin") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "m.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=location,
                    size_threshold=1024)
    return path


def test_external_data_gives_the_same_numbers(tmp_path):
    inline = edgefit.analyze(save(_mlp(), tmp_path))
    path = _save_external(_mlp(), tmp_path / "ext")
    assert (tmp_path / "ext" / "weights.bin").stat().st_size > 64 * 64 * 4 - 1
    external = edgefit.analyze(path)
    # params 64*64 + 64 + 64*10 = 4800, bytes 19200; MACs 64*64 + 64*10 = 4736.
    assert inline.params == external.params == 4800
    assert inline.weight_bytes == external.weight_bytes == 19200
    assert inline.macs == external.macs == 4736
    assert inline.peak_activation_bytes == external.peak_activation_bytes
    assert inline.flops == external.flops


def _point_external_at(path: Path, location: str) -> None:
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save_model(model, str(path))


@pytest.mark.parametrize("where", ["parent", "absolute"])
def test_external_data_escaping_the_folder_is_refused(tmp_path, where):
    path = _save_external(_mlp(), tmp_path / "ext")
    outside = tmp_path / "x.bin"
    (tmp_path / "ext" / "weights.bin").rename(outside)
    _point_external_at(path, "../x.bin" if where == "parent" else str(outside))
    with pytest.raises(ModelError, match="outside the model's folder"):
        edgefit.analyze(path)


def test_missing_external_data_file(tmp_path):
    path = _save_external(_mlp(), tmp_path / "ext")
    (tmp_path / "ext" / "weights.bin").unlink()
    with pytest.raises(ModelError, match="missing"):
        edgefit.analyze(path)


def test_truncated_external_data_file_is_refused_with_the_tensor_it_cuts(tmp_path):
    # _mlp's weights: 64x64 + 64 + 64x10 float32 = 19,200 bytes, the large ones in weights.bin. Cut the file short.
    path = _save_external(_mlp(), tmp_path / "ext")
    data = tmp_path / "ext" / "weights.bin"
    full = data.stat().st_size
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(ModelError, match=rf"'weights.bin' has 1,000 bytes but tensor '\w+' ends at byte {full:,} "
                                         r"\(truncated\?\)"):
        edgefit.analyze(path)


def test_git_lfs_pointers_instead_of_the_model_or_its_data_are_named(tmp_path):
    pointer = b"version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 19200\n"
    path = _save_external(_mlp(), tmp_path / "ext")
    (tmp_path / "ext" / "weights.bin").write_bytes(pointer)
    with pytest.raises(ModelError, match="Git LFS pointer: run `git lfs pull`"):
        edgefit.analyze(path)
    (tmp_path / "model.onnx").write_bytes(pointer)
    with pytest.raises(ModelError, match="is a Git LFS pointer, not the model"):
        edgefit.analyze(tmp_path / "model.onnx")


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


def test_awkward_models_render_in_the_terminal_and_as_json(tmp_path, capsys):
    import json

    from edgefit.cli import main

    models = {
        "loop_unknown.onnx": _loop_model(trip_count_input=True),
        "qdq.onnx": _qdq_conv(tmp_path),
        "symbolic.onnx": _symbolic_matmul(),
    }
    for name, model in models.items():
        path = save(model, tmp_path, name)
        assert main(["analyze", str(path), "--per-layer"]) == 0
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err and "params" in out.lower()
        assert main(["analyze", str(path), "--json"]) == 0
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        data = json.loads(out)
        assert {"params", "weight_bytes", "macs", "flops", "peak_activation_bytes", "activation_lower_bound_bytes",
                "inputs", "unknowns", "layers"} <= set(data)


def test_unsorted_graph_with_if_subgraph_keeps_branch_shapes():
    # The If node comes before the node producing its input in the file; branch costs must still resolve:
    # then: MatMul [1,4]x[4,3] = 12 MACs; else: MatMul [1,4]x[4,5] = 20 MACs -> max 20.
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    def branch(name, cols):
        w = numpy_helper.from_array(np.ones((4, cols), np.float32), f"w_{name}")
        return helper.make_graph([helper.make_node("MatMul", ["r", f"w_{name}"], [f"out_{name}"])], name, [],
                                 [helper.make_tensor_value_info(f"out_{name}", TensorProto.FLOAT, None)], [w])

    nodes = [helper.make_node("If", ["cond"], ["y"], then_branch=branch("then", 3), else_branch=branch("else", 5)),
             helper.make_node("Relu", ["x"], ["r"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
                                           helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    fp = edgefit.analyze(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    if_layer = next(layer for layer in fp.layers if layer.op_type == "If")
    assert if_layer.macs == 20
    assert fp.params == 12 + 20
    assert fp.unknowns == ()


def test_empty_optional_input_keeps_slot_positions():
    # QuantizeLinear(x, scale, "") and DequantizeLinear(q, scale): the float scales sit at slot 1, a
    # quantization parameter, so params stay 0 while weight_bytes holds both 4-byte scales.
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("QuantizeLinear", ["x", "s", ""], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s2"], ["y"])]
    init = [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
            numpy_helper.from_array(np.array(0.2, np.float32), "s2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], init)
    fp = edgefit.analyze(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert fp.params == 0
    assert fp.weight_bytes == 8


def test_onnxruntime_fallback_loads_small_external_weights(tmp_path):
    # NonZero of a 3x4 all-ones input gives [2, 12]; its float cast times W [12, 5]: 2 * 12 * 5 = 120 MACs.
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("NonZero", ["x"], ["nz"]), helper.make_node("Cast", ["nz"], ["f"], to=1),
             helper.make_node("MatMul", ["f", "w"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.ones((12, 5), np.float32), "w")])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path,
              save_as_external_data=True, location="m.data", size_threshold=0)
    fp = edgefit.analyze(path)
    assert fp.macs == 120
    assert fp.unknowns == ()
    assert "external weights loaded" in fp.shape_source


def test_onnxruntime_optimized_model_with_contrib_ops(tmp_path, samples):
    # onnxruntime's extended optimizer fuses Conv+BN+Relu into com.microsoft.FusedConv, whose shapes onnx cannot
    # infer; the onnxruntime run fills them in and the MACs equal the original model's (BN folded away).
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "resnet8.ortopt.onnx")
    ort.InferenceSession(str(samples / "ic_resnet8.onnx"), options, providers=["CPUExecutionProvider"])
    fp = edgefit.analyze(tmp_path / "resnet8.ortopt.onnx")
    assert "com.microsoft.FusedConv" in fp.op_histogram
    assert fp.macs == 12_501_632
    assert fp.params == 77_706            # the BN-folded count of the Keras reference
    assert fp.unknowns == ()
    assert "onnxruntime run" in fp.shape_source


def _loop_over_sequence(trip_count_nodes, trip_count_name):
    """x [1, T, 8]; Loop runs trip_count times, each iteration a [1, 8] x [8, 8] MatMul on the carried state."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    body = helper.make_graph(
        [helper.make_node("MatMul", ["h_in", "w"], ["h_out"]), helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("h_in", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [1, 8])])
    nodes = trip_count_nodes + [helper.make_node("Loop", [trip_count_name, "cond", "h0"], ["h"], body=body)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "T", 8]),
                                           helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, 8])],
                              [numpy_helper.from_array(np.ones((8, 8), np.float32), "w"),
                               numpy_helper.from_array(np.array(True), "cond"),
                               numpy_helper.from_array(np.array([1], np.int64), "axis1")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_loop_trip_count_from_an_input_shape():
    # M = Squeeze(Gather(Shape(x), [1])) = T: with T = 12, 12 iterations x 64 MACs = 768.
    from onnx import helper

    count = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "axis1"], ["t1"], axis=0),
             helper.make_node("Squeeze", ["t1"], ["M"])]
    fp = edgefit.analyze(_loop_over_sequence(count, "M"), dims={"T": 12})
    loop = next(layer for layer in fp.layers if layer.op_type == "Loop")
    assert loop.branches["trip_count"] == {"value": 12}
    assert loop.macs == 12 * 64


def test_loop_trip_count_from_input_values_stays_unknown():
    # M = Cast(ReduceMax(x)) depends on the data, not the shape: an honest unknown, never a synthetic guess.
    from onnx import helper

    count = [helper.make_node("ReduceMax", ["x"], ["mx"], keepdims=0), helper.make_node("Cast", ["mx"], ["M"], to=7)]
    fp = edgefit.analyze(_loop_over_sequence(count, "M"), dims={"T": 12})
    loop = next(layer for layer in fp.layers if layer.op_type == "Loop")
    assert loop.macs is None
    assert any("trip count unknown" in reason for reason in fp.unknowns)


# --- What counts as a parameter ------------------------------------------------------------------------------------

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


def test_size_of_a_model_protobuf_refuses_to_measure_sends_it_to_external_data():
    # Recent protobuf raises instead of returning ByteSize() for messages of 2 GiB or more; the save and session
    # paths must then take the external-data route, which needs a size of at least 2 GiB.
    from google.protobuf.message import EncodeError

    from edgefit.model import serialized_size

    class OverTwoGiB:
        def ByteSize(self):
            raise EncodeError("Failed to serialize proto")

    assert serialized_size(OverTwoGiB()) == 2**31
    assert serialized_size(helper.make_tensor("t", F, [3], [1.0, 2.0, 3.0])) == helper.make_tensor(
        "t", F, [3], [1.0, 2.0, 3.0]).ByteSize()


# --- Honest notes about what the file says ------------------------------------------------------------------------

def test_declared_output_shape_the_graph_contradicts_is_reported(tmp_path):
    # Conv 8x3x3x3 on [1, 3, 8, 8] computes [1, 8, 6, 6]; the file declares [1, 1000].
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3])]
    model = build(nodes, [vi("x", F, [1, 3, 8, 8])], [vi("y", F, [1, 1000])], [const("w", rng_f32(8, 3, 3, 3))])
    fp = edgefit.analyze(save(model, tmp_path))
    assert fp.outputs == {"y": [1, 8, 6, 6]}
    assert any("'y' is declared 1x1000 but computes 1x8x6x6" in w for w in fp.warnings)


def test_weights_fed_as_graph_inputs_are_noted(tmp_path):
    # Exported without parameters: Conv's kernel and bias are graph inputs, so nothing is stored (params 0).
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[3, 3])]
    model = build(nodes, [vi("x", F, [1, 3, 8, 8]), vi("w", F, [8, 3, 3, 3]), vi("b", F, [8])], [vi("y", F, None)])
    fp = edgefit.analyze(save(model, tmp_path))
    assert fp.params == 0
    assert any("w (Conv), b (Conv) feed weight slots" in w for w in fp.warnings)


def test_model_local_functions_are_inlined_and_costed(tmp_path):
    # Function Linear(X, W) = MatMul(X, W) + 1-value bias; called once on x [1, 8] with W 8x4: 32 MACs,
    # 32 params (W; the scalar inside the function is configuration).
    function = helper.make_function(
        "local", "Linear", ["X", "W"], ["Y"],
        [helper.make_node("MatMul", ["X", "W"], ["P"]),
         helper.make_node("Constant", [], ["one"], value=const("one_v", np.array(1.0, np.float32))),
         helper.make_node("Add", ["P", "one"], ["Y"])],
        [helper.make_opsetid("", 17)])
    nodes = [helper.make_node("Linear", ["x", "W"], ["y"], domain="local", name="linear")]
    model = build(nodes, [vi("x", F, [1, 8])], [vi("y", F, None)], [const("W", rng_f32(8, 4))],
                  extra_opsets=[helper.make_opsetid("local", 1)])
    model.functions.append(function)
    fp = edgefit.analyze(save(model, tmp_path))
    assert (fp.macs, fp.params) == (32, 32)
    assert fp.unknowns == ()
    assert any("Linear inlined" in w for w in fp.warnings)


def test_analysis_leaves_the_model_it_is_given_unchanged():
    # Analyses never mutate: copies carry the stubs, bound shapes, shared outer constants and inlined functions.
    then_g = helper.make_graph([helper.make_node("Tile", ["x", "rep"], ["t"])], "then", [], [vi("t", F, [1, 8])])
    else_g = helper.make_graph([helper.make_node("Tile", ["x", "rep"], ["e"])], "else", [], [vi("e", F, [1, 8])])
    function = helper.make_function("local", "Twice", ["X"], ["Y"], [helper.make_node("Add", ["X", "X"], ["Y"])],
                                    [helper.make_opsetid("", 17)])
    nodes = [helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g),
             helper.make_node("MatMul", ["y", "W"], ["m"]), helper.make_node("Twice", ["m"], ["z"], domain="local")]
    model = build(nodes, [vi("c", B, []), vi("x", F, ["batch", 2])], [vi("z", F, [1, 999])],
                  [const("rep", np.array([1, 4], np.int64)), const("W", rng_f32(8, 100))],
                  extra_opsets=[helper.make_opsetid("local", 1)])
    model.functions.append(function)
    model.graph.value_info.append(vi("m", F, [7, 7]))   # stale annotation
    before = model.SerializeToString(deterministic=True)
    fp = edgefit.analyze(model, dims={"batch": 1})
    assert fp.macs == 8 * 100 and fp.params == 800
    assert model.SerializeToString(deterministic=True) == before
