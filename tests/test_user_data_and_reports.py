"""What users feed edgefit and what CI reads back: calibration / evaluation data files (shapes, dtypes, NaN,
labels, pickles, corrupt files), output files, option edges, and gate reports that must stay valid for their
consumer (JSON without NaN, parseable JUnit XML, one Markdown row per budget)."""

import json
import math
import os
import stat
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import model, weight
from onnx import TensorProto, helper
from test_check import dense_model
from test_profiles import VALID, write_profile

from edgefit import analyze
from edgefit.check import check, check_footprint
from edgefit.gate import load_gate_config
from edgefit.cli import main
from edgefit.devices import load_profile_file
from edgefit.errors import ConfigError, ProfileError
from edgefit.fidelity import compare, load_samples, measure, SampleSet
from edgefit.report.json_format import dumps


def classifier(batch="N"):
    return model([helper.make_node("Gemm", ["x", "W"], ["logits"], transB=1)], [("x", [batch, 4])],
                 [("logits", [batch, 3])], [weight("W", 3, 4)])


def strict_json(text: str):
    """json.loads that refuses the NaN / Infinity literals Python writes but JSON does not have."""
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


# ---- calibration / evaluation data -------------------------------------------------------------------

def test_empty_arrays_are_refused_not_measured_as_identical(tmp_path):
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 4), np.float32), labels=np.zeros(0, np.int64))
    with pytest.raises(ConfigError, match=r"empty.npz: no samples: the array for 'x' has shape \[0, 4\]"):
        load_samples(tmp_path / "empty.npz", classifier())


@pytest.mark.parametrize("bad, count", [(np.nan, 1), (np.inf, 1), (-np.inf, 1)])
def test_nan_and_infinite_inputs_are_refused(tmp_path, bad, count):
    data = np.ones((6, 4), np.float32)
    data[2, 1] = bad
    np.savez(tmp_path / "d.npz", x=data)
    with pytest.raises(ConfigError, match=rf"array 'x' holds {count} NaN or infinite value\(s\)"):
        load_samples(tmp_path / "d.npz", classifier())


def test_float64_beyond_float32_range_is_refused(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.full((2, 4), 1e300))
    with pytest.raises(ConfigError, match=r"holds 8 NaN or infinite value\(s\) \(or beyond its range\)"):
        load_samples(tmp_path / "d.npz", classifier())


def test_labels_must_be_one_per_sample(tmp_path):
    x = np.ones((5, 4), np.float32)
    np.savez(tmp_path / "long.npz", x=x, labels=np.zeros(10, np.int64))
    with pytest.raises(ConfigError, match="10 labels for 5 samples; give one label per sample"):
        load_samples(tmp_path / "long.npz", classifier())
    np.savez(tmp_path / "ok.npz", x=x, labels=np.arange(5))
    assert load_samples(tmp_path / "ok.npz", classifier(), limit=3).labels.tolist() == [0, 1, 2]


def test_one_hot_labels_are_class_indices(tmp_path):
    x = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    indices = np.array([0, 2, 1, 1, 0, 2, 2, 0])
    np.savez(tmp_path / "hot.npz", x=x, labels=np.eye(3)[indices])
    np.savez(tmp_path / "column.npz", x=x, labels=indices[:, None].astype(np.float32))
    hot = load_samples(tmp_path / "hot.npz", classifier())
    assert hot.labels.tolist() == indices.tolist()
    assert load_samples(tmp_path / "column.npz", classifier()).labels.tolist() == indices.tolist()
    logits = x @ np.asarray(onnx.numpy_helper.to_array(classifier().graph.initializer[0])).T
    expected = float(np.mean(np.argmax(logits, axis=1) == indices))
    assert compare(classifier(), classifier(), hot).accuracy_before == pytest.approx(expected)


