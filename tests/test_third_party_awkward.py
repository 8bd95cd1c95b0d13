"""Passes, fidelity and rendering on awkward third-party-style models: float16 weights, scalar inputs, graphs stored
out of order, names full of markup characters, outputs that are inputs or weights, data-dependent output shapes,
models onnxruntime cannot run.

Every model is built here with onnx.helper; expected values are worked out by hand beside them.
"""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgefit.cli import main
from edgefit.fidelity import SampleSet, measure
from edgefit.passes.quantize import quantize
from helpers import build, save, vi

F, F16 = TensorProto.FLOAT, TensorProto.FLOAT16


def weight(name, *shape, dtype=np.float32, seed=0):
    return numpy_helper.from_array(np.random.default_rng(seed).standard_normal(shape).astype(dtype), name)


def run(model: onnx.ModelProto, feed: dict) -> list[np.ndarray]:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.ir_version = min(copy.ir_version, 10)
    options = ort.SessionOptions()
    options.log_severity_level = 4
    return ort.InferenceSession(copy.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, feed)


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def fp16_convnet() -> onnx.ModelProto:
    """x[1,3,8,8] fp16 -> Conv(8x3x3x3, bias) -> Relu -> Flatten -> Gemm(10x288, transB) -> y[1,10] fp16."""
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Flatten", ["r"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="fc", transB=1)]
    inits = [weight("w", 8, 3, 3, 3, dtype=np.float16), weight("b", 8, dtype=np.float16, seed=1),
             weight("fw", 10, 288, dtype=np.float16, seed=2), weight("fb", 10, dtype=np.float16, seed=3)]
    return build(nodes, [vi("x", F16, [1, 3, 8, 8])], [vi("y", F16, [1, 10])], inits)


# ---------------------------------------------------------------------------------------------------------------
# Fidelity metrics
# ---------------------------------------------------------------------------------------------------------------

def test_all_zero_original_against_nonzero_result_is_not_identical():
    # signal 0, noise 4 * 1^2 = 4: SQNR = 10 log10(0 / 4) = -inf, which used to print as "identical".
    samples = SampleSet(({"x": np.zeros((1, 4), np.float32)},), 1, "synthetic")
    fidelity = measure([[np.zeros(4, np.float32)]], [[np.ones(4, np.float32)]], samples, None)
    assert fidelity.sqnr_db == -math.inf
    assert fidelity.max_abs_error == 1.0
    assert not fidelity.identical
    assert fidelity.to_dict()["identical"] is False


def test_output_whose_shape_changed_is_left_out_and_counted():
    # Output 0 (NonZero-like) has 3 rows before and 2 after: not comparable. Output 1 matches exactly.
    samples = SampleSet(({"x": np.zeros((1, 4), np.float32)},), 1, "synthetic")
    ref = [[np.ones((3, 2), np.float32), np.array([1.0, 2.0], np.float32)]]
    out = [[np.ones((2, 2), np.float32), np.array([1.0, 2.0], np.float32)]]
    fidelity = measure(ref, out, samples, None)
    assert fidelity.mismatched_outputs == 1
    assert fidelity.cosine == 1.0 and fidelity.max_abs_error == 0.0
    assert not fidelity.identical   # one output differs in shape, so the models are not identical
    data = fidelity.to_dict()
    assert data["mismatched_outputs"] == 1 and data["identical"] is False


def test_int8_quantization_changing_a_nonzero_count_reports_fidelity(tmp_path, capsys):
    # x -> NonZero (data-dependent row count) and x -> MatMul(8x4). int8 QDQ on x rounds small values to 0,
    # so NonZero's output can change shape; this used to crash with "operands could not be broadcast".
    nodes = [helper.make_node("NonZero", ["x"], ["nz"]), helper.make_node("Transpose", ["nz"], ["nzt"]),
             helper.make_node("MatMul", ["x", "w"], ["y"])]
    model = build(nodes, [vi("x", F, [2, 8])], [vi("nzt", TensorProto.INT64, None), vi("y", F, [2, 4])],
                  [weight("w", 8, 4)])
    # Calibration range max |x| = 10: scale 10/127 ~ 0.079, so the 0.001 entries quantize to 0 and NonZero
    # finds 16 - 3 = 13 entries instead of 16 in every sample. NonZero -> Transpose is an output head, which
    # stays float and reads x unquantized by default: --quantize-heads makes it read the quantized x.
    x = np.ones((4, 2, 8), np.float32)
    x[:, 0, 0] = 10.0
    x[:, 1, :3] = 0.001
    np.savez(tmp_path / "calib.npz", x=x)
    code, out, err = cli(capsys, "quantize", save(model, tmp_path), "--mode", "int8", "-o", tmp_path / "q.onnx",
                         "--calib", tmp_path / "calib.npz", "--quantize-heads", "--json")
    assert code == 0, err
    fidelity = json.loads(out)["fidelity"]
    assert fidelity["mismatched_outputs"] == 1
    assert fidelity["identical"] is False and fidelity["cosine"] > 0.99


