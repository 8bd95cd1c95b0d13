"""Timing models in onnxruntime on this machine, for `edgefit calibrate --measure`. Imported lazily.

A timing is a distribution, not a number: every run's wall time is kept, and the median and the spread
(interquartile range / median) are reported. A timing is unstable when either
* the median is uncertain: its distribution-free 95% confidence interval (between two order statistics) is wider
  than +-5% of it, or
* the spread exceeds 50%: most runs were slowed down, so even the median is the busy host's, not the model's.
A few runs preempted by other work (a shared machine) leave the median and both tests alone: that is why the
median, not the mean, is the figure. Calibrating on unstable timings would fit noise, so `time_model`
re-measures a few times and then refuses.

The clock: with one thread, onnxruntime runs the whole inference on the calling thread (no thread pool), so the
thread's CPU time (CLOCK_THREAD_CPUTIME_ID) is the inference's latency without the time slices the OS gave to
other processes: on a host whose two cores ran five other jobs, a 5.5 ms model read 9.6-13.8 ms (quartiles) by
the wall clock and 5.5-5.8 ms by the thread's CPU time, the wall clock's own minimum. With more threads the
workers' time is not on the calling thread, so the wall clock is used and a busy host shows as a wide spread.

`kernels()` builds single-layer models (standard conv, depthwise conv, matmul, elementwise, and chains of tiny
ops) at several sizes, as nn-Meter does: a handful of whole models mixes every layer class in similar proportions,
so their timings alone cannot say what a conv MAC costs apart from a matmul MAC or an operator dispatch.
"""

from __future__ import annotations

import math
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
    max_runs: int = 500             # enough for a tight median; the JSON keeps every sample
    max_spread: float = 0.5         # interquartile range / median above this is an unstable timing
    max_uncertainty: float = 0.05   # half-width of the median's 95% confidence interval, relative to the median
    attempts: int = 3               # measurements of one model before an unstable timing is refused


@dataclass(frozen=True)
class Timing:
    samples_s: tuple[float, ...]    # time of each kept run, in run order
    threads: int
    attempts: int                   # how many measurements it took to get a stable one
    clock: str = "wall"             # "thread cpu" (one thread) or "wall"

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

    @property
    def uncertainty(self) -> float:
        """Half-width of the median's 95% confidence interval relative to the median: the order statistics
        k and n-1-k with k = floor((n - 1.96 sqrt(n)) / 2) bracket the median with >= 95% probability whatever
        the distribution of run times."""
        ordered = sorted(self.samples_s)
        n = len(ordered)
        k = max(0, math.floor((n - 1.96 * math.sqrt(n)) / 2))
        return (ordered[n - 1 - k] - ordered[k]) / (2 * self.median_s) if self.median_s > 0 else 0.0

    def stable(self, plan: TimingPlan) -> bool:
        return self.spread <= plan.max_spread and self.uncertainty <= plan.max_uncertainty

    def to_dict(self) -> dict[str, object]:
        return {"median_ms": self.median_s * 1e3, "iqr_ms": self.iqr_s * 1e3, "spread": self.spread,
                "median_uncertainty": self.uncertainty,
                "runs": len(self.samples_s), "threads": self.threads, "attempts": self.attempts, "clock": self.clock,
                "samples_ms": [s * 1e3 for s in self.samples_s]}


def _runs(run: Callable[[], object], plan: TimingPlan, clock: Callable[[], float]) -> list[float]:
    started = time.perf_counter()
    warmups = 0
    while warmups < plan.min_warmup_runs or time.perf_counter() - started < plan.warmup_s:
        run()
        warmups += 1
    samples: list[float] = []
    started = time.perf_counter()
    while len(samples) < plan.max_runs and (len(samples) < plan.min_runs
                                             or time.perf_counter() - started < plan.budget_s):
        before = clock()
        run()
        samples.append(clock() - before)
    return samples


