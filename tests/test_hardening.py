"""Regression tests for issue 12: every reproduction of a crash, hang or wrong answer a hostile user found.

Each test builds its small model here; CLI checks go through edgefit.cli.main (exit code, one `error:` line).
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgefit
from edgefit import ConfigError, ShapeError
from edgefit.cli import main
from edgefit.fidelity import load_samples, synthetic_samples
from edgefit.guard import SYNTHETIC_BUDGET_BYTES
from edgefit.shapes import parse_dims, parse_input_shapes
from helpers import build, save, vi

F = TensorProto.FLOAT


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(capsys, *args, mentions: str = "") -> str:
    code, _, err = cli(capsys, *args)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert mentions in lines[0], lines[0]
    return lines[0]


def detector(dims=("batch", 3, "height", "width"), imgsz: str | None = "[320, 320]") -> onnx.ModelProto:
    """An Ultralytics-like export: images [batch, 3, height, width] -> Conv 3x3 (8 filters, pads 1) -> y."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32), "W")
    nodes = [helper.make_node("Conv", ["images", "W"], ["y"], pads=[1, 1, 1, 1], name="conv")]
    built = build(nodes, [vi("images", F, list(dims))], [vi("y", F, None)], [w], opset=13, ir_version=8)
    if imgsz is not None:
        onnx.helper.set_model_props(built, {"imgsz": imgsz, "author": "Ultralytics"})
    return built


def small_conv(batch=-1) -> onnx.ModelProto:
    """x [batch, 3, 4, 6] -> Conv 1x1 (2 filters) -> Relu -> y; batch -1 as Paddle writes a dynamic one."""
    w = numpy_helper.from_array(np.random.default_rng(1).standard_normal((2, 3, 1, 1)).astype(np.float32), "W")
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv"), helper.make_node("Relu", ["c"], ["y"])]
    built = build(nodes, [vi("x", F, [1, 3, 4, 6])], [vi("y", F, [1, 2, 4, 6])], [w], opset=13, ir_version=8)
    built.graph.input[0].type.tensor_type.shape.dim[0].dim_value = batch
    built.graph.output[0].type.tensor_type.shape.dim[0].dim_value = batch
    return built


# ---- shapes honesty ------------------------------------------------------------------------------------

def test_image_size_comes_from_ultralytics_metadata(tmp_path):
    fp = edgefit.analyze(save(detector(), tmp_path))
    assert fp.inputs == {"images": [1, 3, 320, 320]}
    # 8 filters x 3x3x3 taps per output pixel, 320x320 outputs: 8 * 27 * 102400 MACs.
    assert fp.macs == 8 * 27 * 320 * 320
    assert any("imgsz=[320, 320] (Ultralytics export)" in w for w in fp.warnings)
    assert any("batch dimension set to 1" in w for w in fp.warnings)
    # --dim beats the metadata.
    assert edgefit.analyze(save(detector(), tmp_path), dims={"height": 64, "width": 32}).inputs == {
        "images": [1, 3, 64, 32]}


def test_unbound_spatial_dims_are_an_error_naming_the_options(tmp_path, capsys):
    path = save(detector(imgsz=None), tmp_path)
    with pytest.raises(ShapeError) as raised:
        edgefit.analyze(path)
    message = str(raised.value)
    assert "input 'images'" in message and "'height' (axis 2), 'width' (axis 3)" in message
    assert "--input-shape images=1x3x<height>x<width> or --dim height=VALUE --dim width=VALUE" in message
    line = one_error_line(capsys, "analyze", path, mentions="--assume-dims 1")
    assert "\n" not in line
    # The old behaviour on request, said in a warning.
    fp = edgefit.analyze(path, assume_dims=1)
    assert fp.inputs == {"images": [1, 3, 1, 1]} and fp.macs == 8 * 27
    assert any("set to 1 by --assume-dims: height (in images), width (in images)" in w for w in fp.warnings)


