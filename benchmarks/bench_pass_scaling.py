"""Do the passes and the memory planner scale linearly? Time per node on generated graphs of growing size.

    python benchmarks/bench_pass_scaling.py                  # 1k, 4k and 16k nodes
    python benchmarks/bench_pass_scaling.py --sizes 1000 4000

Graphs (benchmarks/generators.py): Conv -> BatchNormalization -> Relu chains (every BatchNorm folds into its
Conv) and PyTorch-style exports whose weights sit in `Constant` nodes (Constant, Constant, MatMul, Add: fuse turns
the Constants into initializers and MatMul + Add into Gemm). Timed, each in this process, best of --repeat runs:

* fuse on both graphs;
* prune (unstructured, 50%, global threshold) and prune --structured on the Conv+BN chain after fuse;
* quantize in mode dynamic on the fused Constant-heavy graph (onnxruntime's quantizer and its pre-processing
  included: that is what `edgefit quantize --mode dynamic` runs);
* the memory planner (edgefit.analysis.memory.plan_steps, as `analyze` calls it) on the Conv+BN chain.

Printed: microseconds per node at each size and the ratio of the largest size's per-node time to the smallest's.
Target: that ratio <= 1.5 for every row (linear scaling); exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import generators  # noqa: E402

MAX_RATIO = 1.5


def _best(run, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def _planner_time(model, repeat: int) -> float:
    """Time spent in plan_steps while analysing `model` (the rest of analyze is not the planner)."""
    from edgefit.analysis import footprint

    spent = []
    original = footprint.plan_steps

    def timed(*args, **kwargs):
        start = time.perf_counter()
        result = original(*args, **kwargs)
        spent.append(time.perf_counter() - start)
        return result

    footprint.plan_steps = timed
    try:
        best = float("inf")
        for _ in range(repeat):
            spent.clear()
            footprint.analyze(model)
            best = min(best, sum(spent))
        return best
    finally:
        footprint.plan_steps = original


def measure(nodes: int, repeat: int) -> dict[str, tuple[int, float]]:
    """Row name -> (nodes in the graph the row runs on, seconds)."""
    from edgefit.passes import fuse, prune, quantize

    chain = generators.make_conv_bn_chain(nodes)
    heavy = generators.make_constant_heavy(nodes)
    fused_chain = fuse(chain).model
    fused_heavy = fuse(heavy).model
    return {
        "fuse (Conv+BN chain)": (len(chain.graph.node), _best(lambda: fuse(chain), repeat)),
        "fuse (Constant-heavy)": (len(heavy.graph.node), _best(lambda: fuse(heavy), repeat)),
        "prune 50% (fused chain)": (len(fused_chain.graph.node),
                                    _best(lambda: prune(fused_chain, 0.5), repeat)),
        "prune --structured (fused chain)": (len(fused_chain.graph.node),
                                             _best(lambda: prune(fused_chain, 0.5, structured=True), repeat)),
        "quantize dynamic (fused Constant-heavy)": (len(fused_heavy.graph.node),
                                                    _best(lambda: quantize(fused_heavy, "dynamic"), repeat)),
        "memory planner (Conv+BN chain)": (len(chain.graph.node), _planner_time(chain, repeat)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    results = {size: measure(size, args.repeat) for size in args.sizes}
    rows = list(results[args.sizes[0]])
    header = f"{'':42}" + "".join(f"{f'{s:,} nodes':>16}" for s in args.sizes) + f"{'ratio':>8}"
    print("time per node (µs); ratio = per-node time at the largest size / at the smallest (target <= 1.5)")
    print(header)
    failed = []
    for row in rows:
        per_node = [results[s][row][1] / results[s][row][0] * 1e6 for s in args.sizes]
        ratio = per_node[-1] / per_node[0]
        cells = "".join(f"{v:>16.1f}" for v in per_node)
        print(f"{row:42}{cells}{ratio:>8.2f}")
        if ratio > MAX_RATIO:
            failed.append(row)
    totals = "".join(f"{f'{sum(t for _, t in results[s].values()):.2f} s':>16}" for s in args.sizes)
    print(f"{'total wall time of the rows':42}{totals}")
    if failed:
        print(f"FAIL: per-node time grows more than {MAX_RATIO}x for: {', '.join(failed)}")
        return 1
    print("OK: every row scales linearly")
    return 0


if __name__ == "__main__":
    sys.exit(main())