# ---------------------------------------------------------------------------------------------------------------
# Models the passes used to crash on
# ---------------------------------------------------------------------------------------------------------------

def test_scalar_input_model_goes_through_the_passes(tmp_path, capsys):
    # y = x * 2 with x a scalar (shape []): counting samples took len() of a 0-d array.
    model = build([helper.make_node("Mul", ["x", "c"], ["y"])], [vi("x", F, [])], [vi("y", F, [])],
                  [numpy_helper.from_array(np.array(2.0, np.float32), "c")])
    path = save(model, tmp_path)
    code, out, err = cli(capsys, "fuse", path, "-o", tmp_path / "f.onnx", "--json")
    assert code == 0, err
    assert json.loads(out)["fidelity"]["identical"] is True
    code, out, err = cli(capsys, "quantize", path, "--mode", "int8", "-o", tmp_path / "q.onnx", "--json")
    assert code == 0, err
    assert json.loads(out)["fidelity"]["samples"] == 16


def test_graph_stored_out_of_order_is_sorted_by_the_passes(tmp_path, capsys):
    # File order m2, r, m1 (onnxruntime accepts it); the fused result must pass onnx.checker.
    nodes = [helper.make_node("MatMul", ["b", "w2"], ["y"], name="m2"), helper.make_node("Relu", ["a"], ["b"], name="r"),
             helper.make_node("MatMul", ["x", "w1"], ["a"], name="m1")]
    model = build(nodes, [vi("x", F, [1, 8])], [vi("y", F, [1, 4])], [weight("w1", 8, 8), weight("w2", 8, 4, seed=1)])
    path = save(model, tmp_path)
    code, out, err = cli(capsys, "fuse", path, "-o", tmp_path / "f.onnx", "--json")
    assert code == 0, err
    fused = onnx.load(str(tmp_path / "f.onnx"))
    onnx.checker.check_model(fused)
    assert [n.name for n in fused.graph.node] == ["m1", "r", "m2"]
    assert json.loads(out)["fidelity"]["identical"] is True
    assert [n.name for n in onnx.load(str(path)).graph.node] == ["m2", "r", "m1"]   # the input file is untouched


def test_model_onnxruntime_cannot_load_is_a_one_line_error(tmp_path, capsys):
    # A made-up domain op: edgefit analyses it (with an unknown), but fidelity needs onnxruntime to run it.
    nodes = [helper.make_node("MatMul", ["x", "w"], ["a"]), helper.make_node("Frobnicate", ["a"], ["y"], domain="com.acme")]
    model = build(nodes, [vi("x", F, [1, 4])], [vi("y", F, [1, 4])], [weight("w", 4, 4)],
                  extra_opsets=[helper.make_opsetid("com.acme", 1)])
    code, out, err = cli(capsys, "fuse", save(model, tmp_path), "-o", tmp_path / "f.onnx")
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("error: onnxruntime cannot load the original model") and "Frobnicate" in err
    assert not (tmp_path / "f.onnx").exists()


def test_model_onnxruntime_cannot_run_is_a_one_line_error(tmp_path, capsys):
    # Dilated Conv with auto_pad SAME_UPPER: valid ONNX, but onnxruntime's CPU Conv refuses it at run time.
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], dilations=[2, 2], auto_pad="SAME_UPPER")]
    model = build(nodes, [vi("x", F, [1, 2, 8, 8])], [vi("y", F, [1, 2, 8, 8])], [weight("w", 2, 2, 3, 3)])
    code, out, err = cli(capsys, "fuse", save(model, tmp_path), "-o", tmp_path / "f.onnx")
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("error: onnxruntime cannot run the original model on the fidelity inputs")


