"""Fidelity: how closely an optimised model reproduces the original, measured by running both in onnxruntime.

Metrics, over every floating-point output of all samples (the candidate compared against the original):

* cosine similarity of the flattened outputs;
* SQNR in dB: 10 log10(sum(ref^2) / sum((ref - out)^2)), infinite when the outputs are identical;
* max absolute error;
* top-1 agreement: the share of samples whose argmax agrees, for classifier-shaped outputs ([N, classes]);
* accuracy before and after, when labels are given.

Inputs come from the user (an .npz with one array per input name and optional `labels`, or a folder of .npy
files) or are synthetic, and every result says which. Synthetic inputs are drawn from more than one plausible
distribution (see synthetic_distributions) because a model's real input range is unknown without data: the
metrics are measured per distribution and the headline figures are the WORST distribution's, so a claim made on
N(0, 1) inputs cannot hide what happens to raw [0, 1) pixel values.
"""

from __future__ import annotations

import dataclasses
import math
import re
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import ModelProto

from edgefit.errors import ConfigError, ModelError, PassError, ShapeError
from edgefit.guard import (DATA_BUDGET_BYTES, SYNTHETIC_BUDGET_BYTES, array_file_bytes, existing_kind, regular_file,
                           shown)

Feed = dict[str, np.ndarray]
Progress = Callable[[str, int, int], None]   # (what is running, done, total): every long step reports so

DEFAULT_BATCH = 32
SYNTHETIC_SAMPLES = 16
_LABEL_KEYS = ("labels", "label", "y")


@dataclass(frozen=True)
class SampleSet:
    """Model inputs split into ready-to-run batches, with labels when the user gave them."""

    feeds: tuple[Feed, ...]
    samples: int
    source: str                       # "user" or "synthetic"
    labels: np.ndarray | None = None
    # Synthetic samples: the name of the distribution each feed was drawn from (empty for the user's data).
    distributions: tuple[str, ...] = ()
    # The user's data: each input's shape per sample, batch axis included (what shapes_from_data binds).
    sample_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def by_distribution(self) -> dict[str, list[int]]:
        """Feed indices per distribution, in the order the distributions were drawn."""
        groups: dict[str, list[int]] = {}
        for index, name in enumerate(self.distributions):
            groups.setdefault(name, []).append(index)
        return groups


@dataclass(frozen=True)
class Fidelity:
    inputs: str                       # "user" or "synthetic"
    samples: int
    cosine: float
    sqnr_db: float                    # math.inf when the outputs are identical
    max_abs_error: float
    top1_agreement: float | None      # None: no classifier-shaped output
    accuracy_before: float | None     # None: no labels
    accuracy_after: float | None
    # Outputs that differ from the original's in a way cosine / SQNR / max abs error cannot measure, and are
    # left out of them: a changed shape (data-dependent ops such as NonZero), NaN or infinity where the original
    # has another value (or vice versa) or, for integer and bool outputs (ArgMax labels, masks, indices), any
    # changed value. NaN and infinities both outputs hold at the same places are equal and left out of the metrics.
    mismatched_outputs: int = 0
    labels_unused: str | None = None  # why the given labels gave no accuracy
    # Synthetic inputs from several distributions: each one's own figures, in the order drawn. The metrics above
    # are then those of the worst of them (lowest cosine, then lowest SQNR), named by `judged_on`; `samples`
    # counts all of them.
    distributions: tuple[tuple[str, "Fidelity"], ...] = ()
    judged_on: str | None = None

    @property
    def identical(self) -> bool:
        return self.sqnr_db == math.inf and not self.mismatched_outputs

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "inputs": self.inputs, "samples": self.samples, "cosine": self.cosine,
            # JSON has no infinity: identical outputs are reported as null with identical: true.
            # -inf (an all-zero original output against a nonzero one) is not "identical" either.
            "sqnr_db": None if math.isinf(self.sqnr_db) else self.sqnr_db,
            "identical": self.identical,
            "max_abs_error": self.max_abs_error, "top1_agreement": self.top1_agreement,
        }
        if self.mismatched_outputs:
            data["mismatched_outputs"] = self.mismatched_outputs
        if self.accuracy_before is not None:
            data["accuracy"] = {"before": self.accuracy_before, "after": self.accuracy_after}
        if self.labels_unused:
            data["labels_unused"] = self.labels_unused
        if self.distributions:
            data["judged_on"] = self.judged_on
            data["distributions"] = [{"name": name, **{k: v for k, v in part.to_dict().items() if k != "inputs"}}
                                     for name, part in self.distributions]
        return data


# ---- input data --------------------------------------------------------------------------------------

def _model_inputs(model: ModelProto) -> list[onnx.ValueInfoProto]:
    from edgefit.shapes import real_inputs

    return real_inputs(model.graph)