@pytest.mark.parametrize("labels, message", [
    (np.array(["cat"] * 4), "labels must be integer class indices, got <U3 values"),
    (np.array([0.5, 1, 2, 0]), "labels must be integer class indices, got float64 values"),
    (np.zeros((4, 2, 2)), r"labels have shape \[4, 2, 2\]"),
])
def test_labels_that_are_not_class_indices_are_refused(tmp_path, labels, message):
    np.savez(tmp_path / "d.npz", x=np.ones((4, 4), np.float32), labels=labels)
    with pytest.raises(ConfigError, match=message):
        load_samples(tmp_path / "d.npz", classifier())


def ids_model(elem=TensorProto.INT64):
    return model([helper.make_node("Gather", ["E", "ids"], ["e"])], [("ids", [1, 3], elem)], [("e", [1, 3, 2])],
                 [weight("E", 10, 2)])


def test_dtypes_convert_only_without_loss(tmp_path):
    np.savez(tmp_path / "frac.npz", ids=np.array([[1.5, 2, 3]]))
    with pytest.raises(ConfigError, match="array 'ids' holds fractional, NaN or infinite values; the model's input "
                                          "takes int64 integers"):
        load_samples(tmp_path / "frac.npz", ids_model())
    np.savez(tmp_path / "whole.npz", ids=np.array([[1.0, 2, 3]]))
    feed = load_samples(tmp_path / "whole.npz", ids_model()).feeds[0]["ids"]
    assert feed.dtype == np.int64 and feed.tolist() == [[1, 2, 3]]
    np.savez(tmp_path / "big.npz", ids=np.array([[1, 2, 2**40]]))
    with pytest.raises(ConfigError, match=r"values outside int32's range \[-2147483648, 2147483647\]"):
        load_samples(tmp_path / "big.npz", ids_model(TensorProto.INT32))
    np.savez(tmp_path / "complex.npz", x=np.ones((2, 4), np.complex64))
    with pytest.raises(ConfigError, match="holds complex64 values; the model's input takes float32 numbers"):
        load_samples(tmp_path / "complex.npz", classifier())
    np.savez(tmp_path / "text.npz", x=np.array([["a"] * 4]))
    with pytest.raises(ConfigError, match="holds <U1 values"):
        load_samples(tmp_path / "text.npz", classifier())
    image = np.arange(8, dtype=np.uint8).reshape(2, 4) * 30     # uint8 pixels into a float input: same values
    np.savez(tmp_path / "u8.npz", x=image)
    assert load_samples(tmp_path / "u8.npz", classifier()).feeds[0]["x"].tolist() == image.astype(float).tolist()