# ---------------------------------------------------------------------------------------------------------------
# float16 models
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["int8", "dynamic"])
def test_float16_model_quantizes_to_a_runnable_model_with_float16_io(tmp_path, capsys, mode):
    # onnxruntime's quantizer writes float32 scales: on an fp16 model its DequantizeLinear fed fp16 ops and the
    # result was invalid ("Type 'tensor(float16)' of input parameter (w_scale) ... is invalid").
    model = fp16_convnet()
    code, out, err = cli(capsys, "quantize", save(model, tmp_path), "--mode", mode, "-o", tmp_path / "q.onnx", "--json")
    assert code == 0, err
    result = onnx.load(str(tmp_path / "q.onnx"))
    assert [i.type.tensor_type.elem_type for i in result.graph.input] == [F16]
    assert [o.type.tensor_type.elem_type for o in result.graph.output] == [F16]
    assert TensorProto.INT8 in {t.data_type for t in result.graph.initializer}
    x = np.random.default_rng(5).standard_normal((1, 3, 8, 8)).astype(np.float16)
    (expected,), (got,) = run(model, {"x": x}), run(result, {"x": x})
    assert got.dtype == np.float16 and got.shape == (1, 10)
    assert np.abs(got.astype(np.float32) - expected).max() < 0.05 * np.abs(expected).max()
    data = json.loads(out)
    assert any("float16 model" in note for note in data["passes"][-1]["stats"]["notes"])
    assert data["fidelity"]["cosine"] > 0.99


def test_fp16_conversion_keeps_outputs_that_are_inputs_or_weights(tmp_path):
    # Outputs: y = (x @ w) @ w, x itself, and the weight w. The converter used to add a Cast defining 'x' / 'w'
    # a second time ("node 'm1' reads 'graph_output_cast_1', which nothing produces").
    nodes = [helper.make_node("MatMul", ["x", "w"], ["a"], name="m1"), helper.make_node("MatMul", ["a", "w"], ["y"], name="m2")]
    model = build(nodes, [vi("x", F, [1, 8])], [vi("y", F, [1, 8]), vi("x", F, [1, 8]), vi("w", F, [8, 8])],
                  [weight("w", 8, 8)])
    result = quantize(model, "fp16").model
    onnx.checker.check_model(result)
    assert [o.name for o in result.graph.output] == ["y", "x", "w"]
    x = np.random.default_rng(1).standard_normal((1, 8)).astype(np.float32)
    expected, got = run(model, {"x": x}), run(result, {"x": x})
    assert np.array_equal(got[1], x)                                   # passed straight through
    assert got[2].dtype == np.float32 and np.allclose(got[2], expected[2], rtol=1e-3, atol=1e-3)  # fp16-rounded
    assert np.allclose(got[0], expected[0], rtol=1e-2, atol=1e-2)


def test_fp16_conversion_of_a_model_without_nodes(tmp_path):
    model = build([], [vi("x", F, [1, 4])], [vi("x", F, [1, 4])])
    result = quantize(model, "fp16").model
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    assert np.array_equal(run(result, {"x": x})[0], x)


def test_fp16_conversion_leaves_optional_values_runnable():
    # Optional(x) -> OptionalGetElement: the converter retyped the element but not optional(tensor(float)).
    nodes = [helper.make_node("Optional", ["x"], ["o"]), helper.make_node("OptionalGetElement", ["o"], ["y"])]
    model = build(nodes, [vi("x", F, [2, 8])], [vi("y", F, [2, 8])], opset=18)
    result = quantize(model, "fp16").model
    x = np.ones((2, 8), np.float32)
    assert np.array_equal(run(result, {"x": x})[0], x)


# ---------------------------------------------------------------------------------------------------------------
# Names that look like rich markup or emoji codes
# ---------------------------------------------------------------------------------------------------------------

