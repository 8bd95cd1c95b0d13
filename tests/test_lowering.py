"""What a runtime makes of the patterns today's exporters write, judged per runtime through the converter's lowering:
torch's dynamo exporter (LayerNormalization, Gelu opset 20, allowzero=1 Reshapes, attention MatMuls of two activations,
Softmax on the last axis), paddle2onnx (HardSigmoid / Div chains) and tf2onnx (LayerNorm written out as
ReduceMean / Sub / Pow / ReduceMean / Add / Sqrt / Div). Each graph is checked to be valid and to run in
onnxruntime, so the patterns are real models; every verdict is asserted exactly."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import model, weight
from onnx import helper, numpy_helper

from edgefit.analysis.footprint import analyze
from edgefit.cli import main
from edgefit.devices.operators import load_operator_list
from edgefit.devices.operators.coverage import ModelGraph, operator_coverage
from edgefit.devices.profiles import list_profiles

GELU_HINT = "run `edgefit optimize --passes decompose` to rewrite Gelu as TANH / MUL / ADD"
LAYER_NORM = ("MEAN", "SQUARED_DIFFERENCE", "ADD", "RSQRT", "MUL", "SUB")


def runs(built):
    """The model is valid ONNX and onnxruntime runs it (the pattern is one a real exporter could write)."""
    onnx.checker.check_model(built, full_check=True)
    session = ort.InferenceSession(built.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {i.name: np.random.default_rng(0).standard_normal(
        [d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32) for i in built.graph.input}
    assert all(np.isfinite(out).all() for out in session.run(None, feeds))
    return built


def verdicts(built, runtime, precision="fp32", custom_ops=()):
    footprint = analyze(built)
    result = operator_coverage(ModelGraph(built, footprint), footprint, runtime, precision, custom_ops=custom_ops)
    return {n.layer: (n.status, n.builtins, n.reason) for n in result.nodes}


def const(name, values, dtype=np.int64):
    return numpy_helper.from_array(np.asarray(values, dtype), name)


def torch_block():
    """One pre-norm attention head as torch.onnx.export(dynamo=True) writes it at opset 20: LayerNormalization with
    stored scale/bias, a projection MatMul with a stored weight, Reshape with allowzero=1 and a stored shape free of
    zeros, q @ k^T (two activations), scaling Div, Softmax on the last axis, attention @ v, then Gelu (exact)."""
    nodes = [
        helper.make_node("LayerNormalization", ["x", "ln_w", "ln_b"], ["n"], axis=-1, epsilon=1e-5, name="ln"),
        helper.make_node("MatMul", ["n", "wq"], ["q"], name="proj"),
        helper.make_node("Reshape", ["q", "shape"], ["qr"], allowzero=1, name="view"),
        helper.make_node("Transpose", ["qr"], ["kt"], perm=[0, 2, 1], name="t"),
        helper.make_node("MatMul", ["qr", "kt"], ["s"], name="scores"),
        helper.make_node("Div", ["s", "scale"], ["sd"], name="scale_div"),
        helper.make_node("Softmax", ["sd"], ["p"], axis=-1, name="softmax"),
        helper.make_node("MatMul", ["p", "qr"], ["a"], name="attend"),
        helper.make_node("Gelu", ["a"], ["y"], approximate="none", name="gelu"),
    ]
    inits = [numpy_helper.from_array(np.ones(8, np.float32), "ln_w"), numpy_helper.from_array(np.zeros(8, np.float32),
             "ln_b"), weight("wq", 8, 8), const("shape", [1, 4, 8]), numpy_helper.from_array(np.float32(2.828), "scale")]
    return runs(model(nodes, [("x", [1, 4, 8])], [("y", [1, 4, 4 * 2])], inits, opset=20))


def test_torch_dynamo_transformer_block_per_runtime():
    built = torch_block()
    supported = lambda *builtins: ("supported", builtins, "")  # noqa: E731
    tflm = verdicts(built, "tflm")
    assert tflm == {
        "ln": supported(*LAYER_NORM), "proj": supported("FULLY_CONNECTED"), "view": supported("RESHAPE"),
        "t": supported("TRANSPOSE"), "scores": supported("BATCH_MATMUL"), "scale_div": supported("DIV"),
        "softmax": supported("SOFTMAX"), "attend": supported("BATCH_MATMUL"),
        "gelu": ("unsupported", ("GELU",), f"becomes GELU; GELU has no TensorFlow Lite Micro kernel: {GELU_HINT}")}
    # The tanh form is the same GELU builtin: still no kernel.
    tanh = torch_block()
    tanh.graph.node[-1].attribute[0].s = b"tanh"
    assert verdicts(tanh, "tflm")["gelu"] == tflm["gelu"]
    # STM32Cube.AI imports the ONNX ops themselves: Gelu is in ST's list, LayerNormalization is not, and the
    # allowzero=1 Reshape runs since its shape holds no 0.
    st = verdicts(built, "stm32cube-ai")
    assert st["view"] == st["gelu"] == st["scores"] == st["softmax"] == ("supported", (), "")
    assert st["ln"] == ("unsupported", (), "has no STM32Cube.AI kernel: run `edgefit optimize --passes decompose` to "
                                           "rewrite it as ReduceMean / Sub / Mul / Add / Sqrt / Div")
    # Vela (int8): the LayerNorm builtins are NPU ops; BATCH_MATMUL, DIV and GELU are not (they run on the host).
    vela = verdicts(built, "vela", "int8")
    assert vela["ln"] == supported(*LAYER_NORM) and vela["proj"] == supported("FULLY_CONNECTED")
    assert {layer for layer, (status, _, _) in vela.items() if status != "supported"} == {
        "scores", "attend", "scale_div", "gelu"}
    assert vela["scores"] == ("unsupported", ("BATCH_MATMUL",), "becomes BATCH_MATMUL; BATCH_MATMUL has no Ethos-U55 "
                              "(Vela) kernel: a MatMul with a constant second input becomes FULLY_CONNECTED")
    # Edge TPU (int8): Coral's table has no SQUARED_DIFFERENCE: the LayerNorm is where the TPU graph ends.
    edgetpu = verdicts(built, "edgetpu", "int8")
    assert edgetpu["ln"] == ("unsupported", LAYER_NORM, "becomes MEAN, SQUARED_DIFFERENCE, ADD, RSQRT, MUL, SUB; "
                             "SQUARED_DIFFERENCE has no Edge TPU kernel")


def test_reshape_allowzero_one_depends_on_the_stored_shape():
    def reshape(shape):
        nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"], allowzero=1, name="view")]
        out = [1, 0, 8] if 0 in shape else shape
        return model(nodes, [("x", [1, 4, 8])], [("y", out)], [const("shape", shape)], opset=20)
    plain = runs(reshape([4, 8]))
    assert verdicts(plain, "tflm")["view"] == ("supported", ("RESHAPE",), "")
    assert verdicts(plain, "stm32cube-ai")["view"] == ("supported", (), "")
    zero = reshape([1, 0, 8])   # a zero-sized dimension: valid ONNX, no TFLite form
    assert verdicts(zero, "tflm")["view"] == (
        "unsupported", (), "cannot be converted: allowzero=1 with a 0 in the shape makes a zero-sized tensor, which "
                           "TFLite cannot hold (onnx2tf + TFLite converter)")
    assert verdicts(zero, "stm32cube-ai")["view"] == ("violates", (), "allowzero=1 (runs 0)")
    computed = model([helper.make_node("Shape", ["x"], ["s"], name="shape_of"),
                      helper.make_node("Reshape", ["x", "s"], ["y"], allowzero=1, name="view")],
                     [("x", [1, 4, 8])], [("y", [1, 4, 8])], opset=20)
    assert verdicts(runs(computed), "tflm")["view"] == (
        "unknown", (), "allowzero=1 with a shape computed at run time: whether it holds a 0 cannot be seen")


def paddle_classifier_head():
    """PP-OCR's mobile classifier as paddle2onnx writes its squeeze-excite and scaling: Conv -> HardSigmoid
    (alpha 0.1666667, beta 0.5) -> Mul with the features -> Div by a stored constant -> Div by another."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("HardSigmoid", ["c"], ["h"], alpha=0.1666667, beta=0.5, name="hsig"),
             helper.make_node("Mul", ["c", "h"], ["m"], name="excite"),
             helper.make_node("Div", ["m", "six"], ["d"], name="div1"),
             helper.make_node("Div", ["d", "two"], ["y"], name="div2")]
    inits = [weight("w", 4, 3, 3, 3), numpy_helper.from_array(np.float32(6.0), "six"),
             numpy_helper.from_array(np.float32(2.0), "two")]
    return runs(model(nodes, [("x", [1, 3, 8, 8])], [("y", [1, 4, 8, 8])], inits, opset=11))


