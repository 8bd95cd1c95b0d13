"""Do the passes and the memory planner scale linearly? Time per node on generated graphs of growing size.

    python benchmarks/bench_pass_scaling.py                  # 1k, 4k and 16k nodes
    python benchmarks/bench_pass_scaling.py --sizes 1000 4000

Graphs (benchmarks/generators.py): Conv -> BatchNormalization -> Relu chains (every BatchNorm folds into its
Conv) and PyTorch-style exports whose weights sit in `Constant` nodes (Constant, Constant, MatMul, Add: fuse turns
the Constants into initializers and MatMul + Add into Gemm). Timed, each in this process, best of --repeat runs:

* fuse on both graphs;
* prune (unstructured, 50%, global threshold) and prune --structured on the Conv+BN chain after fuse;
* quantize in mode dynamic on the fused Constant-heavy graph, split in two rows: edgefit's own work (copying,
  checks, opset upgrade, the stats) and the time inside onnxruntime (quant_pre_process and quantize_dynamic).
  onnxruntime runs once per size, timed; the repeats replay the files it wrote, so they time edgefit's work alone
  (without the garbage onnxruntime leaves for the collector). onnxruntime's share is printed, not judged: its quantizer looks every weight up by a linear scan over all
  initializers and re-checks every initializer each time it adds some (onnxruntime 1.32, quant_utils.find_by_name
  and ONNXModel.initializer_extend), which is quadratic in the graph size and not edgefit's to change;
* the memory planner (edgefit.analysis.memory.plan_steps, as `analyze` calls it) on the Conv+BN chain.

Times are process CPU time (the machine may be shared; wall time would measure the neighbours), best of --repeat
runs. Printed: microseconds per node at each size and the ratio of the largest size's per-node time to the
smallest's. Target: that ratio <= 1.5 for every judged row (linear scaling); exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import generators  # noqa: E402

MAX_RATIO = 1.5
ONNXRUNTIME = "  of which inside onnxruntime (not judged)"


def _best(run, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        run()
        best = min(best, time.process_time() - start)
    return best


@contextmanager
def _patched(module, name: str, replacement):
    original = getattr(module, name)
    setattr(module, name, replacement(original))
    try:
        yield
    finally:
        setattr(module, name, original)


def _quantize_times(run, repeat: int, work: Path) -> tuple[float, float]:
    """(edgefit's own CPU time, onnxruntime's) of `run`, a dynamic quantization: the first run calls onnxruntime
    and keeps what it writes; the repeats replay those files instead of calling it again."""
    import shutil

    import onnxruntime.quantization
    import onnxruntime.quantization.shape_inference

    inside: list[float] = []

    def replaying(key: str, output_arg: int):
        def wrap(original):
            def call(*args, **kwargs):
                out, kept = Path(args[output_arg]), work / key
                if kept.exists():
                    shutil.copy(kept, out)
                    return None
                start = time.process_time()
                result = original(*args, **kwargs)
                inside.append(time.process_time() - start)
                shutil.copy(out, kept)
                return result
            return call
        return wrap

    with _patched(onnxruntime.quantization, "quantize_dynamic", replaying("quantized.onnx", 1)), \
            _patched(onnxruntime.quantization.shape_inference, "quant_pre_process", replaying("inferred.onnx", 1)):
        run()   # onnxruntime for real, once
        own = _best(run, repeat)
    return own, sum(inside)


def _planner_time(model, repeat: int) -> float:
    """CPU time spent in plan_steps while analysing `model` (the rest of analyze is not the planner)."""
    from edgefit.analysis import footprint

    spent: list[float] = []

    def timing(original):
        def call(*args, **kwargs):
            start = time.process_time()
            try:
                return original(*args, **kwargs)
            finally:
                spent.append(time.process_time() - start)
        return call

    best = float("inf")
    with _patched(footprint, "plan_steps", timing):
        for _ in range(repeat):
            spent.clear()
            footprint.analyze(model)
            best = min(best, sum(spent))
    return best


def measure(nodes: int, repeat: int) -> dict[str, tuple[int, float]]:
    """Row name -> (nodes in the graph the row runs on, seconds)."""
    import tempfile

    from edgefit.passes import fuse, prune, quantize

    chain = generators.make_conv_bn_chain(nodes)
    heavy = generators.make_constant_heavy(nodes)
    fused_chain = fuse(chain).model
    fused_heavy = fuse(heavy).model
    with tempfile.TemporaryDirectory(prefix="edgefit-bench-") as work:
        quantize_own, inside_ort = _quantize_times(lambda: quantize(fused_heavy, "dynamic"), repeat, Path(work))
    planner = _planner_time(chain, repeat)
    return {
        "fuse (Conv+BN chain)": (len(chain.graph.node), _best(lambda: fuse(chain), repeat)),
        "fuse (Constant-heavy)": (len(heavy.graph.node), _best(lambda: fuse(heavy), repeat)),
        "prune 50% (fused chain)": (len(fused_chain.graph.node),
                                    _best(lambda: prune(fused_chain, 0.5), repeat)),
        "prune --structured (fused chain)": (len(fused_chain.graph.node),
                                             _best(lambda: prune(fused_chain, 0.5, structured=True), repeat)),
        "quantize dynamic (fused Constant-heavy)": (len(fused_heavy.graph.node), quantize_own),
        ONNXRUNTIME: (len(fused_heavy.graph.node), inside_ort),
        "memory planner (Conv+BN chain)": (len(chain.graph.node), planner),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results = {size: measure(size, args.repeat) for size in args.sizes}
    rows = list(results[args.sizes[0]])
    header = f"{'':42}" + "".join(f"{f'{s:,} nodes':>16}" for s in args.sizes) + f"{'ratio':>8}"
    print("CPU time per node (µs); ratio = per-node time at the largest size / at the smallest (target <= 1.5)")
    print(header)
    failed = []
    for row in rows:
        per_node = [results[s][row][1] / results[s][row][0] * 1e6 for s in args.sizes]
        ratio = per_node[-1] / per_node[0]
        cells = "".join(f"{v:>16.1f}" for v in per_node)
        print(f"{row:42}{cells}{ratio:>8.2f}")
        if ratio > MAX_RATIO and row != ONNXRUNTIME:
            failed.append(row)
    totals = "".join(f"{f'{sum(t for _, t in results[s].values()):.2f} s':>16}" for s in args.sizes)
    print(f"{'total CPU time of the rows':42}{totals}")
    if failed:
        print(f"FAIL: per-node time grows more than {MAX_RATIO}x for: {', '.join(failed)}")
        return 1
    print("OK: every row scales linearly")
    return 0


if __name__ == "__main__":
    sys.exit(main())
