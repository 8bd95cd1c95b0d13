"""Timing models in onnxruntime on this machine, for `edgefit calibrate --measure`. Imported lazily.

A timing is a distribution, not a number: every run's wall time is kept, and the median and the spread
(interquartile range / median) are reported. A host that is busy or throttling shows a wide spread; calibrating
on such timings would fit noise, so `time_model` re-measures a few times and then refuses.

`kernels()` builds single-layer models (standard conv, depthwise conv, matmul, elementwise, and chains of tiny
ops) at several sizes, as nn-Meter does: a handful of whole models mixes every layer class in similar proportions,
so their timings alone cannot say what a conv MAC costs apart from a matmul MAC or an operator dispatch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import ModelProto, TensorProto, helper, numpy_helper

from edgefit.errors import MeasurementError


@dataclass(frozen=True)
class TimingPlan:
    """How long and how often to time each model."""

    warmup_s: float = 0.05          # first runs pay for allocation, page faults and caches: not kept
    min_warmup_runs: int = 3
    budget_s: float = 0.4           # time spent on kept runs per model (at least min_runs runs)
    min_runs: int = 7
    max_runs: int = 3000
    max_spread: float = 0.15        # interquartile range / median above this is an unstable timing
    attempts: int = 3               # measurements of one model before an unstable timing is refused


@dataclass(frozen=True)
class Timing:
    samples_s: tuple[float, ...]    # wall time of each kept run, in run order
    threads: int
    attempts: int                   # how many measurements it took to get a stable one

    @property
    def median_s(self) -> float:
        return float(np.median(self.samples_s))

    @property
    def iqr_s(self) -> float:
        q1, q3 = np.percentile(self.samples_s, [25, 75])
        return float(q3 - q1)

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median."""
        return self.iqr_s / self.median_s if self.median_s > 0 else 0.0

    def to_dict(self) -> dict[str, object]:
        return {"median_ms": self.median_s * 1e3, "iqr_ms": self.iqr_s * 1e3, "spread": self.spread,
                "runs": len(self.samples_s), "threads": self.threads, "attempts": self.attempts,
                "samples_ms": [s * 1e3 for s in self.samples_s]}


def _runs(run: Callable[[], object], plan: TimingPlan) -> list[float]:
    started = time.perf_counter()
    warmups = 0
    while warmups < plan.min_warmup_runs or time.perf_counter() - started < plan.warmup_s:
        run()
        warmups += 1
    samples: list[float] = []
    started = time.perf_counter()
    while len(samples) < plan.max_runs and (len(samples) < plan.min_runs
                                             or time.perf_counter() - started < plan.budget_s):
        before = time.perf_counter()
        run()
        samples.append(time.perf_counter() - before)
    return samples


def time_model(proto: ModelProto, *, what: str, threads: int = 1, plan: TimingPlan = TimingPlan(),
               input_shapes: dict[str, list[int]] | None = None, dims: dict[str, int] | None = None) -> Timing:
    """Wall time of one inference of `proto` in onnxruntime (graph optimisations on, as deployed), on synthetic
    inputs of the resolved shapes. Raises MeasurementError when onnxruntime cannot run it or the timing stays
    unstable after `plan.attempts` measurements."""
    from edgefit.fidelity import runtime_reason, synthetic_samples
    from edgefit.runtime import session as make_session

    if threads < 1:
        raise MeasurementError(f"invalid thread count {threads}: expected 1 or more")
    try:
        session = make_session(proto, optimize=True, threads=threads)
    except Exception as error:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise MeasurementError(f"onnxruntime cannot load {what}: {runtime_reason(error)}") from None
    feed = synthetic_samples(proto, 1, input_shapes=input_shapes, dims=dims).feeds[0]

    def run() -> object:
        return session.run(None, feed)

    try:
        run()
    except Exception as error:  # noqa: BLE001 - see above
        raise MeasurementError(f"onnxruntime cannot run {what}: {runtime_reason(error)}") from None
    spreads = []
    for attempt in range(1, plan.attempts + 1):
        timing = Timing(tuple(_runs(run, plan)), threads, attempt)
        if timing.spread <= plan.max_spread:
            return timing
        spreads.append(f"{timing.spread:.0%}")
    raise MeasurementError(
        f"timings of {what} are unstable (spread {', '.join(spreads)} over {plan.attempts} attempts, limit "
        f"{plan.max_spread:.0%}): the host is busy or throttling; close other work and measure again")


