"""fidelity: metrics worked by hand, input data formats and their errors, synthetic inputs."""

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import model, strict_json, weight
from onnx import TensorProto, helper

from edgefit.cli import main
from edgefit.errors import ConfigError
from edgefit.fidelity import SampleSet, classifier_output, compare, load_samples, measure, synthetic_samples
from edgefit.report.json_format import dumps


def classifier(batch="N"):
    return model([helper.make_node("Gemm", ["x", "W"], ["logits"], transB=1)], [("x", [batch, 4])],
                 [("logits", [batch, 3])], [weight("W", 3, 4)])


def test_metrics_by_hand():
    reference = [[np.array([[3.0, 4.0]])]]
    candidate = [[np.array([[3.0, 3.0]])]]
    samples = SampleSet((), 1, "user", np.array([1]))
    result = measure(reference, candidate, samples, classifier=0)
    assert result.sqnr_db == pytest.approx(10 * math.log10(25 / 1))
    assert result.cosine == pytest.approx(21 / (5 * math.sqrt(18)))
    assert result.max_abs_error == 1.0
    assert result.top1_agreement == 0.0          # argmax 1 vs 0 (tie resolves to the first)
    assert (result.accuracy_before, result.accuracy_after) == (1.0, 0.0)


def test_identical_outputs_are_infinite_sqnr_and_json_safe():
    outputs = [[np.array([[1.0, 2.0]])]]
    result = measure(outputs, outputs, SampleSet((), 1, "synthetic"), classifier=None)
    assert math.isinf(result.sqnr_db) and result.cosine == 1.0
    data = result.to_dict()
    assert data["sqnr_db"] is None and data["identical"] is True and "accuracy" not in data


def test_classifier_output_needs_a_classifier_shape_and_sign():
    proto = classifier()
    assert classifier_output(proto, SampleSet((), 0, "synthetic")) == 0          # named logits
    autoencoder = model([helper.make_node("Relu", ["x"], ["output"])], [("x", [1, 640])], [("output", [1, 640])])
    assert classifier_output(autoencoder, SampleSet((), 0, "synthetic")) is None
    assert classifier_output(autoencoder, SampleSet((), 0, "user", np.zeros(1))) == 0   # labels say it is


def test_npz_with_labels_batches_a_free_batch_axis(tmp_path):
    path = tmp_path / "eval.npz"
    np.savez(path, x=np.ones((70, 4)), labels=np.arange(70) % 3)
    samples = load_samples(path, classifier())
    assert samples.samples == 70 and [len(f["x"]) for f in samples.feeds] == [32, 32, 6]
    assert samples.feeds[0]["x"].dtype == np.float32 and samples.source == "user"
    result = compare(classifier(), classifier(), samples)
    assert result.accuracy_before == result.accuracy_after and result.top1_agreement == 1.0


def test_fixed_batch_runs_one_sample_at_a_time_and_limit(tmp_path):
    path = tmp_path / "calib.npz"
    np.savez(path, anything=np.zeros((5, 4), np.float32))      # one input: the key need not match
    samples = load_samples(path, classifier(batch=1), limit=3)
    assert samples.samples == 3 and len(samples.feeds) == 3 and samples.feeds[0]["x"].shape == (1, 4)


def test_folder_of_npy_files(tmp_path):
    for k in range(3):
        np.save(tmp_path / f"sample_{k}.npy", np.full((1, 4), k, np.float32))
    np.save(tmp_path / "labels.npy", np.array([0, 1, 2]))
    samples = load_samples(tmp_path, classifier())
    assert samples.samples == 3 and list(samples.labels) == [0, 1, 2]
    assert samples.feeds[0]["x"][:, 0].tolist() == [0, 1, 2]


