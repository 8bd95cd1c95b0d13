"""Shape resolution: --input-shape / --dim parsing and binding, symbolic dims, data propagation, the onnxruntime
fallback, control-flow state shapes.
"""

from __future__ import annotations

import json
import time

import numpy as np
import onnx
import pytest
from helpers import (
    assert_usage_error,
    build,
    const,
    good_model,
    layer,
    rng_f32,
    run_cli,
    save,
    state_body,
    symbolic_matmul,
    vi,
)
from onnx import TensorProto, helper, numpy_helper

import edgefit
from edgefit import ShapeError

F, I64, I8, F16, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT8, TensorProto.FLOAT16, TensorProto.BOOL


@pytest.mark.parametrize("spec", ["x=1xAx8x8", "x=", "x=1x3x8x", "x=1x-3x8x8", "x=1.5x3x8x8", "x=axb", ""])
def test_bad_input_shape_syntax(tmp_path, capsys, spec):
    assert_usage_error(capsys, save(good_model(), tmp_path), "--input-shape", spec, mentions="--input-shape")


def test_unknown_input_name(tmp_path, capsys):
    line = assert_usage_error(capsys, save(good_model(), tmp_path), "--input-shape", "images=1x3x8x8",
                              mentions="images")
    assert "'x'" in line    # names the inputs the model does have


def test_input_shape_with_wrong_rank(tmp_path, capsys):
    assert_usage_error(capsys, save(good_model(), tmp_path), "--input-shape", "x=1x3x8", mentions="rank")


def test_input_without_declared_shape_through_cli(tmp_path, capsys):
    x = onnx.ValueInfoProto(name="x")
    x.type.tensor_type.elem_type = F
    model = build([helper.make_node("Relu", ["x"], ["y"])], [x], [vi("y", F, None)])
    assert_usage_error(capsys, save(model, tmp_path), mentions="--input-shape x=")


@pytest.mark.parametrize("spec", ["N", "N=", "=3", "N=abc", "N=-1", "N=2.5"])
def test_bad_dim(tmp_path, capsys, spec):
    assert_usage_error(capsys, save(good_model(), tmp_path), "--dim", spec, mentions="--dim")


def test_zero_dim_is_refused_or_handled(tmp_path, capsys):
    rc, out, err = run_cli(capsys, save(good_model(), tmp_path), "--dim", "N=0", "--json")
    assert "Traceback" not in out + err
    if rc == 0:
        # A batch of zero does no work: MACs 0.
        assert json.loads(out)["macs"] == 0
    else:
        assert rc == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error:")


def test_input_smaller_than_the_kernel(tmp_path, capsys):
    # 1x1 image through a 3x3 valid convolution: output side 1 - 3 + 1 = -1, the model cannot run.
    line = assert_usage_error(capsys, save(good_model(), tmp_path), "--input-shape", "x=1x3x1x1", mentions="negative")
    assert "'c'" in line     # names the first tensor that goes wrong (the Conv output), not a later one


@pytest.mark.parametrize("option, spec", [("--input-shape", "x=99999999999999999999x3x8x8"),
                                          ("--dim", "N=99999999999999999999")])
def test_dimension_beyond_int64(tmp_path, capsys, option, spec):
    assert_usage_error(capsys, save(good_model(), tmp_path), option, spec, mentions=option)


def test_negative_dimension_through_the_api(tmp_path):
    path = save(good_model(), tmp_path)
    with pytest.raises(edgefit.ShapeError):
        edgefit.analyze(path, input_shapes={"x": [-1, 3, 8, 8]})
    with pytest.raises(edgefit.ShapeError):
        edgefit.analyze(path, dims={"N": -2})


def test_symbolic_dim_bound_by_dims(tmp_path):
    fp = edgefit.analyze(save(symbolic_matmul(), tmp_path), dims={"N": 3})
    # [3,4]x[4,8]: 3*8*4 = 96 MACs; x 48 bytes, y 96 bytes -> arena 144.
    assert fp.inputs == {"x": [3, 4]}
    assert fp.macs == 96
    assert fp.outputs == {"y": [3, 8]}
    assert fp.peak_activation_bytes == 48 + 96
    assert not any("unbound" in w for w in fp.warnings)


