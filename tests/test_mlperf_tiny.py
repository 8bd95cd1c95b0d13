"""The built-in profiles of the MLPerf Tiny boards against the published results (benchmarks/data), and the
int8 latency features of a QDQ model that edgefit quantized: equal to the float model's estimated at int8."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgefit import analyze
from edgefit.devices.latency import FEATURE_NAMES, latency_features
from edgefit.passes import run_passes

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("edgefit_bench_mlperf_tiny", ROOT / "benchmarks" / "bench_mlperf_tiny.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bench   # dataclasses look their module up there
_spec.loader.exec_module(bench)


def test_published_pairs_meet_the_goals():
    pairs = bench.compare()
    assert len(pairs) == 134 and sum(p.energy_ratio is not None for p in pairs) == 70
    result = bench.goals(pairs)
    assert result.latency_share >= 0.8 and result.latency_worst <= 2.0 and result.energy_worst <= 2.0
    # The published figure is 1000 / median throughput: KWS on the v1.1 STMicroelectronics H7A3 ran 65.133 inf./s.
    kws = next(p for p in pairs if p.row["version"] == "1.1" and p.row["stack"] == "stm32cube-ai-8.1"
               and p.row["board"] == "NUCLEO-H7A3ZI-Q" and p.row["benchmark"] == "kws_dscnn")
    assert float(kws.row["latency_ms"]) == round(1000 / 65.133, 3)


def test_quantized_qdq_model_has_the_int8_features_of_the_float_model():
    float_model = onnx.load(ROOT / "sample_models" / "kws_dscnn.onnx")
    quantized = run_passes(float_model, "fuse,quantize").model
    assert sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in quantized.graph.node) > 0
    assert latency_features(analyze(quantized), "int8") == latency_features(analyze(float_model), "int8")


def _feature_rows(**columns) -> np.ndarray:
    """Rows of LatencyFeatures vectors with the named features set (the rest 0, 'inference' 1)."""
    n = len(next(iter(columns.values())))
    rows = np.zeros((n, len(FEATURE_NAMES)))
    rows[:, FEATURE_NAMES.index("inference")] = 1.0
    for name, values in columns.items():
        rows[:, FEATURE_NAMES.index(name)] = values
    return rows


def test_fit_work_pairs_each_shared_ratio_with_its_named_feature():
    # integer MACs and transcendental elements sit between the ratio features in the vector: they must not count.
    x = _feature_rows(conv_macs=[1000.0], depthwise_macs=[100.0], fc_macs=[10.0], integer_macs=[7.0],
                      elementwise_elements=[3.0], transcendental_elements=[5.0], ops=[2.0])
    # 1000 + 5.5 * 100 + 1.3 * 10 + 15 * 3 + 4000 * 2 = 9608
    assert bench._work(x, (5.5, 1.3, 15, 4000)).tolist() == [pytest.approx(9608.0)]


def test_library_fc_cycles_is_the_geometric_mean_of_the_fc_dominated_rows_left_after_the_rest():
    # Rows: two fc-dominated (AD-like: 1000 fc MACs, 2 ops) of library stacks 0 and 1, one conv row of stack 0, and an
    # fc-dominated row of stack 2, which runs no library (its fc stays at the shared ratio).
    x = _feature_rows(conv_macs=[0.0, 0.0, 50_000.0, 0.0], fc_macs=[1000.0, 1000.0, 0.0, 1000.0],
                      ops=[2.0, 2.0, 1.0, 2.0])
    ratios = (5.5, 1.3, 15, 100)
    scales = np.log(np.array([2.0, 4.0, 3.0]))           # cycles per conv MAC of stacks 0, 1, 2
    stack_of_row = np.array([0, 1, 0, 2])
    library_of_row = np.array(["lib", "lib", "lib", ""])
    # Rest of each fc-dominated row: 2 ops x 100 conv MACs x scale -> 400 and 800 cycles; measured 3400 and 8800
    # cycles leave 3000 / 1000 = 3 and 8000 / 1000 = 8 cycles per fc MAC: geometric mean sqrt(24).
    cycles = np.array([3400.0, 8800.0, 100_200.0, 1.0])
    every = np.ones(4, dtype=bool)
    fc_cycles = bench._library_fc_cycles(x, cycles, ratios, scales, stack_of_row, library_of_row, every)
    assert fc_cycles == {"lib": pytest.approx(24 ** 0.5)}
    modelled = bench._modelled_cycles(x, ratios, scales, stack_of_row, library_of_row, fc_cycles)
    # library rows: rest + sqrt(24) cycles per fc MAC; the conv row 2 x (50000 + 100); the other stack 3 x (1300 + 200)
    assert modelled.tolist() == pytest.approx([400 + 1000 * 24 ** 0.5, 800 + 1000 * 24 ** 0.5, 100_200.0, 4500.0])


def test_ad_autoencoder_on_tflm_cmsis_nn_is_within_tolerance():
    # Published 10.052 ms (v0.5 reference, 99.487 inf./s); with the shared fc ratio the estimate was 16.5 ms (1.64x).
    pairs = bench.compare()
    ad = next(p for p in pairs if p.row["stack"] == "tflm-cmsis-nn" and p.row["benchmark"] == "ad_autoencoder")
    assert float(ad.row["latency_ms"]) == 10.052 and abs(ad.latency_ratio - 1) <= 0.25