def load_samples(path: str | Path, model: ModelProto, *, batch_size: int = DEFAULT_BATCH,
                 limit: int | None = None) -> SampleSet:
    """Read an .npz (one array per input name, optional `labels`) or a folder of .npy files.

    A folder holds either `<input name>.npy` files (stacked samples per input) or, for a one-input model, any
    .npy files whose samples are concatenated in file-name order; `labels.npy` holds labels. Arrays stack
    samples along axis 0 (a batch axis the model has), or hold one whole model input per entry (rank + 1).
    Arrays are never unpickled; values must be finite and convert to the input's type without loss.
    """
    path = Path(path)
    inputs = _model_inputs(model)
    kind = existing_kind(path, "data file", ConfigError)
    if kind == "missing":
        raise ConfigError(f"data file not found: {shown(path)}")
    if kind == "dir":
        arrays = _read_npy_folder(path, [i.name for i in inputs])
    elif path.suffix.lower() == ".npz":
        array_file_bytes(path, ConfigError)
        try:
            loaded = np.load(path, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise ConfigError(f"{shown(path)} holds one .npy array, not an .npz archive of arrays named after "
                                  f"the model's inputs (write it with numpy.savez)")
            with loaded as data:
                arrays = {key: data[key] for key in data.files}
        except _UNREADABLE as error:
            raise ConfigError(f"cannot read {shown(path)}: {_reason(error)}") from None
    else:
        raise ConfigError(f"{shown(path)} is neither an .npz file nor a folder of .npy files")
    labels = next((arrays.pop(k) for k in _LABEL_KEYS if k in arrays and k not in {i.name for i in inputs}), None)
    names = [i.name for i in inputs]
    if len(names) == 1 and names[0] not in arrays and len(arrays) == 1:
        arrays = {names[0]: next(iter(arrays.values()))}
    missing = [n for n in names if n not in arrays]
    if missing:
        raise ConfigError(f"{path} has no array for input(s) {missing}; it holds {sorted(arrays)}")
    per_input = {i.name: _as_samples(arrays[i.name], i, path) for i in inputs}
    counts = {name: len(samples) for name, samples in per_input.items()}
    if len(set(counts.values())) > 1:
        raise ConfigError(f"{path}: inputs hold different numbers of samples: {counts}")
    total = next(iter(counts.values()), 0)
    if names and not total:
        raise ConfigError(f"{path}: no samples: the array for {names[0]!r} has shape "
                          f"{list(np.shape(arrays[names[0]]))}")
    # A model with a fixed batch of B takes B rows per sample, and its class scores have B rows: labels may be
    # given per sample or per row.
    rows = [int(s.shape[0]) if s.ndim else 1 for s in per_input[names[0]]] if names else []
    per_row = False
    if labels is not None:
        labels = _class_labels(labels, total, path)
        per_row = len(labels) == sum(rows) != total
        if len(labels) != total and not per_row:
            in_rows = f" ({sum(rows)} rows)" if sum(rows) != total else ""
            raise ConfigError(f"{path}: {len(labels)} labels for {total} samples{in_rows}; give one label per "
                              "sample")
    if limit is not None:
        total = min(total, limit)
        labels = None if labels is None else labels[:sum(rows[:total]) if per_row else total]
    feeds = _batches(per_input, inputs, total, batch_size)
    shapes = {name: tuple(int(d) for d in np.shape(samples[0])) for name, samples in per_input.items() if samples}
    return SampleSet(tuple(feeds), total, "user", labels, sample_shapes=shapes)


def shapes_from_data(model: ModelProto, input_shapes: dict[str, list[int]] | None, dims: dict[str, int] | None, *,
                     calibration: SampleSet | None = None,
                     evaluation: SampleSet | None = None) -> dict[str, list[int]] | None:
    """The input shapes a run uses: the user's, with what they leave open bound by the calibration arrays (else
    the evaluation arrays; see _bound_by). Either set contradicting an explicit --input-shape / --dim is a
    ShapeError, so both are checked; calibration and evaluation data may differ in open dimensions (a model with
    free height and width runs at both), and the calibration data then give the shapes."""
    shapes = input_shapes
    for data, option in ((evaluation, "--eval"), (calibration, "--calib")):
        if data is not None:
            shapes = _bound_by(model, data, input_shapes, dims, option)
    return shapes


def _bound_by(model: ModelProto, data: SampleSet, input_shapes: dict[str, list[int]] | None,
              dims: dict[str, int] | None, option: str) -> dict[str, list[int]] | None:
    """Input shapes bound by the user's data (`option` names where it came from: --calib, --eval): each input
    takes its samples' shape, so dimensions the model leaves open (symbolic, unnamed, Paddle's -1) need no
    --input-shape. An explicit --input-shape is kept and a --dim applies where the data agree; where either
    contradicts the data it is a ShapeError naming both. A free leading (batch) axis is the one axis the user may
    set otherwise: samples are batched along it at run time anyway."""
    from edgefit.shapes import declared_info

    if not data.sample_shapes:
        return input_shapes
    inputs = _model_inputs(model)
    pinned = dict(input_shapes or {})
    if "" in pinned and len(inputs) == 1:   # --input-shape without NAME=
        pinned.setdefault(inputs[0].name, pinned.pop(""))
    dims = dims or {}
    bound: dict[str, list[int]] = {**pinned}
    for value in inputs:
        sampled = list(data.sample_shapes[value.name])
        info = declared_info(value)
        declared = list(info.dims) if info is not None and info.dims is not None else [None] * len(sampled)
        free_batch = bool(declared) and not (type(declared[0]) is int and declared[0] >= 0)
        shown = "x".join(map(str, sampled)) or "a scalar"
        given = pinned.get(value.name)
        if given is not None:
            differs = [axis for axis, (a, b) in enumerate(zip(given, sampled)) if a != b and not (axis == 0 and
                                                                                                free_batch)]
            if len(given) != len(sampled) or differs:
                raise ShapeError(f"--input-shape {value.name}={'x'.join(map(str, given))} contradicts the {option} "
                                 f"data, whose samples of {value.name!r} have shape {shown}; drop one or make them "
                                 f"agree")
            continue
        shape = []
        for axis, (dim, size) in enumerate(zip(declared, sampled)):
            if isinstance(dim, str) and dim in dims:
                if dims[dim] != size and not (axis == 0 and free_batch):
                    raise ShapeError(f"--dim {dim}={dims[dim]} contradicts the {option} data: axis {axis} of "
                                     f"{value.name!r} ({dim}) is {size} in its samples (shape {shown}); drop one "
                                     f"or make them agree")
                size = dims[dim]
            shape.append(size)
        bound[value.name] = shape
    return bound


# What numpy raises for a file that is not (or no longer) a readable .npy / .npz: truncated, corrupt, a folder,
# pickled objects (refused: allow_pickle is never set on user data).
_UNREADABLE = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def _reason(error: Exception) -> str:
    text = str(error).strip().splitlines()
    first = text[0] if text else type(error).__name__
    if isinstance(error, ValueError) and "Object arrays" in first:
        return "it holds an array of Python objects, which edgefit never unpickles; save plain numeric arrays"
    if isinstance(error, ValueError) and "pickled" in first:
        return "not a NumPy array file (edgefit never unpickles data)"
    return first


def _class_labels(labels: np.ndarray, samples: int, path: Path) -> np.ndarray:
    """Class indices: [N] or [N, 1] indices, or [N, classes] one-hot rows / scores (argmax)."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] > 1:
        labels = np.argmax(labels, axis=1)
    elif labels.ndim > 1 and labels.size == labels.shape[0] or labels.ndim == 0:
        labels = labels.reshape(-1)
    if labels.ndim != 1:
        raise ConfigError(f"{path}: labels have shape {list(labels.shape)}; expected [{samples}] class indices "
                          f"or [{samples}, classes] one-hot rows")
    if labels.dtype.kind == "f" and np.all(np.isfinite(labels)) and np.all(labels == np.round(labels)):
        labels = labels.astype(np.int64)
    if labels.dtype.kind not in "biu":
        raise ConfigError(f"{path}: labels must be integer class indices, got {labels.dtype} values")
    return labels


def _read_npy_folder(folder: Path, names: list[str]) -> dict[str, np.ndarray]:
    files = sorted(f for f in folder.glob("*.npy") if f.is_file())
    if not files:
        raise ConfigError(f"{shown(folder)} holds no .npy files")
    by_stem = {f.stem: f for f in files}
    total = sum(array_file_bytes(regular_file(f, "data file", ConfigError), ConfigError) for f in files)
    if total > DATA_BUDGET_BYTES:
        raise ConfigError(f"{shown(folder)} holds {total:,} bytes of arrays, more than the {DATA_BUDGET_BYTES:,} "
                          f"edgefit loads; use fewer samples")

    def read(file: Path) -> np.ndarray:
        try:
            return np.load(file, allow_pickle=False)
        except _UNREADABLE as error:
            raise ConfigError(f"cannot read {file}: {_reason(error)}") from None

    if any(n in by_stem for n in names):
        return {stem: read(f) for stem, f in by_stem.items()}
    if len(names) != 1:
        raise ConfigError(f"{folder}: name the files after the model's inputs {names} (e.g. {names[0]}.npy)")
    labels = [f for f in files if f.stem in _LABEL_KEYS]
    data = [read(f) for f in files if f not in labels]
    if not data:
        raise ConfigError(f"{folder} holds labels but no input samples")
    try:
        arrays = {names[0]: np.concatenate([d if d.ndim else d[None] for d in data], axis=0)}
    except ValueError:
        shapes = ", ".join(f"{f.name} {list(d.shape)}" for f, d in zip((f for f in files if f not in labels), data))
        raise ConfigError(f"{folder}: the .npy files cannot be stacked into one input, their shapes differ: "
                          f"{shapes}") from None
    if labels:
        arrays[labels[0].stem] = read(labels[0])
    return arrays


def _declared_dims(value: onnx.ValueInfoProto) -> list[int | None]:
    """Fixed sizes, None for a free axis (symbolic, unnamed, or -1 as Paddle writes a dynamic batch)."""
    return [d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else None
            for d in value.type.tensor_type.shape.dim]


def _as_samples(array: np.ndarray, value: onnx.ValueInfoProto, source: Path) -> list[np.ndarray]:
    """Split an array into per-sample arrays that each keep the model's batch axis (size 1 or whole)."""
    dims = _declared_dims(value)
    array = _converted(np.asarray(array), value, source)
    if array.ndim == len(dims) + 1:
        samples = [np.asarray(a) for a in array]
    elif array.ndim == len(dims) == 0:      # a scalar input given one value
        samples = [array]
    elif array.ndim == len(dims):
        step = dims[0] if dims and dims[0] else 1
        if len(array) % step:
            raise ConfigError(f"{source}: {len(array)} samples of {value.name!r} do not fill batches of {step}")
        samples = [array[k:k + step] for k in range(0, len(array), step)]
    else:
        raise ConfigError(f"{source}: array {value.name!r} has shape {list(array.shape)}; the model's input has "
                          f"rank {len(dims)} ({_shape_text(dims)})")
    if samples:
        sample_dims = samples[0].shape
        if len(sample_dims) != len(dims) or any(d is not None and d != s for d, s in zip(dims[1:], sample_dims[1:])):
            raise ConfigError(f"{source}: samples of {value.name!r} have shape {list(sample_dims)}, the model expects "
                              f"{_shape_text(dims)}")
    return samples


def _converted(array: np.ndarray, value: onnx.ValueInfoProto, source: Path) -> np.ndarray:
    """The array in the input's element type; refuses values the conversion would change or the model cannot
    use: NaN / infinity, complex numbers, text, fractions for an integer input, integers out of its range."""
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))
    where = f"{source}: array {value.name!r}"
    if array.dtype.kind not in "biuf":
        raise ConfigError(f"{where} holds {array.dtype} values; the model's input takes {dtype} numbers")
    if dtype.kind in "iu" and array.size:
        if array.dtype.kind == "f" and not np.all(np.isfinite(array) & (array == np.round(array))):
            raise ConfigError(f"{where} holds fractional, NaN or infinite values; the model's input takes "
                              f"{dtype} integers")
        low, high = np.iinfo(dtype).min, np.iinfo(dtype).max
        if array.min() < low or array.max() > high:
            raise ConfigError(f"{where} holds values outside {dtype}'s range [{low}, {high}]")
    with np.errstate(over="ignore"):
        converted = array.astype(dtype, copy=False)
    if converted.dtype.kind == "f":
        bad = converted.size - int(np.count_nonzero(np.isfinite(converted)))
        if bad:
            beyond = " (or beyond its range)" if array.dtype.itemsize > converted.dtype.itemsize else ""
            raise ConfigError(f"{where} holds {bad} NaN or infinite value(s){beyond}; calibration and fidelity "
                              f"need finite {dtype} inputs")
    return converted