def test_unbound_batch_dim_defaults_to_one_with_a_warning_naming_it(tmp_path):
    fp = edgefit.analyze(save(symbolic_matmul(), tmp_path))
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
    fp = edgefit.analyze(save(symbolic_matmul(), tmp_path, "s.onnx"), input_shapes={"x": [2, 4]}, dims={"N": 9})
    assert fp.inputs == {"x": [2, 4]} and fp.macs == 2 * 8 * 4


def test_declared_minus_one_dim_is_unbound_not_negative(tmp_path):
    # Paddle and other exporters write dim_value -1 for "dynamic": a leading one is a batch (1, with a warning).
    model = symbolic_matmul()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -1
    fp = edgefit.analyze(save(model, tmp_path))
    assert fp.inputs == {"x": [1, 4]}
    assert fp.macs == 32            # [1,4]x[4,8]
    assert any("batch dimension set to 1 (axis 0 of x)" in w for w in fp.warnings)


def test_dim_matching_nothing_warns(tmp_path):
    fp = edgefit.analyze(save(symbolic_matmul(), tmp_path), dims={"N": 2, "batch": 4})
    assert fp.inputs == {"x": [2, 4]}
    assert any("batch" in w and "matches no symbolic dimension" in w for w in fp.warnings)


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


def test_loop_state_shape_reaches_the_nodes_after_the_loop(tmp_path):
    # Condition-only Loop (no trip count); onnx infers no shape for its state output, but the body maps
    # h [1,4] -> [1,4], so y is [1,4] and the Relu after it does 4 FLOPs -- without an onnxruntime run.
    nodes = [helper.make_node("Loop", ["", "c", "x"], ["y"], name="loop", body=state_body()),
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
    nodes = [helper.make_node("Loop", ["", "c", "x"], ["y", "ys"], name="loop", body=state_body(scan_output=True))]
    model = build(nodes, [vi("c", B, []), vi("x", F, [1, 4])], [vi("y", F, None), vi("ys", F, None)],
                  [const("W", rng_f32(4, 4))])
    start = time.perf_counter()
    fp = edgefit.analyze(save(model, tmp_path))
    assert time.perf_counter() - start < 5
    assert any("stopped after 0.5 s" in w for w in fp.warnings)
    assert fp.outputs == {"y": [1, 4], "ys": None}
    assert layer(fp, "loop").macs is None
    assert any("ys" in u for u in fp.unknowns)     # its activation bytes are unknown, and said to be


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


def test_declared_output_shape_the_graph_contradicts_is_reported(tmp_path):
    # Conv 8x3x3x3 on [1, 3, 8, 8] computes [1, 8, 6, 6]; the file declares [1, 1000].
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3])]
    model = build(nodes, [vi("x", F, [1, 3, 8, 8])], [vi("y", F, [1, 1000])], [const("w", rng_f32(8, 3, 3, 3))])
    fp = edgefit.analyze(save(model, tmp_path))
    assert fp.outputs == {"y": [1, 8, 6, 6]}
    assert any("'y' is declared 1x1000 but computes 1x8x6x6" in w for w in fp.warnings)


def test_one_table_for_symbolic_and_resolved_shapes():
    """Passes and analysis read the same ShapeTable: symbols kept for passes, numbers once the inputs are bound."""
    from edgefit.shapes import infer_symbolic_shapes, resolve_shapes

    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    proto = helper.make_model(helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Cast", ["h"], ["y"], to=TensorProto.INT8)],
        "g", [vi("x", F, ["N", 4])], [vi("y", I8, None)], [w]), opset_imports=[helper.make_opsetid("", 17)])

    symbolic = infer_symbolic_shapes(proto)
    assert symbolic.dims("h") == ("N", 3) and symbolic.lookup("h").shape is None
    assert symbolic.dims("w") == (4, 3) and symbolic.lookup("w").nbytes == 48
    assert (symbolic.dtype("h"), symbolic.dtype("y")) == ("float32", "int8")
    assert symbolic.dims("missing") is None and symbolic.inputs == {}

    resolved = resolve_shapes(proto, {"x": [5, 4]})
    assert resolved.dims("h") == resolved.lookup("h").shape == (5, 3)
    assert resolved.lookup("y").nbytes == 15 and resolved.dtype("y") == "int8"
