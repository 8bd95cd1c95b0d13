"""Runtime stacks of the microcontroller profiles beyond the two MLPerf Tiny reference boards: they parse, an estimate
with one of them is the sum worked out by hand, and the published measurements they rest on are reproduced per board
(benchmarks/bench_mlperf_tiny.py on benchmarks/data/)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_latency import conv_bn_relu_dw_fc
from test_mlperf_tiny import bench

from edgefit.analysis.footprint import analyze
from edgefit.devices.estimate import estimate
from edgefit.devices.profiles import load_profile

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"

DEFAULTS = {"arduino-nano-33-ble-sense": "tflm-cmsis-nn", "esp32": "esp-nn", "esp32-cam": "esp-nn",
            "esp32-s3": "esp-nn", "disco-f746ng": "stm32cube-ai-8.1", "nucleo-u575zi-q": "stm32cube-ai-8.1",
            "nrf5340-dk": "microtvm-cmsis-nn"}


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_stacks_parse_with_a_source_and_an_error(name):
    profile = load_profile(name)
    assert profile.default_runtime == DEFAULTS[name]
    for stack in profile.runtimes:
        assert stack.basis == "published measurement" and stack.source, (name, stack.name)
        assert 0 < stack.expected_error <= 0.5, (name, stack.name)
        # One basis per device: every precision the profile offers has the stack's coefficients; fp32 comes from
        # the reference kernels (CMSIS-NN and ESP-NN have no float path), with its own source and a wider error.
        assert set(stack.coefficients) == set(profile.precisions) == {"fp32", "int8"}, (name, stack.name)
        assert "reference kernels" in stack.source_at("fp32") and stack.source_at("int8") == stack.source
        assert 0.5 < stack.expected_error_at("fp32") <= 1.0, (name, stack.name)


SAMPLE_MODELS = ("ad_autoencoder", "digits_cnn", "ic_resnet8", "kws_dscnn", "vww_mobilenet_v1_025")


@pytest.fixture(scope="module")
def sample_footprints():
    from edgefit.model import load_model

    return {name: analyze(load_model(SAMPLES / f"{name}.onnx")) for name in SAMPLE_MODELS}


def test_every_profile_estimates_every_precision_on_one_basis_and_int8_is_no_slower(sample_footprints):
    """Walk every built-in profile and each of its runtime stacks: all precisions it offers come from the same kind
    of source (the stack's rates, or the datasheet roofline where the profile has no stack), and int8 is at most
    as slow as fp32 for every sample model."""
    from edgefit.devices.profiles import list_profiles

    checked = 0
    for profile in list_profiles():
        for runtime in [stack.name for stack in profile.runtimes] or [None]:
            for name, footprint in sample_footprints.items():
                by_precision = {p: estimate(footprint, profile, p, runtime=runtime) for p in profile.precisions}
                assert len({est.basis for est in by_precision.values()}) == 1, (profile.name, runtime)
                if "int8" in by_precision:
                    fp32, int8 = by_precision["fp32"], by_precision["int8"]
                    assert int8.latency_s <= fp32.latency_s * (1 + 1e-9), (profile.name, runtime, name)
                    checked += 1
    assert checked >= 5 * 40   # 5 models on each of the ~45 profile / stack pairs


def test_esp32_int8_is_faster_than_fp32_on_the_same_stack(sample_footprints):
    profile = load_profile("esp32")
    fp32 = estimate(sample_footprints["kws_dscnn"], profile, "fp32")
    int8 = estimate(sample_footprints["kws_dscnn"], profile, "int8")
    assert fp32.runtime == int8.runtime == "esp-nn" and fp32.basis == int8.basis == "published measurement"
    # ESP-NN's optimised int8 kernels against the reference fp32 kernels: 28.64 vs 2.665 MMAC/s per conv MAC.
    assert int8.latency_s < fp32.latency_s / 5


def test_nano_estimate_is_the_hand_computed_sum():
    # conv_bn_relu_dw_fc at int8: 18,432 conv MACs, 4,608 depthwise MACs, 80 fc MACs, 18 elementwise elements, 6 ops.
    # The Nano's tflm-cmsis-nn table: conv 14.93 MMAC/s, depthwise 2.714 MMAC/s, fc 11.48 MMAC/s,
    # elementwise 995.2 kelem/s, 268 us per op, nothing per inference.
    expected = 18_432 / 14.93e6 + 4_608 / 2.714e6 + 80 / 11.48e6 + 18 / 995.2e3 + 6 * 268e-6
    est = estimate(analyze(conv_bn_relu_dw_fc()), load_profile("nano33ble"), "int8")
    assert est.runtime == "tflm-cmsis-nn" and est.expected_error == 0.5
    assert est.latency_s == pytest.approx(expected, rel=1e-9)
    assert est.latency_s == pytest.approx(4.565e-3, rel=1e-3)
    # The reference kernels are 28x slower per convolution MAC (119.5 vs 4.29 cycles at 64 MHz).
    slow = estimate(analyze(conv_bn_relu_dw_fc()), load_profile("nano33ble"), "int8", runtime="tflm-reference")
    assert slow.latency_s == pytest.approx(18_432 / 535.5e3 + 4_608 / 97.37e3 + 80 / 411.9e3 + 18 / 35.7e3
                                           + 6 * 7.47e-3, rel=1e-9)


def test_person_detection_network_has_the_published_mac_count():
    # Arm's count for TFLM's person-detection model is 7,215,492 MACs; the network derived from the VWW sample model
    # (grayscale input) is within 1% (edgefit counts no bias additions).
    macs = bench.footprint_of("person_detection").macs
    assert macs == 7_157_888 and abs(macs / 7_215_492 - 1) < 0.01


def test_every_board_meets_the_goals_on_the_stored_data():
    pairs = bench.compare()
    by_board = bench.share_by_board(pairs)
    assert set(by_board) == {"NUCLEO-H7A3ZI-Q", "NUCLEO-L4R5ZI", "DISCO-F746NG", "NUCLEO-U575ZI-Q", "NRF5340-DK",
                             "ESP32", "ESP32-S3", "NUCLEO-F413ZH"}
    for board, (count, share, worst) in by_board.items():
        assert share >= 0.8 and worst <= 2.0, (board, count, share, worst)
    # The Nano's CMSIS-NN stack, checked on another Cortex-M4F at 100 MHz: 386.6 ms published, same cycles estimated.
    f413 = next(p for p in pairs if p.row["board"] == "NUCLEO-F413ZH" and p.row["stack"] == "tflm-cmsis-nn")
    assert float(f413.row["latency_ms"]) == 386.595 and abs(f413.latency_ratio - 1) <= 0.25