def test_input_shape_and_dims_must_be_positive_ascii(tmp_path):
    for spec in ("0x3x4x6", "1x3x4x6x", "²", "١x٣x٤x٦", "1x3x4x-6", f"{2**62 + 1}x3x4x6"):
        with pytest.raises(ShapeError, match="invalid --input-shape"):
            parse_input_shapes([spec])
    for spec in ("N=²", "N=0", "N=١", "N=-1", "N=", "=3"):
        with pytest.raises(ShapeError, match="invalid --dim"):
            parse_dims([spec])
    assert parse_input_shapes(["x=1x3x4x6", "2,3"]) == {"x": [1, 3, 4, 6], "": [2, 3]}
    with pytest.raises(ShapeError, match="positive"):
        edgefit.analyze(save(small_conv(batch=1), tmp_path), input_shapes={"x": [0, 3, 4, 6]})


def test_declared_minus_one_batch_finds_calibration_samples(tmp_path):
    # Paddle declares the batch as -1: an [8, 3, 4, 6] array is 8 samples, with or without an --input-shape.
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).standard_normal((8, 3, 4, 6)).astype(np.float32))
    samples = load_samples(tmp_path / "calib.npz", small_conv())
    assert samples.samples == 8
    report = edgefit.optimize_file(save(small_conv(), tmp_path), tmp_path / "q.onnx", "fuse,quantize",
                                   edgefit.PassOptions(input_shapes={"x": [1, 3, 4, 6]}),
                                   calib_path=tmp_path / "calib.npz")
    assert report.steps[-1].stats.calibration == "user" and report.steps[-1].stats.calibration_samples == 8


def test_expand_shape_of_huge_declared_length_is_refused_before_inference(tmp_path):
    nodes = [helper.make_node("Expand", ["x", "shape"], ["y"])]
    built = build(nodes, [vi("x", F, [1]), vi("shape", TensorProto.INT64, [2**62])], [vi("y", F, None)],
                  opset=9, ir_version=4)
    start = time.perf_counter()
    with pytest.raises(ShapeError, match="rank 4611686018427387904"):
        edgefit.analyze(save(built, tmp_path))
    assert time.perf_counter() - start < 5


# ---- one validation for every command -------------------------------------------------------------------

def _broken_initializer(kind: str) -> onnx.ModelProto:
    built = small_conv(batch=1)
    weight = built.graph.initializer[0]
    if kind == "data_type":
        weight.data_type = 999
    elif kind == "short raw_data":
        weight.raw_data = weight.raw_data[:-4]
    return built


@pytest.mark.parametrize("kind", ["data_type", "short raw_data"])
def test_analyze_and_passes_give_one_verdict_on_broken_weights(tmp_path, capsys, kind):
    path = save(_broken_initializer(kind), tmp_path)
    for command in ("analyze", "check", "fuse", "quantize"):
        extra = ["-t", "esp32"] if command == "check" else []
        one_error_line(capsys, command, path, *extra, mentions="tensor 'W'")
    assert not (tmp_path / "m.fused.onnx").exists()


def test_external_data_with_negative_length_or_nul_location(tmp_path, capsys):
    built = small_conv(batch=1)
    weight = built.graph.initializer[0]
    raw = weight.raw_data
    (tmp_path / "w.bin").write_bytes(raw)
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "w.bin"), ("offset", "0"), ("length", "-1")):
        weight.external_data.add(key=key, value=value)
    path = save(built, tmp_path)
    for command in ("analyze", "fuse"):
        one_error_line(capsys, command, path, mentions="length -1")
    weight.external_data[0].value = "w\0.bin"
    weight.external_data[2].value = str(len(raw))
    one_error_line(capsys, "analyze", save(built, tmp_path), mentions="malformed location")


def test_invalid_input_element_type(tmp_path, capsys):
    built = small_conv(batch=1)
    built.graph.input[0].type.tensor_type.elem_type = -1 & 0x7FFFFFFF   # protobuf keeps the open enum value
    for command in ("analyze", "fuse"):
        one_error_line(capsys, command, save(built, tmp_path), mentions="element type")