def time_model(proto: ModelProto, *, what: str, threads: int = 1, plan: TimingPlan = TimingPlan(),
               input_shapes: dict[str, list[int]] | None = None, dims: dict[str, int] | None = None,
               input_values: dict[str, list[float]] | None = None) -> Timing:
    """Wall time of one inference of `proto` in onnxruntime (graph optimisations on, as deployed), on synthetic
    inputs of the resolved shapes, except the inputs `input_values` gives (a sample rate that picks an `If`
    branch: synthetic zeros would run another branch than the one analysed). Raises MeasurementError when
    onnxruntime cannot run it or the timing stays unstable after `plan.attempts` measurements."""
    from edgefit.fidelity import runtime_reason, synthetic_samples
    from edgefit.runtime import session as make_session

    if threads < 1:
        raise MeasurementError(f"invalid thread count {threads}: expected 1 or more")
    try:
        # The fast integer kernels a deployment on this host would run, even where they saturate (runtime.session).
        session = make_session(proto, optimize=True, threads=threads, exact_int8=False)
    except Exception as error:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise MeasurementError(f"onnxruntime cannot load {what}: {runtime_reason(error)}") from None
    feed = synthetic_samples(proto, 1, input_shapes=input_shapes, dims=dims).feeds[0]
    for name, values in (input_values or {}).items():
        if name in feed:
            feed[name] = np.asarray(values, dtype=feed[name].dtype).reshape(feed[name].shape)

    def run() -> object:
        return session.run(None, feed)

    try:
        run()
    except Exception as error:  # noqa: BLE001 - see above
        raise MeasurementError(f"onnxruntime cannot run {what}: {runtime_reason(error)}") from None
    clock, clock_name = (time.thread_time, "thread cpu") if threads == 1 else (time.perf_counter, "wall")
    seen = []
    for attempt in range(1, plan.attempts + 1):
        timing = Timing(tuple(_runs(run, plan, clock)), threads, attempt, clock_name)
        if timing.stable(plan):
            return timing
        seen.append(f"spread {timing.spread:.0%} median +-{timing.uncertainty:.0%}")
    raise MeasurementError(
        f"timings of {what} are unstable ({', '.join(seen)} over {plan.attempts} attempts; limits: spread "
        f"{plan.max_spread:.0%}, median +-{plan.max_uncertainty:.0%}): the host is busy or throttling; close other "
        "work and measure again")


# ---- generated single-layer kernels ---------------------------------------------------------------------

@dataclass(frozen=True)
class Kernel:
    name: str                       # e.g. "conv 3x3 32->64 @16x16"
    layer_class: str                # one of edgefit.devices.latency.LAYER_CLASSES
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


def _conv(channels_in: int, channels_out: int, size: int, groups: int = 1, kernel: int = 3, dims: int = 2,
          stride: int = 1) -> ModelProto:
    """A `dims`-D convolution over a `size`^dims input; 'same' padding for small kernels, none for large ones
    (a strided filterbank over frames)."""
    rng = np.random.default_rng(channels_in * 7 + channels_out + size + kernel)
    w = rng.standard_normal((channels_out, channels_in // groups, *[kernel] * dims)).astype(np.float32) * 0.1
    b = np.zeros(channels_out, np.float32)
    pad = kernel // 2 if kernel <= 7 else 0
    out = (size + 2 * pad - kernel) // stride + 1
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[pad] * 2 * dims, strides=[stride] * dims,
                            group=groups)
    return _single("conv", [node], [1, channels_in, *[size] * dims], [1, channels_out, *[out] * dims],
                   {"w": w, "b": b})


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


def _transpose(channels: int, size: int) -> ModelProto:
    """NCHW -> NHWC: pure data movement, the cost ShuffleNet-style channel shuffles and layout changes pay."""
    node = helper.make_node("Transpose", ["x"], ["y"], perm=[0, 2, 3, 1])
    return _single("transpose", [node], [1, channels, size, size], [1, size, size, channels], {})


def _dynamic_matmul(rows: int, inner: int, cols: int) -> ModelProto:
    """A matmul as onnxruntime.quantization.quantize_dynamic writes it: DynamicQuantizeLinear of the input,
    MatMulInteger with uint8 weights, Cast and the two scale Muls."""
    rng = np.random.default_rng(rows * 3 + inner + cols)
    w = rng.integers(0, 255, (inner, cols), dtype=np.uint8)
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
             helper.make_node("MatMulInteger", ["xq", "w", "xz", "wz"], ["acc"]),
             helper.make_node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["xs", "ws"], ["scale"]),
             helper.make_node("Mul", ["accf", "scale"], ["y"])]
    weights = {"w": w, "wz": np.array(128, np.uint8), "ws": np.array(0.01, np.float32)}
    return _single("dynamic matmul", nodes, [rows, inner], [rows, cols], weights)


def _unary(op_type: str, shape: list[int], constant: float | None = None, **attributes) -> ModelProto:
    """One elementwise op over a `shape` float tensor (with a constant scalar second input when given)."""
    inputs = ["x"] if constant is None else ["x", "c"]
    weights = {} if constant is None else {"c": np.array(constant, np.float32)}
    return _single(op_type.lower(), [helper.make_node(op_type, inputs, ["y"], **attributes)], shape, shape, weights)


def host_last_level_cache() -> int | None:
    """Size of this host's last-level cache (the highest cache level cpu0 reports), from Linux's sysfs; None
    elsewhere or when it is not reported."""
    from pathlib import Path

    best: tuple[int, int] | None = None
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            level = int((index / "level").read_text())
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
        except (OSError, ValueError):
            continue
        units = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}
        if kind == "Instruction" or not size or not size[:-1].isdigit() or size[-1] not in units:
            continue
        if best is None or level > best[0]:
            best = (level, int(size[:-1]) * units[size[-1]])
    return best[1] if best else None