def test_paddle_hardsigmoid_and_div_run_on_tflm():
    built = paddle_classifier_head()
    hard_sigmoid = ("MUL", "ADD", "MINIMUM", "MAXIMUM")
    for precision in ("fp32", "int8"):
        assert verdicts(built, "tflm", precision) == {
            "conv": ("supported", ("CONV_2D",), ""), "hsig": ("supported", hard_sigmoid, ""),
            "excite": ("supported", ("MUL",), ""), "div1": ("supported", ("DIV",), ""),
            "div2": ("supported", ("DIV",), "")}
    assert set(verdicts(built, "stm32cube-ai").values()) == {("supported", (), "")}
    for runtime, title in (("vela", "Ethos-U55 (Vela)"), ("edgetpu", "Edge TPU")):
        judged = verdicts(built, runtime, "int8")
        assert judged["hsig"] == ("supported", hard_sigmoid, "")
        assert judged["div1"] == ("unsupported", ("DIV",), f"becomes DIV; DIV has no {title} kernel")


def tf2onnx_layer_norm(exponent=2.0):
    """LayerNorm as tf2onnx (and older torch exports) write it out at opset 13."""
    nodes = [helper.make_node("ReduceMean", ["x"], ["mu"], axes=[-1], keepdims=1, name="mean"),
             helper.make_node("Sub", ["x", "mu"], ["xc"], name="center"),
             helper.make_node("Pow", ["xc", "p"], ["sq"], name="square"),
             helper.make_node("ReduceMean", ["sq"], ["var"], axes=[-1], keepdims=1, name="variance"),
             helper.make_node("Add", ["var", "eps"], ["ve"], name="add_eps"),
             helper.make_node("Sqrt", ["ve"], ["sd"], name="sqrt"),
             helper.make_node("Div", ["xc", "sd"], ["y"], name="normalize")]
    inits = [numpy_helper.from_array(np.float32(exponent), "p"), numpy_helper.from_array(np.float32(1e-5), "eps")]
    return runs(model(nodes, [("x", [1, 4, 8])], [("y", [1, 4, 8])], inits, opset=13))