def test_sparse_initializer_listed_as_graph_input(tmp_path, capsys):
    # A real SqueezeNet export lists its sparse weight among the graph inputs: it is a weight, not an input.
    dense = np.zeros((4, 2), np.float32)
    dense[1, 0], dense[3, 1] = 2.0, -1.0
    values = numpy_helper.from_array(np.array([2.0, -1.0], np.float32), "S")
    indices = numpy_helper.from_array(np.array([2, 7], np.int64), "S_indices")
    nodes = [helper.make_node("MatMul", ["x", "S"], ["y"], name="mm")]
    built = build(nodes, [vi("x", F, [1, 4]), vi("S", F, [4, 2])], [vi("y", F, [1, 2])])
    built.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [4, 2]))
    path = save(built, tmp_path)
    assert list(synthetic_samples(built, 2).feeds[0]) == ["x"]
    for command in ("fuse", "quantize", "optimize"):
        code, out, err = cli(capsys, command, path, "--json", "-o", tmp_path / f"{command}.onnx")
        assert code in (0, 2) and "Traceback" not in err and len(err.strip().splitlines()) <= 1, err



def test_npy_file_where_npz_is_expected(tmp_path):
    np.save(tmp_path / "calib.npy", np.zeros((4, 3, 4, 6), np.float32))
    os.replace(tmp_path / "calib.npy", tmp_path / "calib.npz")
    with pytest.raises(ConfigError, match="one .npy array, not an .npz archive"):
        load_samples(tmp_path / "calib.npz", small_conv())
    np.save(tmp_path / "calib.npy", np.zeros((4, 3, 4, 6), np.float32))
    with pytest.raises(ConfigError, match="neither an .npz file"):
        load_samples(tmp_path / "calib.npy", small_conv())


def test_npy_header_announcing_terabytes_is_refused_before_loading(tmp_path):
    (tmp_path / "huge").mkdir()
    with open(tmp_path / "huge" / "x.npy", "wb") as handle:   # 100 bytes that announce 2**40 float32 rows
        np.lib.format.write_array_header_1_0(handle, {"descr": "<f4", "fortran_order": False,
                                                      "shape": (2**40, 3, 4, 6)})
        handle.write(b"\0" * 16)
    with pytest.raises(ConfigError, match="holds 316,659,348,799,488 bytes of arrays, more than"):
        load_samples(tmp_path / "huge", small_conv())


def test_huge_batch_gets_a_budgeted_sample_count_or_a_refusal(tmp_path):
    built = small_conv()
    # 3*4*6 floats = 288 bytes per row: a million rows is 288 MB, over the budget even for one sample.
    with pytest.raises(ShapeError, match="288,000,000 bytes"):
        synthetic_samples(built, dims={}, input_shapes={"x": [1_000_000, 3, 4, 6]})
    rows = 100_000   # 28.8 MB per sample: as many as fit the budget
    assert synthetic_samples(built, input_shapes={"x": [rows, 3, 4, 6]}).samples == SYNTHETIC_BUDGET_BYTES // (
        rows * 288)


def test_deeply_nested_profile_is_one_error_line(tmp_path, capsys):
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "deep.toml").write_text("a = " + "[" * 5000 + "]" * 5000)
    model_path = save(small_conv(batch=1), tmp_path)
    # Every profile asked for: the broken one is the answer; naming another device, it does not matter.
    one_error_line(capsys, "check", model_path, "--all", "--profiles-dir", folder, mentions="nested too deeply")
    assert cli(capsys, "check", model_path, "-t", "esp32", "--profiles-dir", folder)[0] in (0, 1)


def test_gate_baseline_with_a_huge_integer(tmp_path, capsys):
    model_path = save(small_conv(batch=1), tmp_path)
    (tmp_path / "base.json").write_text(json.dumps({"weight_bytes": 10**400, "peak_activation_bytes": 1}))
    (tmp_path / "edgefit.toml").write_text(
        f'[[gate]]\nname = "g"\nmodel = "{model_path.name}"\ntarget = "esp32"\nbaseline = "base.json"\n'
        f'max_growth = "10%"\n')
    one_error_line(capsys, "gate", "--config", tmp_path / "edgefit.toml", mentions="base.json")