def kernels(cache_bytes: int | None = None) -> tuple[Kernel, ...]:
    """Single-layer models of each layer class at the sizes small models are made of (0.003-0.1 ms each here).

    The smallest convolution pins the fixed cost of dispatching a real kernel: a chain of tiny Adds would pin
    the cost of the cheapest op instead, a fraction of what a convolution's setup costs. Matmuls are batch-1 (one
    pass over the weights, as a deployed model runs them), from weights in cache to weights beyond it; a matmul
    over 64 rows and a grouped (not depthwise) convolution run as GEMMs, in the conv class. 1-D convolutions over
    4 to 4096 positions and a strided large-kernel filterbank separate a convolution's per-weight cost from its
    MACs (over 4 positions each weight is used 4 times). Pow and Softplus time the
    transcendental class, two LRNs their own. With the host's last-level cache size `cache_bytes`, a batch-1 matmul whose weights
    and an Add whose tensors are twice that size time the extra cost of streaming from memory (1-30 ms each).
    """
    beyond: tuple[Kernel, ...] = ()
    if cache_bytes:
        side = 256 * math.ceil(math.sqrt(2 * cache_bytes / 4) / 256)   # fp32 weights >= twice the cache
        elements = 1024 * math.ceil(2 * cache_bytes / 4 / 1024)
        beyond = (Kernel(f"matmul 1x{side}x{side} beyond the cache", "fc", _matmul(1, side, side)),
                  Kernel(f"add {elements // 1024}K elements beyond the cache", "elementwise",
                         _unary("Add", [1, elements], 0.5)))
    return beyond + (
        Kernel("conv 3x3 8->8 @8x8", "conv", _conv(8, 8, 8)),
        Kernel("conv 3x3 8->16 @32x32", "conv", _conv(8, 16, 32)),
        Kernel("conv 3x3 32->32 @16x16", "conv", _conv(32, 32, 16)),
        Kernel("conv 3x3 64->64 @16x16", "conv", _conv(64, 64, 16)),
        Kernel("conv 1x1 64->128 @16x16", "conv", _conv(64, 128, 16, kernel=1)),
        Kernel("conv 3x3 128->128 @8x8", "conv", _conv(128, 128, 8)),
        Kernel("depthwise 3x3 32 @32x32", "depthwise", _conv(32, 32, 32, groups=32)),
        Kernel("depthwise 3x3 128 @16x16", "depthwise", _conv(128, 128, 16, groups=128)),
        Kernel("depthwise 3x3 256 @8x8", "depthwise", _conv(256, 256, 8, groups=256)),
        Kernel("matmul 1x256x256", "fc", _matmul(1, 256, 256)),
        Kernel("matmul 1x512x512", "fc", _matmul(1, 512, 512)),
        Kernel("matmul 1x1024x1024", "fc", _matmul(1, 1024, 1024)),
        Kernel("matmul 64x256x256", "conv", _matmul(64, 256, 256)),
        Kernel("grouped conv 1x1 128->128 /4 @16x16", "conv", _conv(128, 128, 16, groups=4, kernel=1)),
        Kernel("add 1K elements", "elementwise", _adds(1024, 1)),
        Kernel("add 16K elements", "elementwise", _adds(16_384, 1)),
        Kernel("add 256K elements", "elementwise", _adds(262_144, 1)),
        Kernel("transpose 32 @16x16", "movement", _transpose(32, 16)),
        Kernel("transpose 64 @64x64", "movement", _transpose(64, 64)),
        Kernel("dynamic int8 matmul 16x256x256", "integer", _dynamic_matmul(16, 256, 256)),
        Kernel("dynamic int8 matmul 64x512x512", "integer", _dynamic_matmul(64, 512, 512)),
        Kernel("pow 0.75 64K elements", "transcendental", _unary("Pow", [1, 65_536], 0.75)),
        Kernel("lrn 5 64 @32x32", "lrn", _unary("LRN", [1, 64, 32, 32], size=5)),
        Kernel("lrn 3 16 @32x32", "lrn", _unary("LRN", [1, 16, 32, 32], size=3)),
        Kernel("conv1d 3 128->128 @4", "conv", _conv(128, 128, 4, dims=1)),
        Kernel("conv1d 5 32->32 @1024", "conv", _conv(32, 32, 1024, kernel=5, dims=1)),
        Kernel("conv1d 64/16 1->64 @4096", "conv", _conv(1, 64, 4096, kernel=64, dims=1, stride=16)),
        Kernel("softplus 64K elements", "transcendental", _unary("Softplus", [1, 65_536])),
    )
