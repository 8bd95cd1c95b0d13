"""The pass pipeline and the fuse/prune/quantize/optimize commands: pass lists, the untouched-input guarantee,
fidelity after every pass, safe writing, and the JSON contract."""

import hashlib
import json
import shutil

import numpy as np
import onnx
import pytest
from helpers import model
from onnx import TensorProto, helper, numpy_helper

from edgefit.cli import main
from edgefit.errors import ConfigError
from edgefit.fidelity import synthetic_samples
from edgefit.passes import PassOptions, parse_passes, run_passes
from edgefit.passes import registry
from edgefit.passes.base import Pass, PassResult
from edgefit.runtime import session


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def digits(tmp_path, samples):
    """A private copy of the trained digits model and its data."""
    for name in ("digits_cnn.onnx", "digits_eval.npz", "digits_calib.npz"):
        shutil.copy(samples / name, tmp_path / name)
    return tmp_path


def test_parse_passes():
    specs = parse_passes("fuse, prune:0.3:structured ,quantize:fp16", PassOptions(sparsity=0.9))
    assert [s.name for s in specs] == ["fuse", "prune:0.3:structured", "quantize:fp16"]
    assert specs[1].options.sparsity == 0.3 and specs[1].options.structured
    assert specs[2].options.mode == "fp16" and specs[2].options.sparsity == 0.9
    for bad, message in (("fuse,shrink", "unknown pass"), ("prune:lots", "prune:SPARSITY"),
                         ("quantize:int4", "unexpected argument"), (" , ", "names no pass")):
        with pytest.raises(ConfigError, match=message):
            parse_passes(bad)


def test_pipeline_measures_every_pass_against_the_original(samples):
    original = onnx.load(str(samples / "kws_dscnn.onnx"))
    evaluation = synthetic_samples(original, 4)
    result = run_passes(original, "fuse,prune:0.5,quantize", fidelity_samples=evaluation)
    assert [s.spec for s in result.steps] == ["fuse", "prune:0.5", "quantize"]
    fuse_fidelity, prune_fidelity, quantize_fidelity = (s.fidelity for s in result.steps)
    assert fuse_fidelity.sqnr_db > 80      # fusing is exact up to float rounding
    assert prune_fidelity.sqnr_db > quantize_fidelity.sqnr_db - 3   # quantizing adds error on top of pruning
    assert result.fidelity is quantize_fidelity
    session(result.model)
    # The deployed arena: the pruned float model's activations at one byte each (kws: 16,000 B of 64,000 B).
    assert result.deployed_activation_bytes == 16_000
    assert run_passes(original, "fuse").deployed_activation_bytes is None


def test_pipeline_catches_a_pass_that_mutates_its_input(monkeypatch):
    class Vandal(Pass):
        name = "fuse"
        usage = "fuse"

        def run(self, proto, options, progress):
            proto.graph.node[0].name = "renamed"
            return PassResult(proto, None)

    monkeypatch.setitem(registry.passes(), "fuse", Vandal)
    proto = model([helper.make_node("Relu", ["x"], ["y"])], [("x", [2])], [("y", [2])])
    with pytest.raises(RuntimeError, match="modified its input"):
        run_passes(proto, "fuse")


def test_all_passes_handle_constant_nodes_if_subgraphs_and_dynamic_dims():
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    branch = helper.make_graph([helper.make_node("Relu", ["c"], ["out"])], "branch", [],
                               [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 4, 6, 6])])
    proto = model([helper.make_node("Constant", [], ["W"], value=w),
                   helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
                   helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
                   helper.make_node("Greater", ["s", "zero"], ["cond"]),
                   helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch, name="gate")],
                  [("x", ["N", 3, 8, 8])], [("y", ["N", 4, 6, 6])],
                  [numpy_helper.from_array(np.array(0, np.float32), "zero")])
    result = run_passes(proto, "fuse,prune:0.5,quantize", fidelity_samples=synthetic_samples(proto, 2, dims={"N": 3}))
    notes = [note for step in result.steps for note in step.stats.notes]
    assert any("gate (If)" in note for note in notes)
    assert result.steps[1].stats.layers[0].layer == "conv"
    assert all(step.fidelity.cosine > 0.5 for step in result.steps)


