"""Analysis benchmark: edgefit.analyze against the floor of loading + shape-inferring the same model.

    python benchmarks/bench_analyze.py            # LLaMA-7B-like decoder (27 GB sparse external data) + 12,000 nodes
    python benchmarks/bench_analyze.py --quick    # 8-layer decoder + 3,000 nodes, fewer repeats

The floor is what any ONNX tool must at least do: `onnx.load(path, load_external_data=False)` followed by
`onnx.shape_inference.infer_shapes(model)`. The target is on the whole process, as a user meets it: a fresh
`python -m edgefit analyze MODEL --json` (interpreter start, imports, load, analysis, the tier line, JSON out)
against a fresh `python -c` process that imports onnx and runs the floor, both best of N wall-clock runs in this
benchmark, taking turns. The per-call times of `edgefit.analyze` and of the floor inside this process are printed
too, for the analysis cost alone. edgefit's peak RSS and the bytes it reads are measured in a fresh subprocess that
only imports edgefit and analyses the model, so model generation does not pollute them.

Target: the edgefit process takes <= 4x the floor process, peak RSS < 1 GB, params exact, external data never
read, for every model; exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import generators  # noqa: E402

MAX_PROCESS_RATIO = 4.0
MAX_RSS_BYTES = 2**30


@dataclass
class Case:
    label: str
    path: Path
    dims: dict[str, int]
    expected_params: int
    data_file: Path | None = None


def _proc_status(key: str) -> int:
    """A `kB` field of /proc/self/status, in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _rchar() -> int:
    """Bytes this process has read through read()-like syscalls (page cache and sparse holes included)."""
    with open("/proc/self/io") as io:
        for line in io:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    return 0


