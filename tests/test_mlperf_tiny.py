"""The built-in profiles of the MLPerf Tiny boards against the published results (benchmarks/data), and the
int8 latency features of a QDQ model that edgefit quantized: equal to the float model's estimated at int8."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import onnx

from edgefit import analyze
from edgefit.devices.latency import latency_features
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
