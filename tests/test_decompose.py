"""The decompose pass: each rewrite on the exact patterns exporters write, run in onnxruntime before and after."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgefit.cli import main
from edgefit.errors import ConfigError
from edgefit.passes.base import PassOptions, model_digest
from edgefit.passes.decompose import GELU_TANH_MAX_ERROR, Decompose, decompose, ops_not_running
from edgefit.passes.pipeline import parse_passes, run_passes
from tests.helpers import save

F = TensorProto.FLOAT


def make(nodes, inits, x_shape, y_shape, opset, x_type=F):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", x_type, x_shape)],
                              [helper.make_tensor_value_info("y", x_type, y_shape)], initializer=inits)
    built = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    built.ir_version = 10 if opset >= 20 else 8
    onnx.checker.check_model(built, full_check=True)
    return built


def tensor(name, value, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def run(built, x):
    session = ort.InferenceSession(built.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {built.graph.input[0].name: x})[0]


def ops(built):
    return Counter(n.op_type for n in built.graph.node)


def rewrite(built, *names):
    """The pass on `built` (named ops, or its default), proving the input untouched and the result valid."""
    before = built.SerializeToString()
    digest = model_digest(built)
    result = decompose(built, names or None)
    assert built.SerializeToString() == before and model_digest(built) == digest
    onnx.checker.check_model(result.model, full_check=True)
    return result


def x_values(*shape, scale=3.0, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


# ---- LayerNormalization, as torch's dynamo exporter writes it (axis -1, epsilon 1e-5 as float32, stash_type 1)

def layer_norm_model(opset, axis=-1, bias=True, shape=(1, 16, 64)):
    norm_shape = shape[axis:]
    inits = [tensor("w", np.random.default_rng(1).standard_normal(norm_shape) + 1)]
    inputs = ["x", "w"]
    if bias:
        inits.append(tensor("b", np.random.default_rng(2).standard_normal(norm_shape)))
        inputs.append("b")
    node = helper.make_node("LayerNormalization", inputs, ["y"], axis=axis, epsilon=9.999999747378752e-06,
                            stash_type=1)
    return make([node], inits, list(shape), list(shape), opset)


@pytest.mark.parametrize("opset", [17, 18, 20])
def test_layer_norm_becomes_primitives_exactly_with_axes_as_the_opset_wants(opset):
    built = layer_norm_model(opset)
    result = rewrite(built)
    after = result.model
    assert ops(after) == {"ReduceMean": 2, "Sub": 1, "Mul": 2, "Add": 2, "Sqrt": 1, "Div": 1}
    means = [n for n in after.graph.node if n.op_type == "ReduceMean"]
    if opset >= 18:   # axes is an input from opset 18
        assert all(len(n.input) == 2 and not any(a.name == "axes" for a in n.attribute) for n in means)
        axes = {n.input[1] for n in means}
        assert [numpy_helper.to_array(t).tolist() for t in after.graph.initializer if t.name in axes] == [[-1]]
    else:
        assert all(len(n.input) == 1 and helper.get_attribute_value(n.attribute[0]) == [-1] for n in means)
    x = x_values(1, 16, 64, scale=2.0)
    x += 5.0   # an offset mean: the deviation form must still match
    np.testing.assert_allclose(run(after, x), run(built, x), rtol=0, atol=1e-5)
    assert np.abs(run(after, x) - run(built, x)).max() <= 1e-6 * np.abs(run(built, x)).max() * 4
    assert result.stats.rewritten == {"LayerNormalization": 1} and result.stats.max_abs_error == 0.0


@pytest.mark.parametrize("axis", [-2, 1])
def test_layer_norm_over_two_axes_and_without_bias(axis):
    built = layer_norm_model(18, axis=axis, bias=False, shape=(2, 4, 8))
    after = rewrite(built).model
    assert ops(after) == {"ReduceMean": 2, "Sub": 1, "Mul": 2, "Add": 1, "Sqrt": 1, "Div": 1}   # no bias Add
    axes_name = next(n.input[1] for n in after.graph.node if n.op_type == "ReduceMean")
    axes = next(numpy_helper.to_array(t) for t in after.graph.initializer if t.name == axes_name)
    assert axes.tolist() == [-2, -1]   # axis 1 of a 3-D input is the same two axes
    x = x_values(2, 4, 8)
    np.testing.assert_allclose(run(after, x), run(built, x), rtol=0, atol=2e-6)


def test_layer_norm_of_float16_computes_in_float32_as_stash_type_says():
    shape = [1, 4, 32]
    node = helper.make_node("LayerNormalization", ["x", "w", "b"], ["y"], axis=-1, epsilon=1e-5, stash_type=1)
    built = make([node], [tensor("w", np.ones(32), np.float16), tensor("b", np.zeros(32), np.float16)], shape, shape,
                 18, x_type=TensorProto.FLOAT16)
    after = rewrite(built).model
    casts = [n for n in after.graph.node if n.op_type == "Cast"]
    assert [helper.get_attribute_value(c.attribute[0]) for c in casts] == [TensorProto.FLOAT, TensorProto.FLOAT16]
    x = x_values(1, 4, 32).astype(np.float16)
    np.testing.assert_allclose(run(after, x).astype(np.float32), run(built, x).astype(np.float32), atol=2e-3)


def test_layer_norm_whose_mean_output_is_used_stays():
    node = helper.make_node("LayerNormalization", ["x", "w"], ["y", "mean"], axis=-1)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", F, [1, 4])],
                              [helper.make_tensor_value_info("y", F, [1, 4]),
                               helper.make_tensor_value_info("mean", F, [1, 1])], [tensor("w", np.ones(4))])
    built = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    result = rewrite(built)
    assert ops(result.model) == {"LayerNormalization": 1}
    assert result.stats.notes == ("1 LayerNormalization left as it is: its Mean or InvStdDev output is used",)


# ---- Gelu (opset 20) and the Erf chain of older exporters

def gelu_model(approximate):
    return make([helper.make_node("Gelu", ["x"], ["y"], approximate=approximate)], [], [4, 512], [4, 512], 20)


def test_exact_gelu_becomes_the_tanh_form_within_its_stated_error():
    built = gelu_model("none")
    result = rewrite(built)
    assert ops(result.model) == {"Mul": 4, "Add": 1, "Sigmoid": 1}
    x = np.linspace(-8, 8, 2048, dtype=np.float32).reshape(4, 512)
    error = np.abs(run(result.model, x) - run(built, x)).max()
    assert 4.0e-4 < error <= GELU_TANH_MAX_ERROR   # an approximation, and as good as stated
    assert result.stats.max_abs_error == GELU_TANH_MAX_ERROR


def test_tanh_gelu_is_rewritten_exactly():
    built = gelu_model("tanh")
    result = rewrite(built)
    assert ops(result.model) == {"Mul": 4, "Add": 1, "Sigmoid": 1}
    x = np.linspace(-8, 8, 2048, dtype=np.float32).reshape(4, 512)
    np.testing.assert_allclose(run(result.model, x), run(built, x), rtol=0, atol=1e-6)
    assert result.stats.max_abs_error == 0.0


def test_the_tanh_forms_error_bound_is_tight():
    """The constant in the pass is the real maximum (float64, fine grid), rounded up by less than 2%."""
    x = np.arange(-10, 10, 1e-4)
    exact = 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    tanh_form = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    worst = np.abs(tanh_form - exact).max()
    assert worst <= GELU_TANH_MAX_ERROR < worst * 1.02


def erf_chain(mul_order: str, constants_as_nodes: bool):
    """torch's exporters: dynamo at opset < 20 writes Div(x, 1.4142135) -> Erf -> Add(1) -> Mul(0.5, .) ->
    Mul(x, .) with initializers; the TorchScript exporter Div -> Erf -> Add -> Mul(x, .) -> Mul(., 0.5) with Constant
    nodes; Hugging Face's BERT computes 0.5 x first and multiplies once."""
    values = {"sqrt2": 1.4142135381698608, "one": 1.0, "half": 0.5}
    nodes, inits = [], []
    for name, value in values.items():
        if constants_as_nodes:
            nodes.append(helper.make_node("Constant", [], [name], value=tensor(name, value)))
        else:
            inits.append(tensor(name, value))
    nodes += [helper.make_node("Div", ["x", "sqrt2"], ["scaled"]), helper.make_node("Erf", ["scaled"], ["erf"]),
              helper.make_node("Add", ["erf", "one"], ["plus_one"])]
    if mul_order == "dynamo":
        nodes += [helper.make_node("Mul", ["half", "plus_one"], ["halved"]),
                  helper.make_node("Mul", ["x", "halved"], ["y"])]
    elif mul_order == "torchscript":
        nodes += [helper.make_node("Mul", ["x", "plus_one"], ["product"]),
                  helper.make_node("Mul", ["product", "half"], ["y"])]
    else:   # half_x
        nodes += [helper.make_node("Mul", ["x", "half"], ["half_x"]),
                  helper.make_node("Mul", ["half_x", "plus_one"], ["y"])]
    return make(nodes, inits, [2, 1024], [2, 1024], 18)


