"""Operator coverage per runtime on graphs built here: supported, unsupported, constraint-violating and unknown
ops, the two fallback rules of accelerators, the profile key, and the `operators` verdict in check and the gate."""

import json

import pytest
from helpers import model, weight
from onnx import helper
from test_estimate import mcu

from edgefit.analysis.footprint import analyze
from edgefit.check import check
from edgefit.cli import main
from edgefit.devices import list_profiles, parse_profile
from edgefit.errors import ConfigError, ProfileError
from edgefit.operators import load_operator_list, operator_list_names
from edgefit.operators.coverage import ModelGraph, operator_coverage
from edgefit.report.check_text import describe_operators, render_tier_line


def coverage(built, runtime, precision="fp32", host=None):
    footprint = analyze(built)
    return operator_coverage(ModelGraph(built, footprint), footprint, runtime, precision, host)


def statuses(result):
    return {n.layer: (n.status, n.reason) for n in result.nodes}


def small_cnn(stride=1, extra=()):
    """x [1,8,16,16] -> conv 8->8 3x3 pad 1 (stride given) -> relu -> global average pool -> flatten -> gemm 8->4,
    with `extra` nodes appended after the flatten (reading f, writing y2)."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], strides=[stride, stride], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"], name="pool"),
             helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1, name="fc"), *extra]
    outputs = [("y", [1, 4])] + ([("y2", None)] if extra else [])
    return model(nodes, [("x", [1, 8, 16, 16])], outputs, [weight("w", 8, 8, 3, 3), weight("fc", 4, 8)])


def test_every_list_loads_and_names_its_source():
    assert set(operator_list_names()) >= {"tflm", "edgetpu", "vela", "onnxruntime-cpu", "tensorrt", "coreml", "nnapi"}
    for name in operator_list_names():
        operators = load_operator_list(name)
        assert operators.source and operators.url.startswith("https://")
    with pytest.raises(ConfigError, match="unknown operator list 'tfl'"):
        load_operator_list("tfl")


def test_supported_cnn_on_tflm():
    result = coverage(small_cnn(), "tflm")
    assert result.verdict == "supported" and result.runs
    assert set(statuses(result).values()) == {("supported", "")}


def test_unsupported_op_stops_an_mcu_runtime_and_is_named():
    einsum = helper.make_node("Einsum", ["f", "f"], ["y2"], equation="bi,bi->b", name="mix")
    result = coverage(small_cnn(extra=[einsum]), "tflm")
    assert result.verdict == "does-not-run" and not result.runs
    assert [(n.op_type, n.layer) for n in result.not_running] == [("Einsum", "mix")]
    assert statuses(result)["mix"][0] == "unsupported"


def test_constraint_violation_falls_back_op_by_op_on_ethos_u55_with_the_host_time():
    """Stride 4 breaks Vela's [1, 3] stride range: the conv alone runs on the host core.
    Host time by hand (hand MCU: fp32 0.5 GMAC/s x 0.5, 100 MB/s, 0.1 ms per op): MACs 8*4*4*8*9 = 9216 take
    36.9 us, bytes 8192 in + 512 out take 87.04 us; roofline max 87.04 us + 100 us dispatch = 187.04 us."""
    result = coverage(small_cnn(stride=4), "vela", "int8", host=mcu())
    assert statuses(result)["conv"] == ("violates", "stride 4x4 (runs 1-3)")
    assert result.verdict == "fallback" and result.runs
    assert result.fallback_layers == ("conv",)
    assert result.fallback_latency_s == pytest.approx(187.04e-6)
    # At fp32 an int8-only NPU runs nothing: every node falls back.
    fp32 = coverage(small_cnn(), "vela", "fp32")
    assert len(fp32.fallback_layers) == 5
    assert {n.reason for n in fp32.not_running} == {"runs int8 only (deployed at fp32)"}


def test_edge_tpu_runs_everything_after_the_first_unmapped_op_on_the_cpu():
    """Erf has no Edge TPU mapping: the compiler cuts the graph there, so the relu after it (mappable) runs on the
    CPU too, while the relu before it stays on the TPU. A 5-D tensor breaks the three-innermost-dimensions rule.
    A bidirectional LSTM breaks TFLM's forward-only LSTM."""
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="first"),
             helper.make_node("Erf", ["a"], ["e"], name="erf"),
             helper.make_node("Relu", ["e"], ["y"], name="after")]
    built = model(nodes, [("x", [1, 2, 4, 4])], [("y", [1, 2, 4, 4])])
    result = coverage(built, "edgetpu", "int8")
    assert statuses(result)["erf"] == ("unsupported", "Edge TPU has no kernel for Erf")
    assert statuses(result)["first"] == statuses(result)["after"] == ("supported", "")
    assert result.fallback_layers == ("erf", "after")
    five = model([helper.make_node("Relu", ["x"], ["y"], name="relu5d")], [("x", [1, 2, 4, 4, 4])],
                 [("y", [1, 2, 4, 4, 4])])
    assert statuses(coverage(five, "edgetpu", "int8"))["relu5d"] == (
        "violates", "tensor x [1, 2, 4, 4, 4] has more than 3 non-unit innermost dimensions")
    lstm = helper.make_node("LSTM", ["s", "W", "R"], ["h"], hidden_size=2, direction="bidirectional", name="rnn")
    sequence = model([lstm], [("s", [3, 1, 2])], [("h", [3, 2, 1, 2])],
                     [weight("W", 2, 8, 2), weight("R", 2, 8, 2)])
    assert statuses(coverage(sequence, "tflm"))["rnn"] == ("violates", "direction=bidirectional (runs forward)")