def child_main(path: str, dims_json: str, mode: str) -> None:
    """Run once in a fresh interpreter and print peak RSS and bytes read as JSON."""
    import onnx  # noqa: F401  (imported before the baseline so both modes pay for it alike)

    import edgefit

    dims = json.loads(dims_json)
    baseline_rss = _proc_status("VmRSS")
    before = _rchar()
    if mode == "edgefit":
        fp = edgefit.analyze(path, dims=dims)
        params = fp.params
    else:
        model = onnx.load(path, load_external_data=False)
        onnx.shape_inference.infer_shapes(model)
        params = None
    read = _rchar() - before
    import resource
    print(json.dumps({"vmhwm": _proc_status("VmHWM"), "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "baseline_rss": baseline_rss, "bytes_read": read, "params": params}))


def measure_subprocess(case: Case, mode: str) -> dict:
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(case.path),
                          json.dumps(case.dims), mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up: imports, caches, page cache
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def process_seconds(commands: list[list[str]], repeats: int) -> list[float]:
    """Best wall-clock time of a fresh process running each command, after one warm-up run of each (page cache,
    .pyc files). The commands take turns in every round, so that a change in the machine's load between rounds
    weighs on all of them alike.

    The processes run without PYTHONDONTWRITEBYTECODE, which some sandboxes set: a user's first run writes the
    .pyc files of an editable checkout (pip writes them at install otherwise), and the floor's onnx has its own
    from its install; without them every run of edgefit would compile its modules afresh."""
    env = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}

    def run(argv: list[str]) -> float:
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=env)
        return time.perf_counter() - start
    for argv in commands:
        run(argv)
    best = [float("inf")] * len(commands)
    for _ in range(repeats):
        best = [min(seconds, run(argv)) for seconds, argv in zip(best, commands)]
    return best


def edgefit_process(case: Case) -> list[str]:
    dims = [arg for name, value in case.dims.items() for arg in ("--dim", f"{name}={value}")]
    return [sys.executable, "-m", "edgefit", "analyze", str(case.path), *dims, "--json"]


def floor_process(case: Case) -> list[str]:
    return [sys.executable, "-c", "import sys, onnx; "
            "onnx.shape_inference.infer_shapes(onnx.load(sys.argv[1], load_external_data=False))", str(case.path)]


def floor(path: Path) -> None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    onnx.shape_inference.infer_shapes(model)


def build_cases(work: Path, quick: bool) -> list[Case]:
    cfg = generators.DecoderConfig(layers=8, name="decoder_8l") if quick else generators.LLAMA_7B
    nodes = 3_000 if quick else 12_000
    width = 32
    start = time.perf_counter()
    decoder = generators.make_decoder(work, cfg)
    deep = generators.make_deep_graph(work, nodes=nodes, width=width)
    print(f"generated models in {time.perf_counter() - start:.2f} s into {work}")
    return [
        Case(f"decoder {cfg.layers}L h{cfg.hidden} (sparse ext. data)", decoder, {"batch": 1, "seq": 2048},
             generators.decoder_params(cfg), decoder.parent / f"{cfg.name}.onnx.data"),
        Case(f"deep graph {nodes:,} nodes (inline)", deep, {"batch": 1},
             generators.deep_graph_params(nodes // generators.NODES_PER_BLOCK, width)),
    ]


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller models and fewer repeats (a smoke run)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (best is kept)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where to generate the models (default: benchmarks/_work, git-ignored)")
    parser.add_argument("--tmp", action="store_true", help="generate into a temporary folder removed afterwards")
    parser.add_argument("--child", nargs=3, metavar=("PATH", "DIMS", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(*args.child)
        return 0

    from rich.console import Console
    from rich.table import Table

    import edgefit

    repeats = args.repeats or (3 if args.quick else 7)
    console = Console(width=max(Console().width, 150))
    tmp = tempfile.mkdtemp(prefix="edgefit-bench-") if args.tmp else None
    work = Path(tmp) if tmp else (args.workdir or HERE / "_work")
    work.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    table = Table(title=f"edgefit analyze vs the floor (onnx.load w/o external data + infer_shapes), best of {repeats}")
    for column in ("model", "nodes", "params (edgefit)", "floor process", "edgefit process", "process ratio",
                   "floor call", "analyze call", "call ratio", "peak RSS", "read", "floor RSS"):
        table.add_column(column, justify="left" if column == "model" else "right")
    try:
        for case in build_cases(work, args.quick):
            fp = edgefit.analyze(case.path, dims=case.dims)
            params_ok = fp.params == case.expected_params
            if not params_ok:
                failures.append(f"{case.label}: params {fp.params:,} != analytic {case.expected_params:,}")
            if fp.unknowns:
                failures.append(f"{case.label}: unknowns {list(fp.unknowns)}")
            t_floor = best_of(lambda: floor(case.path), repeats)
            t_edgefit = best_of(lambda: edgefit.analyze(case.path, dims=case.dims), repeats)
            call_ratio = t_edgefit / t_floor
            p_floor, p_edgefit = process_seconds([floor_process(case), edgefit_process(case)], repeats)
            ratio = p_edgefit / p_floor
            child = measure_subprocess(case, "edgefit")
            child_floor = measure_subprocess(case, "floor")
            rss = child["vmhwm"]
            if ratio > MAX_PROCESS_RATIO:
                failures.append(f"{case.label}: process ratio {ratio:.2f}x > {MAX_PROCESS_RATIO}x")
            if rss >= MAX_RSS_BYTES:
                failures.append(f"{case.label}: peak RSS {fmt_bytes(rss)} >= 1 GB")
            if case.data_file is not None:
                data_size = case.data_file.stat().st_size
                if child["bytes_read"] >= data_size or case.data_file.stat().st_blocks:
                    failures.append(f"{case.label}: external data was read or written")
            nodes = len(__import__("onnx").load(str(case.path), load_external_data=False).graph.node)
            table.add_row(case.label, f"{nodes:,}",
                          f"{fp.params:,} " + ("[green]=[/]" if params_ok else f"[red]!= {case.expected_params:,}[/]"),
                          f"{p_floor * 1000:.0f} ms", f"{p_edgefit * 1000:.0f} ms",
                          f"[{'green' if ratio <= MAX_PROCESS_RATIO else 'red'}]{ratio:.2f}x[/]",
                          f"{t_floor * 1000:.0f} ms", f"{t_edgefit * 1000:.0f} ms", f"{call_ratio:.2f}x",
                          f"[{'green' if rss < MAX_RSS_BYTES else 'red'}]{fmt_bytes(rss)}[/]",
                          fmt_bytes(child["bytes_read"]), fmt_bytes(child_floor["vmhwm"]))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    console.print(table)
    console.print(f"python {sys.version.split()[0]}, onnx {__import__('onnx').__version__}, cpus {os.cpu_count()}; "
                  f"peak RSS = VmHWM of a fresh process that imports edgefit and analyses the model once; "
                  f"read = bytes it read (rchar)")
    if failures:
        for failure in failures:
            console.print(f"[red]FAIL[/] {failure}")
        return 1
    console.print(f"[green]PASS[/] every model: the edgefit process <= {MAX_PROCESS_RATIO:.0f}x the floor process, "
                  f"peak RSS < 1 GB, params exact")
    return 0


if __name__ == "__main__":
    sys.exit(main())