@pytest.mark.parametrize("mul_order,constants_as_nodes", [("dynamo", False), ("torchscript", True),
                                                          ("half_x", False)])
def test_erf_gelu_chain_becomes_the_tanh_form(mul_order, constants_as_nodes):
    built = erf_chain(mul_order, constants_as_nodes)
    result = rewrite(built)
    assert ops(result.model) == {"Mul": 4, "Add": 1, "Sigmoid": 1}   # chain, its half-x Mul and constants gone
    assert result.stats.rewritten == {"Erf": 1}
    x = np.linspace(-8, 8, 2048, dtype=np.float32).reshape(2, 1024)
    error = np.abs(run(result.model, x) - run(built, x)).max()
    assert 4.0e-4 < error <= GELU_TANH_MAX_ERROR


def test_a_lone_erf_stays_with_a_note():
    built = make([helper.make_node("Erf", ["x"], ["y"])], [], [8], [8], 18)
    result = rewrite(built)
    assert ops(result.model) == {"Erf": 1}
    assert result.stats.notes == ("1 Erf left as it is: not the Gelu pattern (Erf's input is no x / sqrt(2))",)


# ---- HardSigmoid / HardSwish as paddle2onnx writes them

@pytest.mark.parametrize("opset,alpha", [(9, 0.2), (11, 0.2), (13, 0.1666666716337204)])
def test_hard_sigmoid_becomes_mul_add_clip_exactly(opset, alpha):
    """paddle2onnx (hard_sigmoid.cc at 5269592a) writes HardSigmoid with the layer's slope and offset: 0.2 / 0.5 in
    PP-OCR's SE blocks, 1/6 / 0.5 for paddle.nn.Hardsigmoid."""
    node = helper.make_node("HardSigmoid", ["x"], ["y"], alpha=alpha, beta=0.5)
    built = make([node], [], [1, 8, 4, 4], [1, 8, 4, 4], opset)
    after = rewrite(built).model
    assert ops(after) == {"Mul": 1, "Add": 1, "Clip": 1}
    clip = next(n for n in after.graph.node if n.op_type == "Clip")
    assert len(clip.input) == (3 if opset >= 11 else 1)   # min/max are inputs from opset 11
    x = x_values(1, 8, 4, 4)
    np.testing.assert_allclose(run(after, x), run(built, x), rtol=0, atol=1e-6)


