"""Edges of what users feed edgefit and read back: JSON without NaN, rates and profile numbers that must be finite,
output files, conflicting options, calibration that must keep stdout JSON. (Data files: test_fidelity.py; gate
reports: test_gate.py.)"""

import math
import os
import stat

import numpy as np
import onnx
import pytest
from helpers import model, strict_json, weight
from onnx import helper
from test_check import dense_model
from test_profiles import VALID, write_profile

from edgefit import analyze
from edgefit.cli import main
from edgefit.devices.check import check, check_footprint
from edgefit.devices.profiles import load_profile_file
from edgefit.errors import ConfigError, ProfileError
from edgefit.report.json_format import dumps

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


def test_output_that_is_a_hard_link_to_the_input_is_refused(tmp_path, capsys):
    onnx.save(dense_model(8, 2), tmp_path / "m.onnx")
    os.link(tmp_path / "m.onnx", tmp_path / "same.onnx")
    assert main(["fuse", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "same.onnx")]) == 2
    assert "refusing to overwrite the input model" in capsys.readouterr().err
    assert main(["fuse", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "same.onnx"), "--force", "--json"]) == 0
