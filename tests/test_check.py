"""check: verdicts and margins, budgets, the tier summary and its one line, the JSON contract, exit codes."""

import dataclasses
import json

import numpy as np
import onnx
import pytest
from helpers import model, weight
from onnx import helper
from test_estimate import mcu, phone, two_layer_footprint

import edgefit
from edgefit.check import Budgets, check, check_footprint, tier_summary
from edgefit.report.check_text import describe_target
from edgefit.cli import main
from edgefit.errors import ConfigError
from edgefit.report.check_text import render_tier_line


def dense_model(inputs: int, outputs: int):
    """One Gemm: inputs x outputs fp32 weights (4 bytes each) plus a bias."""
    return model(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)],
        [("x", [1, inputs])], [("y", [1, outputs])],
        [weight("w", outputs, inputs), weight("b", outputs)],
    )


@pytest.fixture
def big_dense(tmp_path):
    """300,000 params: 1.2 MB in fp32 (over a 1 MB flash), 300 KB in int8."""
    path = tmp_path / "dense.onnx"
    onnx.save(dense_model(1000, 300), path)
    return path


@pytest.fixture
def small_dense(tmp_path):
    path = tmp_path / "small.onnx"
    onnx.save(dense_model(64, 10), path)
    return path


def test_verdicts_and_margins():
    result = check_footprint(two_layer_footprint(), mcu())
    # flash 98,000 of 100,000: 2% free; RAM 22,000 of 64,000; latency 6 ms of the 10 ms tiny default.
    flash = result.verdict("flash")
    assert (flash.value, flash.limit, flash.ok, flash.limit_source) == (98_000, 100_000, True, "device")
    assert flash.margin_pct == pytest.approx(2.0)
    latency = result.verdict("latency")
    assert latency.value == pytest.approx(6.0) and latency.limit == pytest.approx(10.0)
    assert latency.limit_source == "tiny tier default" and latency.unit == "ms"
    assert result.verdict("power") is None, "no power budget, no power verdict"
    assert result.fits


def test_budgets_tighten_memory_and_set_latency_and_power():
    budgets = Budgets.parse(max_ram="20KB", max_flash="1MB", max_latency="50ms", max_power="50mW")
    assert budgets == Budgets(20_000, 1_000_000, 0.05, 0.05)
    result = check_footprint(two_layer_footprint(), mcu(), budgets=budgets, rate_hz=10)
    ram = result.verdict("ram")
    assert (ram.limit, ram.limit_source, ram.ok) == (20_000, "budget", False)   # 22,000 B needed
    assert ram.margin_pct == pytest.approx(-10.0)
    assert result.verdict("flash").limit == 100_000, "a looser flash budget cannot exceed the device"
    assert result.verdict("latency").limit == pytest.approx(50.0), "--max-latency replaces the tier default"
    power = result.verdict("power")
    assert power.value == pytest.approx(15.4) and power.limit == pytest.approx(50.0) and power.ok
    assert not result.fits and [v.metric for v in result.failures] == ["ram"]


def test_rate_caps_the_latency_budget():
    result = check_footprint(two_layer_footprint(), mcu(), budgets=Budgets(max_latency_s=1.0), rate_hz=200)
    latency = result.verdict("latency")
    assert latency.limit == pytest.approx(5.0) and latency.limit_source == "rate"   # 1/200 s
    assert not latency.ok                                                            # 6 ms > 5 ms


def test_unsupported_precision_fails():
    result = check_footprint(two_layer_footprint(), mcu(), "fp16")
    precision = result.verdict("precision")
    assert (precision.value, precision.limit, precision.ok) == ("fp16", "fp32, int8", False)
    assert not result.fits


def test_invalid_budgets():
    with pytest.raises(ConfigError, match="invalid size"):
        Budgets.parse(max_ram="lots")
    with pytest.raises(ConfigError, match="max-latency"):
        Budgets.parse(max_latency="0ms")


def test_fits_int8_but_not_fp32_on_a_1mb_flash_device(big_dense):
    fp = edgefit.analyze(big_dense)
    assert fp.weight_bytes == 300_300 * 4
    nano = "arduino-nano-33-ble-sense"                  # 1 MiB flash, 150 KB of runtime code
    loose = Budgets(max_latency_s=1.0)
    fp32 = check(fp, [nano], budgets=loose).targets[0]
    assert fp32.verdict("flash").value == 1_201_200 + 150_000 and not fp32.verdict("flash").ok
    int8 = check(fp, [nano], "int8", budgets=loose).targets[0]
    assert int8.verdict("flash").value == 300_300 + 150_000 and int8.fits


