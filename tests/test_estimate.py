"""Estimates worked out by hand for a two-layer footprint on two hand-made profiles (an MCU and a phone)."""

import dataclasses

import pytest

from edgefit.analysis.footprint import Footprint, LayerStats
from edgefit.analysis.memory import Buffer
from edgefit.devices.estimate import estimate, model_precision
from edgefit.devices.profiles import DeviceProfile
from edgefit.errors import ConfigError


def two_layer_footprint(conv_macs: int | None = 1_000_000) -> Footprint:
    """x (1000 floats) -> conv (10,000 params) -> y (2000 floats) -> gemm (2000 params) -> z (250 floats).

    Arena, 16-byte aligned: at step 0 x and y are live (4000 + 8000 = 12,000 B); at step 1 y and z
    (8000 + 1008) fit below that, so the fp32 arena is 12,000 B. At int8: 1008 + 2000 = 3008 B.
    """
    buffers = (
        Buffer("x", 1000, "float32", 4000, 0, 0),
        Buffer("y", 2000, "float32", 8000, 0, 1),
        Buffer("z", 250, "float32", 1000, 1, 1),
    )
    layers = (
        LayerStats("conv", "Conv", 10_000, 40_000, conv_macs, None if conv_macs is None else 2 * conv_macs,
                   4000, 8000, "float32"),
        LayerStats("gemm", "Gemm", 2_000, 8_000, 200_000, 400_000, 8000, 1000, "float32"),
    )
    return Footprint(
        model_path="two_layer.onnx", opset=17, params=12_000, params_by_dtype={"float32": 12_000},
        weight_bytes=48_000, weight_bytes_by_dtype={"float32": 48_000}, macs=1_200_000, flops=2_400_000,
        peak_activation_bytes=12_000, file_order_peak_bytes=12_000, activation_lower_bound_bytes=12_000,
        peak_node="conv", live_at_peak=(), inputs={"x": [1, 1000]}, outputs={"z": [1, 250]}, layers=layers,
        op_histogram={"Conv": 1, "Gemm": 1}, unknowns=() if conv_macs is not None else ("conv: MACs unknown",),
        warnings=(), shape_source="test", buffers=buffers,
    )


def mcu(**changes) -> DeviceProfile:
    """1 GMAC/s int8 and 0.5 GMAC/s fp32 peaks at 50% efficiency; weights read from 50 MB/s flash."""
    profile = DeviceProfile(
        name="hand-mcu", display_name="Hand MCU", tier="tiny", processor="test", runtime="TFLM",
        precisions=("fp32", "int8"), ram_bytes=64_000, flash_bytes=100_000, runtime_ram_bytes=10_000,
        runtime_flash_bytes=50_000, weights_in_ram=False, peak_macs_per_s={"fp32": 0.5e9, "int8": 1e9},
        efficiency={"fp32": 0.5, "int8": 0.5}, memory_bandwidth_bytes_per_s=100e6, flash_bandwidth_bytes_per_s=50e6,
        inference_overhead_s=1e-3, per_op_overhead_s=0.1e-3, network_rtt_s=0.0, active_power_w=0.1,
        idle_power_w=0.01,
    )
    return dataclasses.replace(profile, **changes)


def phone() -> DeviceProfile:
    """Compute so fast that every layer is memory bound; weights in RAM; a 1000 mAh, 3.7 V battery."""
    return DeviceProfile(
        name="hand-phone", display_name="Hand phone", tier="mobile", processor="test", runtime="ORT",
        precisions=("fp32", "fp16", "int8"), ram_bytes=4_000_000_000, flash_bytes=64_000_000_000,
        runtime_ram_bytes=1_000_000, runtime_flash_bytes=20_000_000, weights_in_ram=True,
        peak_macs_per_s={"fp32": 1e12, "fp16": 2e12, "int8": 4e12}, efficiency={"fp32": 1.0, "fp16": 1.0, "int8": 1.0},
        memory_bandwidth_bytes_per_s=1e9, flash_bandwidth_bytes_per_s=1e9, inference_overhead_s=0.5e-3,
        per_op_overhead_s=0.0, network_rtt_s=0.0, active_power_w=2.0, idle_power_w=0.1,
        battery_mah=1000, battery_v=3.7,
    )


