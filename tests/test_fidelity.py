"""fidelity: metrics worked by hand, input data formats and their errors, synthetic inputs."""

import math

import numpy as np
import pytest
from helpers import model, weight
from onnx import helper

from edgefit.errors import ConfigError
from edgefit.fidelity import SampleSet, classifier_output, compare, load_samples, measure, synthetic_samples


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