def markup_model() -> onnx.ModelProto:
    nodes = [helper.make_node("Conv", ["x[bold]", "w[/]"], ["c[/red]"], kernel_shape=[3, 3], name="conv[/]:x:"),
             helper.make_node("Relu", ["c[/red]"], ["y:smile:"], name="relu[red]")]
    return build(nodes, [vi("x[bold]", F, [1, 3, 5, 5])], [vi("y:smile:", F, [1, 4, 3, 3])], [weight("w[/]", 4, 3, 3, 3)])


def test_names_with_markup_characters_print_literally(tmp_path, capsys):
    # '[/]' in a node name raised rich.errors.MarkupError (a traceback); ':x:' printed as an emoji.
    code, out, err = cli(capsys, "analyze", save(markup_model(), tmp_path, "m[v2].onnx"), "--per-layer")
    assert code == 0, err
    assert "conv[/]:x:" in out and "relu[red]" in out and "c[/red]" in out and "m[v2].onnx" in out


def test_error_message_with_an_emoji_code_prints_literally(tmp_path, capsys):
    # Structured pruning refuses: the conv's channels reach the graph output. The message names both.
    code, out, err = cli(capsys, "prune", save(markup_model(), tmp_path), "--structured", "-o", tmp_path / "p.onnx")
    assert code == 2
    assert "conv[/]:x:" in err and "'y:smile:'" in err
    assert len(err.strip().splitlines()) == 1


def test_pass_report_with_markup_names_prints(tmp_path, capsys):
    code, out, err = cli(capsys, "prune", save(markup_model(), tmp_path), "-o", tmp_path / "p[1].onnx")
    assert code == 0, err
    assert "conv[/]:x:" in out and "p[1].onnx" in out


def test_int8_quantization_of_a_passthrough_model_prints_nothing_on_stderr(tmp_path, capfd):
    # y = x: onnxruntime's calibration session logged "[W:onnxruntime ...] Removing initializer" to stderr.
    model = build([], [vi("x", F, [1, 4])], [vi("x", F, [1, 4])])
    assert main(["quantize", str(save(model, tmp_path)), "--mode", "int8", "-o", str(tmp_path / "q.onnx"),
                 "--json"]) == 0
    captured = capfd.readouterr()
    assert captured.err == ""
    assert json.loads(captured.out)["fidelity"]["identical"] is True


# ---------------------------------------------------------------------------------------------------------------
# check: unknown MACs make latency, energy and power at a rate minimums
# ---------------------------------------------------------------------------------------------------------------

def test_estimate_line_marks_lower_bounds_when_a_loop_trip_count_is_unknown(tmp_path, capsys):
    # Loop whose trip count is the input value n: MACs unknown, so latency is a lower bound; the estimate line
    # said "latency 0.127 ms; energy 0.0253 mJ" as if exact while the verdict table said ">= 0.127 ms".
    body = helper.make_graph(
        [helper.make_node("Identity", ["cin"], ["cout"]), helper.make_node("MatMul", ["s", "w"], ["sout"])], "body",
        [vi("i", TensorProto.INT64, []), vi("cin", TensorProto.BOOL, []), vi("s", F, [1, 8])],
        [vi("cout", TensorProto.BOOL, []), vi("sout", F, [1, 8])])
    model = build([helper.make_node("Loop", ["n", "c", "x"], ["y"], body=body, name="loop")],
                  [vi("x", F, [1, 8]), vi("n", TensorProto.INT64, [])], [vi("y", F, [1, 8])],
                  [weight("w", 8, 8), numpy_helper.from_array(np.array(True), "c")])
    code, out, err = cli(capsys, "check", save(model, tmp_path), "--target", "esp32", "--rate", "1")
    assert code == 0, err
    line = " ".join(out.split())
    assert "latency >= " in line and "energy >= " in line and "average power >= " in line
    code, out, err = cli(capsys, "check", save(model, tmp_path), "--target", "esp32")
    line = " ".join(out.split())
    assert "latency >= " in line and "average power >= " not in line   # back to back: exactly the active power


def test_model_digest_sees_weight_and_attribute_changes():
    model = fp16_convnet()
    from edgefit.passes.base import model_digest

    same = onnx.ModelProto()
    same.CopyFrom(model)
    assert model_digest(same) == model_digest(model)
    same.graph.initializer[0].raw_data = b"\0" * len(same.graph.initializer[0].raw_data)
    assert model_digest(same) != model_digest(model)
    other = onnx.ModelProto()
    other.CopyFrom(model)
    other.graph.node[0].attribute[0].ints[0] = 1
    assert model_digest(other) != model_digest(model)