def test_hard_swish_becomes_x_times_the_hard_sigmoid_form_exactly():
    """paddle2onnx (hard_swish.cc at 07acbcb9) writes HardSwish at opset >= 14 for the default scale 6 / offset 3."""
    built = make([helper.make_node("HardSwish", ["x"], ["y"])], [], [1, 16, 8, 8], [1, 16, 8, 8], 14)
    after = rewrite(built).model
    assert ops(after) == {"Mul": 2, "Add": 1, "Clip": 1}
    x = x_values(1, 16, 8, 8)
    np.testing.assert_allclose(run(after, x), run(built, x), rtol=0, atol=1e-6)


# ---- small exact rewrites

def test_reshape_allowzero_is_dropped_only_when_the_shape_holds_no_zero():
    """torch's dynamo exporter writes allowzero=1 on every Reshape."""
    node = helper.make_node("Reshape", ["x", "shape"], ["y"], allowzero=1)
    built = make([node], [tensor("shape", [1, 16, 4], np.int64)], [1, 64], [1, 16, 4], 20)
    result = rewrite(built)
    assert list(result.model.graph.node[0].attribute) == [] and result.stats.rewritten == {"Reshape": 1}
    x = x_values(1, 64)
    np.testing.assert_array_equal(run(result.model, x), run(built, x))

    empty = make([node], [tensor("shape", [0, 64], np.int64)], [0, 64], [0, 64], 20)
    result = rewrite(empty)
    assert helper.get_attribute_value(result.model.graph.node[0].attribute[0]) == 1
    assert result.stats.notes == ("1 Reshape left as it is: its shape holds a 0 (allowzero=1 makes that an empty "
                                  "dimension)",)


