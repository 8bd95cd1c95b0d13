"""Startup benchmark: how long an input error takes against `edgefit --help`, both in fresh processes.

    python benchmarks/bench_startup.py            # best of 9 runs each, taking turns
    python benchmarks/bench_startup.py --runs 5

Each case is a fresh `python -m edgefit ...` process, as a user meets it (interpreter start, imports, the error
or the help). The baseline is `edgefit --help`, measured in the same run, the cases taking turns with it so a
busy machine slows both alike. Cases: a missing model file, a folder given as the model, an unknown device
name, and, for contrast, the time a real analysis of the smallest sample model takes (no target for it).

Target (issue 19): every input error within 2x the time of `--help`; exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_RATIO = 2.0

BASELINE = ["--help"]
ERRORS = {
    "missing model file": ["analyze", "/no/such/model.onnx"],
    "a folder as the model": ["check", "sample_models", "--target", "esp32"],
    "unknown device": ["check", "sample_models/kws_dscnn.onnx", "--target", "esp33"],
}
CONTRAST = {"analyze digits_cnn (no target)": ["analyze", "sample_models/digits_cnn.onnx", "--json"]}


def _wall(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "edgefit", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="runs per case (best of them is kept)")
    runs = parser.parse_args().runs

    cases = {"--help (baseline)": BASELINE, **ERRORS, **CONTRAST}
    best = {name: float("inf") for name in cases}
    for _ in range(runs):   # taking turns: a load spike hits every case, not one
        for name, args in cases.items():
            best[name] = min(best[name], _wall(args))

    baseline = best["--help (baseline)"]
    print(f"{'case':34} {'best s':>8} {'x --help':>9}  target")
    failed = False
    for name, seconds in best.items():
        ratio = seconds / baseline
        target = f"<= {MAX_RATIO:.0f}x" if name in ERRORS else ""
        ok = ratio <= MAX_RATIO or name not in ERRORS
        failed |= not ok
        print(f"{name:34} {seconds:8.3f} {ratio:8.2f}x  {target}{'' if ok else '  MISSED'}")
    print(f"best of {runs} fresh processes each, taking turns; python {sys.version.split()[0]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
