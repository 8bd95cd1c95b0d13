"""check: verdicts and margins, budgets, the tier summary and its one line, the JSON contract, exit codes."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import model, weight
from onnx import helper
from test_estimate import mcu, phone, two_layer_footprint
from test_profiles import VALID

import edgefit
from edgefit.cli import main
from edgefit.devices.check import Band, Budgets, check, check_footprint, tier_summary
from edgefit.errors import ConfigError

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"
from edgefit.report.check_text import describe_bases, describe_target, describe_verdict, render_tier_line


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
    # flash 98,000 of 100,000: 2% free; RAM 22,000 of 64,000; latency 6 ms, inside the tiny band of 1-10 ms.
    flash = result.verdict("flash")
    assert (flash.value, flash.limit, flash.ok, flash.limit_source) == (98_000, 100_000, True, "device")
    assert flash.margin_pct == pytest.approx(2.0) and flash.kind == "budget" and flash.band is None
    latency = result.verdict("latency")
    assert latency.value == pytest.approx(6.0) and latency.unit == "ms"
    assert (latency.kind, latency.limit, latency.limit_source, latency.ok) == ("context", None, None, True)
    assert latency.band == Band("tiny", 1.0, 10.0) and latency.band_position == "within"
    assert latency.margin_pct is None
    assert result.verdict("power") is None, "no power budget, no power verdict"
    assert result.fits


def slow_mcu(**changes):
    """The hand MCU with a 20 ms invoke overhead: 4.8 ms of compute + 20 ms + 2 x 0.1 ms per op = 25 ms at fp32,
    2.4 + 20.2 = 22.6 ms at int8 (test_estimate works out the compute); the tiny band ends at 10 ms."""
    return mcu(inference_overhead_s=20e-3, **changes)


def test_no_budget_a_slow_model_still_fits_with_the_band_as_context():
    result = check_footprint(two_layer_footprint(), slow_mcu())
    latency = result.verdict("latency")
    assert latency.value == pytest.approx(25.0)
    assert latency.kind == "context" and latency.ok and latency.band_position == "above"
    assert result.fits and result.failures == ()
    assert describe_verdict(latency) == "latency 25.0 ms — slower than the typical 1–10 ms of the Tiny tier"
    assert describe_target(result).endswith("; latency 25.0 ms — slower than the typical 1–10 ms of the Tiny tier")
    fast = check_footprint(two_layer_footprint(), mcu(inference_overhead_s=0.0, per_op_overhead_s=0.0),
                           "int8").verdict("latency")
    assert fast.value == pytest.approx(2.4) and fast.band_position == "within"
    faster = check_footprint(two_layer_footprint(), mcu(inference_overhead_s=0.0, per_op_overhead_s=0.0,
                                                        peak_macs_per_s={"fp32": 5e9, "int8": 10e9}), "int8")
    # conv: 1e6 / 5e9 = 0.2 ms vs 0.23 ms of memory; gemm: 0.04 ms vs 0.0625 ms -> 0.2925 ms, under the band
    assert describe_verdict(faster.verdict("latency")) == ("latency 0.292 ms — faster than the typical 1–10 ms "
                                                           "of the Tiny tier")


def test_a_latency_budget_decides():
    result = check_footprint(two_layer_footprint(), slow_mcu(), budgets=Budgets(max_latency_s=0.020))
    latency = result.verdict("latency")
    assert (latency.kind, latency.limit, latency.limit_source, latency.ok) == ("budget", pytest.approx(20.0),
                                                                              "budget", False)
    assert latency.margin_pct == pytest.approx(-25.0)
    assert latency.band == Band("tiny", 1.0, 10.0), "the band stays as context beside the budget"
    assert not result.fits and [v.metric for v in result.failures] == ["latency"]
    assert describe_verdict(latency) == "latency 25.0 ms > 20.0 ms (budget, 25% over)"
    assert check_footprint(two_layer_footprint(), slow_mcu(), budgets=Budgets(max_latency_s=0.030)).fits


def test_rate_alone_is_a_latency_budget():
    # 50 inferences/s leave 20 ms each: the slow MCU's 25 ms cannot keep up; 10/s leave 100 ms.
    result = check_footprint(two_layer_footprint(), slow_mcu(), rate_hz=50)
    latency = result.verdict("latency")
    assert (latency.kind, latency.limit, latency.limit_source, latency.ok) == ("budget", pytest.approx(20.0),
                                                                              "rate", False)
    assert not result.estimate.keeps_up and not result.fits
    relaxed = check_footprint(two_layer_footprint(), slow_mcu(), rate_hz=10).verdict("latency")
    assert (relaxed.limit, relaxed.limit_source, relaxed.ok) == (pytest.approx(100.0), "rate", True)


def test_profile_declared_latency_budget():
    declared = slow_mcu(latency_budget_s=0.020)        # e.g. the board's application needs 20 ms
    latency = check_footprint(two_layer_footprint(), declared).verdict("latency")
    assert (latency.limit, latency.limit_source, latency.ok) == (pytest.approx(20.0), "profile", False)
    # The user's budget replaces the profile's, looser or tighter; a rate still caps either.
    looser = check_footprint(two_layer_footprint(), declared, budgets=Budgets(max_latency_s=0.030))
    assert (looser.verdict("latency").limit_source, looser.fits) == ("budget", True)
    capped = check_footprint(two_layer_footprint(), slow_mcu(latency_budget_s=0.030), rate_hz=50)
    assert (capped.verdict("latency").limit, capped.verdict("latency").limit_source) == (pytest.approx(20.0), "rate")
    assert check_footprint(two_layer_footprint(), slow_mcu(latency_budget_s=0.030)).fits


def test_budgets_tighten_memory_and_set_latency_and_power():
    budgets = Budgets.parse(max_ram="20KB", max_flash="1MB", max_latency="50ms", max_power="50mW")
    assert budgets == Budgets(20_000, 1_000_000, 0.05, 0.05)
    result = check_footprint(two_layer_footprint(), mcu(), budgets=budgets, rate_hz=10)
    ram = result.verdict("ram")
    assert (ram.limit, ram.limit_source, ram.ok) == (20_000, "budget", False)   # 22,000 B needed
    assert ram.margin_pct == pytest.approx(-10.0)
    assert result.verdict("flash").limit == 100_000, "a looser flash budget cannot exceed the device"
    assert result.verdict("latency").limit == pytest.approx(50.0), "--max-latency sets the latency budget"
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


def test_tier_line_no_budget_no_latency_veto():
    summary = check(two_layer_footprint(), [slow_mcu()]).tiers
    assert summary.fitting == ("tiny",) and render_tier_line(summary) == "Fits: Tiny."


def test_tier_line_latency_budget_binds_and_int8_would_fit():
    # 6 ms at fp32 over a 5 ms budget; int8 takes 3.6 ms (test_estimate).
    summary = check(two_layer_footprint(), [mcu()], budgets=Budgets(max_latency_s=0.005)).tiers
    tiny = summary.tiers[0]
    assert (tiny.binding.metric, tiny.binding.limit_source) == ("latency", "budget")
    assert tiny.int8.fits and tiny.int8.binding.value == pytest.approx(3.6)
    assert render_tier_line(summary) == ("Fits: none. Tiny: no — needs 6.0 ms latency, best device (hand-mcu) "
                                         "allows 5.0 ms; int8 would fit (hand-mcu).")
    # At 250 inferences/s (4 ms each) int8 is still too slow.
    by_rate = check(two_layer_footprint(), [mcu()], rate_hz=250).tiers
    assert render_tier_line(by_rate) == ("Fits: none. Tiny: no — needs 6.0 ms latency, best device (hand-mcu) "
                                         "allows 4.0 ms; int8 would fit (hand-mcu).")
    by_rate = check(two_layer_footprint(), [mcu()], rate_hz=400).tiers
    assert render_tier_line(by_rate) == ("Fits: none. Tiny: no — needs 6.0 ms latency, best device (hand-mcu) "
                                         "allows 2.5 ms; int8 would need 3.6 ms, still too much.")


def test_tier_line_ram_and_precision_still_bind_beside_a_context_latency():
    # The slow MCU's 25 ms is context; RAM (22,000 B needed, 20,000 B there) and fp16 (not run) still bind, and
    # int8 (13,008 B, 22.6 ms) would fit.
    short_of_ram = check(two_layer_footprint(), [slow_mcu(ram_bytes=20_000)]).tiers
    assert render_tier_line(short_of_ram) == ("Fits: none. Tiny: no — needs 21.48 KiB RAM, best device (hand-mcu) "
                                              "allows 19.53 KiB; int8 would fit (hand-mcu).")
    fp16 = check(two_layer_footprint(), [slow_mcu()], "fp16").tiers
    assert render_tier_line(fp16) == ("Fits: none. Tiny: no — fp16 is not supported (best device hand-mcu runs "
                                      "fp32, int8); int8 would fit (hand-mcu).")


@pytest.mark.parametrize("name", ["kws_dscnn", "vww_mobilenet_v1_025", "ic_resnet8", "ad_autoencoder"])
def test_mlperf_tiny_int8_models_fit_the_boards_they_were_measured_on(name):
    # MLPerf Tiny ran all four at int8 on NUCLEO-H7A3ZI-Q and NUCLEO-L4R5ZI (KWS on the H7A3 in 11-22 ms, over
    # the tiny band's 10 ms). Without a budget every latency is context, never a veto; stm32h7 is the same family.
    boards = ("nucleo-h7a3zi-q", "nucleo-l4r5zi", "stm32h7")
    report = check(SAMPLES / f"{name}.onnx", boards, "int8")
    assert report.fits and {t.verdict("latency").kind for t in report.targets} == {"context"}
    tiny = next(t for t in report.tiers.tiers if t.tier == "tiny")
    assert tiny.fits and set(tiny.devices) == set(boards)


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
    assert len(data["targets"]) == len(edgefit.devices.profiles.list_profiles())
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


def test_bases_named_per_device_when_they_differ():
    same = check(two_layer_footprint(), [mcu(), mcu(name="other-mcu")]).targets
    assert describe_bases(same) == "datasheet figures, expected error unknown"
    mixed = check(two_layer_footprint(), [mcu(), mcu(name="other-mcu"),
                                          mcu(name="my-mcu", basis="user calibration", expected_error=0.12)]).targets
    assert mixed[2].estimate.to_dict()["basis"] == "user calibration"
    assert describe_bases(mixed) == ("user calibration, typically within ±12% (my-mcu); "
                                     "datasheet figures, expected error unknown (the other devices)")


def test_cli_json_latency_kind_band_and_basis(small_dense, tmp_path, capsys):
    assert main(["check", str(small_dense), "-t", "esp32", "--json"]) == 0
    target = json.loads(capsys.readouterr().out)["targets"][0]
    latency = next(c for c in target["checks"] if c["metric"] == "latency")
    assert (latency["kind"], latency["limit"], latency["limit_source"], latency["ok"]) == ("context", None, None, True)
    assert latency["band"] == {"tier": "tiny", "low": 1.0, "high": 10.0,
                               "position": "below" if latency["value"] < 1 else "within"}
    ram = next(c for c in target["checks"] if c["metric"] == "ram")
    assert (ram["kind"], ram["band"]) == ("budget", None)
    # fp32 on the ESP32 runs on the reference kernels: the default stack's fp32 table, not a datasheet roofline.
    assert (target["estimates"]["basis"], target["estimates"]["expected_error"]) == ("published measurement", 0.6)
    assert target["estimates"]["runtime"] == "esp-nn"

    assert main(["check", str(small_dense), "-t", "esp32", "--max-latency", "20ms", "--json"]) == 0
    latency = next(c for c in json.loads(capsys.readouterr().out)["targets"][0]["checks"] if c["metric"] == "latency")
    assert (latency["kind"], latency["limit"], latency["limit_source"]) == ("budget", 20.0, "budget")
    assert latency["band"]["high"] == 10.0


def test_profile_basis_expected_error_and_latency_budget(small_dense, tmp_path, capsys):
    # A user's board whose speed figures come from their own calibration (+-12%) and whose application must
    # answer within 1 us: less than any model takes, so the profile's budget fails it.
    text = ('basis = "user calibration"\nexpected_error = 0.12\nlatency_budget = "1us"\n' + VALID
            + 'expected_error = "leave-one-out error of the fit"\nlatency_budget = "the application\'s deadline"\n')
    (tmp_path / "test-board.toml").write_text(text)
    assert main(["check", str(small_dense), "-t", "test-board", "--profiles-dir", str(tmp_path), "--json"]) == 1
    target = json.loads(capsys.readouterr().out)["targets"][0]
    assert (target["estimates"]["basis"], target["estimates"]["expected_error"]) == ("user calibration", 0.12)
    latency = next(c for c in target["checks"] if c["metric"] == "latency")
    assert (latency["kind"], latency["limit"], latency["limit_source"], latency["ok"]) == (
        "budget", pytest.approx(1e-3), "profile", False)
    assert main(["check", str(small_dense), "-t", "test-board", "--profiles-dir", str(tmp_path)]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "basis: user calibration, typically within ±12%" in out
    assert main(["profiles", "show", "test-board", "--profiles-dir", str(tmp_path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["basis"], shown["expected_error"], shown["latency_budget_ms"]) == ("user calibration", 0.12,
                                                                                   pytest.approx(1e-3))


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
    # RAM: 48 KiB runtime + 5,200 B activations + the TFLM tail of one FULLY_CONNECTED (928 B) = 55,280 B
    assert "arduino-nano-33-ble-sense 54 KiB 1.29 MiB ✗" in out
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
    assert describe_target(result).startswith(
        "does not fit hand-mcu at fp32: flash 95.70 KiB > 87.89 KiB (device, 9% over)")


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


@pytest.mark.parametrize("command", [["check"], ["report", "-o", "page.html"]])
def test_target_and_all_are_one_choice_in_check_and_report(small_dense, tmp_path, capsys, command):
    """The shared --target / --all options: both is a usage error in either command; check also needs one."""
    args = [command[0], str(small_dense), *[a if a != "page.html" else str(tmp_path / a) for a in command[1:]]]
    assert main(args + ["-t", "esp32", "--all"]) == 2
    assert capsys.readouterr().err == "error: give either --target or --all, not both\n"
    assert not (tmp_path / "page.html").exists()
    if command == ["check"]:
        assert main(args) == 2
        assert "no target given" in capsys.readouterr().err
