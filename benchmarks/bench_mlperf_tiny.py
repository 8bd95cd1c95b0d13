#!/usr/bin/env python3
"""edgefit's latency and energy estimates against published microcontroller measurements.

benchmarks/data/mlperf_tiny.csv holds every MLPerf Tiny v0.5-v1.1 closed-division result on the two reference
boards, NUCLEO-H7A3ZI-Q (Cortex-M7 @ 280 MHz) and NUCLEO-L4R5ZI (Cortex-M4F @ 120 MHz), and on three boards that
have a profile of their own, DISCO-F746NG (Cortex-M7 @ 216 MHz), NUCLEO-U575ZI-Q (Cortex-M33 @ 160 MHz) and
nRF5340-DK (Cortex-M33 @ 128 MHz), each row citing its results file in the mlcommons/tiny_results_v* repositories
(latency = 1000 / "Median throughput"; energy = "Median energy cost"). The four benchmark networks are the sample
models (kws_dscnn, vww_mobilenet_v1_025, ic_resnet8, ad_autoencoder), estimated at int8 as the submissions ran them.

benchmarks/data/published_mcu.csv holds other published whole-model timings, in the same columns: TensorFlow Lite
Micro's int8 person-detection network (`person_detection`: the VWW MobileNetV1-0.25 with a one-channel 96x96 input,
built here from the sample model) on ESP32 and ESP32-S3 (Espressif's esp-tflite-micro README) and on a Cortex-M4F
NUCLEO-F413ZH. Boards without a profile of their own are estimated with the profile of the same core at another clock
(CLOCK_TRANSFER): the same cycles per inference, the latency scaled by the clocks' ratio.

Default: the reproduction table, `edgefit.devices.estimate` with each board's profile and the row's runtime stack, against
the published figure, and the share within +-25% per board. Exit 0 when the goals hold: >= 80% of latency pairs
within +-25%, none off by more than 2x, every energy pair within 2x.

--fit: derive the profiles' [runtimes.*] coefficients from the same data and print them as TOML, with the
leave-one-benchmark-out errors. The model has few parameters per stack, so that it generalises beyond the four
networks: one cost profile in cycles shared by every stack (a depthwise MAC, a fully-connected MAC, an elementwise
element and an operator dispatch, each worth so many standard-convolution MACs), and per stack a single scale,
its cycles per convolution MAC. The shared ratios are found on a grid over the two reference boards' rows only, so
that the other boards test whether that cost profile carries to other cores (Cortex-M33, another Cortex-M7, Xtensa);
each stack's scale is found in closed form (the geometric mean of measured / modelled cycles, i.e. least squares on
log latency).

Usage: python benchmarks/bench_mlperf_tiny.py [--fit | --markdown]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from rich.console import Console
from rich.table import Table

from edgefit import analyze
from edgefit.devices.estimate import estimate
from edgefit.devices.latency import FEATURE_NAMES, latency_features
from edgefit.devices.profiles import load_profile

ROOT = Path(__file__).resolve().parent.parent
DATA = (ROOT / "benchmarks" / "data" / "mlperf_tiny.csv", ROOT / "benchmarks" / "data" / "published_mcu.csv")
PROFILE_OF_BOARD = {"NUCLEO-H7A3ZI-Q": "nucleo-h7a3zi-q", "NUCLEO-L4R5ZI": "nucleo-l4r5zi",
                    "DISCO-F746NG": "disco-f746ng", "NUCLEO-U575ZI-Q": "nucleo-u575zi-q", "NRF5340-DK": "nrf5340-dk",
                    "ESP32": "esp32", "ESP32-S3": "esp32-s3"}
# The shared cost profile is fitted on these boards' rows: every MLPerf Tiny stack ran on one of them.
REFERENCE_BOARDS = frozenset({"NUCLEO-H7A3ZI-Q", "NUCLEO-L4R5ZI"})
# Boards with no profile, estimated with the profile of the same core at its clock (MHz): a check of that transfer.
CLOCK_TRANSFER = {"NUCLEO-F413ZH": ("arduino-nano-33-ble-sense", 64.0)}
LATENCY_TOLERANCE, LATENCY_SHARE_GOAL, WORST_GOAL, ENERGY_GOAL = 0.25, 0.80, 2.0, 2.0
# Stacks whose fully-connected layers run one kernel library's fc kernel, named here: TensorFlow Lite Micro 2.3.1
# built with TAGS=cmsis-nn sends int8 FULLY_CONNECTED to CMSIS-NN's arm_fully_connected_s8 on a core with the DSP
# extension (kernels/cmsis-nn/fully_connected.cc), as microTVM's CMSIS-NN build does. On the NUCLEO-L4R5ZI the two
# spend about the same cycles per fc MAC on the AD autoencoder (3.6 and 3.4) while their convolution MACs differ
# 1.9x (6.1 and 3.3 cycles): the fc cost follows the library, not the stack's conv speed. For these stacks it is
# one figure in cycles per fc MAC, fitted over the library's fc-dominated rows, instead of the shared fc ratio
# times the stack's cycles per conv MAC (which charged TFLM's slow convolutions to its fc layers: 1.64x on AD).
FC_KERNEL_LIBRARY = {"tflm-cmsis-nn": "CMSIS-NN arm_fully_connected_s8",
                     "microtvm-cmsis-nn": "CMSIS-NN arm_fully_connected_s8"}

# Shared cost profile searched by --fit, in standard-convolution MACs per unit.
GRID = {"depthwise": np.arange(3.0, 10.01, 0.5), "fc": np.arange(0.8, 2.61, 0.1),
        "elementwise": (0, 5, 10, 15, 20, 25, 30, 40, 60), "per_op": (0, 500, 1000, 2000, 4000)}


def load_rows() -> list[dict[str, str]]:
    rows = []
    for path in DATA:
        with path.open(newline="") as handle:
            rows += csv.DictReader(handle)
    return rows


def person_detection() -> onnx.ModelProto:
    """TFLM's person-detection network: the MLPerf Tiny VWW MobileNetV1-0.25 with a grayscale 96x96 input."""
    model = onnx.load(ROOT / "sample_models" / "vww_mobilenet_v1_025.onnx")
    first = model.graph.node[0]
    weight = next(t for t in model.graph.initializer if t.name == first.input[1])
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight)[:, :1].copy(), weight.name))
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 1
    return model