def _shape_text(dims: list[int | None]) -> str:
    return "x".join("?" if d is None else str(d) for d in dims)


def _batches(per_input: dict[str, list[np.ndarray]], inputs: list[onnx.ValueInfoProto], total: int,
             batch_size: int) -> list[Feed]:
    """Group samples into batches when every input has a free batch axis, else one sample per run."""
    free_batch = all(_declared_dims(i)[:1] == [None] for i in inputs)
    step = max(batch_size, 1) if free_batch else 1
    if step == 1:   # each sample is a whole model input already (also a scalar input, which has no axis to join)
        return [{name: samples[k] for name, samples in per_input.items()} for k in range(total)]
    return [{name: np.concatenate(samples[k:min(k + step, total)], axis=0) for name, samples in per_input.items()}
            for k in range(0, total, step)]


# ---- synthetic inputs -----------------------------------------------------------------------------------

Draw = Callable[[np.random.Generator, list[int]], np.ndarray]


def _normal(rng: np.random.Generator, shape: list[int]) -> np.ndarray:
    return rng.standard_normal(shape)


def _uniform(low: float, high: float) -> Draw:
    return lambda rng, shape: rng.uniform(low, high, shape)


def _integers(low: int, high: int) -> Draw:
    """Whole values in [low, high], as 8-bit pixels are."""
    return lambda rng, shape: rng.integers(low, high + 1, shape).astype(np.float64)