def test_non_regular_model_files_are_refused_before_reading(tmp_path, capsys):
    os.symlink("/dev/zero", tmp_path / "zero.onnx")
    one_error_line(capsys, "analyze", tmp_path / "zero.onnx", mentions="is a device")
    os.mkfifo(tmp_path / "pipe.onnx")
    start = time.perf_counter()
    one_error_line(capsys, "analyze", tmp_path / "pipe.onnx", mentions="named pipe")
    assert time.perf_counter() - start < 5
    os.symlink("loop.onnx", tmp_path / "loop.onnx")
    for command in ("analyze", "fuse"):
        one_error_line(capsys, command, tmp_path / "loop.onnx", mentions="symlink loop")


def test_external_data_file_that_is_a_symlink_loop(tmp_path, capsys):
    built = small_conv(batch=1)
    weight = built.graph.initializer[0]
    length = len(weight.raw_data)
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "w.bin"), ("offset", "0"), ("length", str(length))):
        weight.external_data.add(key=key, value=value)
    os.symlink("w.bin", tmp_path / "w.bin")
    for command in ("analyze", "quantize"):
        one_error_line(capsys, command, save(built, tmp_path), mentions="symlink loop")


def test_output_path_that_is_a_symlink_loop(tmp_path, capsys):
    model_path = save(small_conv(batch=1), tmp_path)
    os.symlink("out.onnx", tmp_path / "out.onnx")
    one_error_line(capsys, "fuse", model_path, "-o", tmp_path / "out.onnx", mentions="symlink loop")


def test_newline_in_a_model_path_stays_on_one_line(tmp_path, capsys):
    line = one_error_line(capsys, "analyze", tmp_path / "a\nb.onnx", mentions="not found")
    assert "a\\nb.onnx" in line


def test_a_million_row_batch_is_refused_before_any_run(tmp_path, capsys):
    # [1e6, 3, 4, 6] in, [1e6, 2, 4, 6] twice out (Conv, Relu): 288 MB + 2 x 192 MB of arena, over 1 GiB? No:
    # 672 MB fits; ten million rows (6.7 GB) does not and is refused before synthetic samples are made.
    path = save(small_conv(), tmp_path)
    line = one_error_line(capsys, "fuse", path, "--input-shape", "x=10000000x3x4x6", mentions="bytes of activations")
    assert "x=10000000x3x4x6" in line
    assert not (tmp_path / "m.fused.onnx").exists()


# ---- the command line's own contract ----------------------------------------------------------------------

def test_unicode_and_non_positive_dims_through_the_cli(tmp_path, capsys):
    path = save(small_conv(batch=1), tmp_path)
    for spec in ("0x1x49x10", "²", "١x٣x٤x٦", "1099511627776" * 2):
        one_error_line(capsys, "analyze", path, "--input-shape", spec, mentions="invalid --input-shape")
    for spec in ("batch=²", "batch=0", "batch=١"):
        one_error_line(capsys, "fuse", path, "--dim", spec, mentions="invalid --dim")
    one_error_line(capsys, "analyze", path, "--assume-dims", "²", mentions="invalid --assume-dims")


def test_assume_dims_on_the_command_line(tmp_path, capsys):
    path = save(detector(imgsz=None), tmp_path)
    code, out, _ = cli(capsys, "analyze", path, "--assume-dims", "4", "--json")
    assert code == 0 and json.loads(out)["inputs"] == {"images": [1, 3, 4, 4]}
    code, out, _ = cli(capsys, "check", path, "-t", "esp32", "--assume-dims", "2", "--json")
    assert code in (0, 1) and json.loads(out)["targets"]
    code, out, err = cli(capsys, "fuse", path, "-o", tmp_path / "f.onnx", "--assume-dims", "1", "--json")
    assert code == 0, err
    assert json.loads(out)["before"]["inputs"] == {"images": [1, 3, 1, 1]}


