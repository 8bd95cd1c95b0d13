"""Passes on awkward structure: exact pruning counts with ties and mixed float types, quantization that releases
the float weights early and still reports every layer, weights shared with control-flow bodies."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgefit.passes import prune, quantize
from edgefit.passes.base import model_digest
from helpers import build, vi

F, F16 = TensorProto.FLOAT, TensorProto.FLOAT16


def _array(model: onnx.ModelProto, name: str) -> np.ndarray:
    return numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name))


def _two_matmuls(a: np.ndarray, b: np.ndarray, type_a=F, type_b=F) -> onnx.ModelProto:
    nodes = [helper.make_node("MatMul", ["x", "A"], ["ya"], name="ma"),
             helper.make_node("MatMul", ["z", "B"], ["yb"], name="mb")]
    return build(nodes, [vi("x", type_a, [1, 2]), vi("z", type_b, [1, 2])],
                 [vi("ya", type_a, [1, 2]), vi("yb", type_b, [1, 2])],
                 [numpy_helper.from_array(a, "A"), numpy_helper.from_array(b, "B")])


def test_global_pruning_with_ties_zeroes_exactly_round_s_n_and_takes_ties_in_tensor_order():
    # |w|: five 1s, then 2, 3, 4; S = 0.5 of n = 8 -> 4 zeros, all at the tie value 1: the first four in order
    # (all of A), none of B's single 1 -- never more than 4 because of the tie.
    model = _two_matmuls(np.ones((2, 2), np.float32), np.array([[1, 2], [3, 4]], np.float32))
    digest = model_digest(model)
    result = prune(model, 0.5)
    assert model_digest(model) == digest
    assert np.array_equal(_array(result.model, "A"), np.zeros((2, 2), np.float32))
    assert np.array_equal(_array(result.model, "B"), np.array([[1, 2], [3, 4]], np.float32))
    assert [layer.zeros_after for layer in result.stats.layers] == [4, 0]
    assert result.stats.achieved_sparsity == 0.5


def test_per_layer_pruning_with_ties_takes_round_s_n_of_each_layer():
    # Each 2x2 layer loses round(0.5 x 4) = 2: A's first two tied 1s, B's two smallest (-1 and 1: ties at 1).
    model = _two_matmuls(np.ones((2, 2), np.float32), np.array([[5, -1], [1, 7]], np.float32))
    result = prune(model, 0.5, per_layer=True)
    assert np.array_equal(_array(result.model, "A"), np.array([[0, 0], [1, 1]], np.float32))
    assert np.array_equal(_array(result.model, "B"), np.array([[5, 0], [0, 7]], np.float32))


def test_global_pruning_orders_float16_and_float32_weights_together():
    # 8 weights, S = 0.5: the four smallest magnitudes over both tensors are 0.1, 0.25, 0.3 and 0.5.
    a = np.array([[0.25, -4], [2, 0.5]], np.float16)
    b = np.array([[1, -0.3], [3, -0.1]], np.float32)
    result = prune(_two_matmuls(a, b, F16, F), 0.5)
    assert np.array_equal(_array(result.model, "A"), np.array([[0, -4], [2, 0]], np.float16))
    assert np.array_equal(_array(result.model, "B"), np.array([[1, 0], [3, 0]], np.float32))
    assert _array(result.model, "A").dtype == np.float16


def test_global_pruning_rounds_the_count_like_the_readme_says():
    # n = 6 weights, S = 0.25 -> round(1.5) = 2 (Python rounds half to even): 0.1 and 0.2 go.
    weights = np.array([[0.3, -0.1, 0.6], [0.2, 0.5, -0.4]], np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"])]
    model = build(nodes, [vi("x", F, [1, 2])], [vi("y", F, [1, 3])], [numpy_helper.from_array(weights, "W")])
    result = prune(model, 0.25)
    assert np.array_equal(_array(result.model, "W"), np.array([[0.3, 0, 0.6], [0, 0.5, -0.4]], np.float32))


def test_fp16_quantization_of_a_weight_that_is_also_an_output_leaves_the_input_alone_and_reports_the_layer():
    # The converter edits the pass's private copy in place; the caller's model and the layer report must not
    # notice (the report reads the float model's nodes, kept apart from its released weights).
    w = numpy_helper.from_array(np.arange(4, dtype=np.float32).reshape(2, 2), "W")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")]
    model = build(nodes, [vi("x", F, [1, 2])], [vi("y", F, [1, 2]), vi("W", F, [2, 2])], [w])
    digest = model_digest(model)
    result = quantize(model, "fp16")
    assert model_digest(model) == digest
    assert result.stats.quantized_layers == ("mm",)
    assert result.stats.ops_before == {"MatMul": 1}
    import onnxruntime as ort
    session = ort.InferenceSession(result.model.SerializeToString(), providers=["CPUExecutionProvider"])
    y, weight_out = session.run(None, {"x": np.array([[1, 1]], np.float32)})
    assert np.array_equal(y, np.array([[2, 4]], np.float32)) and np.array_equal(weight_out, numpy_helper.to_array(w))


def test_saving_with_external_data_leaves_the_in_memory_model_intact(tmp_path, monkeypatch):
    # Above the protobuf limit (lowered here to 4 KiB) the weights go to OUT.data. onnx's own external-data save
    # strips raw_data out of the model it is given and points it at the temporary file name, which broke the
    # caller's result model; now only a copy without the weights is written.
    import edgefit.model as model_module
    from edgefit.model import save_model

    big = numpy_helper.from_array(np.arange(2048, dtype=np.float32).reshape(2, 1024), "W")   # 8 KiB: external
    bias = numpy_helper.from_array(np.ones(1024, np.float32), "b2")                          # 4 KiB: external
    small = numpy_helper.from_array(np.arange(2, dtype=np.float32), "b")                     # 8 bytes: inline
    nodes = [helper.make_node("MatMul", ["x", "W"], ["m"]), helper.make_node("Add", ["m", "b2"], ["y"]),
             helper.make_node("Add", ["x", "b"], ["z"])]
    built = build(nodes, [vi("x", F, [1, 2])], [vi("y", F, [1, 1024]), vi("z", F, [1, 2])], [big, small, bias])
    monkeypatch.setattr(model_module, "_PROTOBUF_LIMIT", 2**20 + 4096)
    digest = model_digest(built)
    save_model(built, tmp_path / "out.onnx")
    assert model_digest(built) == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx", "out.onnx.data"]
    stored = onnx.load(str(tmp_path / "out.onnx"), load_external_data=False)
    layout = {t.name: {e.key: e.value for e in t.external_data} for t in stored.graph.initializer}
    assert layout["W"] == {"location": "out.onnx.data", "offset": "0", "length": "8192"}
    assert layout["b2"] == {"location": "out.onnx.data", "offset": "8192", "length": "4096"}
    assert layout["b"] == {}
    assert (tmp_path / "out.onnx.data").stat().st_size == 8192 + 4096
    reloaded = onnx.load(str(tmp_path / "out.onnx"))
    for name in ("W", "b", "b2"):
        assert np.array_equal(_array(reloaded, name), _array(built, name))


def test_int8_preprocessing_sees_no_large_weight_values_and_its_shapes_reach_the_quantizer(monkeypatch):
    # The shape-inference pre-processing held several copies of every weight; it now gets a copy whose 16x16
    # weight (256 elements > 64) is a typed graph input, and its mark and value infos go back into the model.
    from onnxruntime.quantization import shape_inference

    from edgefit.fidelity import synthetic_samples

    seen = []
    original = shape_inference.quant_pre_process

    def spy(model, *args, **kwargs):
        seen.append(({t.name for t in model.graph.initializer}, {i.name for i in model.graph.input}))
        return original(model, *args, **kwargs)

    monkeypatch.setattr(shape_inference, "quant_pre_process", spy)
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32), "W")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"), helper.make_node("Relu", ["h"], ["y"])]
    model = build(nodes, [vi("x", F, [1, 16])], [vi("y", F, [1, 16])], [w])
    result = quantize(model, "int8", calibration=synthetic_samples(model))
    assert seen == [(set(), {"x", "W"})]
    assert result.stats.quantized_layers == ("mm",)
    assert not any("pre-processing" in note for note in result.stats.notes)
    assert [i.name for i in result.model.graph.input] == ["x"]


def test_pruning_a_weight_a_loop_body_also_reads_says_so():
    # W feeds the top-level MatMul and, as an outer-scope name, the Loop body's MatMul: zeroing it changes the
    # body too, which the note used to deny ("weights inside its subgraphs are left as they are").
    body = helper.make_graph(
        [helper.make_node("MatMul", ["s", "W"], ["s2"]), helper.make_node("Identity", ["c"], ["c2"])], "body",
        [vi("i", TensorProto.INT64, []), vi("c", TensorProto.BOOL, []), vi("s", F, [1, 2])],
        [vi("c2", TensorProto.BOOL, []), vi("s2", F, [1, 2])])
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
             helper.make_node("Loop", ["n", "", "h"], ["y"], body=body, name="loop")]
    model = build(nodes, [vi("x", F, [1, 2])], [vi("y", F, [1, 2])],
                  [numpy_helper.from_array(np.array([[1, -2], [3, 0.5]], np.float32), "W"),
                   numpy_helper.from_array(np.array(2, np.int64), "n")])
    result = prune(model, 0.5)
    assert np.array_equal(_array(result.model, "W"), np.array([[0, -2], [3, 0]], np.float32))
    assert "'W' is also read inside the subgraphs of loop (Loop): pruned there too" in result.stats.notes


def test_fp16_conversion_gets_shapes_inferred_without_the_weights_values(monkeypatch):
    # The converter's own inference serializes the whole model; it now gets value infos found on a copy whose
    # large weights are typed inputs, and is told to skip its own.
    from onnxruntime.transformers import float16

    calls = []
    original = float16.convert_float_to_float16

    def spy(model, **kwargs):
        calls.append((kwargs["disable_shape_infer"], {v.name for v in model.graph.value_info}))
        return original(model, **kwargs)

    monkeypatch.setattr(float16, "convert_float_to_float16", spy)
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32), "W")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"), helper.make_node("Relu", ["h"], ["y"])]
    model = build(nodes, [vi("x", F, [1, 16])], [vi("y", F, [1, 16])], [w])
    result = quantize(model, "fp16")
    assert calls == [(True, {"h"})]
    assert result.stats.quantized_layers == ("mm",)
    assert _array(result.model, "W").dtype == np.float16


def test_onnxruntimes_preprocessing_advice_is_not_repeated_as_notes():
    # edgefit runs the pre-processing itself and notes when it fails; onnxruntime's quantizer then warns twice,
    # in two wordings, to run it: those are dropped, other warnings kept (once each).
    import logging

    from edgefit.passes.quantize import _captured_warnings

    notes: list[str] = []
    with _captured_warnings(notes):
        logging.warning("Please consider to run pre-processing before quantization. Refer to example: https://x")
        logging.warning("unsupported broadcast between a and b")
        logging.warning("Please consider pre-processing before quantization. See https://x")
        logging.warning("unsupported broadcast between a and b")
    assert notes == ["onnxruntime: unsupported broadcast between a and b"]