class _Planted:
    """Unpickling this object would create a file: proof that data files are never unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickled_data_is_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    objects = np.array([_Planted(marker), _Planted(marker)], dtype=object)
    np.savez(tmp_path / "objects.npz", x=objects)
    folder = tmp_path / "folder"
    folder.mkdir()
    np.save(folder / "x.npy", objects, allow_pickle=True)
    for path in (tmp_path / "objects.npz", folder):
        with pytest.raises(ConfigError, match="Python objects, which edgefit never unpickles") as error:
            load_samples(path, classifier())
        assert "\n" not in str(error.value)
    assert not marker.exists()


def test_corrupt_files_are_one_line_errors(tmp_path):
    np.savez(tmp_path / "good.npz", x=np.ones((40, 4), np.float32))
    (tmp_path / "truncated.npz").write_bytes((tmp_path / "good.npz").read_bytes()[:200])
    with pytest.raises(ConfigError, match="cannot read .*truncated.npz: File is not a zip file"):
        load_samples(tmp_path / "truncated.npz", classifier())
    folder = tmp_path / "folder"
    folder.mkdir()
    np.save(folder / "a.npy", np.ones((3, 4), np.float32))
    (folder / "b.npy").write_text("not an array")
    with pytest.raises(ConfigError, match=r"cannot read .*b.npy: not a NumPy array file"):
        load_samples(folder, classifier())
    (folder / "b.npy").unlink()
    np.save(folder / "b.npy", np.ones((3, 5), np.float32))
    with pytest.raises(ConfigError, match=r"shapes differ: a.npy \[3, 4\], b.npy \[3, 5\]"):
        load_samples(folder, classifier())


def test_scalar_input_takes_one_value_per_sample(tmp_path):
    scalar = model([helper.make_node("Mul", ["s", "c"], ["y"])], [("s", [])], [("y", [])],
                   [onnx.numpy_helper.from_array(np.array(2.0, np.float32), "c")])
    np.savez(tmp_path / "one.npz", s=np.float32(3))
    np.savez(tmp_path / "five.npz", s=np.arange(5, dtype=np.float32))
    assert load_samples(tmp_path / "one.npz", scalar).samples == 1
    five = load_samples(tmp_path / "five.npz", scalar)
    assert five.samples == 5 and [f["s"].tolist() for f in five.feeds] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert compare(scalar, scalar, five).identical


def test_nan_outputs_in_the_same_places_are_identical_and_json_safe():
    samples = SampleSet((), 1, "user")
    reference = [[np.array([[np.nan, 1.0, np.inf]])]]
    same = measure(reference, [[np.array([[np.nan, 1.0, np.inf]])]], samples, None)
    assert same.identical and same.cosine == 1.0 and same.max_abs_error == 0.0
    moved = measure(reference, [[np.array([[0.0, 1.0, np.inf]])]], samples, None)
    assert moved.mismatched_outputs == 1 and not moved.identical
    strict_json(dumps(moved.to_dict()))


# ---- JSON never holds NaN / Infinity -----------------------------------------------------------------

def test_json_writes_non_finite_numbers_as_null():
    text = dumps({"a": math.nan, "b": [math.inf, 1.5], "c": {"d": -math.inf}, "e": (np.float64("nan"),)})
    assert strict_json(text) == {"a": None, "b": [None, 1.5], "c": {"d": None}, "e": [None]}


def test_log_of_negative_inputs_gives_valid_json(tmp_path, capsys):
    logs = model([helper.make_node("Log", ["x"], ["y"])], [("x", ["N", 4])], [("y", ["N", 4])])
    onnx.save(logs, tmp_path / "log.onnx")
    assert main(["fuse", str(tmp_path / "log.onnx"), "-o", str(tmp_path / "out.onnx"), "--json"]) == 0
    fidelity = strict_json(capsys.readouterr().out)["fidelity"]
    assert fidelity["identical"] is True and fidelity["cosine"] == 1.0


@pytest.mark.parametrize("rate", ["inf", "nan", "0", "-1"])
def test_infinite_rate_is_refused(tmp_path, capsys, rate):
    onnx.save(dense_model(8, 2), tmp_path / "m.onnx")
    assert main(["check", str(tmp_path / "m.onnx"), "-t", "esp32", f"--rate={rate}", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "positive, finite number of inferences per second" in captured.err
    with pytest.raises(ConfigError):
        check(str(tmp_path / "m.onnx"), ["esp32"], rate_hz=math.inf)
    with pytest.raises(ConfigError, match="invalid rate nan"):
        check_footprint(analyze(tmp_path / "m.onnx"), "esp32", rate_hz=math.nan)


@pytest.mark.parametrize("rate", ["inf", "nan"])
def test_gate_rate_must_be_finite(tmp_path, rate):
    onnx.save(dense_model(8, 2), tmp_path / "m.onnx")
    config = tmp_path / "edgefit.toml"
    config.write_text(f'[[gate]]\nmodel = "m.onnx"\ntarget = "esp32"\nrate = {rate}\n')
    with pytest.raises(ConfigError, match=f"rate {rate}: expected a positive, finite number"):
        load_gate_config(config)


@pytest.mark.parametrize("edit, field", [
    (lambda t: t.replace("fp32 = 0.1", "fp32 = nan"), "peak_gmacs"),
    (lambda t: t.replace("efficiency = 0.3", "efficiency = nan"), "efficiency"),
    (lambda t: t.replace("[peak_gmacs]", "battery_mah = inf\nbattery_v = 3.0\n[peak_gmacs]")
     + 'battery_mah = "x"\nbattery_v = "x"\n', "battery_mah"),
])
def test_profile_numbers_must_be_finite(tmp_path, edit, field):
    path = write_profile(tmp_path, edit(VALID))
    with pytest.raises(ProfileError, match=f"field '{field}': .*expected a finite number"):
        load_profile_file(path)


def test_negative_top_is_a_usage_error(tmp_path, capsys):
    onnx.save(dense_model(8, 2), tmp_path / "m.onnx")
    assert main(["analyze", str(tmp_path / "m.onnx"), "--top", "-1"]) == 2
    assert "--top" in capsys.readouterr().err


# ---- output files ------------------------------------------------------------------------------------

def test_output_gets_the_usual_file_permissions(tmp_path):
    onnx.save(dense_model(8, 2), tmp_path / "m.onnx")
    old = os.umask(0o022)
    try:
        assert main(["fuse", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "new dir" / "ü.onnx"), "--json"]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new dir" / "ü.onnx").stat().st_mode) == 0o644


@pytest.mark.parametrize("output", ["m.onnx/x.onnx", "a" * 300 + ".onnx"])
def test_unwritable_output_is_a_one_line_error_before_any_work(tmp_path, capsys, output):
    onnx.save(dense_model(8, 2), tmp_path / "m.onnx")
    assert main(["fuse", str(tmp_path / "m.onnx"), "-o", str(tmp_path / output)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write ") and err.count("\n") == 1 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


# ---- gate reports ------------------------------------------------------------------------------------

AWKWARD_NAME = 'ctrl \\u0001 <b>&\\"</b> a|b\\r\\nnext\\rline'   # TOML escapes


@pytest.fixture
def awkward_gate(tmp_path):
    onnx.save(dense_model(64, 10), tmp_path / "m`x.onnx")
    config = tmp_path / "edgefit.toml"
    config.write_text(textwrap.dedent(f"""\
        [[gate]]
        name = "{AWKWARD_NAME}"
        model = "m`x.onnx"
        target = "esp32"
        max_latency = "50ms"
        max_ram = "1KiB"
        """))
    return config


def test_junit_survives_control_characters(awkward_gate, capsys):
    assert main(["gate", "-c", str(awkward_gate), "--format", "junit"]) == 1
    root = ET.fromstring(capsys.readouterr().out.split("\n", 1)[1])
    cases = list(root.iter("testcase"))
    assert cases[0].get("classname") == 'edgefit.gate.ctrl \\x01 <b>&"</b> a|b\r\nnext\rline'
    failure = next(c for c in cases if c.find("failure") is not None).find("failure")
    assert failure.get("message").startswith("RAM ") and failure.get("type") == "OverBudget"


def test_markdown_rows_survive_line_breaks_pipes_html_and_backticks(awkward_gate, capsys):
    assert main(["gate", "-c", str(awkward_gate), "--format", "markdown"]) == 1
    out = capsys.readouterr().out
    assert "\r" not in out
    rows = [line for line in out.splitlines() if line.startswith("| ctrl")]
    assert len(rows) == 5          # RAM, flash, latency, precision, operators: one line each
    assert rows[0].startswith('| ctrl \x01 &lt;b&gt;&amp;"&lt;/b&gt; a\\|b next line | ``m`x.onnx`` | esp32 |')


def test_annotations_point_at_the_model_from_the_working_directory(tmp_path, monkeypatch, capsys):
    (tmp_path / "ml").mkdir()
    onnx.save(dense_model(64, 10), tmp_path / "ml" / "m.onnx")
    (tmp_path / "ml" / "edgefit.toml").write_text('[[gate]]\nmodel = "m.onnx"\ntarget = "esp32"\nmax_ram = "1KiB"\n')
    monkeypatch.chdir(tmp_path)
    assert main(["gate", "-c", "ml/edgefit.toml", "--format", "github"]) == 1
    assert capsys.readouterr().out.startswith("::error file=ml/m.onnx,title=edgefit gate%3A m.onnx on esp32::")
    assert main(["gate", "-c", str(tmp_path / "ml" / "edgefit.toml"), "--format", "junit"]) == 1
    root = ET.fromstring(capsys.readouterr().out.split("\n", 1)[1])
    assert {case.get("file") for case in root.iter("testcase")} == {"ml/m.onnx"}


# ---- conflicting options -----------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--input-shape", "x=1x8", "--input-shape", "x=2x8"], "conflicts with an earlier --input-shape"),
    (["--input-shape", "x=1x8", "--input-shape", "2x8"], "--input-shape gives 'x' two shapes: 1x8 and 2x8"),
    (["--dim", "N=1", "--dim", "N=2"], "--dim 'N=2' conflicts with an earlier --dim N=1"),
])
def test_conflicting_repeated_options_are_refused(tmp_path, capsys, args, message):
    onnx.save(model([helper.make_node("Relu", ["x"], ["y"])], [("x", ["N", 8])], [("y", ["N", 8])]),
              tmp_path / "m.onnx")
    assert main(["analyze", str(tmp_path / "m.onnx"), *args]) == 2
    assert message in capsys.readouterr().err
    assert main(["analyze", str(tmp_path / "m.onnx"), "--json", *args[:2], *args[:2]]) == 0   # repeated, same


# ---- calibration methods on user data ----------------------------------------------------------------

def conv_classifier():
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]), helper.make_node("Gemm", ["f", "G"], ["logits"], transB=1)]
    return model(nodes, [("x", ["N", 1, 4, 4])], [("logits", ["N", 3])],
                 [weight("W", 2, 1, 3, 3), weight("G", 3, 32, seed=1)], opset=13)


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_calibration_on_a_short_last_batch_keeps_stdout_json(tmp_path, capsys, method):
    onnx.save(conv_classifier(), tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((40, 1, 4, 4)).astype(np.float32)   # batches of 32 + 8
    np.savez(tmp_path / "calib.npz", x=x)
    assert main(["quantize", str(tmp_path / "m.onnx"), "--method", method, "--calib", str(tmp_path / "calib.npz"),
                 "-o", str(tmp_path / "q.onnx"), "--json"]) == 0
    data = strict_json(capsys.readouterr().out)
    stats = data["passes"][-1]["stats"]
    assert (stats["method"], stats["calibration"], stats["calibration_samples"]) == (method, "user", 40)
    assert data["fidelity"]["samples"] == 40 and data["fidelity"]["cosine"] > 0.99


# ---- TOML files from other editors -------------------------------------------------------------------

def test_toml_with_a_byte_order_mark_is_read_and_non_utf8_is_one_line_error(tmp_path, capsys):
    onnx.save(dense_model(8, 2), tmp_path / "m.onnx")
    config = tmp_path / "edgefit.toml"
    config.write_bytes(b'\xef\xbb\xbf[[gate]]\nmodel = "m.onnx"\ntarget = "esp32"\n')
    assert [g.target for g in load_gate_config(config).gates] == ["esp32"]
    boards = tmp_path / "boards"
    boards.mkdir()
    write_profile(boards).write_bytes(b"\xef\xbb\xbf" + VALID.encode())
    assert load_profile_file(boards / "test-board.toml").name == "test-board"
    config.write_bytes(b'[[gate]]\nname = "caf\xe9"\nmodel = "m.onnx"\ntarget = "esp32"\n')   # Latin-1
    assert main(["gate", "-c", str(config)]) == 2
    assert capsys.readouterr().err == f"error: {config}: not valid TOML: not UTF-8 text (byte 0xe9 at offset 20)\n"
    (boards / "test-board.toml").write_bytes(VALID.replace("Test board", "T\xe9st").encode("latin-1"))
    assert main(["profiles", "list", "--profiles-dir", str(boards)]) == 2
    assert "test-board.toml: not valid TOML: not UTF-8 text (byte 0xe9" in capsys.readouterr().err


def test_baseline_written_by_powershell_as_utf16_is_read(tmp_path, capsys):
    onnx.save(dense_model(64, 10), tmp_path / "m.onnx")
    assert main(["analyze", str(tmp_path / "m.onnx"), "--json"]) == 0
    (tmp_path / "base.json").write_bytes(capsys.readouterr().out.encode("utf-16"))   # with its BOM
    config = tmp_path / "edgefit.toml"
    config.write_text('[[gate]]\nmodel = "m.onnx"\ntarget = "esp32"\nbaseline = "base.json"\n')
    assert main(["gate", "-c", str(config), "--json"]) == 0
    checks = strict_json(capsys.readouterr().out)["results"][0]["checks"]
    growth = {c["metric"]: (c["value"], c["limit"]) for c in checks if c["metric"].endswith("_growth")}
    assert growth == {"flash_growth": (2600, 2600.0), "ram_growth": (304, 304.0)}   # (64 + 10) x 4 B, 16-aligned


def test_fixed_batch_of_two_takes_labels_per_row(tmp_path):
    x = np.random.default_rng(1).standard_normal((6, 4)).astype(np.float32)      # 3 samples of 2 rows
    logits = x @ np.asarray(onnx.numpy_helper.to_array(classifier().graph.initializer[0])).T
    truth = np.argmax(logits, axis=1)
    labels = truth.copy()
    labels[0] = (labels[0] + 1) % 3                                              # one of six rows wrong
    np.savez(tmp_path / "rows.npz", x=x, labels=labels)
    samples = load_samples(tmp_path / "rows.npz", classifier(batch=2))
    assert samples.samples == 3 and len(samples.labels) == 6
    assert compare(classifier(batch=2), classifier(batch=2), samples).accuracy_before == pytest.approx(5 / 6)
    assert load_samples(tmp_path / "rows.npz", classifier(batch=2), limit=2).labels.tolist() == labels[:4].tolist()
    np.savez(tmp_path / "odd.npz", x=x, labels=labels[:5])
    with pytest.raises(ConfigError, match=r"5 labels for 3 samples \(6 rows\); give one label per sample"):
        load_samples(tmp_path / "odd.npz", classifier(batch=2))


def test_labels_without_a_class_score_output_are_reported_unused(tmp_path, capsys):
    two_heads = model([helper.make_node("Gemm", ["x", "W"], ["a"], transB=1),
                       helper.make_node("Gemm", ["x", "V"], ["b"], transB=1)],
                      [("x", ["N", 4])], [("a", ["N", 3]), ("b", ["N", 3])],
                      [weight("W", 3, 4), weight("V", 3, 4, seed=2)])
    onnx.save(two_heads, tmp_path / "m.onnx")
    np.savez(tmp_path / "eval.npz", x=np.ones((5, 4), np.float32), labels=np.arange(5) % 3)
    assert main(["fuse", str(tmp_path / "m.onnx"), "--eval", str(tmp_path / "eval.npz"), "-o",
                 str(tmp_path / "out.onnx"), "--json"]) == 0
    fidelity = strict_json(capsys.readouterr().out)["fidelity"]
    assert "accuracy" not in fidelity
    assert fidelity["labels_unused"].startswith("no output looks like class scores ([batch, classes]")
    assert main(["fuse", str(tmp_path / "m.onnx"), "--eval", str(tmp_path / "eval.npz"), "-o",
                 str(tmp_path / "out.onnx")]) == 0
    assert "the data's labels give no accuracy: no output looks like class scores" in capsys.readouterr().out


def test_gate_json_with_another_format_is_a_usage_error(awkward_gate, capsys):
    assert main(["gate", "-c", str(awkward_gate), "--json", "--format", "junit"]) == 2
    assert capsys.readouterr().err == "error: --json and --format junit ask for two formats; give one\n"


def test_output_that_is_a_hard_link_to_the_input_is_refused(tmp_path, capsys):
    onnx.save(dense_model(8, 2), tmp_path / "m.onnx")
    os.link(tmp_path / "m.onnx", tmp_path / "same.onnx")
    assert main(["fuse", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "same.onnx")]) == 2
    assert "refusing to overwrite the input model" in capsys.readouterr().err
    assert main(["fuse", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "same.onnx"), "--force", "--json"]) == 0
