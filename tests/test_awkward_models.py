"""edgefit.analyze on awkward but legal models: where weights hide, control flow, odd shapes, external data.

Every model is built here with onnx.helper and saved into tmp_path; every expected number is worked out by hand
in the comment beside it.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import build, const, layer, qdq_conv, rng_f32, save, state_body, symbolic_matmul, vi
from onnx import TensorProto, helper, numpy_helper

import edgefit
from edgefit import ShapeError

F, I64, I8, F16, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT8, TensorProto.FLOAT16, TensorProto.BOOL


# ---------------------------------------------------------------------------------------------------------------
# Where weights hide
# ---------------------------------------------------------------------------------------------------------------


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


def test_loop_trip_count_from_a_subgraph_initializer(tmp_path):
    # The Loop sits in the then-branch of an If, its trip count M3 = 3 is an initializer of that branch:
    # 3 x 16 = 48 MACs; the else-branch Relu has none.
    then_g = helper.make_graph([helper.make_node("Loop", ["M3", "", "x"], ["t"], name="inner_loop", body=state_body())],
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


# ---------------------------------------------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------
# External data
# ---------------------------------------------------------------------------------------------------------------


def test_awkward_models_render_in_the_terminal_and_as_json(tmp_path, capsys):
    import json

    from edgefit.cli import main

    models = {
        "loop_unknown.onnx": _loop_model(trip_count_input=True),
        "qdq.onnx": qdq_conv(tmp_path),
        "symbolic.onnx": symbolic_matmul(),
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


# --- Honest notes about what the file says ------------------------------------------------------------------------


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
