"""Does `edgefit calibrate --measure` predict models it has not seen? (issue 8, part 3)

Calibrates a profile on 8 models timed on this machine (onnxruntime, 1 thread), then times other models on the
same machine and compares each with the calibrated profile's estimate (`edgefit check --target my-host.toml`).
Goal: the latency of >= 80% of the other models within +-25%. Prints the table and the share; exits 0 when the
goal is met, 1 otherwise.

    python benchmarks/bench_calibrate.py [--threads N] [--keep DIR]

The models are the sample models plus CNNs and MLPs built here with onnx.helper (random weights; the timing
does not depend on their values): MobileNet-style depthwise-separable stacks, ResNet-style residual stacks, plain
VGG-style stacks and fully-connected stacks, at several widths and resolutions, from 0.007 ms to ~140 ms here.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SAMPLES = REPO / "sample_models"


class _Builder:
    def __init__(self, seed: int):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.rng = np.random.default_rng(seed)
        self.count = 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def weight(self, *shape: int) -> str:
        name = self.name("w")
        fan_in = int(np.prod(shape[1:])) or 1
        value = (self.rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], **attributes) -> str:
        out = self.name("t")
        self.nodes.append(helper.make_node(op, inputs, [out], **attributes))
        return out

    def conv(self, x: str, c_in: int, c_out: int, kernel: int = 3, stride: int = 1, group: int = 1,
             relu: bool = True) -> str:
        pad = kernel // 2
        y = self.node("Conv", [x, self.weight(c_out, c_in // group, kernel, kernel), self.weight(c_out)],
                      pads=[pad] * 4, strides=[stride, stride], group=group)
        return self.node("Relu", [y]) if relu else y

    def model(self, name: str, x_shape: list[int], y: str, y_shape: list[int]) -> onnx.ModelProto:
        self.nodes.append(helper.make_node("Identity", [y], ["y"]))
        graph = helper.make_graph(self.nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], self.inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _head(b: _Builder, x: str, channels: int, classes: int = 10) -> str:
    pooled = b.node("Flatten", [b.node("GlobalAveragePool", [x])])
    return b.node("Gemm", [pooled, b.weight(channels, classes), b.weight(classes)])


def mobilenet(alpha: float, resolution: int) -> onnx.ModelProto:
    """MobileNetV1: a strided 3x3 conv, then 13 depthwise-3x3 + pointwise-1x1 pairs."""
    b = _Builder(int(alpha * 1000) + resolution)
    width = lambda c: max(8, int(c * alpha))   # noqa: E731
    x = b.conv("x", 3, width(32), stride=2)
    channels = width(32)
    plan = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    for c_out, stride in plan:
        x = b.conv(x, channels, channels, stride=stride, group=channels)
        x = b.conv(x, channels, width(c_out), kernel=1)
        channels = width(c_out)
    return b.model(f"mobilenet_{alpha}_{resolution}", [1, 3, resolution, resolution], _head(b, x, channels), [1, 10])


def resnet(width: int, resolution: int, blocks: int = 3) -> onnx.ModelProto:
    """ResNet-style: three stages of `blocks` residual blocks (two 3x3 convs and an Add), doubling the width."""
    b = _Builder(width * 100 + resolution + blocks)
    x = b.conv("x", 3, width)
    channels = width
    for stage in range(3):
        c_out = width * 2 ** stage
        for block in range(blocks):
            stride = 2 if stage and not block else 1
            y = b.conv(b.conv(x, channels, c_out, stride=stride), c_out, c_out, relu=False)
            shortcut = x if stride == 1 and channels == c_out else b.conv(x, channels, c_out, 1, stride, relu=False)
            x = b.node("Relu", [b.node("Add", [y, shortcut])])
            channels = c_out
    return b.model(f"resnet_{width}_{resolution}", [1, 3, resolution, resolution], _head(b, x, channels), [1, 10])


def vgg(width: int, resolution: int) -> onnx.ModelProto:
    """Plain 3x3 conv stacks with max pooling: three stages of two convs."""
    b = _Builder(width * 7 + resolution)
    x, channels = "x", 3
    for stage in range(3):
        for _ in range(2):
            x = b.conv(x, channels, width * 2 ** stage)
            channels = width * 2 ** stage
        x = b.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    return b.model(f"vgg_{width}_{resolution}", [1, 3, resolution, resolution], _head(b, x, channels), [1, 10])


def mlp(widths: list[int]) -> onnx.ModelProto:
    b = _Builder(sum(widths))
    x = "x"
    for k, (w_in, w_out) in enumerate(zip(widths, widths[1:])):
        x = b.node("Gemm", [x, b.weight(w_in, w_out), b.weight(w_out)])
        if k < len(widths) - 2:
            x = b.node("Relu", [x])
    return b.model(f"mlp_{'x'.join(map(str, widths))}", [1, widths[0]], x, [1, widths[-1]])


def models() -> tuple[dict[str, onnx.ModelProto | Path], dict[str, onnx.ModelProto | Path]]:
    """(calibration set of 8, held-out set)."""
    calibration = {
        "kws_dscnn": SAMPLES / "kws_dscnn.onnx",
        "ic_resnet8": SAMPLES / "ic_resnet8.onnx",
        "ad_autoencoder": SAMPLES / "ad_autoencoder.onnx",
        "mobilenet_0.5_128": mobilenet(0.5, 128),
        "resnet_32_64": resnet(32, 64),
        "vgg_16_64": vgg(16, 64),
        "mlp_512x1024x10": mlp([512, 1024, 10]),
        "mobilenet_1.0_160": mobilenet(1.0, 160),
    }
    held_out = {
        "vww_mobilenet_v1_025": SAMPLES / "vww_mobilenet_v1_025.onnx",
        "digits_cnn": SAMPLES / "digits_cnn.onnx",
        "mobilenet_0.25_96": mobilenet(0.25, 96),
        "mobilenet_0.75_128": mobilenet(0.75, 128),
        "mobilenet_1.0_224": mobilenet(1.0, 224),
        "resnet_16_32": resnet(16, 32),
        "resnet_16_128": resnet(16, 128, blocks=2),
        "resnet_64_96": resnet(64, 96),
        "resnet_64_160": resnet(64, 160),
        "vgg_32_96": vgg(32, 96),
        "vgg_8_32": vgg(8, 32),
        "mlp_256x256x256x10": mlp([256, 256, 256, 10]),
        "mlp_784x512x256x10": mlp([784, 512, 256, 10]),
    }
    return calibration, held_out


def _save(folder: Path, name: str, item: onnx.ModelProto | Path) -> Path:
    path = folder / f"{name}.onnx"
    if isinstance(item, Path):
        path.write_bytes(item.read_bytes())
    else:
        onnx.save(item, path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="write the models, measurement file and profile here")
    args = parser.parse_args(argv)
    from edgefit.errors import EdgefitError

    calibration, held_out = models()
    try:
        return _run(calibration, held_out, args.threads, args.keep)
    except EdgefitError as error:   # e.g. timings too unstable on a busy host: say so, no traceback
        print(f"error: {error}", file=sys.stderr)
        return 2


def _run(calibration: dict, held_out: dict, threads: int, keep: Path | None) -> int:
    from edgefit.analysis.footprint import analyze
    from edgefit.devices.calibrate import calibrate, write_profile
    from edgefit.devices.check import check_footprint
    from edgefit.devices.profiles import load_profile_file
    from edgefit.devices.timing import time_model
    from edgefit.model import load_model

    with tempfile.TemporaryDirectory(prefix="edgefit-bench-") as scratch:
        folder = keep or Path(scratch)
        (folder / "models").mkdir(parents=True, exist_ok=True)
        entries = [f'[[measurement]]\nmodel = "{_save(folder / "models", name, item).relative_to(folder)}"\n'
                   for name, item in calibration.items()]
        spec = folder / "measurements.toml"
        spec.write_text('base = "intel-nuc-12-pro"\n\n' + "\n".join(entries))
        result = calibrate(spec, measure=True, threads=threads)
        profile_path = write_profile(result, folder / "this-host.toml")
        profile = load_profile_file(profile_path)

        print(f"calibrated on {len(result.models)} models + {len(result.rows) - len(result.models)} kernels "
              f"({threads} thread{'s' if threads > 1 else ''}): leave-one-out error {result.loo_error:.1%}, "
              f"{result.within_25_percent:.0%} within +-25%")
        for row in result.models:
            print(f"  {row.label:40s} measured {row.latency_s * 1e3:9.4f} ms  fitted {row.fitted_s * 1e3:9.4f} ms  "
                  f"loo {row.loo_error:+7.1%}")
        print()
        print(f"{'held-out model':28s} {'MACs':>14s} {'measured ms':>12s} {'spread':>7s} {'estimate ms':>12s} "
              f"{'error':>7s}")
        within = []
        for name, item in held_out.items():
            path = _save(folder / "models", name, item)
            loaded = load_model(path, load_weights=True)
            footprint = analyze(loaded)
            timing = time_model(loaded.proto, what=name, threads=threads)
            estimate = check_footprint(footprint, profile, "fp32").estimate.latency_s
            error = estimate / timing.median_s - 1
            within.append(abs(error) <= 0.25)
            print(f"{name:28s} {footprint.macs:14,d} {timing.median_s * 1e3:12.4f} {timing.spread:7.1%} "
                  f"{estimate * 1e3:12.4f} {error:+7.1%}")
        share = float(np.mean(within))
        print(f"\nwithin +-25%: {sum(within)} of {len(within)} held-out models ({share:.0%}); goal >= 80%: "
              f"{'met' if share >= 0.8 else 'NOT met'}")
        return 0 if share >= 0.8 else 1


if __name__ == "__main__":
    sys.exit(main())