# ---------------------------------------------------------------------------------------------------------------
# QDQ models keep their int8 weights through fuse
# ---------------------------------------------------------------------------------------------------------------

def qdq_conv_model() -> onnx.ModelProto:
    """x -> Q/DQ (scale 0.02) -> Conv(DQ(int8 8x3x3x3, per-channel scales), DQ(int32 bias)) -> Relu."""
    rng = np.random.default_rng(0)
    scales = (rng.random(8) * 0.01 + 0.001).astype(np.float32)
    inits = [numpy_helper.from_array(rng.integers(-127, 127, (8, 3, 3, 3)).astype(np.int8), "wq"),
             numpy_helper.from_array(scales, "ws"), numpy_helper.from_array(np.zeros(8, np.int8), "wz"),
             numpy_helper.from_array(np.array(0.02, np.float32), "xs"),
             numpy_helper.from_array(np.array(0, np.int8), "xz"),
             numpy_helper.from_array(rng.integers(-100, 100, 8).astype(np.int32), "bq"),
             numpy_helper.from_array(scales * 0.02, "bs")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=0),
             helper.make_node("DequantizeLinear", ["bq", "bs"], ["bd"], axis=0),
             helper.make_node("Conv", ["xd", "wd", "bd"], ["c"], kernel_shape=[3, 3], name="qconv"),
             helper.make_node("Relu", ["c"], ["y"])]
    return build(nodes, [vi("x", F, [1, 3, 8, 8])], [vi("y", F, [1, 8, 6, 6])], inits, opset=13)


def test_fuse_keeps_small_quantized_weights_quantized(tmp_path, capsys):
    # The 8x3x3x3 weight dequantizes to 864 B (< the 1 KiB "keep expanded" limit), so fuse folded its
    # DequantizeLinear: weight bytes went from int8 216 (+8 zero points +1) to float32 900 and the layer lost
    # its QDQ pattern (onnxruntime then runs it as a float Conv).
    code, out, err = cli(capsys, "fuse", save(qdq_conv_model(), tmp_path), "-o", tmp_path / "f.onnx", "--json")
    assert code == 0, err
    data = json.loads(out)
    # int8: wq 216 + wz 8 + xz 1 = 225; float32: ws 32 + bs 32 + xs 4 = 68; int32: bq 32
    assert data["before"]["weight_bytes_by_dtype"] == {"float32": 68, "int8": 225, "int32": 32}
    assert data["after"]["weight_bytes_by_dtype"] == {"float32": 68, "int8": 225, "int32": 32}
    assert data["fidelity"]["identical"] is True
    fused = onnx.load(str(tmp_path / "f.onnx"))
    assert sum(n.op_type == "DequantizeLinear" for n in fused.graph.node) == 3


# ---------------------------------------------------------------------------------------------------------------
# gate
# ---------------------------------------------------------------------------------------------------------------

def relu_model(shape) -> onnx.ModelProto:
    return build([helper.make_node("Relu", ["x"], ["y"])], [vi("x", F, shape)], [vi("y", F, shape)])


def test_gate_on_a_model_without_input_shape_names_the_gate(tmp_path, capsys):
    save(relu_model(None), tmp_path, "noshape.onnx")
    (tmp_path / "edgefit.toml").write_text('[[gate]]\nname = "kws"\nmodel = "noshape.onnx"\ntarget = "esp32"\n')
    code, out, err = cli(capsys, "gate", "--config", tmp_path / "edgefit.toml")
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "gate 'kws': input 'x' has no declared shape" in err and "input_shape = {" in err


def test_gate_name_with_brackets_prints_literally(tmp_path, capsys):
    save(relu_model([1, 4]), tmp_path, "m.onnx")
    (tmp_path / "edgefit.toml").write_text('[[gate]]\nname = "kws [v2]"\nmodel = "m.onnx"\ntarget = "esp32"\n')
    code, out, err = cli(capsys, "gate", "--config", tmp_path / "edgefit.toml")
    assert code == 0, err
    assert "kws [v2]" in out


