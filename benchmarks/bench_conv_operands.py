"""What sets the time of a convolution besides its MACs? Per-op times from onnxruntime's profiler (issue 18).

Generated Conv layers (1-256 channels, 1-D and 2-D, 4-4096 positions, kernels 1-256, strides 1-128) are run one
by one in onnxruntime (1 thread, graph optimisations on, SessionOptions.enable_profiling) and each node's median
kernel time is read from the profile. Linear models of that time are fitted on relative error (non-negative
least squares, edgefit.devices.calibrate.nnls) over the GEMM onnxruntime runs a Conv as, per group
[Cout/g x Cin/g*k] weights x [Cin/g*k x positions]:

    MACs          group x Cout/g x Cin/g*k x positions
    weights       group x Cout/g x Cin/g*k        (the Conv's weight tensor)
    im2col        group x Cin/g*k x positions     (the unfolded input, packed by the GEMM)
    output        Cout x positions

and the share of convolutions each model predicts within +-25% is printed. This is the evidence behind the
`conv_weight_elements` feature (edgefit.devices.latency); whole-model leave-one-out decided which terms to keep.

    python benchmarks/bench_conv_operands.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TERMS = ("macs", "weights", "im2col", "output", "one")
MODELS = (("macs", "one"), ("macs", "weights", "one"), ("macs", "im2col", "output", "one"),
          ("macs", "weights", "im2col", "output", "one"))


def cases() -> list[tuple[int, int, tuple[int, ...], int, int]]:
    """(Cin, Cout, input spatial shape, kernel, stride)."""
    grid = [(c_in, c_out, spatial, kernel, 1)
            for c_in, c_out in ((1, 16), (1, 64), (3, 8), (8, 8), (16, 16), (32, 32), (64, 64), (128, 128),
                                (16, 128), (128, 16), (128, 1), (256, 8))
            for spatial in ((16, 16), (64, 64), (32,), (256,)) for kernel in (1, 3, 5)]
    return grid + [(1, 258, (640,), 256, 128), (1, 64, (4096,), 64, 16), (129, 128, (4,), 3, 1),
                   (128, 64, (4,), 3, 2), (64, 64, (8,), 3, 2), (64, 128, (8,), 3, 1), (128, 1, (4,), 1, 1),
                   (16, 16, (1024,), 7, 1), (32, 32, (2048,), 3, 2)]


def _pad(kernel: int) -> int:
    return kernel // 2 if kernel <= 7 else 0


def conv_model(c_in: int, c_out: int, spatial: tuple[int, ...], kernel: int, stride: int):
    dims = len(spatial)
    rng = np.random.default_rng(c_in * 31 + c_out + kernel)
    w = (rng.standard_normal((c_out, c_in, *[kernel] * dims)) * 0.1).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[_pad(kernel)] * 2 * dims, strides=[stride] * dims)
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                             [1, c_in, *spatial])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.zeros(c_out, np.float32), "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def terms(c_in: int, c_out: int, spatial: tuple[int, ...], kernel: int, stride: int) -> dict[str, float]:
    positions = math.prod((s + 2 * _pad(kernel) - kernel) // stride + 1 for s in spatial)
    reduction = c_in * kernel ** len(spatial)
    return {"macs": c_out * positions * reduction, "weights": c_out * reduction, "im2col": reduction * positions,
            "output": c_out * positions, "one": 1.0}


def profiled_kernel_us(model, runs: int) -> float:
    """Microseconds of the model's node kernels per run (median over `runs` runs), from onnxruntime's profile."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as folder:
        options.profile_file_prefix = str(Path(folder) / "profile")
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        feed = {"x": np.random.default_rng(0).standard_normal(session.get_inputs()[0].shape).astype(np.float32)}
        for _ in range(runs + runs // 5):   # the first fifth warms up
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    # The graph optimiser may split a Conv into several nodes (NCHWc reorders around an NchwcConv): each node's
    # median over the timed runs, summed.
    per_node: dict[str, list[float]] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_node.setdefault(event["name"], []).append(event["dur"])
    return float(sum(np.median(durations[-runs:]) for durations in per_node.values()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args(argv)
    from edgefit.devices.calibrate import nnls

    rows = [(case, terms(*case), profiled_kernel_us(conv_model(*case), args.runs) * 1e-6) for case in cases()]
    seconds = np.maximum(np.array([t for _, _, t in rows]), 1e-6)
    print(f"{len(rows)} generated convolutions, onnxruntime per-op profile, 1 thread")
    for model in MODELS:
        x = np.array([[row[1][name] for name in model] for row in rows]) / seconds[:, None]
        scale = np.linalg.norm(x, axis=0)
        coefficients = nnls(x / scale, np.ones(len(rows))) / scale
        errors = x @ coefficients - 1
        print(f"{' + '.join(model):34s} mean |error| {np.mean(np.abs(errors)):6.1%}, "
              f"{np.mean(np.abs(errors) <= 0.25):4.0%} within +-25%   "
              + ", ".join(f"{name} {c:.3g} s" for name, c in zip(model, coefficients)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