def test_optimize_command_writes_a_valid_model_and_leaves_the_input_alone(digits, capsys):
    source, out = digits / "digits_cnn.onnx", digits / "out.onnx"
    digest = sha256(source)
    code = main(["optimize", str(source), "--passes", "fuse,prune:0.5,quantize", "--calib",
                 str(digits / "digits_calib.npz"), "--eval", str(digits / "digits_eval.npz"), "-o", str(out), "--json"])
    assert code == 0
    assert sha256(source) == digest
    report = json.loads(capsys.readouterr().out)
    assert {"before", "after", "passes", "fidelity"} <= set(report)
    assert report["fidelity"]["inputs"] == "user"
    accuracy = report["fidelity"]["accuracy"]
    assert accuracy["before"] == pytest.approx(350 / 359) and accuracy["before"] - accuracy["after"] < 0.04
    assert [p["pass"] for p in report["passes"]] == ["fuse", "prune:0.5", "quantize"]
    assert all(p["fidelity"] for p in report["passes"])
    assert report["after"]["weight_bytes"] < 0.35 * report["before"]["weight_bytes"]
    onnx.checker.check_model(str(out), full_check=True)
    session(onnx.load(str(out)))


@pytest.mark.parametrize("command", [["fuse"], ["prune", "--sparsity", "0.6"], ["prune", "--structured", "-s", "0.25"],
                                     ["quantize", "--mode", "fp16"], ["quantize", "--samples", "8"]])
def test_each_command_keeps_the_input_file_unchanged(digits, capsys, command):
    source = digits / "digits_cnn.onnx"
    digest = sha256(source)
    assert main([command[0], str(source), *command[1:], "--json"]) == 0
    assert sha256(source) == digest
    report = json.loads(capsys.readouterr().out)
    written = digits / report["output"].rsplit("/", 1)[-1]
    assert written.exists() and written != source
    assert report["fidelity"]["inputs"] == "synthetic"
    onnx.checker.check_model(str(written))


def test_output_equal_to_input_is_refused_unless_forced(digits, capsys):
    source = digits / "digits_cnn.onnx"
    digest = sha256(source)
    assert main(["fuse", str(source), "-o", str(source)]) == 2
    assert "refusing to overwrite the input" in capsys.readouterr().err
    assert sha256(source) == digest
    assert main(["prune", str(source), "-o", str(source), "--force", "--json"]) == 0
    assert sha256(source) != digest
    assert not list(digits.glob(".*.tmp"))     # the atomic write left no temp file behind


def test_terminal_report_shows_before_after_and_fidelity(digits, capsys):
    code = main(["prune", str(digits / "digits_cnn.onnx"), "-o", str(digits / "p.onnx"), "--eval",
                 str(digits / "digits_eval.npz")])
    assert code == 0
    out = capsys.readouterr().out
    for text in ("weight bytes", "parameters", "MACs", "peak activation RAM", "sparse storage", "Fidelity",
                 "97.49% ->"):
        assert text in out


def test_target_picks_the_mode_and_adds_a_verdict(digits, capsys):
    code = main(["quantize", str(digits / "digits_cnn.onnx"), "--target", "esp32-cam", "--calib",
                 str(digits / "digits_calib.npz"), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["passes"][-1]["stats"]["mode"] == "int8"      # the ESP32-CAM profile runs int8
    assert report["target"]["precision_after"] == "int8"
    assert code == (0 if report["target"]["fits"] else 1)
    assert report["target"]["after"]["estimates"]["precision"] == "int8"
    assert report["target"]["before"]["estimates"]["precision"] == "fp32"