def test_data_errors_are_one_line_config_errors(tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.zeros((2, 5)))
    with pytest.raises(ConfigError, match=r"have shape \[1, 5\], the model expects \?x4"):
        load_samples(tmp_path / "bad.npz", classifier())
    two_inputs = model([helper.make_node("Add", ["a", "b"], ["y"])], [("a", [1]), ("b", [1])], [("y", [1])])
    np.savez(tmp_path / "one.npz", a=np.zeros((2, 1)))
    with pytest.raises(ConfigError, match=r"no array for input\(s\) \['b'\]"):
        load_samples(tmp_path / "one.npz", two_inputs)
    with pytest.raises(ConfigError, match="data file not found"):
        load_samples(tmp_path / "missing.npz", classifier())
    (tmp_path / "data.csv").write_text("1,2")
    with pytest.raises(ConfigError, match="neither an .npz"):
        load_samples(tmp_path / "data.csv", classifier())


def test_synthetic_samples_are_seeded_and_bind_dims():
    first = synthetic_samples(classifier(), 3, dims={"N": 2})
    again = synthetic_samples(classifier(), 3, dims={"N": 2})
    assert first.source == "synthetic" and first.samples == 3
    assert first.feeds[0]["x"].shape == (2, 4)
    np.testing.assert_array_equal(first.feeds[2]["x"], again.feeds[2]["x"])


def ids_model(elem=TensorProto.INT64):
    return model([helper.make_node("Gather", ["E", "ids"], ["e"])], [("ids", [1, 3], elem)], [("e", [1, 3, 2])],
                 [weight("E", 10, 2)])