def test_tier_summary_binding_constraint_and_int8_outlook():
    # fp32 on the MCU: 98,000 B of flash fits a 100,000 B device; a 90,000 B one does not (by 8.9%).
    tight = mcu(name="tight-mcu", flash_bytes=90_000)
    tighter = mcu(name="tighter-mcu", flash_bytes=60_000)
    report = check(two_layer_footprint(), [tight, tighter, phone()])
    assert report.precision == "fp32" and report.precision_is_models_own
    tiers = {t.tier: t for t in report.tiers.tiers}
    assert set(tiers) == {"tiny", "mobile"}
    assert tiers["mobile"].fits and tiers["mobile"].devices == ("hand-phone",)
    tiny = tiers["tiny"]
    assert not tiny.fits and tiny.best_device == "tight-mcu"
    assert (tiny.binding.metric, tiny.binding.value, tiny.binding.limit) == ("flash", 98_000, 90_000)
    # int8 needs 62,000 B: fits the 90,000 B device, not the 60,000 B one.
    assert tiny.int8.fits and tiny.int8.devices == ("tight-mcu",)
    assert tiny.int8.binding.value == 62_000
    line = render_tier_line(report.tiers)
    assert line == ("Fits: Mobile. Tiny: no — needs 95.70 KiB flash, best device (tight-mcu) allows 87.89 KiB; "
                    "int8 would fit (tight-mcu).")


def test_tier_line_when_int8_is_not_enough():
    tiny_flash = mcu(name="tiny-flash", flash_bytes=55_000)
    summary = check(two_layer_footprint(), [tiny_flash]).tiers
    assert render_tier_line(summary) == ("Fits: none. Tiny: no — needs 95.70 KiB flash, best device (tiny-flash) "
                                         "allows 53.71 KiB; int8 would need 60.55 KiB, still too much.")
    int8_summary = check(two_layer_footprint(), [tiny_flash], "int8").tiers
    assert int8_summary.tiers[0].int8 is None, "no int8 outlook when already int8"


def test_tier_summary_over_builtin_profiles(small_dense):
    summary = tier_summary(edgefit.analyze(small_dense))
    assert [t.tier for t in summary.tiers] == ["cloud", "edge", "mobile", "tiny"]
    assert set(summary.fitting) == {"cloud", "edge", "mobile", "tiny"}
    assert render_tier_line(summary) == "Fits: Cloud, Edge, Mobile, Tiny."


def test_check_analyzes_a_path(small_dense):
    report = check(small_dense, ["esp32"], input_shapes={}, dims={})
    assert report.model_path.endswith("small.onnx") and report.targets[0].profile.name == "esp32"
    with pytest.raises(ConfigError, match="no target given"):
        check(small_dense, [])


