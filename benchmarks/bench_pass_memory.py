"""Peak memory of every command on a model with large float weights, as a multiple of a baseline run alongside.

    python benchmarks/bench_pass_memory.py              # 300 MB of weights, inline and as external data
    python benchmarks/bench_pass_memory.py --mb 1200    # bigger (needs ~10 GB of RAM for quantize)

The model: Conv + GlobalAveragePool + Flatten, then Gemm (64 x H), Gemm (H x H, transB), MatMul + Add (H x H) and a
MatMul to 10 outputs, H chosen so the weights take --mb megabytes. Each command runs in a fresh process, like
the CLI (`edgefit.cli.run`), and reports its peak RSS. The baseline, measured in the same run and the same way,
is the least any tool that edits the model must hold: `onnx.load` of the model with its weights plus one
copy of it (`ModelProto.CopyFrom`), i.e. about twice the weights. Printed: peak RSS, its ratio to the
baseline, the multiplier (peak RSS - an idle process that only imported edgefit and onnxruntime) / weight bytes,
and the wall time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

COMMANDS = (("analyze",), ("check", "--all"), ("fuse",), ("prune",), ("prune", "--structured"), ("quantize",),
            ("quantize", "--mode", "fp16"), ("optimize",))

# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child would report this process's own peak.
_PEAK = """
def _peak():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM"))
"""

_RUN = """
import sys
sys.argv = ["edgefit"] + sys.argv[1:]
from edgefit.cli import run
try:
    run()
except SystemExit:
    pass
print(_peak(), file=sys.stderr)
"""

_IDLE = """
import sys, onnxruntime, onnxruntime.quantization, edgefit.cli
print(_peak(), file=sys.stderr)
"""

_BASELINE = """
import sys, onnx, onnxruntime, onnxruntime.quantization, edgefit.cli
model = onnx.load(sys.argv[1])
copy = onnx.ModelProto()
copy.CopyFrom(model)
print(_peak(), file=sys.stderr)
"""


def build(path: Path, megabytes: int, external: bool) -> int:
    rng = np.random.default_rng(0)
    hidden = int((megabytes * 1e6 / 4 / 2) ** 0.5)

    def w(name: str, *shape: int) -> TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32), name)

    inits = [w("cw", 64, 3, 3, 3), w("w0", 64, hidden), w("w1", hidden, hidden), w("w2", hidden, hidden),
             w("wo", hidden, 10)] + [numpy_helper.from_array(np.zeros(hidden, np.float32), f"b{k}") for k in range(3)]
    nodes = [helper.make_node("Conv", ["x", "cw"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "w0", "b0"], ["y0"]), helper.make_node("Relu", ["y0"], ["a0"]),
             helper.make_node("Gemm", ["a0", "w1", "b1"], ["y1"], transB=1), helper.make_node("Relu", ["y1"], ["a1"]),
             helper.make_node("MatMul", ["a1", "w2"], ["m2"]), helper.make_node("Add", ["m2", "b2"], ["y2"]),
             helper.make_node("Relu", ["y2"], ["a2"]), helper.make_node("MatMul", ["a2", "wo"], ["out"])]
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    weights = sum(t.ByteSize() for t in model.graph.initializer)
    onnx.save_model(model, str(path), save_as_external_data=external, location=path.name + ".data")
    return weights


def peak(script: str, *args: str) -> tuple[int, float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _PEAK + script, *args], capture_output=True, text=True)
    return int(done.stderr.strip().splitlines()[-1]), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=300, help="megabytes of float weights (default 300)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgefit-bench-") as folder:
        for label, external in (("inline", False), ("external data", True)):
            path = Path(folder) / f"model_{'ext' if external else 'inline'}.onnx"
            weights = build(path, args.mb, external)
            idle, _ = peak(_IDLE)
            baseline, _ = peak(_BASELINE, str(path))
            print(f"\n{label}: {weights / 1e6:.0f} MB of weights; idle process {idle / 1e6:.0f} MB; baseline "
                  f"(load + one copy) peak {baseline / 1e6:.0f} MB ({(baseline - idle) / weights:.2f}x the weights)")
            print(f"{'command':28s} {'peak RSS':>10s} {'/ baseline':>10s} {'x weights':>10s} {'wall':>8s}")
            for command in COMMANDS:
                output = [] if command[0] in ("analyze", "check") else ["-o", str(Path(folder) / "out.onnx")]
                rss, wall = peak(_RUN, *command, str(path), *output, "--json")
                print(f"{' '.join(command):28s} {rss / 1e6:8.0f}MB {rss / baseline:10.2f} {(rss - idle) / weights:10.2f} "
                      f"{wall:7.1f}s")


if __name__ == "__main__":
    main()