def test_arena_at_precision_matches_hand_plan():
    fp = two_layer_footprint()
    assert fp.activation_bytes_at("fp32") == 12_000
    assert fp.activation_bytes_at("int8") == 3008


def test_mcu_fp32_by_hand():
    est = estimate(two_layer_footprint(), mcu())
    # conv: 1e6 MACs / (0.5e9 x 0.5) = 4 ms; memory (4000 + 8000) B / 100 MB/s + 40,000 B / 50 MB/s = 0.92 ms
    # gemm: 2e5 / 0.25e9 = 0.8 ms; memory 9000 / 1e8 + 8000 / 5e7 = 0.25 ms -> compute-bound, 4.8 ms in all
    assert est.precision == "fp32" and est.precision_supported
    assert est.compute_s == pytest.approx(4.8e-3)
    assert est.overhead_s == pytest.approx(1.2e-3)      # 1 ms + 2 layers x 0.1 ms
    assert est.latency_s == pytest.approx(6.0e-3)
    assert est.memory_bound_layers == 0
    assert est.energy_j == pytest.approx(0.6e-3)        # 0.1 W x 6 ms
    assert est.avg_power_w == pytest.approx(0.1)        # back to back: always active
    assert est.flash_bytes == 48_000 + 50_000
    assert est.ram_bytes == 12_000 + 10_000             # weights stay in flash
    assert est.battery_life_h is None


def test_mcu_int8_by_hand():
    est = estimate(two_layer_footprint(), mcu(), "int8")
    # weights 48,000 -> 12,000 B; float activations a quarter.
    # conv: 1e6 / 0.5e9 = 2 ms vs 3000 / 1e8 + 10,000 / 5e7 = 0.23 ms
    # gemm: 2e5 / 0.5e9 = 0.4 ms vs 2250 / 1e8 + 2000 / 5e7 = 0.0625 ms
    assert est.weight_bytes == 12_000 and est.activation_bytes == 3008
    assert est.compute_s == pytest.approx(2.4e-3)
    assert est.latency_s == pytest.approx(3.6e-3)
    assert est.energy_j == pytest.approx(0.36e-3)
    assert est.flash_bytes == 62_000 and est.ram_bytes == 13_008


def test_rate_sets_duty_cycle_and_average_power():
    est = estimate(two_layer_footprint(), mcu(), rate_hz=10)
    # busy 6 ms ten times a second: d = 0.06; 0.01 W x 0.94 + 0.1 W x 0.06 = 15.4 mW
    assert est.duty_cycle == pytest.approx(0.06)
    assert est.avg_power_w == pytest.approx(0.0154)
    assert est.keeps_up
    too_fast = estimate(two_layer_footprint(), mcu(), rate_hz=500)   # needs 3 s of work per second
    assert too_fast.duty_cycle == 1.0 and not too_fast.keeps_up
    assert too_fast.avg_power_w == pytest.approx(0.1)


def test_phone_memory_bound_with_battery():
    est = estimate(two_layer_footprint(), phone(), rate_hz=1)
    # conv: (4000 + 8000 + 40,000) B / 1 GB/s = 52 us vs 1 us of MACs; gemm: 17,000 B -> 17 us vs 0.2 us
    assert est.memory_bound_layers == 2
    assert est.compute_s == pytest.approx(69e-6)
    assert est.latency_s == pytest.approx(0.569e-3)
    assert est.ram_bytes == 12_000 + 1_000_000 + 48_000   # the runtime loads weights into RAM
    # d = 0.000569: 0.1 x (1 - d) + 2 x d = 0.1010811 W; 3.7 Wh / 0.1010811 W = 36.60 h
    assert est.avg_power_w == pytest.approx(0.1010811)
    assert est.battery_life_h == pytest.approx(3.7 / 0.1010811)


