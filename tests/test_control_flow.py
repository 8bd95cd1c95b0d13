"""If / Loop / Scan counted: shapes inside subgraphs follow from the outer scope, an If whose condition is known
before run time counts the branch it takes, Loop and Scan bodies count once per iteration.

Every MAC figure below is worked out by hand with the project's rules (edgefit/analysis/macs.py):
LSTM = directions x seq x batch x 4 x hidden x (input + hidden); MatMul = output elements x K.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

import edgefit
from edgefit.errors import ShapeError
from tests.helpers import B, F, I64, build, run_cli, save, vi


def const_node(name: str, value) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name))


def torch_pad(prefix: str, data: str, pads: list[int], rank: int, out: str) -> list[onnx.NodeProto]:
    """F.pad(data, pads) as PyTorch's exporter writes it (Silero VAD's STFT padding): the pad list runs from the
    last axis backwards, so it is padded with zeros, reshaped to pairs, reversed, transposed and flattened. onnx's
    data propagation stops at ConstantOfShape / Transpose, so on its own shape inference cannot size the result."""
    p = f"{prefix}/"
    return [
        const_node(p + "list", np.array(pads, np.int64)),
        helper.make_node("Shape", [p + "list"], [p + "list_shape"]),
        const_node(p + "zero", np.array(0, np.int64)),
        helper.make_node("Gather", [p + "list_shape", p + "zero"], [p + "given"]),
        const_node(p + "two_rank", np.array(2 * rank, np.int64)),
        helper.make_node("Sub", [p + "two_rank", p + "given"], [p + "missing"]),
        helper.make_node("Unsqueeze", [p + "missing", p + "axes0"], [p + "missing_1d"]),
        helper.make_node("ConstantOfShape", [p + "missing_1d"], [p + "zeros"],
                         value=numpy_helper.from_array(np.array([0], np.int64))),
        helper.make_node("Concat", [p + "list", p + "zeros"], [p + "all"], axis=0),
        helper.make_node("Reshape", [p + "all", p + "pairs_shape"], [p + "pairs"]),
        helper.make_node("Slice", [p + "pairs", p + "minus1", p + "min", p + "axes0", p + "minus1"], [p + "rev"]),
        helper.make_node("Transpose", [p + "rev"], [p + "begin_end"], perm=[1, 0]),
        helper.make_node("Reshape", [p + "begin_end", p + "minus1"], [p + "flat"]),
        helper.make_node("Pad", [data, p + "flat"], [out]),
    ], [numpy_helper.from_array(np.array([0], np.int64), p + "axes0"),
        numpy_helper.from_array(np.array([-1, 2], np.int64), p + "pairs_shape"),
        numpy_helper.from_array(np.array([-1], np.int64), p + "minus1"),
        numpy_helper.from_array(np.array([-2**63 + 1], np.int64), p + "min")]


def lstm_branch(name: str, hidden: int, direction: str, input_size: int = 4) -> onnx.GraphProto:
    """x (outer scope, [5, 1, 3]) padded on its last axis by one -> [5, 1, 4] -> LSTM -> Y_h."""
    dirs = 2 if direction == "bidirectional" else 1
    nodes, inits = torch_pad(name, "x", [0, 1], 3, f"{name}_padded")
    rng = np.random.default_rng(len(name))
    inits += [numpy_helper.from_array(rng.standard_normal((dirs, 4 * hidden, input_size)).astype(np.float32), f"{name}_W"),
              numpy_helper.from_array(rng.standard_normal((dirs, 4 * hidden, hidden)).astype(np.float32), f"{name}_R")]
    nodes.append(helper.make_node("LSTM", [f"{name}_padded", f"{name}_W", f"{name}_R"], ["", f"{name}_h"],
                                  hidden_size=hidden, direction=direction, name=f"{name}_lstm"))
    nodes.append(helper.make_node("ReduceSum", [f"{name}_h"], [f"{name}_out"], keepdims=0))
    return helper.make_graph(nodes, name, [], [vi(f"{name}_out", F, None)], initializer=inits)


# then: 1 x 5 x 1 x 4 x 4 x (4 + 4) = 640; else (bidirectional): 2 x 5 x 1 x 4 x 6 x (4 + 6) = 2,400.
THEN_MACS, ELSE_MACS = 640, 2400


def lstm_if_model(condition_nodes, inputs) -> onnx.ModelProto:
    nodes = condition_nodes + [helper.make_node("If", ["cond"], ["y"], name="if", then_branch=lstm_branch("then", 4, "forward"),
                                                else_branch=lstm_branch("else", 6, "bidirectional"))]
    return build(nodes, [vi("x", F, [5, 1, 3]), *inputs], [vi("y", F, None)])


def layer(fp, name):
    return next(item for item in fp.layers if item.name == name)


def test_onnx_alone_cannot_size_the_lstm_input_inside_the_branch():
    # What makes the cases below worth testing: plain onnx shape inference leaves the padded input unsized.
    model = lstm_if_model([helper.make_node("Greater", ["s", "z"], ["cond"])], [vi("s", F, []), vi("z", F, [])])
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    then_g = next(a.g for a in inferred.graph.node[-1].attribute if a.name == "then_branch")
    padded = next(v for v in then_g.value_info if v.name == "then_padded")
    assert [d.dim_value for d in padded.type.tensor_type.shape.dim][-1] == 0   # unknown last axis


def test_if_on_data_counts_the_costlier_lstm_branch_fed_from_the_outer_scope(tmp_path):
    model = lstm_if_model([helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
                           helper.make_node("Greater", ["s", "z"], ["cond"])], [vi("z", F, [])])
    fp = edgefit.analyze(save(model, tmp_path))
    branches = layer(fp, "if").branches
    assert branches["then_branch"]["macs"] == THEN_MACS
    assert branches["else_branch"]["macs"] == ELSE_MACS
    assert fp.macs == ELSE_MACS and fp.unknowns == ()
    # x is a data tensor, no setting a user could pass: the inputs are named, no --input-value suggested.
    assert fp.control_flow == ("if (If): condition depends on input data ('x', 'z'); both branches analysed, the "
                               "costlier counts (else_branch)",)
    # The model runs as built in onnxruntime, either way, with the output shape edgefit resolved (a scalar).
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.ones((5, 1, 3), np.float32)
    for threshold in (-100, 100):
        assert session.run(None, {"x": x, "z": np.array(threshold, np.float32)})[0].shape == ()
    assert fp.outputs == {"y": []}


@pytest.mark.parametrize("value, branch, macs", [(16000, "then_branch", THEN_MACS), (8000, "else_branch", ELSE_MACS)])
def test_if_resolved_by_a_given_input_value(tmp_path, value, branch, macs):
    # cond = Equal(sr, 16000), as Silero VAD chooses its 16 kHz or 8 kHz network.
    model = lstm_if_model([const_node("rate", np.array(16000, np.int64)),
                           helper.make_node("Equal", ["sr", "rate"], ["cond"])], [vi("sr", I64, [])])
    path = save(model, tmp_path)
    fp = edgefit.analyze(path, input_values={"sr": [value]})
    assert fp.macs == macs and fp.unknowns == ()
    assert fp.control_flow == (f"if (If): {branch} taken, its condition known from input value sr; only that "
                               f"branch is counted",)
    # Without the value both branches count, the costlier wins, and the note names the option that decides it.
    undecided = edgefit.analyze(path)
    assert undecided.macs == ELSE_MACS
    assert undecided.control_flow == ("if (If): condition depends on input 'sr': pass --input-value sr=VALUE to "
                                      "count only the branch it takes; both branches analysed, the costlier counts "
                                      "(else_branch)",)


def test_if_resolved_by_constants_and_by_shapes(tmp_path):
    # Equal(Gather(Shape(x), 1), 1): PyTorch's "squeeze only if that axis is 1"; x is [5, 1, 3], so true.
    by_shape = lstm_if_model([helper.make_node("Shape", ["x"], ["shape"]), const_node("one", np.array(1, np.int64)),
                              helper.make_node("Gather", ["shape", "one"], ["batch"]),
                              helper.make_node("Equal", ["batch", "one"], ["cond"])], [])
    fp = edgefit.analyze(save(by_shape, tmp_path, "shape.onnx"))
    assert fp.macs == THEN_MACS
    assert "then_branch taken, its condition known from tensor shapes" in fp.control_flow[0]
    # A condition computed from constants alone through ops onnx does not propagate (Not of Equal).
    by_constant = lstm_if_model([const_node("a", np.array([3], np.int64)), const_node("b", np.array([3], np.int64)),
                                 helper.make_node("Equal", ["a", "b"], ["same"]), helper.make_node("Not", ["same"], ["nc"]),
                                 helper.make_node("Squeeze", ["nc"], ["cond"])], [])
    fp = edgefit.analyze(save(by_constant, tmp_path, "constant.onnx"))
    assert fp.macs == ELSE_MACS
    assert "else_branch taken, its condition known from constants" in fp.control_flow[0]


def test_input_value_on_the_command_line(tmp_path, capsys):
    model = lstm_if_model([const_node("rate", np.array(16000, np.int64)),
                           helper.make_node("Equal", ["sr", "rate"], ["cond"])], [vi("sr", I64, [])])
    path = save(model, tmp_path)
    rc, out, _ = run_cli(capsys, path, "--input-value", "sr=16000", "--json")
    data = json.loads(out)
    assert rc == 0 and data["macs"] == THEN_MACS and data["macs_is_lower_bound"] is False
    assert data["control_flow"][0].startswith("if (If): then_branch taken")
    for bad, message in (("sr=16000.5", "holds int64, not fractions"), ("rate=1", "unknown input 'rate'"),
                         ("sr=1,2", "2 value(s) given for an input of shape scalar"), ("sr=", "invalid --input-value")):
        rc, out, err = run_cli(capsys, path, "--input-value", bad)
        assert rc == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def loop_body(extra_nodes=(), extra_inits=()) -> onnx.GraphProto:
    """h [1, 4] -> MatMul W [4, 4] (16 MACs) -> h."""
    nodes = [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
             helper.make_node("MatMul", ["h_in", "W"], ["h_mm"], name="body_mm"), *extra_nodes]
    last = extra_nodes[-1].output[0] if extra_nodes else "h_mm"
    nodes.append(helper.make_node("Identity", [last], ["h_out"]))
    return helper.make_graph(nodes, "body", [vi("i", I64, []), vi("cond_in", B, []), vi("h_in", F, [1, 4])],
                             [vi("cond_out", B, []), vi("h_out", F, [1, 4])], initializer=list(extra_inits))


def test_loop_with_a_constant_trip_count_counts_the_body_that_many_times(tmp_path):
    nodes = [const_node("M", np.array(7, np.int64)),
             helper.make_node("Loop", ["M", "", "h0"], ["h"], name="loop", body=loop_body())]
    model = build(nodes, [vi("h0", F, [1, 4])], [vi("h", F, None)],
                  [numpy_helper.from_array(np.eye(4, dtype=np.float32), "W")])
    fp = edgefit.analyze(save(model, tmp_path))
    assert fp.macs == 7 * 16 and fp.unknowns == ()
    assert fp.control_flow == ("loop (Loop): body counted 7 time(s)",)
    assert fp.outputs == {"h": [1, 4]}


def test_loop_without_a_trip_count_is_an_honest_unknown(tmp_path):
    nodes = [helper.make_node("Loop", ["", "go", "h0"], ["h"], name="loop", body=loop_body())]
    model = build(nodes, [vi("go", B, []), vi("h0", F, [1, 4])], [vi("h", F, None)],
                  [numpy_helper.from_array(np.eye(4, dtype=np.float32), "W")])
    fp = edgefit.analyze(save(model, tmp_path))
    assert layer(fp, "loop").macs is None and fp.to_dict()["macs_is_lower_bound"] is True
    assert fp.unknowns == ("Loop trip count unknown (body: 16 MACs per iteration) (1 node: loop)",)


def test_scan_counts_the_body_per_step_on_inputs_sliced_along_their_axis(tmp_path):
    # xs [4, 6] scanned along axis 1: six steps, each x_t [4]; x_t @ V [4, 3] = 12 MACs and h @ W = 16 MACs.
    body = helper.make_graph(
        [helper.make_node("MatMul", ["x_t", "V"], ["z_t"], name="body_xv"),
         helper.make_node("MatMul", ["h_in", "W"], ["h_out"], name="body_hw")],
        "body", [vi("h_in", F, [1, 4]), vi("x_t", F, None)], [vi("h_out", F, None), vi("z_t", F, None)])
    nodes = [helper.make_node("Scan", ["h0", "xs"], ["h", "zs"], name="scan", body=body, num_scan_inputs=1,
                              scan_input_axes=[1])]
    model = build(nodes, [vi("h0", F, [1, 4]), vi("xs", F, [4, 6])], [vi("h", F, None), vi("zs", F, None)],
                  [numpy_helper.from_array(np.eye(4, dtype=np.float32), "W"),
                   numpy_helper.from_array(np.ones((4, 3), np.float32), "V")])
    fp = edgefit.analyze(save(model, tmp_path))
    assert layer(fp, "scan").branches["body"]["macs"] == 12 + 16
    assert fp.macs == 6 * (12 + 16) and fp.unknowns == ()
    assert fp.outputs == {"h": [1, 4], "zs": [6, 3]}


def test_if_nested_in_a_loop(tmp_path):
    # Inside the body: If(i < 1) picks MatMul W [4, 4] (16) or MatMul W2 [4, 4] then W (32); the iteration
    # number is data to the analysis, so the costlier (32) counts each of the 3 iterations, after the body's own
    # 16: 3 x (16 + 32) = 144. A second If in the body asks Equal(Shape(h)[1], 4): true from shapes.
    then_g = helper.make_graph([helper.make_node("MatMul", ["h_mm", "W"], ["t"])], "then", [], [vi("t", F, None)])
    else_g = helper.make_graph([helper.make_node("MatMul", ["h_mm", "W2"], ["e0"]),
                                helper.make_node("MatMul", ["e0", "W"], ["e"])], "else", [], [vi("e", F, None)])
    by_shape_then = helper.make_graph([helper.make_node("Identity", ["picked"], ["s"])], "st", [], [vi("s", F, None)])
    by_shape_else = helper.make_graph([helper.make_node("MatMul", ["picked", "W"], ["s2"])], "se", [],
                                      [vi("s2", F, None)])
    extra = [const_node("one", np.array(1, np.int64)), helper.make_node("Less", ["i", "one"], ["first"]),
             helper.make_node("If", ["first"], ["picked"], name="inner_if", then_branch=then_g, else_branch=else_g),
             helper.make_node("Shape", ["picked"], ["shape"]), helper.make_node("Gather", ["shape", "one"], ["width"]),
             const_node("four", np.array(4, np.int64)), helper.make_node("Equal", ["width", "four"], ["is_four"]),
             helper.make_node("If", ["is_four"], ["chosen"], name="shape_if", then_branch=by_shape_then,
                              else_branch=by_shape_else)]
    nodes = [const_node("M", np.array(3, np.int64)),
             helper.make_node("Loop", ["M", "", "h0"], ["h"], name="loop", body=loop_body(extra))]
    model = build(nodes, [vi("h0", F, [1, 4])], [vi("h", F, None)],
                  [numpy_helper.from_array(np.eye(4, dtype=np.float32), "W"),
                   numpy_helper.from_array(np.eye(4, dtype=np.float32), "W2")])
    fp = edgefit.analyze(save(model, tmp_path))
    assert fp.macs == 3 * (16 + 32) and fp.unknowns == ()
    notes = " | ".join(fp.control_flow)
    assert "inner_if (If): condition depends on input data" in notes
    assert "shape_if (If): then_branch taken, its condition known from tensor shapes" in notes
    assert "loop (Loop): body counted 3 time(s)" in notes


@pytest.mark.parametrize("seq, branch, macs", [(5, "then_branch", 5 * 4 * 4 * (4 + 4)), (1, "else_branch", 0)])
def test_symbolic_dim_inside_the_body_decides_the_branch(tmp_path, seq, branch, macs):
    # x ["seq", 1, 4] with seq bound by --dim; the branch reads Shape(x)[0] > 1: a real LSTM over the sequence,
    # else a single step handled by an Identity. The LSTM's sequence length is the symbolic dim itself.
    rng = np.random.default_rng(0)
    then_g = helper.make_graph(
        [helper.make_node("LSTM", ["x", "Wl", "Rl"], ["", "h"], hidden_size=4, name="seq_lstm"),
         helper.make_node("Squeeze", ["h", "zero"], ["t"])], "then", [], [vi("t", F, None)],
        initializer=[numpy_helper.from_array(rng.standard_normal((1, 16, 4)).astype(np.float32), "Wl"),
                     numpy_helper.from_array(rng.standard_normal((1, 16, 4)).astype(np.float32), "Rl")])
    else_g = helper.make_graph([helper.make_node("Squeeze", ["x", "zero"], ["e"])], "else", [], [vi("e", F, None)])
    nodes = [helper.make_node("Shape", ["x"], ["shape"]), const_node("zero", np.array([0], np.int64)),
             helper.make_node("Gather", ["shape", "zero"], ["steps"]), const_node("one", np.array([1], np.int64)),
             helper.make_node("Greater", ["steps", "one"], ["longer"]), helper.make_node("Squeeze", ["longer"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], name="if", then_branch=then_g, else_branch=else_g)]
    model = build(nodes, [vi("x", F, ["seq", 1, 4])], [vi("y", F, None)])
    fp = edgefit.analyze(save(model, tmp_path), dims={"seq": seq})
    assert fp.macs == macs and fp.unknowns == ()
    assert f"if (If): {branch} taken, its condition known from tensor shapes" in fp.control_flow[0]
    assert fp.outputs == {"y": [1, 4]}


def test_input_value_shape_errors():
    model = lstm_if_model([helper.make_node("Equal", ["sr", "sr"], ["cond"])], [vi("sr", I64, [])])
    with pytest.raises(ShapeError, match="--input-value sr: the input holds int64"):
        edgefit.analyze(model, input_values={"sr": [0.5]})


@pytest.mark.parametrize("rate, samples, macs", [(16000, 576, 679_552), (8000, 288, 383_616)])
def test_silero_vad_v5_counts_the_lstm_inside_its_if_branches(rate, samples, macs):
    # The wrapper feeds 512 samples + 64 of context at 16 kHz (256 + 32 at 8 kHz). Hand count at 16 kHz:
    # STFT conv 258 x 4 x 256 = 264,192; encoder 128x4x129x3 = 198,144, 64x2x128x3 = 49,152, 64x1x64x3 = 12,288,
    # 128x1x64x3 = 24,576; LSTM 1 x 1 x 4 x 128 x (128 + 128) = 131,072; decoder conv 128 -> 679,552.
    # At 8 kHz: 130x4x128 = 66,560; 128x4x65x3 = 99,840; then the same 49,152 + 12,288 + 24,576 + 131,072 + 128.
    silero_vad = pytest.importorskip("silero_vad", reason="silero-vad (the real model) is not installed")
    from importlib.resources import files

    path = files(silero_vad) / "data" / "silero_vad.onnx"
    fp = edgefit.analyze(str(path), {"input": [1, samples], "state": [2, 1, 128]}, input_values={"sr": [rate]})
    assert fp.macs == macs
    assert fp.to_dict()["macs_is_lower_bound"] is False and fp.unknowns == ()
    assert fp.control_flow[-1].startswith(f"If_0 (If): {'then' if rate == 16000 else 'else'}_branch taken")