def test_an_op_edgefit_cannot_judge_is_unknown_never_supported():
    custom = helper.make_node("Fancy", ["f"], ["y2"], domain="com.example", name="fancy")
    built = small_cnn(extra=[custom])
    built.opset_import.append(helper.make_opsetid("com.example", 1))
    for runtime in ("tflm", "onnxruntime-cpu", "tensorrt"):
        result = coverage(built, runtime)
        assert statuses(result)["fancy"][0] == "unknown"
        assert result.verdict == "unknown" and result.runs
    # TFLM has IF, but what its branches run is not looked at: the node is unknown, not supported.
    def branch(name):
        return helper.make_graph([helper.make_node("Neg", ["f"], [name])], name, [],
                                 [helper.make_tensor_value_info(name, 1, [1, 8])])
    cond = helper.make_node("If", ["flag"], ["y2"], then_branch=branch("t"), else_branch=branch("e"), name="choose")
    with_if = small_cnn(extra=[cond])
    with_if.graph.input.append(helper.make_tensor_value_info("flag", 9, []))
    assert statuses(coverage(with_if, "tflm"))["choose"] == ("unknown", "the ops inside its subgraphs are not judged")
    hardmax = helper.make_node("Hardmax", ["f"], ["y2"], name="hardmax")
    partial = coverage(small_cnn(extra=[hardmax]), "tensorrt")   # a partial list: not listed means unknown
    assert statuses(partial)["hardmax"][0] == "unknown"
    assert statuses(coverage(small_cnn(extra=[hardmax]), "onnxruntime-cpu"))["hardmax"][0] == "supported"


def test_profiles_name_their_list():
    names = {p.name: p.operators for p in list_profiles()}
    assert names["stm32h7"] == "tflm" and names["coral-dev-board"] == "edgetpu"
    assert names["grove-vision-ai-v2"] == "vela" and names["tpu-v4-pod"] is None
    # The quantizer's int8_ops for the Coral stay as they are; every one of them maps to the Edge TPU.
    coral = next(p for p in list_profiles() if p.name == "coral-dev-board")
    assert set(coral.int8_ops) <= set(load_operator_list("edgetpu").ops)
    data = {"name": "x", "display_name": "x", "tier": "tiny", "processor": "p", "runtime": "r",
            "precisions": ["fp32"], "ram": "1 KiB", "flash": "1 KiB", "runtime_ram": 0, "runtime_flash": 0,
            "weights_in_ram": False, "peak_gmacs": {"fp32": 1}, "efficiency": 0.5, "memory_bandwidth": "1 MB/s",
            "inference_overhead": "1 ms", "active_power": "1 mW", "idle_power": "0 mW", "operators": "tflm"}
    sources = {k: "test" for k in data if k not in ("name", "display_name", "tier", "runtime", "precisions",
                                                     "operators")}
    assert parse_profile({**data, "source": sources}, "t.toml").operators == "tflm"
    with pytest.raises(ProfileError, match="field 'operators': unknown operator list 'tfmicro'"):
        parse_profile({**data, "operators": "tfmicro", "source": sources}, "t.toml")


def test_check_reports_the_operators_verdict(tmp_path, capsys):
    einsum = helper.make_node("Einsum", ["f", "f"], ["y2"], equation="bi,bi->b", name="mix")
    path = tmp_path / "m.onnx"
    path.write_bytes(small_cnn(extra=[einsum]).SerializeToString())
    device = mcu(operators="tflm", latency_budget_s=10.0, ram_bytes=10**6)
    result = check(path, [device], "fp32").targets[0]
    verdict = result.verdict("operators")
    assert (verdict.value, verdict.limit, verdict.ok) == ("1 unsupported", "tflm", False)
    assert not result.fits
    assert describe_operators(result) == "hand-mcu: TensorFlow Lite Micro cannot run 1 of 6 ops: Einsum (mix)"
    data = result.to_dict()["operators"]
    assert data["verdict"] == "does-not-run" and data["not_running"][0]["layer"] == "mix"
    assert check(path, [mcu(latency_budget_s=10.0, ram_bytes=10**6)], "fp32").targets[0].operators is None
    # The tier line names the missing kernel, and int8 does not pretend to help.
    assert render_tier_line(check(path, ["esp32"], "fp32").tiers) == (
        "Fits: none. Tiny: no — 1 unsupported ops on tflm (best device esp32); int8 would not fit either.")
    assert main(["check", str(path), "--target", "stm32h7", "--json"]) == 1
    target = json.loads(capsys.readouterr().out)["targets"][0]
    assert target["operators"]["not_running"] == [
        {"layer": "mix", "op_type": "Einsum", "status": "unsupported",
         "reason": "TensorFlow Lite Micro has no kernel for Einsum"}]
    assert {"metric": "operators", "value": "1 unsupported"}.items() <= next(
        c for c in target["checks"] if c["metric"] == "operators").items()