def test_tf2onnx_layer_norm_runs_at_fp32_and_names_the_float_only_sqrt_at_int8():
    built = tf2onnx_layer_norm()
    expected = {"mean": ("MEAN",), "center": ("SUB",), "square": ("MUL",), "variance": ("MEAN",),
                "add_eps": ("ADD",), "sqrt": ("SQRT",), "normalize": ("DIV",)}
    assert verdicts(built, "tflm") == {layer: ("supported", b, "") for layer, b in expected.items()}
    int8 = verdicts(built, "tflm", "int8")
    assert int8["sqrt"] == ("unsupported", ("SQRT",), "becomes SQRT; SQRT has no int8 kernel in TensorFlow Lite Micro (it runs "
                            "float32): deploy at fp32 (TFLM's SQRT is float32 only), or run `edgefit optimize "
                            "--passes decompose`")
    assert [layer for layer, (status, _, _) in int8.items() if status != "supported"] == ["sqrt"]
    # Any other exponent stays a POW, which TFLM does not register.
    assert verdicts(tf2onnx_layer_norm(4.0), "tflm")["square"] == (
        "unsupported", ("POW",), "becomes POW; POW has no TensorFlow Lite Micro kernel: run `edgefit optimize "
                                 "--passes decompose` to rewrite Pow as MUL / SQRT")


def test_softmax_off_the_last_axis_is_transposed_around():
    nodes = [helper.make_node("Softmax", ["x"], ["y"], axis=1, name="softmax")]
    built = runs(model(nodes, [("x", [1, 4, 8])], [("y", [1, 4, 8])], opset=13))
    assert verdicts(built, "tflm")["softmax"] == ("supported", ("TRANSPOSE", "SOFTMAX"), "")


