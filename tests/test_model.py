"""Loading and saving models (edgefit.model): unreadable and invalid files, external data safety, protobuf size
limits."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import assert_usage_error, build, const, good_model, rng_f32, save, vi
from onnx import TensorProto, helper

import edgefit
from edgefit import ModelError


F = TensorProto.FLOAT


def test_missing_file(tmp_path, capsys):
    assert_usage_error(capsys, tmp_path / "nope.onnx", mentions="not found")


def test_directory(tmp_path, capsys):
    assert_usage_error(capsys, tmp_path, mentions="directory")


def test_empty_file(tmp_path, capsys):
    (tmp_path / "e.onnx").write_bytes(b"")
    assert_usage_error(capsys, tmp_path / "e.onnx", mentions="empty")


def test_random_bytes(tmp_path, capsys):
    (tmp_path / "r.onnx").write_bytes(np.random.default_rng(1).bytes(4096))
    assert_usage_error(capsys, tmp_path / "r.onnx")


def test_text_file(tmp_path, capsys):
    (tmp_path / "t.onnx").write_text("this is not a model\n" * 50)
    assert_usage_error(capsys, tmp_path / "t.onnx")


def test_truncated_protobuf(tmp_path, capsys):
    data = good_model().SerializeToString()
    (tmp_path / "half.onnx").write_bytes(data[: len(data) // 2])
    assert_usage_error(capsys, tmp_path / "half.onnx")


def test_corrupt_bytes(tmp_path, capsys):
    data = bytearray(good_model().SerializeToString())
    for position in range(10, len(data), 37):   # scribble over the structure, keep the length
        data[position] = 0xFF
    (tmp_path / "c.onnx").write_bytes(bytes(data))
    assert_usage_error(capsys, tmp_path / "c.onnx")


def test_unreadable_file(tmp_path, capsys):
    path = save(good_model(), tmp_path)
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as a user who can read any file")
        assert_usage_error(capsys, path, mentions="cannot read")
    finally:
        path.chmod(0o644)


def test_cyclic_graph(tmp_path, capsys):
    nodes = [helper.make_node("Add", ["x", "b"], ["a"], name="n1"),
             helper.make_node("Relu", ["a"], ["b"], name="n2")]
    model = build(nodes, [vi("x", F, [1, 4])], [vi("b", F, [1, 4])])
    assert_usage_error(capsys, save(model, tmp_path), mentions="cycle")


def test_self_loop(tmp_path, capsys):
    model = build([helper.make_node("Add", ["x", "a"], ["a"], name="n1")], [vi("x", F, [1, 4])], [vi("a", F, [1, 4])])
    assert_usage_error(capsys, save(model, tmp_path), mentions="cycle")


def test_unknown_operator_in_default_domain(tmp_path, capsys):
    model = build([helper.make_node("FrobnicateAll", ["x"], ["y"])], [vi("x", F, [1, 4])], [vi("y", F, [1, 4])])
    assert_usage_error(capsys, save(model, tmp_path), mentions="FrobnicateAll")


def test_input_never_produced(tmp_path, capsys):
    model = build([helper.make_node("Add", ["x", "ghost"], ["y"])], [vi("x", F, [1, 4])], [vi("y", F, [1, 4])])
    assert_usage_error(capsys, save(model, tmp_path), mentions="ghost")


def test_wrong_attribute(tmp_path, capsys):
    model = good_model()
    model.graph.node[1].attribute.append(helper.make_attribute("alpha_typo", 0.5))
    assert_usage_error(capsys, save(model, tmp_path), mentions="alpha_typo")


def test_output_never_produced(tmp_path, capsys):
    model = good_model()
    model.graph.output.append(vi("missing_out", F, [1]))
    assert_usage_error(capsys, save(model, tmp_path), mentions="missing_out")


def test_two_producers_of_one_tensor(tmp_path, capsys):
    nodes = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Neg", ["x"], ["y"])]
    model = build(nodes, [vi("x", F, [1, 4])], [vi("y", F, [1, 4])])
    assert_usage_error(capsys, save(model, tmp_path), mentions="'y'")


def test_no_graph(tmp_path, capsys):
    model = onnx.ModelProto(ir_version=8)
    model.opset_import.add().version = 17
    assert_usage_error(capsys, save(model, tmp_path), mentions="not an ONNX model")


def test_api_raises_model_error(tmp_path):
    (tmp_path / "r.onnx").write_bytes(b"\x00\x01\x02garbage")
    with pytest.raises(edgefit.ModelError):
        edgefit.analyze(tmp_path / "r.onnx")


@pytest.mark.parametrize("location", ["../x.bin", "ABSOLUTE"])
def test_external_data_outside_folder_through_cli(tmp_path, capsys, location):
    folder = tmp_path / "m"
    folder.mkdir()
    path = folder / "m.onnx"
    onnx.save_model(good_model(), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="w.bin", size_threshold=0)
    (folder / "w.bin").rename(tmp_path / "x.bin")
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = str(tmp_path / "x.bin") if location == "ABSOLUTE" else location
    onnx.save_model(model, str(path))
    assert_usage_error(capsys, path, mentions="outside")


def test_missing_external_data_through_cli(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save_model(good_model(), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="w.bin", size_threshold=0)
    (tmp_path / "w.bin").unlink()
    assert_usage_error(capsys, path, mentions="missing")


def _mlp():
    inits = [const("W1", rng_f32(64, 64)), const("b1", np.zeros(64, np.float32)), const("W2", rng_f32(64, 10))]
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], name="fc1"),
             helper.make_node("Relu", ["h"], ["a"], name="relu"),
             helper.make_node("MatMul", ["a", "W2"], ["y"], name="fc2")]
    return build(nodes, [vi("x", F, [1, 64])], [vi("y", F, [1, 10])], inits)


def _save_external(model, folder: Path, location="weights.bin") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "m.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=location,
                    size_threshold=1024)
    return path


def _point_external_at(path: Path, location: str) -> None:
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save_model(model, str(path))


def test_external_data_gives_the_same_numbers(tmp_path):
    inline = edgefit.analyze(save(_mlp(), tmp_path))
    path = _save_external(_mlp(), tmp_path / "ext")
    assert (tmp_path / "ext" / "weights.bin").stat().st_size > 64 * 64 * 4 - 1
    external = edgefit.analyze(path)
    # params 64*64 + 64 + 64*10 = 4800, bytes 19200; MACs 64*64 + 64*10 = 4736.
    assert inline.params == external.params == 4800
    assert inline.weight_bytes == external.weight_bytes == 19200
    assert inline.macs == external.macs == 4736
    assert inline.peak_activation_bytes == external.peak_activation_bytes
    assert inline.flops == external.flops


@pytest.mark.parametrize("where", ["parent", "absolute"])
def test_external_data_escaping_the_folder_is_refused(tmp_path, where):
    path = _save_external(_mlp(), tmp_path / "ext")
    outside = tmp_path / "x.bin"
    (tmp_path / "ext" / "weights.bin").rename(outside)
    _point_external_at(path, "../x.bin" if where == "parent" else str(outside))
    with pytest.raises(ModelError, match="outside the model's folder"):
        edgefit.analyze(path)


def test_missing_external_data_file(tmp_path):
    path = _save_external(_mlp(), tmp_path / "ext")
    (tmp_path / "ext" / "weights.bin").unlink()
    with pytest.raises(ModelError, match="missing"):
        edgefit.analyze(path)


def test_truncated_external_data_file_is_refused_with_the_tensor_it_cuts(tmp_path):
    # _mlp's weights: 64x64 + 64 + 64x10 float32 = 19,200 bytes, the large ones in weights.bin. Cut the file short.
    path = _save_external(_mlp(), tmp_path / "ext")
    data = tmp_path / "ext" / "weights.bin"
    full = data.stat().st_size
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(ModelError, match=rf"'weights.bin' has 1,000 bytes but tensor '\w+' ends at byte {full:,} "
                                         r"\(truncated\?\)"):
        edgefit.analyze(path)


def test_git_lfs_pointers_instead_of_the_model_or_its_data_are_named(tmp_path):
    pointer = b"version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 19200\n"
    path = _save_external(_mlp(), tmp_path / "ext")
    (tmp_path / "ext" / "weights.bin").write_bytes(pointer)
    with pytest.raises(ModelError, match="Git LFS pointer: run `git lfs pull`"):
        edgefit.analyze(path)
    (tmp_path / "model.onnx").write_bytes(pointer)
    with pytest.raises(ModelError, match="is a Git LFS pointer, not the model"):
        edgefit.analyze(tmp_path / "model.onnx")


def test_size_of_a_model_protobuf_refuses_to_measure_sends_it_to_external_data():
    # Recent protobuf raises instead of returning ByteSize() for messages of 2 GiB or more; the save and session
    # paths must then take the external-data route, which needs a size of at least 2 GiB.
    from google.protobuf.message import EncodeError

    from edgefit.model import serialized_size

    class OverTwoGiB:
        def ByteSize(self):
            raise EncodeError("Failed to serialize proto")

    assert serialized_size(OverTwoGiB()) == 2**31
    assert serialized_size(helper.make_tensor("t", F, [3], [1.0, 2.0, 3.0])) == helper.make_tensor(
        "t", F, [3], [1.0, 2.0, 3.0]).ByteSize()