def _photo_pixels(low: int, high: int) -> Draw:
    """Whole values clustered mid-range (a normal around the middle, clipped), as natural photographs' pixels are
    more often than the uniform noise of _integers."""
    middle, spread = (low + high) / 2, (high - low) / 4
    return lambda rng, shape: np.clip(np.round(rng.normal(middle, spread, shape)), low, high)


@dataclass(frozen=True)
class Distribution:
    """One synthetic input distribution: what ordinary float inputs get, and what inputs that take raw pixel
    values get (see _raw_pixel_inputs)."""

    name: str
    values: Draw
    pixels: Draw


# What ONNX's metadata convention Image.NominalPixelRange (onnx/onnx docs/MetadataProps.md, read at commit
# 1d12c02ee10a) names: the value range of every IMAGE input. The two NominalRange entries are 8-bit pixel values.
_NOMINAL_PIXEL_RANGES = {"nominalrange_0_255": (0, 255), "nominalrange_16_235": (16, 235),
                         "normalized_0_1": (0.0, 1.0), "normalized_1_1": (-1.0, 1.0)}
_IMAGE_NAME = re.compile(r"image|pixel|img", re.IGNORECASE)
# A first node that scales its input down by at least this much (x / 255, x * 0.0039, x / 127.5 - 1) or subtracts
# a mean at least this large (Caffe's [103.9, 116.8, 123.7]) is undoing 8-bit pixel values, so the input takes
# raw pixels. Normalising constants of inputs already in [0, 1) or N(0, 1) (means ~0.45, stds ~0.25) stay far
# below both.
_PIXEL_SCALE = 32.0
_PIXEL_MEAN = 16.0