def test_reciprocal_and_pow_become_div_mul_and_sqrt():
    nodes = [helper.make_node("Reciprocal", ["x"], ["r"]), helper.make_node("Pow", ["r", "two"], ["p2"]),
             helper.make_node("Pow", ["p2", "half"], ["p05"]), helper.make_node("Pow", ["p05", "three"], ["y"])]
    built = make(nodes, [tensor("two", 2.0), tensor("half", 0.5), tensor("three", 3.0)], [64], [64], 13)
    result = rewrite(built)
    assert ops(result.model) == {"Div": 1, "Mul": 1, "Sqrt": 1, "Pow": 1}   # exponent 3 stays
    assert result.stats.rewritten == {"Reciprocal": 1, "Pow": 2}
    x = np.abs(x_values(64)) + 0.1
    np.testing.assert_allclose(run(result.model, x), run(built, x), rtol=1e-6)


# ---- which ops, subgraphs, options

def test_with_a_target_only_what_its_runtime_cannot_run_is_rewritten():
    """TensorFlow Lite Micro has HARD_SWISH but no ERF: Gelu goes, HardSwish stays."""
    nodes = [helper.make_node("HardSwish", ["x"], ["h"]), helper.make_node("Gelu", ["h"], ["y"])]
    built = make(nodes, [], [1, 32], [1, 32], 20)
    assert {"Gelu"} <= set(ops_not_running(built, "tflm")) and "HardSwish" not in ops_not_running(built, "tflm")
    result = Decompose().apply(built, PassOptions(operator_list="tflm"))
    assert ops(result.model) == {"HardSwish": 1, "Mul": 4, "Add": 1, "Sigmoid": 1}
    assert result.stats.chosen == ("Gelu",) and result.stats.basis == "those tflm cannot run"


def test_ops_inside_subgraphs_are_left_with_a_note():
    body = helper.make_graph([helper.make_node("HardSigmoid", ["x"], ["inner"])], "then", [],
                             [helper.make_tensor_value_info("inner", F, [4])])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["inner2"])], "else", [],
                              [helper.make_tensor_value_info("inner2", F, [4])])
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["c"]),
             helper.make_node("If", ["c"], ["y"], then_branch=body, else_branch=other)]
    built = make(nodes, [tensor("zero", 0.0)], [4], [4], 13)
    result = rewrite(built)
    assert ops(result.model) == ops(built)
    assert result.stats.notes == ("HardSigmoid inside If/Loop/Scan bodies not rewritten (decompose edits the main "
                                  "graph only)",)


def test_pass_arguments_name_ops_or_all():
    assert parse_passes("decompose:Gelu:LayerNormalization")[0].options.decompose_ops == ("Gelu",
                                                                                        "LayerNormalization")
    assert "HardSwish" in parse_passes("decompose:all")[0].options.decompose_ops
    assert parse_passes("decompose")[0].options.decompose_ops is None
    with pytest.raises(ConfigError, match="decompose does not rewrite 'Conv'"):
        parse_passes("decompose:Conv")


def test_named_ops_limit_the_rewrite():
    nodes = [helper.make_node("HardSigmoid", ["x"], ["h"]), helper.make_node("Reciprocal", ["h"], ["y"])]
    built = make(nodes, [], [8], [8], 13)
    assert ops(rewrite(built, "Reciprocal").model) == {"HardSigmoid": 1, "Div": 1}