def test_an_unexpected_exception_exits_3_with_one_line_and_debug_shows_the_traceback(tmp_path, capsys,
                                                                                      monkeypatch):
    import edgefit.analysis.footprint as footprint

    def broken(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(footprint, "analyze", broken)
    path = save(small_conv(batch=1), tmp_path)
    code, _, err = cli(capsys, "analyze", path)
    assert code == 3
    assert err.strip().splitlines() == [
        "error: internal error (RuntimeError: boom second line); this is a bug in edgefit: please report it to "
        "the edgefit maintainers with the command line and the output of --debug"]
    code, _, err = cli(capsys, "analyze", path, "--debug")
    assert code == 3 and "Traceback (most recent call last)" in err and 'raise RuntimeError("boom' in err
    assert err.strip().splitlines()[-1].startswith("error: internal error (RuntimeError: boom")


def test_a_closed_stdout_ends_quietly_with_the_real_exit_code(tmp_path):
    import subprocess
    import sys

    config = os.path.join(os.path.dirname(__file__), "..", "edgefit.toml")
    for extra, expected in (([], 0), (["--format", "json"], 0)):
        process = subprocess.Popen([sys.executable, "-m", "edgefit", "gate", "-c", config, *extra],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
        process.stdout.close()   # the reader is gone before edgefit writes a byte (`| head -0`)
        err = process.stderr.read()
        assert process.wait() == expected and err == b""
    assert list(tmp_path.iterdir()) == []


def test_a_broken_profile_in_edgefit_profiles_costs_analyze_only_its_tier_line(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "bad.toml").write_text("this is [not toml")
    monkeypatch.setenv("EDGEFIT_PROFILES", str(folder))
    code, out, _ = cli(capsys, "analyze", save(small_conv(batch=1), tmp_path), "--json")
    assert code == 0 and json.loads(out)["tier_summary"].startswith("Tiers unknown: a device profile could not")
    one_error_line(capsys, "check", save(small_conv(batch=1), tmp_path), "--all", mentions="bad.toml")
    assert cli(capsys, "check", save(small_conv(batch=1), tmp_path), "-t", "esp32")[0] in (0, 1)


def test_json_says_when_macs_are_a_lower_bound(tmp_path):
    # A custom-domain op has no cost rule: its MACs are unknown, so the total (the Gemm's 4*3 = 12) is a floor.
    w = numpy_helper.from_array(np.ones((3, 4), np.float32), "W")
    nodes = [helper.make_node("Gemm", ["x", "W"], ["h"], transB=1), helper.make_node("Mystery", ["h"], ["y"],
                                                                                      domain="custom")]
    built = build(nodes, [vi("x", F, [1, 4])], [vi("y", F, [1, 3])], [w], opset=13, ir_version=8,
                  extra_opsets=[helper.make_opsetid("custom", 1)])
    data = edgefit.analyze(save(built, tmp_path)).to_dict()
    assert data["macs"] == 12 and data["macs_is_lower_bound"] is True
    assert edgefit.analyze(save(small_conv(batch=1), tmp_path)).to_dict()["macs_is_lower_bound"] is False


def test_gate_takes_assume_dims_and_refuses_odd_model_paths(tmp_path, capsys):
    save(detector(imgsz=None), tmp_path)
    config = tmp_path / "edgefit.toml"
    config.write_text('[[gate]]\nname = "g"\nmodel = "m.onnx"\ntarget = "dgx-a100"\n')
    one_error_line(capsys, "gate", "--config", config, mentions="or assume_dims = 1")
    config.write_text('[[gate]]\nname = "g"\nmodel = "m.onnx"\ntarget = "dgx-a100"\nassume_dims = 2\n')
    code, out, err = cli(capsys, "gate", "--config", config, "--json")
    assert code == 0, err
    config.write_text('[[gate]]\nname = "g"\nmodel = "m\\u0000.onnx"\ntarget = "esp32"\n')
    one_error_line(capsys, "gate", "--config", config, mentions="NUL byte")
    os.symlink("loop.onnx", tmp_path / "loop.onnx")
    config.write_text('[[gate]]\nname = "g"\nmodel = "loop.onnx"\ntarget = "esp32"\n')
    one_error_line(capsys, "gate", "--config", config, mentions="symlink loop")


def test_quantize_preprocessing_failure_is_a_note_and_leaves_the_cwd_clean(tmp_path, monkeypatch):
    # onnxruntime's symbolic shape inference, when it cannot finish, writes sym_shape_infer_temp.onnx into the
    # working directory and may fail with a bare AssertionError: both stay out of the user's sight.
    import onnxruntime.quantization.shape_inference as ort_shapes

    def failing(model, output_path, **kwargs):
        onnx.save(model, "sym_shape_infer_temp.onnx")
        raise AssertionError()

    monkeypatch.setattr(ort_shapes, "quant_pre_process", failing)
    monkeypatch.chdir(tmp_path)
    result = edgefit.quantize(small_conv(batch=1), "dynamic")
    assert "quantization pre-processing (shape inference) failed and was skipped: onnxruntime's symbolic shape " \
           "inference stopped on an internal AssertionError" in result.stats.notes
    assert list(tmp_path.iterdir()) == []


def test_numpy_runtime_warnings_during_quantization_become_notes():
    import warnings

    from edgefit.passes.quantize import _captured_warnings

    notes: list[str] = []
    with _captured_warnings(notes):
        warnings.warn("All-NaN slice encountered", RuntimeWarning)
    assert notes == ["onnxruntime: RuntimeWarning: All-NaN slice encountered"]


def test_large_outputs_get_fewer_synthetic_samples(tmp_path):
    # x [2, 1000000] in, y of the same size out: 8 MB of inputs and 8 MB of outputs per sample, held for the original
    # and the candidate: 256 MiB / 24 MB = 11 samples, not 16 (fidelity once held gigabytes for this model).
    built = small_conv(batch=1)
    assert synthetic_samples(built, input_shapes={"x": [1, 3, 4, 6]}).samples == 16
    relu = build([helper.make_node("Relu", ["x"], ["y"])], [vi("x", F, [2, 1_000_000])], [vi("y", F, [2, 1_000_000])])
    assert synthetic_samples(relu, output_bytes=8_000_000).samples == SYNTHETIC_BUDGET_BYTES // 24_000_000 == 11
    report = edgefit.optimize_file(save(relu, tmp_path), tmp_path / "f.onnx", "fuse")
    assert report.fidelity.samples == 11 and report.fidelity.identical


def test_fit_names_unsupported_operators_as_the_binding_constraint(tmp_path, capsys):
    # A ReduceProd the target's runtime (TFLM: no REDUCE_PROD kernel) cannot run binds the fit; the report said so with a division of two
    # strings (exit 3, found by the fuzz). Now: exit 1 and the operators named.
    def branch(name, op):
        return helper.make_graph([helper.make_node(op, ["x"], [name])], name, [], [vi(name, F, [2, 3])])

    nodes = [helper.make_node("ReduceProd", ["x"], ["s"], keepdims=0), helper.make_node("Greater", ["s", "zero"], ["c"]),
             helper.make_node("If", ["c"], ["y"], then_branch=branch("a", "Relu"), else_branch=branch("b", "Neg"))]
    built = build(nodes, [vi("x", F, [2, 3])], [vi("y", F, [2, 3])],
                  [numpy_helper.from_array(np.array(0.0, np.float32), "zero")], opset=13, ir_version=8)
    code, out, err = cli(capsys, "fit", save(built, tmp_path), "-t", "esp32", "-o", tmp_path / "fit.onnx",
                         "--time-budget", "10s")
    assert code == 1, err
    assert "binding: esp32: TensorFlow Lite Micro cannot run 1 of 3 ops: ReduceProd" in out