def _metadata_pixel_range(model: ModelProto) -> tuple[str, tuple[float, float]] | None:
    for entry in model.metadata_props:
        if entry.key.lower() == "image.nominalpixelrange" and entry.value.strip().lower() in _NOMINAL_PIXEL_RANGES:
            return entry.value.strip(), _NOMINAL_PIXEL_RANGES[entry.value.strip().lower()]
    return None


def _is_image_like(value: onnx.ValueInfoProto, shape: list[int]) -> bool:
    """4-D with 1 or 3 channels (NCHW or NHWC), declared an IMAGE (ONNX type denotation), or named like one
    (image, pixel_values, img)."""
    channels = len(shape) == 4 and (shape[1] in (1, 3) or shape[3] in (1, 3))
    return channels or value.type.denotation == "IMAGE" or bool(_IMAGE_NAME.search(value.name))


def _constant_operand(model: ModelProto, name: str) -> np.ndarray | None:
    from onnx import numpy_helper

    for tensor in model.graph.initializer:
        if tensor.name == name and tensor.data_location != onnx.TensorProto.EXTERNAL and math.prod(tensor.dims) <= 64:
            return numpy_helper.to_array(tensor).astype(np.float64)
    for node in model.graph.node:
        if node.op_type == "Constant" and list(node.output) == [name]:
            value = next((a for a in node.attribute if a.name == "value"), None)
            if value is not None and value.t.data_location != onnx.TensorProto.EXTERNAL and math.prod(value.t.dims) <= 64:
                return numpy_helper.to_array(value.t).astype(np.float64)
    return None


def _rescales_pixels(model: ModelProto, name: str) -> bool:
    """Does a node reading input `name` undo 8-bit pixel values (see _PIXEL_SCALE)?"""
    for node in model.graph.node:
        if node.op_type not in ("Div", "Mul", "Sub") or name not in node.input[:2] or len(node.input) != 2:
            continue
        first = node.input[0] == name
        constant = _constant_operand(model, node.input[1] if first else node.input[0])
        if constant is None or not constant.size or not np.all(np.isfinite(constant)):
            continue
        magnitude = np.abs(constant)
        if (node.op_type == "Div" and first and magnitude.min() >= _PIXEL_SCALE
                or node.op_type == "Mul" and 0 < magnitude.max() <= 1 / _PIXEL_SCALE
                or node.op_type == "Sub" and first and constant.mean() >= _PIXEL_MEAN):
            return True
    return False


