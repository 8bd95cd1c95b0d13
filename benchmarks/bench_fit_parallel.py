#!/usr/bin/env python3
"""Would fit gain from measuring candidates concurrently on this machine's cores? PP-OCRv4 recognition
(rapidocr-onnxruntime's ch_PP-OCRv4_rec_infer.onnx), the candidates fit measures (fused float, int8 minmax, int8
percentile, A16W8), each measured as fit measures it (edgefit.runtime.session, optimised, exact int8 kernels;
session creation plus a run over 16 held-out text lines), three ways in the same run:

* one at a time, sessions with onnxruntime's default intra-op threads (one per core): what fit does;
* concurrently in a thread pool of one worker per core, sessions of one intra-op thread each (onnxruntime
  releases the GIL during Run and while it builds a session);
* concurrently in a process pool (spawned workers, started inside the timing: fit would have to start them),
  the serialized models sent to the workers, sessions of one intra-op thread each.

Prints each way's seconds per round (the best of --rounds) and its ratio to one-at-a-time. Needs
`pip install rapidocr-onnxruntime` (the model and Pillow); nothing of it is an edgefit dependency.

Usage: python benchmarks/bench_fit_parallel.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fit_ocr import rec_model  # noqa: E402
from ocr_text_lines import HEIGHT, WIDTH, text_lines  # noqa: E402

RECIPES = ("quantize:int8", "quantize:int8:percentile", "quantize:a16w8")


def candidates() -> tuple[list, list[dict]]:
    """The fused float model and its three static quantizations, built as fit builds them; the held-out feeds."""
    from edgefit.fidelity import SampleSet
    from edgefit.model import load_model
    from edgefit.passes.pipeline import PassOptions, run_passes
    from edgefit.passes.quantize import QuantizationCache

    proto = load_model(rec_model(), load_weights=True).proto
    calib = text_lines(8, seed=0)
    calibration = SampleSet(tuple({"x": calib[k:k + 1]} for k in range(len(calib))), len(calib), "user")
    options = PassOptions(calibration=calibration, input_shapes={"x": [1, 3, HEIGHT, WIDTH]},
                          quantization_cache=QuantizationCache())
    fused = run_passes(proto, "fuse", options).model
    models = [fused] + [run_passes(fused, recipe, options).model for recipe in RECIPES]
    held_out = text_lines(16, seed=1)
    return models, [{"x": held_out[k:k + 1]} for k in range(len(held_out))]


def measure(model, feeds: list[dict], threads: int | None) -> float:
    """What fit does per candidate: a session, then every feed through it; returns the first output's sum."""
    from edgefit.runtime import session

    run = session(model, optimize=True, threads=threads).run
    return float(sum(run(None, feed)[0].sum() for feed in feeds))


def measure_serialized(data: bytes, feeds: list[dict]) -> float:
    import onnx

    return measure(onnx.load_from_string(data), feeds, threads=1)


def one_at_a_time(models, feeds) -> list[float]:
    return [measure(model, feeds, None) for model in models]


def in_threads(models, feeds, workers: int) -> list[float]:
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda model: measure(model, feeds, 1), models))


def in_processes(models, feeds, workers: int) -> list[float]:
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        return list(pool.map(measure_serialized, [m.SerializeToString() for m in models], [feeds] * len(models)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    workers = os.cpu_count() or 1
    models, feeds = candidates()
    ways = {"one at a time, default threads": one_at_a_time,
            f"{workers} threads, 1-thread sessions": lambda m, f: in_threads(m, f, workers),
            f"{workers} processes, 1-thread sessions": lambda m, f: in_processes(m, f, workers)}
    best = {name: float("inf") for name in ways}
    answers = {}
    for _ in range(args.rounds):   # rounds interleave the ways, so a load change on the machine hits them alike
        for name, way in ways.items():
            started = time.perf_counter()
            answers[name] = way(models, feeds)
            best[name] = min(best[name], time.perf_counter() - started)
    first = next(iter(answers.values()))
    assert all(np.allclose(a, first, rtol=1e-4) for a in answers.values()), answers   # same outputs every way
    print(f"PP-OCRv4 rec {HEIGHT}x{WIDTH}: {len(models)} candidates x {len(feeds)} held-out lines, {workers} cores, "
          f"best of {args.rounds} rounds; load average at the end: {os.getloadavg()[0]:.2f}")
    baseline = best["one at a time, default threads"]
    for name, seconds in best.items():
        print(f"{name:40} {seconds:7.2f} s  {seconds / baseline:5.2f}x")


if __name__ == "__main__":
    main()