# ---- generated single-layer kernels ---------------------------------------------------------------------

@dataclass(frozen=True)
class Kernel:
    name: str                       # e.g. "conv 3x3 32->64 @16x16"
    layer_class: str                # "conv", "depthwise", "fc", "elementwise" or "ops" (dispatch cost)
    model: ModelProto


def _single(name: str, nodes: list, x_shape: list[int], y_shape: list[int], weights: dict[str, np.ndarray],
            opset: int = 17) -> ModelProto:
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        [numpy_helper.from_array(value, key) for key, value in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def _conv(channels_in: int, channels_out: int, size: int, groups: int = 1) -> ModelProto:
    rng = np.random.default_rng(channels_in * 7 + channels_out + size)
    w = rng.standard_normal((channels_out, channels_in // groups, 3, 3)).astype(np.float32) * 0.1
    b = np.zeros(channels_out, np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], group=groups)
    return _single("conv", [node], [1, channels_in, size, size], [1, channels_out, size, size], {"w": w, "b": b})


def _matmul(rows: int, inner: int, cols: int) -> ModelProto:
    rng = np.random.default_rng(rows + inner + cols)
    w = rng.standard_normal((inner, cols)).astype(np.float32) * 0.05
    b = np.zeros(cols, np.float32)
    node = helper.make_node("Gemm", ["x", "w", "b"], ["y"])
    return _single("matmul", [node], [rows, inner], [rows, cols], {"w": w, "b": b})


def _adds(elements: int, count: int) -> ModelProto:
    """`count` Adds in a chain over `elements` floats (each adds a constant, so none folds away or fuses)."""
    nodes = [helper.make_node("Add", ["x" if k == 0 else f"t{k}", "c"], ["y" if k == count - 1 else f"t{k + 1}"])
             for k in range(count)]
    return _single("elementwise", nodes, [1, elements], [1, elements], {"c": np.full((1, elements), 0.5, np.float32)})


def kernels() -> tuple[Kernel, ...]:
    """Single-layer models spanning each layer class at small to mid sizes (each runs in 0.01-5 ms here)."""
    return (
        Kernel("conv 3x3 8->16 @32x32", "conv", _conv(8, 16, 32)),
        Kernel("conv 3x3 32->32 @16x16", "conv", _conv(32, 32, 16)),
        Kernel("conv 3x3 64->64 @16x16", "conv", _conv(64, 64, 16)),
        Kernel("conv 3x3 128->128 @8x8", "conv", _conv(128, 128, 8)),
        Kernel("depthwise 3x3 32 @32x32", "depthwise", _conv(32, 32, 32, groups=32)),
        Kernel("depthwise 3x3 128 @16x16", "depthwise", _conv(128, 128, 16, groups=128)),
        Kernel("depthwise 3x3 256 @8x8", "depthwise", _conv(256, 256, 8, groups=256)),
        Kernel("matmul 1x256x256", "fc", _matmul(1, 256, 256)),
        Kernel("matmul 1x1024x1024", "fc", _matmul(1, 1024, 1024)),
        Kernel("matmul 16x512x512", "fc", _matmul(16, 512, 512)),
        Kernel("add 16K elements", "elementwise", _adds(16_384, 1)),
        Kernel("add 256K elements", "elementwise", _adds(262_144, 1)),
        Kernel("add 8 elements", "ops", _adds(8, 1)),
        Kernel("32 adds of 8 elements", "ops", _adds(8, 32)),
    )