# ---------------------------------------------------------------------------------------------------------------
# External data belongs to the input
# ---------------------------------------------------------------------------------------------------------------

def test_pass_output_over_the_inputs_external_data_file_is_refused(tmp_path, capsys):
    # `edgefit fuse model.onnx -o w.bin` replaced the weights file the input model reads: the input was destroyed.
    model = build([helper.make_node("MatMul", ["x", "w"], ["y"])], [vi("x", F, [1, 8])], [vi("y", F, [1, 4])],
                  [weight("w", 8, 4)])
    (tmp_path / "sub").mkdir()
    onnx.save_model(model, str(tmp_path / "m.onnx"), save_as_external_data=True, location="sub/w.bin",
                    size_threshold=0)
    before = (tmp_path / "sub" / "w.bin").read_bytes()
    code, out, err = cli(capsys, "fuse", tmp_path / "m.onnx", "-o", tmp_path / "sub" / "w.bin", "--force")
    assert code == 2
    assert err.startswith("error: refusing to write") and "external data" in err
    assert (tmp_path / "sub" / "w.bin").read_bytes() == before
    code, out, err = cli(capsys, "fuse", tmp_path / "m.onnx", "-o", tmp_path / "out.onnx", "--json")
    assert code == 0, err
    assert json.loads(out)["fidelity"]["identical"] is True


# ---------------------------------------------------------------------------------------------------------------
# Command-line usage errors are one line too
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, mentions", [
    (["analyze", "--bogus", "m.onnx"], "No such option: --bogus"),
    (["analyze"], "Missing argument 'MODEL'"),
    (["check", "m.onnx", "--precision", "int4"], "'int4' is not one of"),
    (["prune", "m.onnx", "--sparsity", "1.5"], "--sparsity"),
    (["analyze", "m.onnx", "--top", "abc"], "--top"),
    (["frobnicate"], "No such command 'frobnicate'"),
])
def test_usage_errors_are_one_line_with_exit_2(tmp_path, capsys, monkeypatch, args, mentions):
    # typer printed a multi-line "Usage: ... ╭─ Error ─╮" panel for these.
    monkeypatch.chdir(tmp_path)
    save(relu_model([1, 4]), tmp_path)
    code, out, err = cli(capsys, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and mentions in lines[0], err
    assert "--help" in lines[0]


def test_help_and_exit_codes_survive_the_usage_error_handling(tmp_path, capsys):
    code, out, err = cli(capsys, "analyze", "--help")
    assert code == 0 and "--per-layer" in out
    path = save(relu_model([1, 4]), tmp_path)
    assert cli(capsys, "check", path, "--target", "esp32")[0] == 0
    big = build([helper.make_node("MatMul", ["x", "w"], ["y"])], [vi("x", F, [1, 64])], [vi("y", F, [1, 128])],
                [weight("w", 64, 128)])   # 32 KiB of weights: over the Arduino Uno's 32 KiB flash with its runtime
    assert cli(capsys, "check", save(big, tmp_path, "big.onnx"), "--target", "arduino-uno")[0] == 1


def test_changed_integer_output_is_not_identical():
    # An ArgMax label output (int64) changes from [1, 2] to [1, 3]: integer outputs were skipped entirely, so
    # with no float output left the result read "identical".
    samples = SampleSet(({"x": np.zeros((2, 4), np.float32)},), 2, "synthetic")
    fidelity = measure([[np.array([1, 2], np.int64)]], [[np.array([1, 3], np.int64)]], samples, None)
    assert fidelity.mismatched_outputs == 1 and not fidelity.identical
    same = measure([[np.array([1, 2], np.int64)]], [[np.array([1, 2], np.int64)]], samples, None)
    assert same.mismatched_outputs == 0 and same.identical


def test_model_without_nodes_renders_in_the_terminal(tmp_path, capsys):
    # y is the input itself: no node sets the peak (peak_node None), yet the input is live: 16 B (4 floats).
    model = build([], [vi("x", F, [1, 4])], [vi("x", F, [1, 4])])
    code, out, err = cli(capsys, "analyze", save(model, tmp_path), "--per-layer")
    assert code == 0, err
    assert "Tensors live at the peak (-)" in " ".join(out.split())