def test_cloud_round_trip_counts_in_latency_not_energy():
    cloud = dataclasses.replace(phone(), name="hand-cloud", tier="cloud", network_rtt_s=0.1)
    est = estimate(two_layer_footprint(), cloud)
    assert est.latency_s == pytest.approx(0.1 + 0.569e-3)
    assert est.energy_j == pytest.approx(2.0 * 0.569e-3)


def test_unknown_macs_make_latency_a_lower_bound():
    est = estimate(two_layer_footprint(conv_macs=None), mcu())
    # conv has no compute time, only its 0.92 ms of memory traffic: a lower bound, and said so.
    assert est.layers_without_macs == ("conv",)
    assert est.latency_is_lower_bound
    assert est.compute_s == pytest.approx(0.92e-3 + 0.8e-3)
    assert est.to_dict()["latency_is_lower_bound"] is True


def test_unsupported_precision_is_flagged():
    est = estimate(two_layer_footprint(), mcu(), "fp16")
    assert not est.precision_supported
    assert est.weight_bytes == 24_000


def test_model_precision_from_dominant_dtype():
    fp = two_layer_footprint()
    assert model_precision(fp) == "fp32"
    assert model_precision(dataclasses.replace(fp, weight_bytes_by_dtype={"int8": 900, "float32": 400})) == "int8"
    assert model_precision(dataclasses.replace(fp, weight_bytes_by_dtype={"float16": 10})) == "fp16"


def test_bad_precision_or_rate():
    with pytest.raises(ConfigError, match="unknown precision 'int4'"):
        estimate(two_layer_footprint(), mcu(), "int4")
    for rate in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="invalid rate"):
            estimate(two_layer_footprint(), mcu(), rate_hz=rate)


def test_estimates_are_labelled():
    assert estimate(two_layer_footprint(), mcu()).to_dict()["estimated"] is True


def test_qdq_pairs_cost_nothing_at_int8(samples):
    # A QDQ model spells every int8 layer as DequantizeLinear -> op -> QuantizeLinear; an int8 runtime fuses
    # those pairs, so the quantized file's int8 estimate must match the float model's int8 estimate.
    import onnx

    import edgefit
    from edgefit.devices.profiles import load_profile
    from edgefit.fidelity import load_samples
    from edgefit.passes import quantize

    float_model = onnx.load(samples / "digits_cnn.onnx")
    calibration = load_samples(samples / "digits_calib.npz", float_model)
    quantized = quantize(float_model, "int8", calibration=calibration).model
    profile = load_profile("esp32-cam")
    float_fp = edgefit.analyze(float_model, dims={"batch": 1})
    int8_fp = edgefit.analyze(quantized, dims={"batch": 1})
    assert any(l.op_type == "QuantizeLinear" for l in int8_fp.layers)
    float_estimate, int8_estimate = estimate(float_fp, profile, "int8"), estimate(int8_fp, profile, "int8")
    assert int8_estimate.overhead_s == float_estimate.overhead_s
    assert int8_estimate.latency_s < estimate(float_fp, profile, "fp32").latency_s


def test_storage_sharing_runtimes_get_the_shared_arena(samples):
    # digits_cnn: own buffers 4,096 B (conv1's 2,048 B output + its Relu's); where the runtime shares storage the
    # Relu runs in place and conv2 (reads 2,048 B, writes 16x4x4 floats = 1,024 B) sets the peak: 3,072 B.
    # Raspberry Pi 5 runs onnxruntime (sharing), the ESP32 TensorFlow Lite Micro (no sharing).
    import edgefit
    from edgefit.devices.profiles import load_profile

    fp = edgefit.analyze(samples / "digits_cnn.onnx", dims={"batch": 1})
    assert (fp.peak_activation_bytes, fp.shared_storage_peak_bytes) == (4096, 3072)
    assert estimate(fp, load_profile("raspberry-pi-5"), "fp32").activation_bytes == 3072
    assert estimate(fp, load_profile("esp32"), "fp32").activation_bytes == 4096
