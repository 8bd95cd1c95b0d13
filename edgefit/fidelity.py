"""Fidelity: how closely an optimised model reproduces the original, measured by running both in onnxruntime.

Metrics, over every floating-point output of all samples (the candidate compared against the original):

* cosine similarity of the flattened outputs;
* SQNR in dB: 10 log10(sum(ref^2) / sum((ref - out)^2)), infinite when the outputs are identical;
* max absolute error;
* top-1 agreement: the share of samples whose argmax agrees, for classifier-shaped outputs ([N, classes]);
* accuracy before and after, when labels are given.

Inputs come from the user (an .npz with one array per input name and optional `labels`, or a folder of .npy
files) or are synthetic (seeded standard normal), and every result says which.
"""

from __future__ import annotations

import math
import re
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
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
    return SampleSet(tuple(feeds), total, "user", labels)


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


def synthetic_samples(model: ModelProto, count: int = SYNTHETIC_SAMPLES, *,
                      input_shapes: dict[str, list[int]] | None = None, dims: dict[str, int] | None = None,
                      seed: int = 0, assume_dims: int | None = None, output_bytes: int = 0) -> SampleSet:
    """Seeded random inputs at the resolved input shapes: standard normal floats, zeros for other types.

    At most `count` samples, fewer when they would not fit guard.SYNTHETIC_BUDGET_BYTES together with the outputs
    they make (`output_bytes` per sample, kept for the original and the candidate model); a ShapeError when not
    even one sample's inputs fit (the shapes are what the user bound, e.g. a batch of a million)."""
    from edgefit.shapes import resolve_shapes

    shapes = resolve_shapes(model, input_shapes, dims, assume_dims=assume_dims).inputs
    inputs = _model_inputs(model)
    dtypes = {}
    for value in inputs:
        try:
            dtypes[value.name] = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))
        except (KeyError, TypeError, ValueError):
            raise ModelError(f"input {value.name!r} has element type {value.type.tensor_type.elem_type}, which "
                             f"edgefit cannot make samples of") from None
    sample_bytes = sum(math.prod(shapes[v.name]) * dtypes[v.name].itemsize for v in inputs)
    if sample_bytes > SYNTHETIC_BUDGET_BYTES:
        given = ", ".join(f"{name}={'x'.join(map(str, shape))}" for name, shape in shapes.items())
        raise ShapeError(f"one synthetic sample at these input shapes ({given}) takes {sample_bytes:,} bytes, more "
                         f"than the {SYNTHETIC_BUDGET_BYTES:,} edgefit allocates for samples; bind smaller "
                         f"dimensions with --input-shape / --dim, or give real data with --eval / --calib")
    count = max(1, min(count, SYNTHETIC_BUDGET_BYTES // max(sample_bytes + 2 * output_bytes, 1)))
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(count):
        feed = {}
        for value in inputs:
            dtype = dtypes[value.name]
            shape = shapes[value.name]
            feed[value.name] = (rng.standard_normal(shape).astype(dtype) if np.issubdtype(dtype, np.floating)
                                else np.zeros(shape, dtype=dtype))
        feeds.append(feed)
    return SampleSet(tuple(feeds), count, "synthetic")


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
    whose argmax is the predicted class (None: top-1 and accuracy are not reported)."""
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
                   limit: int | None = None, assume_dims: int | None = None, output_bytes: int = 0) -> SampleSet:
    """The inputs fidelity runs on: the user's eval data, else the calibration data, else synthetic (see
    synthetic_samples for `output_bytes`)."""
    if eval_path is not None:
        return load_samples(eval_path, model, limit=limit)
    if calib is not None:
        return calib
    return synthetic_samples(model, input_shapes=input_shapes, dims=dims, assume_dims=assume_dims,
                             output_bytes=output_bytes)

