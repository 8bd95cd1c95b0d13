#!/usr/bin/env python3
"""PP-OCRv4 recognition (rapidocr-onnxruntime's ch_PP-OCRv4_rec_infer.onnx): one `edgefit quantize` and one
`edgefit fit --target raspberry-pi-5 --max-flash 33MiB` in the same run, on 8 calibration text lines and 16
held-out ones of the same distribution (benchmarks/ocr_text_lines.py), against onnxruntime's quantize_static
with its defaults on the same calibration data.

Prints, per run: seconds, weight bytes against fp32, cosine on the held-out lines; then fit's time as a ratio
to quantize's (issue 17's target: at most 6x), its bytes ratio (target <= 0.35x) and cosine (target >= 0.99).
Needs `pip install rapidocr-onnxruntime` (the model and Pillow); nothing of it is an edgefit dependency.

Usage: python benchmarks/bench_fit_ocr.py [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ocr_text_lines import HEIGHT, WIDTH, text_lines  # noqa: E402

SHAPE = f"x=1x3x{HEIGHT}x{WIDTH}"


def rec_model() -> Path:
    import rapidocr_onnxruntime

    return Path(rapidocr_onnxruntime.__file__).parent / "models" / "ch_PP-OCRv4_rec_infer.onnx"


def weight_bytes(path: Path) -> int:
    from edgefit import analyze

    return analyze(str(path), {"x": [1, 3, HEIGHT, WIDTH]}).weight_bytes


def cosine(reference: Path, candidate: Path, samples: np.ndarray) -> float:
    """Outputs compared with onnxruntime's exact int8 kernels, as edgefit measures (edgefit.runtime.session:
    the fast u8s8 kernel saturates on x86 CPUs without VNNI)."""
    from edgefit.runtime import session

    def outputs(path: Path) -> np.ndarray:   # one line at a time: onnxruntime's defaults row has batch 1 fixed
        run = session(onnx.load(str(path)), optimize=True).run
        return np.concatenate([run(None, {"x": samples[k:k + 1]})[0].ravel() for k in range(len(samples))])

    a, b = outputs(reference).astype(np.float64), outputs(candidate).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def timed(command: list[str], log: Path) -> tuple[float, str]:
    """Seconds the command took and its stdout (also written to `log`)."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    log.write_text(done.stdout)
    if done.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    return elapsed, done.stdout


def ort_defaults(model: Path, calib: np.ndarray, out: Path) -> float:
    import logging

    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    logging.getLogger().setLevel(logging.ERROR)   # its advice to pre-process and per-bias warnings, 40 lines

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter({"x": calib[k:k + 1]} for k in range(len(calib)))

        def get_next(self):
            return next(self.feeds, None)

    fixed = onnx.load(str(model))   # quantize_static needs the input shape bound (its calibrator stacks outputs)
    for dim, value in zip(fixed.graph.input[0].type.tensor_type.shape.dim, (1, 3, HEIGHT, WIDTH)):
        dim.dim_value = value
    source = out.with_name("rec_fixed.onnx")
    onnx.save(fixed, str(source))
    started = time.perf_counter()
    quantize_static(str(source), str(out), Reader())
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-fit-ocr-"))
    work.mkdir(parents=True, exist_ok=True)
    model = rec_model()
    calib, held_out = text_lines(8, seed=0), text_lines(16, seed=1)
    np.savez(work / "calib8.npz", x=calib)
    np.savez(work / "eval16.npz", x=held_out)
    fp32 = weight_bytes(model)
    rows = []
    base_s = ort_defaults(model, calib, work / "ort_defaults.onnx")
    rows.append(("onnxruntime quantize_static defaults", "QDQ, per-tensor int8, minmax", base_s,
                 work / "ort_defaults.onnx"))
    quantize_s, _ = timed(["edgefit", "quantize", str(model), "--calib", str(work / "calib8.npz"), "--input-shape",
                           SHAPE, "-o", str(work / "quantized.onnx"), "--force", "--json"],
                         work / "quantize.json")
    rows.append(("edgefit quantize", "int8 minmax, float heads", quantize_s, work / "quantized.onnx"))
    fit_s, out = timed(["edgefit", "fit", str(model), "--target", "raspberry-pi-5", "--max-flash", "33MiB",
                        "--calib", str(work / "calib8.npz"), "--eval", str(work / "eval16.npz"), "--input-shape",
                        SHAPE, "-o", str(work / "fitted.onnx"), "--json"], work / "fit.json")
    report = json.loads(out)
    recipe = report.get("recipe") or "nothing fits"
    if report.get("float_regions"):
        recipe += f" + {len(report['float_regions'])} float regions"
    rows.append(("edgefit fit (pi5, 33MiB)", recipe, fit_s, work / "fitted.onnx"))
    print(f"PP-OCRv4 rec, {HEIGHT}x{WIDTH}; fp32 weights {fp32 / 2**20:.2f} MiB; 8 calibration + 16 held-out lines")
    print(f"{'run':40} {'recipe':44} {'time s':>8} {'bytes':>7} {'cosine':>8}")
    for name, detail, seconds, path in rows:
        if not path.exists():
            print(f"{name:40} {detail:44} {seconds:8.1f} {'-':>7} {'-':>8}")
            continue
        print(f"{name:40} {detail:44} {seconds:8.1f} {weight_bytes(path) / fp32:6.2f}x "
              f"{cosine(model, path, held_out):8.4f}")
    print(f"fit / quantize time: {fit_s / quantize_s:.1f}x (target <= 6x); search {report.get('search_s', 0):.1f} s")


if __name__ == "__main__":
    main()