def footprint_of(benchmark: str):
    return analyze(person_detection() if benchmark == "person_detection"
                   else ROOT / "sample_models" / f"{benchmark}.onnx")


def features_by_benchmark(rows) -> dict[str, np.ndarray]:
    return {name: latency_features(footprint_of(name), "int8").vector()
            for name in sorted({row["benchmark"] for row in rows})}


def ratio_cell(ratio: float, tolerance: float) -> str:
    colour = "green" if abs(ratio - 1) <= tolerance else ("yellow" if max(ratio, 1 / ratio) <= 2 else "red")
    return f"[{colour}]{ratio:.2f}[/{colour}]"


@dataclass(frozen=True)
class Pair:
    """One published result and edgefit's estimate of it."""

    row: dict[str, str]
    latency_ms: float
    energy_uj: float

    @property
    def latency_ratio(self) -> float:
        return self.latency_ms / float(self.row["latency_ms"])

    @property
    def energy_ratio(self) -> float | None:
        return self.energy_uj / float(self.row["energy_uj"]) if self.row["energy_uj"] else None


@dataclass(frozen=True)
class Goals:
    latency_share: float    # share of latency pairs within +-25%
    latency_worst: float    # worst ratio either way (>= 1)
    energy_pairs: int
    energy_share: float     # share of energy pairs within 2x
    energy_worst: float

    @property
    def hold(self) -> bool:
        return (self.latency_share >= LATENCY_SHARE_GOAL and self.latency_worst <= WORST_GOAL
                and self.energy_worst <= ENERGY_GOAL)


def compare() -> list[Pair]:
    rows = load_rows()
    footprints = {name: footprint_of(name) for name in {r["benchmark"] for r in rows}}
    profiles = {name: load_profile(name) for name in {*PROFILE_OF_BOARD.values(),
                                                     *(profile for profile, _ in CLOCK_TRANSFER.values())}}
    pairs = []
    for row in rows:
        if row["board"] in CLOCK_TRANSFER:
            profile, profile_mhz = CLOCK_TRANSFER[row["board"]]
            slowdown = profile_mhz / float(row["clock_mhz"])
        else:
            profile, slowdown = PROFILE_OF_BOARD[row["board"]], 1.0
        est = estimate(footprints[row["benchmark"]], profiles[profile], "int8", runtime=row["stack"])
        pairs.append(Pair(row, est.latency_s * 1e3 * slowdown, est.energy_j * 1e6))
    return pairs