def test_optimize_runs_decompose_then_quantize_with_the_fidelity_table(tmp_path, capsys):
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Gelu", ["h"], ["g"]),
             helper.make_node("LayerNormalization", ["g", "s", "b"], ["n"], axis=-1),
             helper.make_node("MatMul", ["n", "w2"], ["y"])]
    inits = [tensor("w1", rng.standard_normal((16, 32)) * 0.3), tensor("s", np.ones(32)),
             tensor("b", np.zeros(32)), tensor("w2", rng.standard_normal((32, 10)) * 0.3)]
    path = save(make(nodes, inits, [1, 16], [1, 10], 20), tmp_path)
    out = tmp_path / "out.onnx"
    rc = main(["optimize", str(path), "--passes", "decompose,quantize", "-o", str(out), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0
    first, second = data["passes"]
    assert first["pass"] == "decompose" and first["stats"]["rewritten"] == {"Gelu": 1, "LayerNormalization": 1}
    assert first["fidelity"]["cosine"] > 0.99999 and second["pass"] == "quantize"
    assert not {"Gelu", "LayerNormalization"} & {n.op_type for n in onnx.load(str(out)).graph.node}
    rc = main(["optimize", str(path), "--passes", "decompose:Foo", "-o", str(out)])
    assert rc == 2 and "decompose does not rewrite 'Foo'" in capsys.readouterr().err


# ---- fit adds decompose when an operator binds

def test_fit_starts_every_recipe_with_decompose_when_a_rewritable_op_binds(tmp_path, capsys):
    """An MLP with an exact Gelu: TensorFlow Lite Micro has no ERF, so the Nano runs it only decomposed; the
    written model passes check."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Gelu", ["h"], ["g"]),
             helper.make_node("MatMul", ["g", "w2"], ["y"])]
    inits = [tensor("w1", rng.standard_normal((16, 32)) * 0.3), tensor("w2", rng.standard_normal((32, 10)) * 0.3)]
    path = save(make(nodes, inits, [1, 16], [1, 10], 20), tmp_path)
    out = tmp_path / "fitted.onnx"
    rc = main(["check", str(path), "-t", "arduino-nano-33-ble-sense", "--json"])
    assert rc == 1 and "Gelu" in capsys.readouterr().out
    rc = main(["fit", str(path), "-t", "arduino-nano-33-ble-sense", "-o", str(out), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0 and data["recipe"] == "fuse,decompose:Gelu"
    assert all(c["recipe"].startswith("fuse,decompose:Gelu") for c in data["candidates"])
    assert data["command"].startswith(f"edgefit optimize {path} --target arduino-nano-33-ble-sense --passes "
                                      "fuse,decompose:Gelu")
    assert "Gelu" not in {n.op_type for n in onnx.load(str(out)).graph.node}
    assert main(["check", str(out), "-t", "arduino-nano-33-ble-sense"]) == 0


def test_fit_keeps_plain_recipes_when_nothing_rewritable_binds(tmp_path, capsys):
    """HardSwish has a TFLM kernel (HARD_SWISH): no decompose in the Nano's recipes."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("HardSwish", ["h"], ["y"])]
    path = save(make(nodes, [tensor("w", np.eye(8))], [1, 8], [1, 8], 14), tmp_path)
    rc = main(["fit", str(path), "-t", "arduino-nano-33-ble-sense", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0 and all("decompose" not in c["recipe"] for c in data["candidates"])


# ---- the sample transformer

def test_sample_transformer_analyses_with_the_hand_counted_params(samples):
    """digits_vit.onnx (sample_models/build_transformer.py): patch Conv 64*4+64, position 16*64, per layer two
    LayerNorms 2*128, q/k/v/proj 4*(64*64+64), MLP 64*256+256 and 256*64+64, final LayerNorm 128, head 64*10+10."""
    from edgefit.analysis.footprint import analyze

    path = samples / "digits_vit.onnx"
    built = onnx.load(str(path))
    per_layer = 2 * 128 + 4 * (64 * 64 + 64) + (64 * 256 + 256) + (256 * 64 + 64)
    expected = (64 * 4 + 64) + 16 * 64 + 3 * per_layer + 128 + (64 * 10 + 10)
    # every float initializer but the one-element attention scale (a setting, not a learned weight)
    stored = sum(math.prod(t.dims) for t in built.graph.initializer
                 if t.data_type == TensorProto.FLOAT and math.prod(t.dims) > 1)
    assert expected == stored == 152_074
    footprint = analyze(str(path))
    assert footprint.params == expected
    assert not any(t.data_location == TensorProto.EXTERNAL for t in built.graph.initializer)
    assert {n.op_type for n in built.graph.node} >= {"LayerNormalization", "Gelu", "MatMul", "Softmax"}
    assert all(helper.get_attribute_value(n.attribute[0]) == 1 for n in built.graph.node if n.op_type == "Reshape")


def test_sample_transformer_decomposes_with_its_predictions_unchanged(samples):
    built = onnx.load(str(samples / "digits_vit.onnx"))
    result = rewrite(built)
    assert result.stats.rewritten == {"Gelu": 3, "LayerNormalization": 7, "Reshape": 25}
    assert not {"Gelu", "LayerNormalization", "Erf"} & set(ops(result.model))
    images = np.load(samples / "digits_eval.npz")["input"][:40]
    before, after = ([session.run(None, {"input": image[None]})[0][0] for image in images]
                     for session in (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
                                     for m in (built, result.model)))
    before, after = np.array(before), np.array(after)
    assert (before.argmax(1) == after.argmax(1)).all()
    cosine = (before * after).sum() / np.linalg.norm(before) / np.linalg.norm(after)
    assert cosine > 0.99999 and np.abs(after - before).max() < 0.05