def synthetic_distributions(model: ModelProto, shapes: dict[str, list[int]]) -> tuple[tuple[Distribution, ...],
                                                                                        set[str]]:
    """The distributions synthetic inputs are drawn from, and the inputs that take raw pixel values.

    Ordinary float inputs: N(0, 1) and uniform [0, 1) (raw pixel values scaled to [0, 1), the other common
    convention), plus the range the model's Image.NominalPixelRange metadata gives when it is another one.
    Inputs that take raw 8-bit pixels -- image-like (4-D with 1 or 3 channels, an IMAGE denotation, or named like
    an image) AND integer-typed, scaled down by their first node (x / 255, x - mean), or declared so by
    Image.NominalPixelRange -- get whole values in [0, 255]: uniform, then clustered as in photographs.
    Image-like float inputs without such evidence are NOT given [0, 255]: calibrating a model that expects
    [0, 1) on 255-times larger values leaves one int8 step per two units, which no real input then resolves.
    """
    metadata = _metadata_pixel_range(model)
    pixel_range = metadata[1] if metadata and metadata[0].lower().startswith("nominalrange") else (0, 255)
    pixel_inputs = set()
    floats = []
    for value in _model_inputs(model):
        dtype = _input_dtype(value)
        image = _is_image_like(value, shapes[value.name])
        if image and (dtype.kind in "iu" or _rescales_pixels(model, value.name)
                      or (metadata is not None and metadata[0].lower().startswith("nominalrange"))):
            pixel_inputs.add(value.name)
        elif dtype.kind == "f":
            floats.append(value.name)
    low, high = int(pixel_range[0]), int(pixel_range[1])
    uniform_pixels, photo_pixels = _integers(low, high), _photo_pixels(low, high)
    if not floats:   # every input takes pixels (or is an integer / bool input, which has its own values)
        return (Distribution(f"pixels uniform [{low}, {high}]", _normal, uniform_pixels),
                Distribution(f"pixels photo-like [{low}, {high}]", _normal, photo_pixels)), pixel_inputs
    suffix = f" (pixel inputs {', '.join(sorted(pixel_inputs))}: [{low}, {high}])" if pixel_inputs else ""
    chosen = [Distribution("N(0,1)" + suffix, _normal, uniform_pixels),
              Distribution("uniform [0,1)" + suffix, _uniform(0.0, 1.0), photo_pixels)]
    if metadata is not None and not metadata[0].lower().startswith("nominalrange") and metadata[1] != (0.0, 1.0):
        span = metadata[1]
        chosen.append(Distribution(f"uniform [{span[0]:g},{span[1]:g}) ({metadata[0]} metadata)" + suffix,
                                   _uniform(*span), uniform_pixels))
    return tuple(chosen), pixel_inputs


def _input_dtype(value: onnx.ValueInfoProto) -> np.dtype:
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))
    except (KeyError, TypeError, ValueError):
        raise ModelError(f"input {value.name!r} has element type {value.type.tensor_type.elem_type}, which "
                         f"edgefit cannot make samples of") from None