class _Planted:
    """Unpickling this object would create a file: proof that data files are never unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_empty_arrays_are_refused_not_measured_as_identical(tmp_path):
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 4), np.float32), labels=np.zeros(0, np.int64))
    with pytest.raises(ConfigError, match=r"empty.npz: no samples: the array for 'x' has shape \[0, 4\]"):
        load_samples(tmp_path / "empty.npz", classifier())


@pytest.mark.parametrize("bad, count", [(np.nan, 1), (np.inf, 1), (-np.inf, 1)])
def test_nan_and_infinite_inputs_are_refused(tmp_path, bad, count):
    data = np.ones((6, 4), np.float32)
    data[2, 1] = bad
    np.savez(tmp_path / "d.npz", x=data)
    with pytest.raises(ConfigError, match=rf"array 'x' holds {count} NaN or infinite value\(s\)"):
        load_samples(tmp_path / "d.npz", classifier())


def test_float64_beyond_float32_range_is_refused(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.full((2, 4), 1e300))
    with pytest.raises(ConfigError, match=r"holds 8 NaN or infinite value\(s\) \(or beyond its range\)"):
        load_samples(tmp_path / "d.npz", classifier())


def test_labels_must_be_one_per_sample(tmp_path):
    x = np.ones((5, 4), np.float32)
    np.savez(tmp_path / "long.npz", x=x, labels=np.zeros(10, np.int64))
    with pytest.raises(ConfigError, match="10 labels for 5 samples; give one label per sample"):
        load_samples(tmp_path / "long.npz", classifier())
    np.savez(tmp_path / "ok.npz", x=x, labels=np.arange(5))
    assert load_samples(tmp_path / "ok.npz", classifier(), limit=3).labels.tolist() == [0, 1, 2]


def test_one_hot_labels_are_class_indices(tmp_path):
    x = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    indices = np.array([0, 2, 1, 1, 0, 2, 2, 0])
    np.savez(tmp_path / "hot.npz", x=x, labels=np.eye(3)[indices])
    np.savez(tmp_path / "column.npz", x=x, labels=indices[:, None].astype(np.float32))
    hot = load_samples(tmp_path / "hot.npz", classifier())
    assert hot.labels.tolist() == indices.tolist()
    assert load_samples(tmp_path / "column.npz", classifier()).labels.tolist() == indices.tolist()
    logits = x @ np.asarray(onnx.numpy_helper.to_array(classifier().graph.initializer[0])).T
    expected = float(np.mean(np.argmax(logits, axis=1) == indices))
    assert compare(classifier(), classifier(), hot).accuracy_before == pytest.approx(expected)


@pytest.mark.parametrize("labels, message", [
    (np.array(["cat"] * 4), "labels must be integer class indices, got <U3 values"),
    (np.array([0.5, 1, 2, 0]), "labels must be integer class indices, got float64 values"),
    (np.zeros((4, 2, 2)), r"labels have shape \[4, 2, 2\]"),
])
def test_labels_that_are_not_class_indices_are_refused(tmp_path, labels, message):
    np.savez(tmp_path / "d.npz", x=np.ones((4, 4), np.float32), labels=labels)
    with pytest.raises(ConfigError, match=message):
        load_samples(tmp_path / "d.npz", classifier())


def test_dtypes_convert_only_without_loss(tmp_path):
    np.savez(tmp_path / "frac.npz", ids=np.array([[1.5, 2, 3]]))
    with pytest.raises(ConfigError, match="array 'ids' holds fractional, NaN or infinite values; the model's input "
                                          "takes int64 integers"):
        load_samples(tmp_path / "frac.npz", ids_model())
    np.savez(tmp_path / "whole.npz", ids=np.array([[1.0, 2, 3]]))
    feed = load_samples(tmp_path / "whole.npz", ids_model()).feeds[0]["ids"]
    assert feed.dtype == np.int64 and feed.tolist() == [[1, 2, 3]]
    np.savez(tmp_path / "big.npz", ids=np.array([[1, 2, 2**40]]))
    with pytest.raises(ConfigError, match=r"values outside int32's range \[-2147483648, 2147483647\]"):
        load_samples(tmp_path / "big.npz", ids_model(TensorProto.INT32))
    np.savez(tmp_path / "complex.npz", x=np.ones((2, 4), np.complex64))
    with pytest.raises(ConfigError, match="holds complex64 values; the model's input takes float32 numbers"):
        load_samples(tmp_path / "complex.npz", classifier())
    np.savez(tmp_path / "text.npz", x=np.array([["a"] * 4]))
    with pytest.raises(ConfigError, match="holds <U1 values"):
        load_samples(tmp_path / "text.npz", classifier())
    image = np.arange(8, dtype=np.uint8).reshape(2, 4) * 30     # uint8 pixels into a float input: same values
    np.savez(tmp_path / "u8.npz", x=image)
    assert load_samples(tmp_path / "u8.npz", classifier()).feeds[0]["x"].tolist() == image.astype(float).tolist()


def test_pickled_data_is_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    objects = np.array([_Planted(marker), _Planted(marker)], dtype=object)
    np.savez(tmp_path / "objects.npz", x=objects)
    folder = tmp_path / "folder"
    folder.mkdir()
    np.save(folder / "x.npy", objects, allow_pickle=True)
    for path in (tmp_path / "objects.npz", folder):
        with pytest.raises(ConfigError, match="Python objects, which edgefit never unpickles") as error:
            load_samples(path, classifier())
        assert "\n" not in str(error.value)
    assert not marker.exists()


def test_corrupt_files_are_one_line_errors(tmp_path):
    np.savez(tmp_path / "good.npz", x=np.ones((40, 4), np.float32))
    (tmp_path / "truncated.npz").write_bytes((tmp_path / "good.npz").read_bytes()[:200])
    with pytest.raises(ConfigError, match="cannot read .*truncated.npz: File is not a zip file"):
        load_samples(tmp_path / "truncated.npz", classifier())
    folder = tmp_path / "folder"
    folder.mkdir()
    np.save(folder / "a.npy", np.ones((3, 4), np.float32))
    (folder / "b.npy").write_text("not an array")
    with pytest.raises(ConfigError, match=r"cannot read .*b.npy: not a NumPy array file"):
        load_samples(folder, classifier())
    (folder / "b.npy").unlink()
    np.save(folder / "b.npy", np.ones((3, 5), np.float32))
    with pytest.raises(ConfigError, match=r"shapes differ: a.npy \[3, 4\], b.npy \[3, 5\]"):
        load_samples(folder, classifier())


def test_scalar_input_takes_one_value_per_sample(tmp_path):
    scalar = model([helper.make_node("Mul", ["s", "c"], ["y"])], [("s", [])], [("y", [])],
                   [onnx.numpy_helper.from_array(np.array(2.0, np.float32), "c")])
    np.savez(tmp_path / "one.npz", s=np.float32(3))
    np.savez(tmp_path / "five.npz", s=np.arange(5, dtype=np.float32))
    assert load_samples(tmp_path / "one.npz", scalar).samples == 1
    five = load_samples(tmp_path / "five.npz", scalar)
    assert five.samples == 5 and [f["s"].tolist() for f in five.feeds] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert compare(scalar, scalar, five).identical


def test_nan_outputs_in_the_same_places_are_identical_and_json_safe():
    samples = SampleSet((), 1, "user")
    reference = [[np.array([[np.nan, 1.0, np.inf]])]]
    same = measure(reference, [[np.array([[np.nan, 1.0, np.inf]])]], samples, None)
    assert same.identical and same.cosine == 1.0 and same.max_abs_error == 0.0
    moved = measure(reference, [[np.array([[0.0, 1.0, np.inf]])]], samples, None)
    assert moved.mismatched_outputs == 1 and not moved.identical
    strict_json(dumps(moved.to_dict()))


def test_fixed_batch_of_two_takes_labels_per_row(tmp_path):
    x = np.random.default_rng(1).standard_normal((6, 4)).astype(np.float32)      # 3 samples of 2 rows
    logits = x @ np.asarray(onnx.numpy_helper.to_array(classifier().graph.initializer[0])).T
    truth = np.argmax(logits, axis=1)
    labels = truth.copy()
    labels[0] = (labels[0] + 1) % 3                                              # one of six rows wrong
    np.savez(tmp_path / "rows.npz", x=x, labels=labels)
    samples = load_samples(tmp_path / "rows.npz", classifier(batch=2))
    assert samples.samples == 3 and len(samples.labels) == 6
    assert compare(classifier(batch=2), classifier(batch=2), samples).accuracy_before == pytest.approx(5 / 6)
    assert load_samples(tmp_path / "rows.npz", classifier(batch=2), limit=2).labels.tolist() == labels[:4].tolist()
    np.savez(tmp_path / "odd.npz", x=x, labels=labels[:5])
    with pytest.raises(ConfigError, match=r"5 labels for 3 samples \(6 rows\); give one label per sample"):
        load_samples(tmp_path / "odd.npz", classifier(batch=2))


def test_labels_without_a_class_score_output_are_reported_unused(tmp_path, capsys):
    two_heads = model([helper.make_node("Gemm", ["x", "W"], ["a"], transB=1),
                       helper.make_node("Gemm", ["x", "V"], ["b"], transB=1)],
                      [("x", ["N", 4])], [("a", ["N", 3]), ("b", ["N", 3])],
                      [weight("W", 3, 4), weight("V", 3, 4, seed=2)])
    onnx.save(two_heads, tmp_path / "m.onnx")
    np.savez(tmp_path / "eval.npz", x=np.ones((5, 4), np.float32), labels=np.arange(5) % 3)
    assert main(["fuse", str(tmp_path / "m.onnx"), "--eval", str(tmp_path / "eval.npz"), "-o",
                 str(tmp_path / "out.onnx"), "--json"]) == 0
    fidelity = strict_json(capsys.readouterr().out)["fidelity"]
    assert "accuracy" not in fidelity
    assert fidelity["labels_unused"].startswith("no output looks like class scores ([batch, classes]")
    assert main(["fuse", str(tmp_path / "m.onnx"), "--eval", str(tmp_path / "eval.npz"), "-o",
                 str(tmp_path / "out.onnx")]) == 0
    assert "the data's labels give no accuracy: no output looks like class scores" in capsys.readouterr().out
