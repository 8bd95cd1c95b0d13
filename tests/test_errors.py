"""Bad input through the CLI: exit code 2, exactly one `error:` line on stderr, never a traceback.

Also: a custom-domain op is not an error (its cost is an honest unknown), and the edgefit.units parsers.
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgefit
from edgefit import ConfigError
from edgefit.cli import main
from edgefit.report.quantities import format_bytes, format_count
from edgefit.units import parse_duration_s, parse_power_w, parse_size
from helpers import build, save, vi

F = TensorProto.FLOAT


def good_model() -> onnx.ModelProto:
    """x [1,3,8,8] -> Conv (W [4,3,3,3], bias [4]) -> Relu -> y [1,4,6,6]."""
    w = numpy_helper.from_array(np.random.default_rng(0).random((4, 3, 3, 3)).astype(np.float32), "W")
    b = numpy_helper.from_array(np.zeros(4, np.float32), "b")
    nodes = [helper.make_node("Conv", ["x", "W", "b"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    return build(nodes, [vi("x", F, ["N", 3, 8, 8])], [vi("y", F, ["N", 4, 6, 6])], [w, b])


def run_cli(capsys, *args) -> tuple[int, str, str]:
    rc = main(["analyze", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_usage_error(capsys, *args, mentions: str = "") -> str:
    rc, out, err = run_cli(capsys, *args)
    assert rc == 2, (rc, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error:"), err
    assert "Traceback" not in out + err
    assert mentions.lower() in lines[0].lower(), lines[0]
    return lines[0]


# ---------------------------------------------------------------------------------------------------------------
# The good case, so the error cases below are errors for the stated reason only
# ---------------------------------------------------------------------------------------------------------------

def test_good_model_through_the_cli(tmp_path, capsys):
    rc, out, err = run_cli(capsys, save(good_model(), tmp_path), "--dim", "N=2", "--json")
    assert rc == 0, err
    data = json.loads(out)
    # params 108 + 4 = 112; MACs 2*4*6*6 = 288 outputs x 27 = 7776.
    assert data["params"] == 112 and data["macs"] == 7776 and data["inputs"] == {"x": [2, 3, 8, 8]}


# ---------------------------------------------------------------------------------------------------------------
# Files that are not (valid) models
# ---------------------------------------------------------------------------------------------------------------

def test_missing_file(tmp_path, capsys):
    assert_usage_error(capsys, tmp_path / "nope.onnx", mentions="not found")


def test_directory(tmp_path, capsys):
    assert_usage_error(capsys, tmp_path, mentions="directory")


def test_empty_file(tmp_path, capsys):
    (tmp_path / "e.onnx").write_bytes(b"")
    assert_usage_error(capsys, tmp_path / "e.onnx", mentions="empty")


def test_random_bytes(tmp_path, capsys):
    (tmp_path / "r.onnx").write_bytes(np.random.default_rng(1).bytes(4096))
    assert_usage_error(capsys, tmp_path / "r.onnx")


def test_text_file(tmp_path, capsys):
    (tmp_path / "t.onnx").write_text("this is not a model\n" * 50)
    assert_usage_error(capsys, tmp_path / "t.onnx")


def test_truncated_protobuf(tmp_path, capsys):
    data = good_model().SerializeToString()
    (tmp_path / "half.onnx").write_bytes(data[: len(data) // 2])
    assert_usage_error(capsys, tmp_path / "half.onnx")


def test_corrupt_bytes(tmp_path, capsys):
    data = bytearray(good_model().SerializeToString())
    for position in range(10, len(data), 37):   # scribble over the structure, keep the length
        data[position] = 0xFF
    (tmp_path / "c.onnx").write_bytes(bytes(data))
    assert_usage_error(capsys, tmp_path / "c.onnx")


def test_unreadable_file(tmp_path, capsys):
    path = save(good_model(), tmp_path)
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as a user who can read any file")
        assert_usage_error(capsys, path, mentions="cannot read")
    finally:
        path.chmod(0o644)


# ---------------------------------------------------------------------------------------------------------------
# Models that parse but are not valid graphs
# ---------------------------------------------------------------------------------------------------------------

def test_cyclic_graph(tmp_path, capsys):
    nodes = [helper.make_node("Add", ["x", "b"], ["a"], name="n1"),
             helper.make_node("Relu", ["a"], ["b"], name="n2")]
    model = build(nodes, [vi("x", F, [1, 4])], [vi("b", F, [1, 4])])
    assert_usage_error(capsys, save(model, tmp_path), mentions="cycle")


def test_self_loop(tmp_path, capsys):
    model = build([helper.make_node("Add", ["x", "a"], ["a"], name="n1")], [vi("x", F, [1, 4])], [vi("a", F, [1, 4])])
    assert_usage_error(capsys, save(model, tmp_path), mentions="cycle")


def test_unknown_operator_in_default_domain(tmp_path, capsys):
    model = build([helper.make_node("FrobnicateAll", ["x"], ["y"])], [vi("x", F, [1, 4])], [vi("y", F, [1, 4])])
    assert_usage_error(capsys, save(model, tmp_path), mentions="FrobnicateAll")


def test_input_never_produced(tmp_path, capsys):
    model = build([helper.make_node("Add", ["x", "ghost"], ["y"])], [vi("x", F, [1, 4])], [vi("y", F, [1, 4])])
    assert_usage_error(capsys, save(model, tmp_path), mentions="ghost")


def test_wrong_attribute(tmp_path, capsys):
    model = good_model()
    model.graph.node[1].attribute.append(helper.make_attribute("alpha_typo", 0.5))
    assert_usage_error(capsys, save(model, tmp_path), mentions="alpha_typo")


def test_output_never_produced(tmp_path, capsys):
    model = good_model()
    model.graph.output.append(vi("missing_out", F, [1]))
    assert_usage_error(capsys, save(model, tmp_path), mentions="missing_out")


def test_two_producers_of_one_tensor(tmp_path, capsys):
    nodes = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Neg", ["x"], ["y"])]
    model = build(nodes, [vi("x", F, [1, 4])], [vi("y", F, [1, 4])])
    assert_usage_error(capsys, save(model, tmp_path), mentions="'y'")


def test_no_graph(tmp_path, capsys):
    model = onnx.ModelProto(ir_version=8)
    model.opset_import.add().version = 17
    assert_usage_error(capsys, save(model, tmp_path), mentions="not an ONNX model")


def test_api_raises_model_error(tmp_path):
    (tmp_path / "r.onnx").write_bytes(b"\x00\x01\x02garbage")
    with pytest.raises(edgefit.ModelError):
        edgefit.analyze(tmp_path / "r.onnx")


# ---------------------------------------------------------------------------------------------------------------
# Bad options
# ---------------------------------------------------------------------------------------------------------------

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


def test_bad_alignment(tmp_path, capsys):
    assert_usage_error(capsys, save(good_model(), tmp_path), "--alignment", "0", mentions="alignment")


@pytest.mark.parametrize("location", ["../x.bin", "ABSOLUTE"])
def test_external_data_outside_folder_through_cli(tmp_path, capsys, location):
    folder = tmp_path / "m"
    folder.mkdir()
    path = folder / "m.onnx"
    onnx.save_model(good_model(), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="w.bin", size_threshold=0)
    (folder / "w.bin").rename(tmp_path / "x.bin")
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = str(tmp_path / "x.bin") if location == "ABSOLUTE" else location
    onnx.save_model(model, str(path))
    assert_usage_error(capsys, path, mentions="outside")


def test_missing_external_data_through_cli(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save_model(good_model(), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="w.bin", size_threshold=0)
    (tmp_path / "w.bin").unlink()
    assert_usage_error(capsys, path, mentions="missing")


# ---------------------------------------------------------------------------------------------------------------
# Not an error: an op from a custom domain
# ---------------------------------------------------------------------------------------------------------------

def test_custom_domain_op_is_an_honest_unknown(tmp_path, capsys):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Foo", ["r"], ["f"], name="foo", domain="com.acme"),
             helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")]
    w = numpy_helper.from_array(np.ones((4, 2), np.float32), "W")
    model = build(nodes, [vi("x", F, [1, 4])], [vi("f", F, [1, 4]), vi("y", F, [1, 2])], [w],
                  extra_opsets=[helper.make_opsetid("com.acme", 1)])
    path = save(model, tmp_path)
    fp = edgefit.analyze(path)
    # MatMul [1,4]x[4,2] = 8 MACs; Relu 4 FLOPs; Foo unknown, listed by name and domain.
    assert fp.params == 8
    assert next(l for l in fp.layers if l.name == "foo").macs is None
    assert next(l for l in fp.layers if l.name == "mm").macs == 8
    assert any("com.acme.Foo" in u and "foo" in u for u in fp.unknowns)
    rc, out, err = run_cli(capsys, path, "--json")
    assert rc == 0 and "Traceback" not in out + err
    assert any("com.acme.Foo" in u for u in json.loads(out)["unknowns"])
    rc, out, err = run_cli(capsys, path)          # the rich summary renders unknown MACs too
    assert rc == 0 and "Traceback" not in out + err


# ---------------------------------------------------------------------------------------------------------------
# edgefit.units
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("512KB", 512_000),                  # KB = 1000
    ("520 KiB", 532_480),                # 520 * 1024
    ("4MB", 4_000_000),
    ("1.5GiB", 1_610_612_736),           # 1.5 * 1024**3
    ("2 mib", 2_097_152),                # case-insensitive
    ("100", 100), ("100B", 100), (" 7 b ", 7),
    ("1e3KB", 1_000_000),
    (1024, 1024), (2.0, 2),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "KB", "12 XB", "-5KB", "1,5MB", "5 K B", "1e999KB", "nan", True, -1,
                                  float("inf"), float("nan")])
def test_parse_size_rejects(text):
    with pytest.raises(ConfigError):
        parse_size(text)


@pytest.mark.parametrize("text, expected", [
    ("20ms", 0.020), ("1.5s", 1.5), ("200us", 200e-6), ("200µs", 200e-6), ("5", 0.005),   # bare number: ms
    ("2min", 120.0), ("10ns", 10e-9),
])
def test_parse_duration(text, expected):
    assert parse_duration_s(text) == pytest.approx(expected)


@pytest.mark.parametrize("text, expected", [
    ("50mW", 0.05), ("2.5W", 2.5), ("300uW", 300e-6), ("3", 3.0), ("6.5kW", 6500.0),
])
def test_parse_power(text, expected):
    assert parse_power_w(text) == pytest.approx(expected)


@pytest.mark.parametrize("parse", [parse_duration_s, parse_power_w])
@pytest.mark.parametrize("text", ["fast", "10 parsecs", "-1s", "1e999", True])
def test_parse_duration_and_power_reject(parse, text):
    with pytest.raises(ConfigError):
        parse(text)


@pytest.mark.parametrize("n, text", [
    (0, "0 B"), (1023, "1023 B"), (1024, "1.00 KiB"), (1536, "1.50 KiB"), (5 * 1024**2, "5.00 MiB"),
    (1024**4, "1.00 TiB"), (1024**5, "1024.00 TiB"), (None, "unknown"),
])
def test_format_bytes(n, text):
    assert format_bytes(n) == text


@pytest.mark.parametrize("n, text", [
    (0, "0"), (999, "999"), (1000, "1.00 K"), (1_234_000, "1.23 M"), (2.16e12, "2.16 T"), (5e15, "5000.00 T"),
    (None, "unknown"),
])
def test_format_count(n, text):
    assert format_count(n) == text