def _worst(ratios: np.ndarray) -> float:
    return float(np.max(np.maximum(ratios, 1 / ratios)))


def goals(pairs: list[Pair]) -> Goals:
    latency = np.array([p.latency_ratio for p in pairs])
    energy = np.array([p.energy_ratio for p in pairs if p.energy_ratio is not None])
    return Goals(float(np.mean(np.abs(latency - 1) <= LATENCY_TOLERANCE)), _worst(latency), len(energy),
                 float(np.mean(np.maximum(energy, 1 / energy) <= ENERGY_GOAL)), _worst(energy))


def share_by_board(pairs: list[Pair]) -> dict[str, tuple[int, float, float]]:
    """Per board: latency pairs, share within +-25%, worst ratio either way."""
    ratios = defaultdict(list)
    for pair in pairs:
        ratios[pair.row["board"]].append(pair.latency_ratio)
    return {board: (len(values), float(np.mean(np.abs(np.array(values) - 1) <= LATENCY_TOLERANCE)),
                    _worst(np.array(values))) for board, values in sorted(ratios.items())}


def summary_lines(result: Goals, pairs: list[Pair]) -> list[str]:
    return [f"latency: {result.latency_share:.0%} of {len(pairs)} published pairs within ±25% (goal ≥ "
            f"{LATENCY_SHARE_GOAL:.0%}); worst ratio {result.latency_worst:.2f}x (goal ≤ {WORST_GOAL:g}x)",
            *(f"  {board}: {share:.0%} of {count} within ±25%, worst {worst:.2f}x"
              for board, (count, share, worst) in share_by_board(pairs).items()),
            f"energy: {result.energy_share:.0%} of {result.energy_pairs} published pairs within 2x; "
            f"worst ratio {result.energy_worst:.2f}x (goal ≤ {ENERGY_GOAL:g}x)"]


def _source(row) -> str:
    return f"MLPerf Tiny v{row['version']}" if row["version"][:1].isdigit() else row["version"]