def synthetic_samples(model: ModelProto, count: int = SYNTHETIC_SAMPLES, *,
                      input_shapes: dict[str, list[int]] | None = None, dims: dict[str, int] | None = None,
                      seed: int = 0, assume_dims: int | None = None, output_bytes: int = 0,
                      input_values: dict[str, list[float]] | None = None) -> SampleSet:
    """Seeded random inputs at the resolved input shapes, `count` in all, split evenly across the
    synthetic_distributions (in order; with fewer samples than distributions, the first ones). Integer inputs
    that are not pixels (token ids, indices) and bool inputs are zeros, a value every such input accepts.
    An input with a given value (`input_values`, --input-value: a sample rate) holds that value in every sample:
    the analysis counted the branch that value takes, so fidelity must run that branch too.

    At most `count` samples, fewer when they would not fit guard.SYNTHETIC_BUDGET_BYTES together with the outputs
    they make (`output_bytes` per sample, kept for the original and the candidate model); a ShapeError when not
    even one sample's inputs fit (the shapes are what the user bound, e.g. a batch of a million)."""
    from edgefit.shapes import input_value_arrays, resolve_shapes

    shapes = resolve_shapes(model, input_shapes, dims, assume_dims=assume_dims, input_values=input_values).inputs
    given, _ = input_value_arrays(model.graph, input_values or {}, input_shapes or {})
    inputs = _model_inputs(model)
    dtypes = {value.name: _input_dtype(value) for value in inputs}
    sample_bytes = sum(math.prod(shapes[v.name]) * dtypes[v.name].itemsize for v in inputs)
    if sample_bytes > SYNTHETIC_BUDGET_BYTES:
        given = ", ".join(f"{name}={'x'.join(map(str, shape))}" for name, shape in shapes.items())
        raise ShapeError(f"one synthetic sample at these input shapes ({given}) takes {sample_bytes:,} bytes, more "
                         f"than the {SYNTHETIC_BUDGET_BYTES:,} edgefit allocates for samples; bind smaller "
                         f"dimensions with --input-shape / --dim, or give real data with --eval / --calib")
    count = max(1, min(count, SYNTHETIC_BUDGET_BYTES // max(sample_bytes + 2 * output_bytes, 1)))
    distributions, pixel_inputs = synthetic_distributions(model, shapes)
    rng = np.random.default_rng(seed)
    feeds, names = [], []
    for k, distribution in enumerate(distributions):
        for _ in range(count // len(distributions) + (k < count % len(distributions))):
            feed = {}
            for value in inputs:
                dtype, shape = dtypes[value.name], shapes[value.name]
                if value.name in given:
                    feed[value.name] = given[value.name].copy()
                elif value.name in pixel_inputs:
                    pixels = distribution.pixels(rng, shape)
                    if dtype.kind in "iu":   # an int8 image input holds what of [0, 255] it can
                        pixels = np.clip(pixels, np.iinfo(dtype).min, np.iinfo(dtype).max)
                    feed[value.name] = pixels.astype(dtype)
                elif np.issubdtype(dtype, np.floating):
                    feed[value.name] = distribution.values(rng, shape).astype(dtype)
                else:
                    feed[value.name] = np.zeros(shape, dtype=dtype)
            feeds.append(feed)
            names.append(distribution.name)
    return SampleSet(tuple(feeds), count, "synthetic", distributions=tuple(names))


# ---- running and comparing ---------------------------------------------------------------------------

def feed_samples(feed: Feed) -> int:
    """Samples in one feed: the length of its first input's batch axis (1 for a scalar input or no input)."""
    first = next(iter(feed.values()), None)
    return int(np.shape(first)[0]) if first is not None and np.ndim(first) else 1


_ORT_SOURCE_LOCATION = re.compile(r"\S+\.(?:h|cc|cpp):\d+ [^(]*\([^)]*\) ")


def runtime_reason(error: Exception) -> str:
    """onnxruntime's message in one line, without its C++ source location."""
    lines = str(error).strip().splitlines()
    return _ORT_SOURCE_LOCATION.sub("", lines[0]) if lines else type(error).__name__


def run_model(model: ModelProto, samples: SampleSet, progress: Progress | None = None, *,
              what: str = "the model", label: str = "running") -> list[list[np.ndarray]]:
    """Outputs per batch (in output order). An onnxruntime failure is a PassError naming `what` failed;
    `progress` hears (label, samples done, samples total)."""
    from edgefit.runtime import session as make_session

    # Optimised like a deployment: onnxruntime then runs QDQ models with its integer kernels (exact ones even on
    # x86 CPUs whose fast kernel saturates: see runtime.session).
    try:
        session = make_session(model, optimize=True)
    except Exception as error:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise PassError(f"onnxruntime cannot load {what}, so fidelity cannot be measured: "
                        f"{runtime_reason(error)}") from None
    results, done = [], 0
    for feed in samples.feeds:
        try:
            results.append(session.run(None, feed))
        except Exception as error:  # noqa: BLE001 - see above
            raise PassError(f"onnxruntime cannot run {what} on the fidelity inputs: {runtime_reason(error)}") from None
        done += feed_samples(feed)
        if progress:
            progress(label, min(done, samples.samples), samples.samples)
    return results


def compare(reference: ModelProto, candidate: ModelProto, samples: SampleSet,
            progress: Progress | None = None, reference_outputs: list[list[np.ndarray]] | None = None, *,
            candidate_name: str = "the optimised model", label: str = "fidelity") -> Fidelity:
    """Run both models on the same samples and measure how far the candidate's outputs are from the reference's.

    `reference_outputs` (from run_model) saves re-running the reference when several candidates are compared.
    """
    total_steps = samples.samples * (1 if reference_outputs is not None else 2)

    def step(offset: int) -> Progress | None:
        return None if progress is None else (lambda _, done, _total: progress(label, offset + done, total_steps))

    ref = (reference_outputs if reference_outputs is not None
           else run_model(reference, samples, step(0), what="the original model"))
    out = run_model(candidate, samples, step(total_steps - samples.samples), what=candidate_name)
    return measure(ref, out, samples, classifier_output(reference, samples))


def measure(reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]], samples: SampleSet,
            classifier: int | None) -> Fidelity:
    """Metrics of the candidate's outputs against the reference's; `classifier` is the index of the output
    whose argmax is the predicted class (None: top-1 and accuracy are not reported).

    Synthetic samples from several distributions are measured per distribution, and the worst one's metrics
    (lowest cosine, then lowest SQNR) are the result's: a fidelity floor is then judged on the worst."""
    groups = samples.by_distribution()
    if len(groups) > 1:
        parts = tuple((name, _measure([reference[i] for i in indices], [candidate[i] for i in indices],
                                      SampleSet(tuple(samples.feeds[i] for i in indices),
                                                sum(feed_samples(samples.feeds[i]) for i in indices),
                                                samples.source), classifier))
                      for name, indices in groups.items())
        worst_name, worst = min(parts, key=lambda part: (part[1].cosine, part[1].sqnr_db))
        return dataclasses.replace(worst, samples=samples.samples, distributions=parts, judged_on=worst_name)
    return _measure(reference, candidate, samples, classifier)


def _measure(reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]], samples: SampleSet,
             classifier: int | None) -> Fidelity:
    # Sums are accumulated output by output rather than over one concatenation of everything: float64 copies of
    # all outputs of all samples (a [2, 1000000] output, 16 samples) would take gigabytes.
    mismatched: set[int] = set()
    noise = signal = candidate_power = dot = max_abs = 0.0
    for ref_batch, out_batch in zip(reference, candidate):
        for k, (r, o) in enumerate(zip(ref_batch, out_batch)):
            if np.shape(r) != np.shape(o):
                mismatched.add(k)
            elif np.issubdtype(np.asarray(r).dtype, np.floating):
                r, o = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (r, o))
                finite = np.isfinite(r) & np.isfinite(o)
                if not finite.all():   # NaN / inf: the same ones in both, or the output is mismatched
                    if not np.array_equal(r[~finite], o[~finite], equal_nan=True):
                        mismatched.add(k)
                        continue
                    r, o = r[finite], o[finite]
                difference = r - o
                noise += float(difference @ difference)
                signal += float(r @ r)
                candidate_power += float(o @ o)
                dot += float(r @ o)
                if difference.size:
                    max_abs = max(max_abs, float(np.max(np.abs(difference))))
                del difference
            elif not np.array_equal(np.asarray(r), np.asarray(o)):   # labels, indices, masks: equal or not
                mismatched.add(k)
    norms = math.sqrt(signal) * math.sqrt(candidate_power)
    if noise == 0:
        cosine = 1.0
    elif not norms:
        cosine = 0.0
    else:
        cosine = float(np.clip(dot / norms, -1.0, 1.0))
    sqnr = math.inf if noise == 0 else (10 * math.log10(signal / noise) if signal else -math.inf)
    index = classifier
    agreement = accuracy_before = accuracy_after = None
    # Labels the user gave but accuracy cannot use are said so, not dropped silently.
    unused = None if samples.labels is None else (
        "no output looks like class scores ([batch, classes] from Softmax/LogSoftmax/Sigmoid, or named like "
        "logits/probs/classes)")
    if index is not None and index in mismatched:
        unused = unused and "the class-score output changed shape"
    elif index is not None:
        ref_top = np.concatenate([np.argmax(b[index], axis=-1).reshape(-1) for b in reference])
        out_top = np.concatenate([np.argmax(b[index], axis=-1).reshape(-1) for b in candidate])
        agreement = float(np.mean(ref_top == out_top))
        if samples.labels is not None and len(samples.labels) == len(ref_top):
            accuracy_before = float(np.mean(ref_top == samples.labels))
            accuracy_after = float(np.mean(out_top == samples.labels))
            unused = None
        elif unused:
            unused = f"{len(samples.labels)} labels for {len(ref_top)} rows of class scores"
    return Fidelity(samples.source, samples.samples, cosine, sqnr, max_abs, agreement, accuracy_before,
                    accuracy_after, len(mismatched), unused)


