#!/usr/bin/env python3
"""`edgefit fit` on the sample models for the tiny devices: the recipe found, its fidelity, and the search time.

One fit call per model covers every tiny device, as `edgefit fit MODEL --target a --target b ...` does, so the
devices share the calibration data, the reference outputs and every candidate built (later devices reuse the
earlier ones' models and measurements: their search times are the marginal cost). The time is also given as a
ratio to one `optimize --passes fuse,quantize:int8` run with fidelity on the same model in the same process (the
baseline: what a user would run by hand for one guess).

The digits model is really trained and uses its calibration and labelled held-out sets with a 1-point accuracy
floor; the MLPerf Tiny models have random weights, so they use synthetic inputs and the default cosine floor.
Device figures are estimates; a verdict such as latency over the tiny tier's 10 ms default comes from the device
profile, not from the search.

Usage: python benchmarks/bench_fit.py [--objective fidelity|size|latency|energy] [--models digits_cnn,...]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import onnx
from rich.console import Console
from rich.table import Table

from edgefit import fit, list_profiles
from edgefit.fidelity import load_samples, synthetic_samples
from edgefit.passes import PassOptions, run_passes

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"
MODELS = ("digits_cnn", "kws_dscnn", "vww_mobilenet_v1_025", "ic_resnet8", "ad_autoencoder")


def baseline_s(name: str) -> float:
    """One fuse,quantize:int8 run with fidelity, as `edgefit optimize` does it."""
    proto = onnx.load(str(SAMPLES / f"{name}.onnx"))
    calib = (load_samples(SAMPLES / "digits_calib.npz", proto) if name == "digits_cnn"
             else synthetic_samples(proto))
    started = time.perf_counter()
    run_passes(proto, "fuse,quantize:int8", PassOptions(calibration=calib), fidelity_samples=calib)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objective", default="fidelity", choices=("fidelity", "size", "latency", "energy"))
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    tiny = [p.name for p in list_profiles() if p.tier == "tiny"]
    table = Table(title=f"edgefit fit --objective {args.objective} on the tiny devices", title_justify="left")
    for column in ("model", "device", "fits", "recipe found / closest", "cosine", "accuracy", "binding",
                   "search", "x baseline"):
        table.add_column(column, justify="right" if column in ("cosine", "search", "x baseline") else "left",
                         overflow="fold")
    for name in args.models.split(","):
        base = baseline_s(name)
        data = {"calib": SAMPLES / "digits_calib.npz", "eval_path": SAMPLES / "digits_eval.npz",
                "max_accuracy_drop": 0.01} if name == "digits_cnn" else {}
        started = time.perf_counter()
        report = fit(SAMPLES / f"{name}.onnx", tiny, objective=args.objective, **data)
        total = time.perf_counter() - started
        for result in report.targets:
            shown = result.chosen or (result.no_fit.closest if result.no_fit else None)
            fidelity = shown.fidelity if shown else None
            accuracy = ("" if fidelity is None or fidelity.accuracy_after is None
                        else f"{fidelity.accuracy_before:.2%} -> {fidelity.accuracy_after:.2%}")
            binding = "" if result.no_fit is None else result.no_fit.metric
            table.add_row(name, result.profile.name, "yes" if result.fits else "no",
                          shown.label if shown else "-", f"{fidelity.cosine:.5f}" if fidelity else "-",
                          accuracy, binding, f"{result.search_s:.2f} s", f"{result.search_s / base:.1f}")
        table.add_row(name, "all tiny devices", "", "", "", "", "", f"{total:.2f} s", f"{total / base:.1f}",
                      end_section=True)
    Console().print(table)


if __name__ == "__main__":
    main()