def frobnicate_model():
    nodes = [helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example", name="frob")]
    built = model(nodes, [("x", [1, 8])], [("y", [1, 8])])
    built.opset_import.append(helper.make_opsetid("com.example", 1))
    return built


TINY = sorted(p.name for p in list_profiles() if p.tier == "tiny")


def test_a_custom_domain_op_fails_on_every_tiny_profile_unless_declared(tmp_path, capsys):
    path = tmp_path / "frob.onnx"
    path.write_bytes(frobnicate_model().SerializeToString())
    assert len(TINY) == 12
    for name in TINY:
        assert main(["check", str(path), "-t", name, "--json"]) == 1, name
        target = json.loads(capsys.readouterr().out)["targets"][0]
        [node] = target["operators"]["not_running"]
        assert node["op_type"] == "com.example.Frobnicate" and node["status"] == "unsupported"
        assert node["reason"].endswith("declare a kernel you wrote with --custom-op com.example.Frobnicate"), name
        assert main(["check", str(path), "-t", name, "--custom-op", "com.example.Frobnicate", "--json"]) == 0, name
        target = json.loads(capsys.readouterr().out)["targets"][0]
        assert target["operators"]["verdict"] == "supported" and target["fits"], name
    # The terminal output names the op and the option.
    assert main(["check", str(path), "-t", "esp32"]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "com.example.Frobnicate (frob) is a custom-domain op TensorFlow Lite Micro has no kernel for: declare a " \
           "kernel you wrote with --custom-op com.example.Frobnicate" in out
    assert main(["check", str(path), "-t", "esp32", "--custom-op", "not a name"]) == 2


def test_a_partial_list_says_not_judged_never_ok(tmp_path, capsys):
    path = tmp_path / "frob.onnx"
    path.write_bytes(frobnicate_model().SerializeToString())
    assert main(["check", str(path), "-t", "jetson-agx-orin", "--json"]) == 0   # TensorRT's list is partial
    [verdict] = [c for c in json.loads(capsys.readouterr().out)["targets"][0]["checks"] if c["metric"] == "operators"]
    assert (verdict["value"], verdict["ok"], verdict["status"]) == ("1 unknown (not judged)", True, "not judged")
    main(["check", str(path), "-t", "jetson-agx-orin"])
    row = next(line for line in capsys.readouterr().out.splitlines() if "operators" in line)
    assert "not judged" in row and " ok" not in row


def test_every_tiny_and_npu_profile_and_stack_names_a_list_and_a_stack_judges_alike_on_every_board():
    by_stack: dict[str, set[str]] = {}
    for profile in list_profiles():
        npu = profile.operators is not None and load_operator_list(profile.operators).int8_only
        if profile.tier != "tiny" and not npu:
            continue
        assert profile.stack_settings().operators is not None, profile.name
        for stack in profile.runtimes:
            operators = profile.stack_settings(stack.name).operators
            assert operators is not None, (profile.name, stack.name)
            by_stack.setdefault(stack.name, set()).add(operators)
    assert {name: lists for name, lists in by_stack.items() if len(lists) > 1} == {}
    assert by_stack["microtvm-cmsis-nn"] == by_stack["tflm-cmsis-nn"] == {"tflm"}
    assert by_stack["stm32cube-ai-8.1"] == {"stm32cube-ai"}


def test_profiles_show_prints_each_lists_revision(capsys):
    assert main(["profiles", "show", "nucleo-l4r5zi", "--json"]) == 0
    lists = json.loads(capsys.readouterr().out)["operator_lists"]
    assert set(lists) == {"tflm", "stm32cube-ai"}
    assert lists["tflm"]["revision"] == "90b983c2b3f1480642e040bbd2ddb37b998f3424 (2026-08-20)"
    assert lists["tflm"]["lowering"]["revision"] == "2c0cb019b77bb7464828123eb3b708e05b4737a7 (2026-07-20)"
    assert lists["stm32cube-ai"]["revision"].startswith("ST Edge AI Core 2.2 operator rows")
    assert main(["profiles", "show", "arduino-nano-33-ble-sense"]) == 0
    out = "".join(capsys.readouterr().out.split())
    assert "90b983c2b3f1" in out and "2c0cb019b77b" in out   # hashes cut to 12 digits to stay whole in the table


@pytest.mark.parametrize("name", ["tflm", "vela", "edgetpu", "stm32cube-ai", "nnapi", "coreml", "tensorrt",
                                  "onnxruntime-cpu", "hand-written-c"])
def test_every_list_records_its_revision_and_every_lowered_builtin_name_is_a_tflite_one(name):
    operators = load_operator_list(name)
    assert operators.revision and operators.retrieved == "2026-12-08"
    if operators.lowering is not None:
        builtins = {b for forms in operators.lowering.forms.values() for form in forms for b in form.builtins}
        # Every builtin a TFLite list names is one the converter can make, or a runtime-only kernel.
        assert all(b.isupper() for b in builtins | set(operators.ops))
        assert set(operators.tensor_types) <= set(operators.ops)
