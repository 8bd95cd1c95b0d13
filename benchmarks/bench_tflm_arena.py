#!/usr/bin/env python3
"""edgefit's TensorFlow Lite Micro arena against TFLM's own RecordingMicroAllocator, on the MLPerf Tiny models.

Measured: the MLPerf Tiny reference .tflite files run by the `tflite-micro` package (the real interpreter) after
AllocateTensors; the figures stored in benchmarks/tflm_arena_measured.json, with their source, unless
--tflite-dir names a folder holding those files (a checkout of github.com/mlcommons/tiny, or the files side by
side) and `tflite-micro` is installed (pip install -e ".[tflm]"), in which case they are measured again.
KWS has no fp32 file TFLM runs (the published one is a hybrid model): its fp32 row is the int8 file with every
tensor made float32; the same conversion of the VWW int8 file measures exactly as the published VWW float file.
Ours: `edgefit.devices.runtime_memory` with memory model "tflm" on the ONNX sample models of the same networks
(sample_models/), at fp32 and at int8 both ways: the float model estimated at int8, and the model really quantized
by `edgefit quantize` (static QDQ, synthetic calibration).

The arena must never be too small (AllocateTensors fails) and should not waste RAM: every ratio must lie in
[1.00, 1.10]. Exit 0 when they all do, 1 otherwise.

Usage: python benchmarks/bench_tflm_arena.py [--tflite-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from edgefit import analyze
from edgefit.devices.runtime_memory import runtime_memory
from edgefit.fidelity import synthetic_samples
from edgefit.model import load_model
from edgefit.passes import PassOptions, run_passes

HERE = Path(__file__).resolve().parent
SAMPLES = HERE.parent / "sample_models"
STORED = HERE / "tflm_arena_measured.json"
LOW, HIGH = 1.00, 1.10

# Runs in a child process: the interpreter prints from C++, straight to the process's stdout.
_MEASURE = """
import sys
from tflite_micro.python.tflite_micro import runtime
runtime.Interpreter.from_file(sys.argv[1], arena_size=2_000_000).print_allocations()
"""


def dequantized(data: bytes) -> bytes:
    """The int8 model with every quantized tensor made float32 (weights dequantized): the fp32 model of the same
    graph, for networks whose published float file TFLM cannot run."""
    import flatbuffers  # both come with tflite-micro
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as tfl

    model = tfl.ModelT.InitFromObj(tfl.Model.GetRootAsModel(data, 0))
    storage = {tfl.TensorType.INT8: np.int8, tfl.TensorType.INT32: np.int32}
    for tensor in (t for subgraph in model.subgraphs for t in subgraph.tensors):
        q = tensor.quantization
        if tensor.type not in storage or q is None or q.scale is None or not len(q.scale):
            continue
        buffer = model.buffers[tensor.buffer]
        if buffer.data is not None and len(buffer.data):
            values = np.frombuffer(bytes(bytearray(buffer.data)), dtype=storage[tensor.type]).astype(np.float32)
            axis_shape = [1] * len(tensor.shape)
            axis_shape[q.quantizedDimension if len(q.scale) > 1 else 0] = -1
            values = ((values.reshape(list(tensor.shape)) - np.asarray(q.zeroPoint, np.float32).reshape(axis_shape))
                      * np.asarray(q.scale, np.float32).reshape(axis_shape))
            buffer.data = np.frombuffer(values.astype(np.float32).tobytes(), dtype=np.uint8)
        tensor.type, tensor.quantization = tfl.TensorType.FLOAT32, None
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def measure(path: Path, dequantize: bool) -> dict[str, int]:
    if dequantize:
        folder = tempfile.mkdtemp()
        float_path = Path(folder) / f"{path.stem}_dequantized.tflite"
        float_path.write_bytes(dequantized(path.read_bytes()))
        path = float_path
    run = subprocess.run([sys.executable, "-c", _MEASURE, str(path)], capture_output=True, text=True, timeout=120)
    found = dict(re.findall(r"Arena allocation (head|tail|total) (\d+) bytes", run.stdout + run.stderr))
    if len(found) != 3:
        raise RuntimeError(f"tflite-micro could not allocate {path}: {(run.stderr or run.stdout).strip()[-300:]}")
    return {key: int(value) for key, value in found.items()}


def find_tflite(folder: Path, relative: str) -> Path | None:
    for candidate in (folder / "benchmark" / "training" / relative, folder / relative, folder / Path(relative).name):
        if candidate.is_file():
            return candidate
    return None


def has_tflite_micro() -> bool:
    try:
        import tflite_micro  # noqa: F401
    except ImportError:
        return False
    return True


def ours(name: str, precision: str, quantized: bool) -> int:
    path = SAMPLES / f"{name}.onnx"
    if quantized:
        proto = load_model(path).proto
        calibration = synthetic_samples(proto, 16, seed=0)
        footprint = analyze(run_passes(proto, "fuse,quantize", PassOptions(calibration=calibration)).model)
    else:
        footprint = analyze(path)
    return runtime_memory(footprint, "tflm", precision, footprint.activation_bytes_at(precision)).arena_bytes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tflite-dir", type=Path, help="folder with the MLPerf Tiny .tflite files (re-measure)")
    args = parser.parse_args()
    stored = json.loads(STORED.read_text())
    live = args.tflite_dir is not None and has_tflite_micro()
    console = Console()
    if args.tflite_dir is not None and not live:
        console.print("tflite-micro is not installed: using the stored measurements", style="yellow")

    table = Table(title="TFLM tensor arena: measured (RecordingMicroAllocator) vs edgefit", title_justify="left")
    for column in ("model", "precision", "measured", "ours", "ratio", "ours, QDQ", "ratio"):
        table.add_column(column, justify="left" if column in ("model", "precision") else "right")
    ratios, origins = [], set()
    for row in stored["measurements"]:
        measured, origin = row, "stored"
        if live:
            path = find_tflite(args.tflite_dir, row["file"])
            if path is not None:
                measured, origin = measure(path, row.get("dequantized", False)), "measured now"
        origins.add(origin)
        total = measured["total"]
        estimate = ours(row["model"], row["precision"], quantized=False)
        ratios.append(estimate / total)
        cells = [row["model"], row["precision"], f"{total:,}", f"{estimate:,}", f"{estimate / total:.3f}"]
        if row["precision"] == "int8":
            quantized = ours(row["model"], "int8", quantized=True)
            ratios.append(quantized / total)
            cells += [f"{quantized:,}", f"{quantized / total:.3f}"]
        else:
            cells += ["", ""]
        table.add_row(*cells)
    console.print(table)
    console.print(f"measured ({' and '.join(sorted(origins))}): head + tail bytes after AllocateTensors. "
                  f"Models from {stored['models_from']}; measured with {stored['measured_with']}. "
                  "ours, QDQ: the model quantized by edgefit quantize.", style="dim")
    inside = sum(LOW <= r <= HIGH for r in ratios)
    console.print(f"{inside} of {len(ratios)} estimates within {LOW:.2f}-{HIGH:.2f}x of the measured arena "
                  f"(lowest {min(ratios):.3f}, highest {max(ratios):.3f})")
    return 0 if inside == len(ratios) else 1


if __name__ == "__main__":
    sys.exit(main())