def markdown() -> bool:
    """One Markdown table, latency and energy side by side (the one in the README)."""
    pairs = compare()
    print("| board | stack | source | submitter | benchmark | published ms | edgefit ms | ratio "
          "| published µJ | edgefit µJ | ratio |")
    print("|---|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    for pair in pairs:
        row = pair.row
        energy = (f"{float(row['energy_uj']):.0f} | {pair.energy_uj:.0f} | {pair.energy_ratio:.2f}"
                  if pair.energy_ratio is not None else "| |")
        print(f"| {row['board']} | {row['stack']} | {_source(row)} | {row['submitter']} | {row['benchmark']} "
              f"| {float(row['latency_ms']):.2f} | {pair.latency_ms:.2f} | {pair.latency_ratio:.2f} | {energy} |")
    result = goals(pairs)
    print()
    for line in summary_lines(result, pairs):
        print(line)
    return result.hold


def reproduce(console: Console) -> bool:
    pairs = compare()
    latency = Table(title="MLPerf Tiny latency: published vs edgefit (int8)")
    energy = Table(title="MLPerf Tiny energy per inference: published vs edgefit (int8)")
    for table, unit in ((latency, "ms"), (energy, "uJ")):
        for column in ("board", "stack", "version", "submitter", "benchmark"):
            table.add_column(column)
        for column in (f"published {unit}", f"edgefit {unit}", "ratio"):
            table.add_column(column, justify="right")
    for pair in pairs:
        row = pair.row
        cells = (row["board"], row["stack"], row["version"], row["submitter"], row["benchmark"])
        latency.add_row(*cells, f"{float(row['latency_ms']):.2f}", f"{pair.latency_ms:.2f}",
                        ratio_cell(pair.latency_ratio, LATENCY_TOLERANCE))
        if pair.energy_ratio is not None:
            energy.add_row(*cells, f"{float(row['energy_uj']):.0f}", f"{pair.energy_uj:.0f}",
                           ratio_cell(pair.energy_ratio, ENERGY_GOAL - 1))
    console.print(latency)
    console.print(energy)
    result = goals(pairs)
    for line in summary_lines(result, pairs):
        console.print(line)
    return result.hold


# ---- --fit ---------------------------------------------------------------------------------------------

# The feature columns the shared ratios multiply, by name: LatencyFeatures grew columns (integer MACs, ...) between
# these, so a slice of the vector would silently pair a ratio with the wrong feature.
_CONV, _FC = FEATURE_NAMES.index("conv_macs"), FEATURE_NAMES.index("fc_macs")
_RATIO_COLUMNS = [FEATURE_NAMES.index(name) for name in ("depthwise_macs", "fc_macs", "elementwise_elements", "ops")]


def _work(features: np.ndarray, ratios) -> np.ndarray:
    """Cost of each row in standard-convolution MACs, for the shared ratios (depthwise, fc, elementwise, per-op)."""
    return features[:, _CONV] + features[:, _RATIO_COLUMNS] @ np.asarray(ratios, dtype=np.float64)


def _mean_by_stack(log_residual, stack_of_row, n_stacks, rows_used) -> np.ndarray:
    """Each stack's mean log residual over `rows_used`; NaN for a stack with none of them."""
    counts = np.bincount(stack_of_row[rows_used], minlength=n_stacks)
    sums = np.bincount(stack_of_row[rows_used], weights=log_residual[rows_used], minlength=n_stacks)
    return np.divide(sums, counts, out=np.full(n_stacks, np.nan), where=counts > 0)


def _fit(features, cycles, stack_of_row, n_stacks, rows_used):
    """Shared ratios and per-stack log-scales minimising the squared log error over `rows_used`."""
    best = None
    for ratios in itertools.product(*GRID.values()):
        log_residual = np.log(cycles / _work(features, ratios))
        scales = _mean_by_stack(log_residual, stack_of_row, n_stacks, rows_used)
        error = float(((log_residual - scales[stack_of_row])[rows_used] ** 2).sum())
        if best is None or error < best[0]:
            best = (error, ratios, scales)
    return best[1], best[2]


def _scales_without(features, cycles, stack_of_row, n_stacks, ratios, rows_used):
    return _mean_by_stack(np.log(cycles / _work(features, ratios)), stack_of_row, n_stacks, rows_used)


def _fc_dominated(features: np.ndarray) -> np.ndarray:
    """Rows whose MACs are mostly fully connected (the AD autoencoder): the ones that measure an fc kernel."""
    return features[:, _FC] > features[:, _CONV] + features[:, _RATIO_COLUMNS[0]]


def _library_fc_cycles(features, cycles, ratios, scales, stack_of_row, library_of_row, rows_used) -> dict:
    """Per fc kernel library, its cycles per fc MAC: the geometric mean over the library's fc-dominated rows in
    `rows_used` of (measured cycles - the stack's modelled cycles for everything but the fc MACs) / fc MACs."""
    without_fc = features.copy()
    without_fc[:, _FC] = 0
    rest = _work(without_fc, ratios) * np.exp(scales[stack_of_row])
    mine = rows_used & _fc_dominated(features) & (library_of_row != "")
    per_mac = np.full(len(cycles), np.nan)   # only fc-dominated rows have fc MACs to divide by
    per_mac[mine] = (cycles - rest)[mine] / features[mine, _FC]
    return {library: float(np.exp(np.mean(np.log(per_mac[mine & (library_of_row == library)]))))
            for library in sorted(set(library_of_row[mine]))}


def _modelled_cycles(features, ratios, scales, stack_of_row, library_of_row, fc_cycles: dict) -> np.ndarray:
    """Cycles per row: the stack's scale times the shared work, the fc MACs of a library stack at the library's
    cycles when `fc_cycles` has it (otherwise at the shared ratio, as for every other stack)."""
    modelled = _work(features, ratios) * np.exp(scales[stack_of_row])
    for library, per_mac in fc_cycles.items():
        mine = library_of_row == library
        modelled[mine] += (per_mac - ratios[1] * np.exp(scales[stack_of_row[mine]])) * features[mine, _FC]
    return modelled


def _held_out_line(name: str, held: np.ndarray) -> str:
    held = held[np.isfinite(held)]   # a stack with one published figure has nothing to hold out
    return (f"leave one benchmark out ({name}, {len(held)} pairs): {np.mean(np.abs(held - 1) <= 0.25):.0%} within "
            f"±25%, worst {np.max(np.maximum(held, 1 / held)):.2f}x, RMS relative error "
            f"{np.sqrt(np.mean((held - 1) ** 2)):.2f}")


def _rate(per_second: float, unit: str) -> str:
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if per_second >= scale:
            return f"{per_second / scale:.4g} {prefix}{unit}/s"
    return f"{per_second:.4g} {unit}/s"


def fit(console: Console) -> None:
    rows = load_rows()
    features = features_by_benchmark(rows)
    stacks = sorted({(r["board"], r["stack"]) for r in rows})
    stack_of_row = np.array([stacks.index((r["board"], r["stack"])) for r in rows])
    benchmarks = sorted(features)
    benchmark_of_row = np.array([benchmarks.index(r["benchmark"]) for r in rows])
    x = np.array([features[r["benchmark"]] for r in rows])
    clock = np.array([float(r["clock_mhz"]) * 1e6 for r in rows])
    cycles = np.array([float(r["latency_ms"]) * 1e-3 for r in rows]) * clock
    every = np.ones(len(rows), dtype=bool)
    reference = np.array([r["board"] in REFERENCE_BOARDS for r in rows])
    # The library's figure is fitted and used on the reference boards only: an fc kernel streams each weight from
    # flash once per inference, so its cycles depend on the board's flash path (the L4R5's ART accelerator, the
    # nRF5340's 8 KB cache, ...) more than a convolution's, which reuses its weights; elsewhere the shared ratio.
    library_of_row = np.array([FC_KERNEL_LIBRARY.get(r["stack"], "") if r["board"] in REFERENCE_BOARDS else ""
                               for r in rows])
    # A library stack's fc-dominated rows measure the library's fc kernel: they fit it, not the stack's scale. The
    # shared ratios stay fitted over every reference row (without those rows the grid moves to 6/1.5/30/2000 and
    # every stack's figures with it, for no better fit: the library rows are 2 of 84).
    shared = every & ~(_fc_dominated(x) & (library_of_row != ""))
    ratios, _ = _fit(x, cycles, stack_of_row, len(stacks), reference)
    scales = _scales_without(x, cycles, stack_of_row, len(stacks), ratios, shared)
    fc_cycles = _library_fc_cycles(x, cycles, ratios, scales, stack_of_row, library_of_row, reference)
    in_sample = _modelled_cycles(x, ratios, scales, stack_of_row, library_of_row, fc_cycles) / cycles
    console.print(f"shared cost, in convolution MACs (reference boards): depthwise MAC {ratios[0]:g}, "
                  f"fc MAC {ratios[1]:.3g}, elementwise element {ratios[2]:g}, operator {ratios[3]:g}")
    for library, per_mac in fc_cycles.items():
        mine = library_of_row == library
        each = {s: _library_fc_cycles(x, cycles, ratios, scales, stack_of_row, library_of_row,
                                      stack_of_row == s)[library]
                for s in sorted(set(stack_of_row[mine & _fc_dominated(x)]))}
        console.print(f"fc MAC on {library}: {per_mac:.2f} cycles (reference boards; "
                      + ", ".join(f"{stacks[s][1]} alone {value:.2f}" for s, value in each.items()) + ")")
        # Leave one stack out: each library stack's fc-dominated rows predicted from the other stacks' figure.
        for s in each:
            others = _library_fc_cycles(x, cycles, ratios, scales, stack_of_row, library_of_row,
                                        reference & (stack_of_row != s))
            held = (_modelled_cycles(x, ratios, scales, stack_of_row, library_of_row, others) / cycles)[
                (stack_of_row == s) & _fc_dominated(x)]
            console.print(f"  {stacks[s][1]} fc-dominated rows from the other stacks' figure: ratio "
                          + ", ".join(f"{value:.2f}" for value in held))
    for name, mine in (("reference boards", reference), ("other boards, cost profile carried over", ~reference)):
        console.print(f"in sample, {name}: {np.mean(np.abs(in_sample[mine] - 1) <= 0.25):.0%} of {mine.sum()} "
                      f"within ±25%, worst {np.max(np.maximum(in_sample[mine], 1 / in_sample[mine])):.2f}x")

    # Leave one benchmark out. (a) The shared ratios kept, each stack's scale refitted without the benchmark: how
    # well a stack's figures carry to a network it was not fitted on. (b) Everything refitted without it.
    held_scale, held_all = np.zeros(len(rows)), np.zeros(len(rows))
    # Without the AD autoencoder no fc-dominated row is left: a library stack's fc falls back to the shared ratio.
    for b in range(len(benchmarks)):
        used = benchmark_of_row != b
        refit = _scales_without(x, cycles, stack_of_row, len(stacks), ratios, used & shared)
        fc_b = _library_fc_cycles(x, cycles, ratios, refit, stack_of_row, library_of_row, used & reference)
        held_scale[~used] = (_modelled_cycles(x, ratios, refit, stack_of_row, library_of_row, fc_b) / cycles)[~used]
        ratios_b, _ = _fit(x, cycles, stack_of_row, len(stacks), used & reference)
        scales_b = _scales_without(x, cycles, stack_of_row, len(stacks), ratios_b, used & shared)
        fc_b = _library_fc_cycles(x, cycles, ratios_b, scales_b, stack_of_row, library_of_row, used & reference)
        held_all[~used] = (_modelled_cycles(x, ratios_b, scales_b, stack_of_row, library_of_row, fc_b) / cycles)[~used]
        console.print(f"  without {benchmarks[b]}: ratios {tuple(float(r) for r in ratios_b)}")
    for name, held in (("stack scale refitted", held_scale), ("everything refitted", held_all)):
        console.print(_held_out_line(name, held))

    power = defaultdict(list)
    for row in rows:
        if row["energy_uj"]:
            power[(row["board"], row["stack"])].append(float(row["energy_uj"]) * 1e-6 / (float(row["latency_ms"]) * 1e-3))
    for board in sorted({b for b, _ in stacks}):
        board_power = [p for (b, _), values in power.items() if b == board for p in values]
        console.print(f"\n# {board}: " + (f"median measured power over all its energy runs "
                      f"{np.median(board_power) * 1e3:.0f} mW ({min(board_power) * 1e3:.0f}-"
                      f"{max(board_power) * 1e3:.0f} mW, {len(board_power)} runs)" if board_power else "no energy runs"))
        profile_clock = CLOCK_TRANSFER[board][1] * 1e6 if board in CLOCK_TRANSFER else None
        for s, (b, stack) in enumerate(stacks):
            if b != board:
                continue
            mine = stack_of_row == s
            seconds_per_conv_mac = float(np.exp(scales[s])) / (profile_clock or clock[mine][0])
            error = float(np.sqrt(np.mean((held_scale[mine] - 1) ** 2)))
            console.print(f"[runtimes.{stack}]  # {np.exp(scales[s]):.3f} cycles per conv MAC; "
                          f"held-out RMS error {error:.2f}"
                          + (f"; rates at {CLOCK_TRANSFER[board][0]}'s clock" if profile_clock else ""), markup=False)
            if power[(b, stack)]:
                console.print(f'active_power = "{np.median(power[(b, stack)]) * 1e3:.0f} mW"  '
                              f"# median of {len(power[(b, stack)])} energy runs", markup=False)
            console.print(f"[runtimes.{stack}.int8]", markup=False)
            library = FC_KERNEL_LIBRARY.get(stack) if b in REFERENCE_BOARDS else None
            fc_ratio = fc_cycles[library] / np.exp(scales[s]) if library in fc_cycles else ratios[1]
            for key, ratio, unit in (("conv", 1.0, "MAC"), ("depthwise", ratios[0], "MAC"), ("fc", fc_ratio, "MAC"),
                                     ("elementwise", ratios[2], "elem")):
                rate = _rate(1 / (seconds_per_conv_mac * ratio), unit) if ratio else "inf"
                console.print(f'{key} = "{rate}"' if ratio else f"{key} = inf", markup=False)
            console.print(f'per_op = "{seconds_per_conv_mac * ratios[3] * 1e6:.3g} us"', markup=False)
            console.print('per_inference = "0 us"', markup=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fit", action="store_true", help="derive the profiles' runtime coefficients")
    parser.add_argument("--markdown", action="store_true", help="print the reproduction as one Markdown table")
    args = parser.parse_args()
    console = Console(width=140)
    if args.fit:
        fit(console)
        return 0
    if args.markdown:
        return 0 if markdown() else 1
    return 0 if reproduce(console) else 1


if __name__ == "__main__":
    sys.exit(main())