_CLASSIFIER_HEADS = {"Softmax", "LogSoftmax", "Sigmoid"}
_CLASSIFIER_WORDS = ("logit", "prob", "class", "score", "pred")


def classifier_output(model: ModelProto, samples: SampleSet) -> int | None:
    """Index of the output holding class scores: a 2-D float output that comes from Softmax/LogSoftmax/Sigmoid,
    is named like logits/probs/classes, or is the only 2-D output when labels are given. A 2-D output alone
    is not enough: an autoencoder's [1, 640] reconstruction is not a class score."""
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    candidates = []
    for k, output in enumerate(model.graph.output):
        ttype = output.type.tensor_type
        if len(ttype.shape.dim) != 2 or ttype.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16,
                                                                onnx.TensorProto.DOUBLE):
            continue
        candidates.append(k)
        if producers.get(output.name) in _CLASSIFIER_HEADS or any(w in output.name.lower() for w in _CLASSIFIER_WORDS):
            return k
    return candidates[0] if samples.labels is not None and len(candidates) == 1 else None


def select_samples(model: ModelProto, *, eval_path: str | Path | None = None, calib: SampleSet | None = None,
                   input_shapes: dict[str, list[int]] | None = None, dims: dict[str, int] | None = None,
                   limit: int | None = None, assume_dims: int | None = None, output_bytes: int = 0,
                   evaluation: SampleSet | None = None, input_values: dict[str, list[float]] | None = None,
                   ) -> SampleSet:
    """The inputs fidelity runs on: the user's eval data (`evaluation` when the caller read it already, else
    read from `eval_path`), else the calibration data, else synthetic (see synthetic_samples for `output_bytes`)."""
    if evaluation is not None:
        return evaluation
    if eval_path is not None:
        return load_samples(eval_path, model, limit=limit)
    if calib is not None:
        return calib
    return synthetic_samples(model, input_shapes=input_shapes, dims=dims, assume_dims=assume_dims,
                             output_bytes=output_bytes, input_values=input_values)