def test_cli_json_contract(big_dense, capsys):
    assert main(["check", str(big_dense), "--all", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["precision"] == "fp32" and data["estimated"] is True
    assert len(data["targets"]) == len(edgefit.devices.list_profiles())
    for target in data["targets"]:
        assert {"target", "tier", "fits", "checks", "estimates"} <= set(target)
        for item in target["checks"]:
            assert {"metric", "value", "limit", "ok"} <= set(item)
        assert {"latency_ms", "energy_mj", "avg_power_mw", "ram_bytes", "flash_bytes",
                "activation_bytes"} <= set(target["estimates"])
    assert set(data["tiers"]) == {"cloud", "edge", "mobile", "tiny"}
    for tier in data["tiers"].values():
        assert {"fits", "devices"} <= set(tier)
    nano = next(t for t in data["targets"] if t["target"] == "arduino-nano-33-ble-sense")
    assert nano["estimates"]["flash_bytes"] == 1_201_200 + 150_000
    assert next(c for c in nano["checks"] if c["metric"] == "flash")["ok"] is False


def test_cli_int8_activations_take_a_quarter(big_dense, capsys):
    main(["check", str(big_dense), "-t", "esp32", "--json"])
    fp32 = json.loads(capsys.readouterr().out)["targets"][0]["estimates"]["activation_bytes"]
    main(["check", str(big_dense), "-t", "esp32", "--precision", "int8", "--json"])
    int8 = json.loads(capsys.readouterr().out)["targets"][0]["estimates"]["activation_bytes"]
    # x (1000 floats) and y (300 floats) are live together: 4000 + 1200 B; at int8 1000 -> 1008 and 300 -> 304
    # after 16-byte alignment, so a little over a quarter.
    assert (fp32, int8) == (5200, 1312)


def test_cli_exit_codes(big_dense, small_dense, capsys):
    assert main(["check", str(small_dense), "--target", "esp32"]) == 0
    assert "esp32: fits" in capsys.readouterr().out
    assert main(["check", str(big_dense), "-t", "nano33ble", "--max-latency", "1s"]) == 1
    assert main(["check", str(big_dense), "-t", "nano33ble", "--max-latency", "1s", "--precision", "int8"]) == 0
    assert main(["check", str(small_dense), "--target", "esp32", "--max-ram", "1KiB"]) == 1
    capsys.readouterr()
    assert main(["check", str(small_dense), "--target", "esp32-cma"]) == 2
    assert "did you mean 'esp32-cam'" in capsys.readouterr().err
    assert main(["check", str(small_dense)]) == 2
    assert "--target NAME" in capsys.readouterr().err
    assert main(["check", str(small_dense), "-t", "esp32", "--max-ram", "lots"]) == 2
    assert main(["check", str(small_dense), "-t", "esp32", "--rate", "0"]) == 2
    assert main(["check", str(small_dense), "-t", "esp32", "--precision", "int4"]) == 2


def test_cli_all_prints_tiers(big_dense, capsys):
    # 1.2 MB of fp32 weights: over the 1 MiB of the Nano 33, but the STM32H7's 2 MiB takes it.
    assert main(["check", str(big_dense), "--all"]) == 1
    out = " ".join(capsys.readouterr().out.split())     # undo the terminal's line wrapping
    assert "Tiers" in out and "Fits: Cloud, Edge, Mobile, Tiny." in out
    assert "arduino-nano-33-ble-sense 53.1 KiB 1.29 MiB ✗" in out
    assert "estimates" in out


def test_cli_lower_bound_is_reported(tmp_path, capsys):
    # A Loop with an unknown trip count: its MACs are unknown, so latency is at least the estimate.
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("MatMul", ["v_in", "w"], ["v_out"])],
        "body",
        [helper.make_tensor_value_info("i", onnx.TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", onnx.TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", onnx.TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("cond_out", onnx.TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", onnx.TensorProto.FLOAT, [1, 8])],
        [onnx.numpy_helper.from_array(np.eye(8, dtype=np.float32), "w")],
    )
    loop = model([helper.make_node("Loop", ["n", "cond", "x"], ["y"], body=body)],
                 [("x", [1, 8]), ("n", [], onnx.TensorProto.INT64), ("cond", [], onnx.TensorProto.BOOL)],
                 [("y", [1, 8])])
    path = tmp_path / "loop.onnx"
    onnx.save(loop, path)
    fp = edgefit.analyze(path)
    result = check_footprint(fp, "esp32")
    assert fp.unknowns and result.estimate.latency_is_lower_bound and result.verdict("latency").lower_bound
    main(["check", str(path), "-t", "esp32"])
    out = capsys.readouterr().out
    assert "latency is a lower bound" in out and "unknown:" in out


def test_target_result_summary_for_the_passes_report():
    result = check_footprint(two_layer_footprint(), dataclasses.replace(mcu(), flash_bytes=90_000))
    assert result.latency_s == pytest.approx(6e-3)
    assert describe_target(result).startswith("does not fit hand-mcu at fp32: flash 95.70 KiB > 87.89 KiB (device, 9% over)")


def test_cli_check_has_the_gate_formats(big_dense, capsys):
    import xml.etree.ElementTree as ET

    # esp32 and the Nano 33 at fp32: flash 1.2 MB of weights + 150 KB runtime is over the Nano's 1 MiB.
    args = ["check", str(big_dense), "-t", "esp32", "-t", "nano33ble", "--max-latency", "1s"]
    assert main([*args, "--format", "junit"]) == 1
    suites = ET.fromstring(capsys.readouterr().out)
    failed = {(c.get("classname"), c.get("name")) for c in suites.iter("testcase") if c.find("failure") is not None}
    assert ("edgefit.check.dense.onnx on arduino-nano-33-ble-sense", "flash on arduino-nano-33-ble-sense") in failed
    assert all("esp32" not in name for _, name in failed)
    assert suites.get("name") == "edgefit check"
    assert main([*args, "--format", "markdown"]) == 1
    markdown = capsys.readouterr().out
    assert markdown.startswith("### edgefit check: ❌ 1 of 2 targets failed")
    assert "Model: `" in markdown and "| dense.onnx on esp32 |" in markdown
    assert main([*args, "--format", "github"]) == 1
    assert capsys.readouterr().out.splitlines()[-1].startswith("edgefit check: 1/2 targets passed")
    assert main([*args, "--format", "json"]) == 1
    assert json.loads(capsys.readouterr().out)["fits"] is False
    assert main([*args, "--format", "markdown", "--json"]) == 2
    assert "two formats" in capsys.readouterr().err
