#!/usr/bin/env python3
"""edgefit int8 against onnxruntime's quantize_static with default settings, on the sample models.

Both quantizers see the same calibration samples and are evaluated against the float model on the same
evaluation samples. For the trained digits model those are its real calibration and held-out sets (with
labels, so accuracy is reported); the MLPerf Tiny models have random weights, so both sets are synthetic
(seeded standard normal; calibration seed 0, evaluation seed 1).

edgefit: `edgefit quantize` = fuse, then static QDQ int8 with per-channel symmetric weights and symmetric
activations (MinMax); "asym." is the same with --asymmetric-activations.
onnxruntime baseline: quantize_static(model, out, reader) with every option at its
default (QDQ, per-tensor weights, int8 activations, MinMax, no pre-processing) on the unmodified model.

Usage: python benchmarks/bench_quantize.py [--calib-samples 32] [--eval-samples 400]
Prints a Markdown table (the one in docs/passes.md).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import onnx

from edgefit import analyze
from edgefit.fidelity import Fidelity, SampleSet, compare, load_samples, run_model, synthetic_samples
from edgefit.passes import PassOptions, run_passes

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"
MODELS = ("digits_cnn", "kws_dscnn", "vww_mobilenet_v1_025", "ic_resnet8", "ad_autoencoder")


def data_for(name: str, proto: onnx.ModelProto, calib_samples: int, eval_samples: int) -> tuple[SampleSet, SampleSet]:
    if name == "digits_cnn":
        return (load_samples(SAMPLES / "digits_calib.npz", proto, limit=calib_samples),
                load_samples(SAMPLES / "digits_eval.npz", proto, limit=eval_samples))
    return synthetic_samples(proto, calib_samples, seed=0), synthetic_samples(proto, eval_samples, seed=1)


def onnxruntime_default(proto: onnx.ModelProto, calibration: SampleSet) -> onnx.ModelProto:
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter(calibration.feeds)

        def get_next(self):
            return next(self.feeds, None)

    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "float.onnx", Path(folder) / "int8.onnx"
        onnx.save_model(proto, str(source))
        quantize_static(str(source), str(target), Reader())
        return onnx.load(str(target))


def row_cells(fidelity: Fidelity) -> list[str]:
    cells = [f"{fidelity.sqnr_db:.1f}",
             "n/a" if fidelity.top1_agreement is None else f"{fidelity.top1_agreement:.1%}"]
    if fidelity.accuracy_after is not None:
        cells.append(f"{fidelity.accuracy_after:.2%}")
    else:
        cells.append("-")
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calib-samples", type=int, default=32)
    parser.add_argument("--eval-samples", type=int, default=400)
    args = parser.parse_args()
    logging.disable(logging.WARNING)   # onnxruntime.quantization's advice on the root logger
    print("| model | float weights | edgefit int8 weights | ORT default weights | SQNR dB edgefit | "
          "SQNR dB edgefit asym. | SQNR dB ORT | top-1 agr. edgefit | top-1 agr. ORT | float acc. | "
          "edgefit acc. | ORT acc. |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in MODELS:
        proto = onnx.load(str(SAMPLES / f"{name}.onnx"))
        calibration, evaluation = data_for(name, proto, args.calib_samples, args.eval_samples)
        reference = run_model(proto, evaluation)
        ours = run_passes(proto, "fuse,quantize", PassOptions(calibration=calibration)).model
        ours_asymmetric = run_passes(proto, "fuse,quantize", PassOptions(calibration=calibration,
                                                                         symmetric_activations=False)).model
        baseline = onnxruntime_default(proto, calibration)
        ours_fid = compare(proto, ours, evaluation, reference_outputs=reference)
        base_fid = compare(proto, baseline, evaluation, reference_outputs=reference)
        asymmetric_sqnr = compare(proto, ours_asymmetric, evaluation, reference_outputs=reference).sqnr_db
        sizes = [analyze(m).weight_bytes for m in (proto, ours, baseline)]
        e_sqnr, e_top1, e_acc = row_cells(ours_fid)
        b_sqnr, b_top1, b_acc = row_cells(base_fid)
        float_acc = "-" if ours_fid.accuracy_before is None else f"{ours_fid.accuracy_before:.2%}"
        print(f"| {name} | {sizes[0]:,} | {sizes[1]:,} ({sizes[1] / sizes[0]:.0%}) | "
              f"{sizes[2]:,} ({sizes[2] / sizes[0]:.0%}) | {e_sqnr} | {asymmetric_sqnr:.1f} | {b_sqnr} | "
              f"{e_top1} | {b_top1} | "
              f"{float_acc} | {e_acc} | {b_acc} |", flush=True)


if __name__ == "__main__":
    main()
