"""Operator coverage per runtime on graphs built here: supported, unsupported, constraint-violating and unknown
ops, the two fallback rules of accelerators, the profile key, and the `operators` verdict in check and the gate."""

import json

import onnx
import pytest
from helpers import model, weight
from onnx import helper
from test_estimate import mcu

from edgefit.analysis.footprint import analyze
from edgefit.cli import main
from edgefit.devices.check import Budgets, check
from edgefit.devices.operators import load_operator_list, operator_list_names
from edgefit.devices.operators.coverage import ModelGraph, operator_coverage
from edgefit.devices.profiles import list_profiles, parse_profile
from edgefit.errors import ConfigError, ProfileError
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
    assert set(operator_list_names()) >= {"tflm", "edgetpu", "vela", "onnxruntime-cpu", "tensorrt", "coreml", "nnapi",
                                          "stm32cube-ai"}
    for name in operator_list_names():
        operators = load_operator_list(name)
        assert operators.source and operators.url.startswith("https://")
    with pytest.raises(ConfigError, match="unknown operator list 'tfl'"):
        load_operator_list("tfl")


def test_supported_cnn_on_tflm():
    result = coverage(small_cnn(), "tflm")
    assert result.verdict == "supported" and result.runs
    assert set(statuses(result).values()) == {("supported", "")}


def prod(name="prod", source="f"):
    """ReduceProd: onnx2tf writes REDUCE_PROD, which TFLM's resolver does not register."""
    return helper.make_node("ReduceProd", [source], ["y2"], keepdims=0, name=name)


PROD_REASON = ("becomes REDUCE_PROD; REDUCE_PROD has no TensorFlow Lite Micro kernel: rewrite the product as a chain "
               "of MUL")


def test_unsupported_op_stops_an_mcu_runtime_and_is_named():
    result = coverage(small_cnn(extra=[prod()]), "tflm")
    assert result.verdict == "does-not-run" and not result.runs
    assert [(n.op_type, n.layer, n.builtins) for n in result.not_running] == [("ReduceProd", "prod", ("REDUCE_PROD",))]
    assert statuses(result)["prod"] == ("unsupported", PROD_REASON)


def test_constraint_violation_falls_back_op_by_op_on_ethos_u55_with_the_host_time():
    """Stride 4 breaks Vela's [1, 3] stride range: the conv alone runs on the host core.
    Host time by hand (hand MCU: fp32 0.5 GMAC/s x 0.5, 100 MB/s, weights from 50 MB/s flash, 0.1 ms per op):
    MACs 8*4*4*8*9 = 9216 take 36.864 us at the fp32 rate; at int8 the 2048 B in + 128 B out take 21.76 us and the
    576 B of weights 11.52 us; roofline max 36.864 us + 100 us dispatch = 136.864 us."""
    result = coverage(small_cnn(stride=4), "vela", "int8", host=mcu())
    assert statuses(result)["conv"] == ("violates", "stride 4x4 (runs 1-3)")
    assert result.verdict == "fallback" and result.runs
    assert result.fallback_layers == ("conv",)
    assert result.fallback_latency_s == pytest.approx(136.864e-6)
    # At fp32 an int8-only NPU runs nothing: every node falls back.
    fp32 = coverage(small_cnn(), "vela", "fp32")
    assert len(fp32.fallback_layers) == 5
    assert {n.reason for n in fp32.not_running} == {"runs int8 only (deployed at fp32)"}


def test_edge_tpu_runs_everything_after_the_first_unmapped_op_on_the_cpu():
    """Erf has no Edge TPU mapping: the compiler cuts the graph there, so the relu after it (mappable) runs on the
    CPU too, while the relu before it stays on the TPU. A 5-D tensor breaks the three-innermost-dimensions rule.
    A bidirectional LSTM becomes BIDIRECTIONAL_SEQUENCE_LSTM, which TFLM does not register."""
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="first"),
             helper.make_node("Erf", ["a"], ["e"], name="erf"),
             helper.make_node("Relu", ["e"], ["y"], name="after")]
    built = model(nodes, [("x", [1, 2, 4, 4])], [("y", [1, 2, 4, 4])])
    result = coverage(built, "edgetpu", "int8")
    assert statuses(result)["erf"] == ("unsupported", "becomes ERF; ERF has no Edge TPU kernel: run `edgefit "
                                       "optimize --passes decompose` to rewrite Gelu without Erf")
    assert statuses(result)["first"] == statuses(result)["after"] == ("supported", "")
    assert result.fallback_layers == ("erf", "after")
    five = model([helper.make_node("Relu", ["x"], ["y"], name="relu5d")], [("x", [1, 2, 4, 4, 4])],
                 [("y", [1, 2, 4, 4, 4])])
    assert statuses(coverage(five, "edgetpu", "int8"))["relu5d"] == (
        "violates", "tensor x [1, 2, 4, 4, 4] has more than 3 non-unit innermost dimensions")
    lstm = helper.make_node("LSTM", ["s", "W", "R"], ["h"], hidden_size=2, direction="bidirectional", name="rnn")
    sequence = model([lstm], [("s", [3, 1, 2])], [("h", [3, 2, 1, 2])],
                     [weight("W", 2, 8, 2), weight("R", 2, 8, 2)])
    assert statuses(coverage(sequence, "tflm"))["rnn"] == (
        "unsupported", "becomes BIDIRECTIONAL_SEQUENCE_LSTM; BIDIRECTIONAL_SEQUENCE_LSTM has no TensorFlow Lite Micro "
                       "kernel")


def test_an_op_edgefit_cannot_judge_is_unknown_never_supported():
    """A custom-domain op is unknown only where the list is partial; on a complete list it has no kernel."""
    custom = helper.make_node("Fancy", ["f"], ["y2"], domain="com.example", name="fancy")
    built = small_cnn(extra=[custom])
    built.opset_import.append(helper.make_opsetid("com.example", 1))
    for runtime in ("onnxruntime-cpu", "tensorrt"):
        result = coverage(built, runtime)
        assert statuses(result)["fancy"][0] == "unknown"
        assert result.verdict == "unknown" and result.runs
    assert statuses(coverage(built, "tflm"))["fancy"] == (
        "unsupported", "is a custom-domain op TensorFlow Lite Micro has no kernel for: declare a kernel you wrote "
                       "with --custom-op com.example.Fancy")
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
    # The quantizer's int8_ops for the Coral stay as they are; every one of them has a form that maps to the Edge TPU.
    coral = next(p for p in list_profiles() if p.name == "coral-dev-board")
    edgetpu = load_operator_list("edgetpu")
    assert all(any(form.builtins and set(form.builtins) <= set(edgetpu.ops) for form in edgetpu.lowering.forms[op])
               for op in coral.int8_ops)
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
    path = tmp_path / "m.onnx"
    path.write_bytes(small_cnn(extra=[prod()]).SerializeToString())
    device = mcu(operators="tflm", latency_budget_s=10.0, ram_bytes=10**6)
    result = check(path, [device], "fp32").targets[0]
    verdict = result.verdict("operators")
    assert (verdict.value, verdict.limit, verdict.ok) == ("1 unsupported", "tflm", False)
    assert not result.fits
    assert describe_operators(result) == (f"hand-mcu: TensorFlow Lite Micro cannot run 1 of 6 ops: ReduceProd (prod) "
                                          f"{PROD_REASON}")
    data = result.to_dict()["operators"]
    assert data["verdict"] == "does-not-run" and data["not_running"][0]["layer"] == "prod"
    assert check(path, [mcu(latency_budget_s=10.0, ram_bytes=10**6)], "fp32").targets[0].operators is None
    # The tier line names the missing kernel, and int8 does not pretend to help.
    assert render_tier_line(check(path, ["esp32"], "fp32").tiers) == (
        f"Fits: none. Tiny: no — no device runs every op: ReduceProd (prod) {PROD_REASON}; int8 would not fit "
        "either.")
    assert main(["check", str(path), "--target", "stm32h7", "--runtime", "tflm-cmsis-nn", "--json"]) == 1
    target = json.loads(capsys.readouterr().out)["targets"][0]
    assert target["operators"]["not_running"] == [
        {"layer": "prod", "op_type": "ReduceProd", "status": "unsupported", "reason": PROD_REASON,
         "builtins": ["REDUCE_PROD"]}]
    assert {"metric": "operators", "value": "1 unsupported"}.items() <= next(
        c for c in target["checks"] if c["metric"] == "operators").items()


def test_tier_line_names_the_first_op_when_every_device_fails_on_operators(tmp_path):
    """Two MCUs that cannot run ReduceProd: the tier line says no device runs every op and names it (with the count
    of the others); when one device of the tier misses on RAM instead, the one failing on operators is not the best."""
    erf = helper.make_node("Erf", ["y2"], ["y3"], name="erf")
    path = tmp_path / "m.onnx"
    path.write_bytes(small_cnn(extra=[prod(), erf]).SerializeToString())
    roomy = mcu(name="roomy", operators="tflm", ram_bytes=10**6)
    tight = mcu(name="tight", operators="tflm", ram_bytes=10**6, flash_bytes=10_000)
    tiers = check(path, [tight, roomy], "int8").tiers
    tiny = tiers.tiers[0]
    # roomy fails on operators alone, tight on operators and flash: roomy is the closer one
    assert (tiny.best_device, tiny.operators_fail_everywhere) == ("roomy", True)
    assert render_tier_line(tiers) == (f"Fits: none. Tiny: no — no device runs every op: ReduceProd (prod) "
                                       f"{PROD_REASON} (and 1 more op).")
    assert tiers.to_dict()["tiny"]["first_unsupported"] == {
        "layer": "prod", "op_type": "ReduceProd", "status": "unsupported", "reason": PROD_REASON,
        "builtins": ["REDUCE_PROD"], "runtime": "TensorFlow Lite Micro"}
    # A device without an operator list cannot fail on operators: flash binds there, not the op.
    unjudged = mcu(name="unjudged", ram_bytes=10**6, flash_bytes=10_000)
    tiers = check(path, [roomy, unjudged], "int8").tiers
    assert tiers.tiers[0].binding.metric == "flash" and not tiers.tiers[0].operators_fail_everywhere
    assert "ReduceProd" not in render_tier_line(tiers)


def test_analyze_tier_line_shows_the_operator_verdict(tmp_path, capsys, monkeypatch):
    """analyze's tier line is check --all's: with only an MCU that lacks the kernel on the path, it says so."""
    profile_dir = tmp_path / "profiles"
    profile_dir.mkdir()
    (profile_dir / "only.toml").write_text(ONLY_TFLM_MCU)
    monkeypatch.setattr("edgefit.devices.profiles.BUILTIN_PROFILES_DIR", profile_dir)
    path = tmp_path / "m.onnx"
    path.write_bytes(small_cnn(extra=[prod()]).SerializeToString())
    assert main(["analyze", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tier_summary"] == (
        f"Fits: none. Tiny: no — no device runs every op: ReduceProd (prod) {PROD_REASON}; int8 would not fit "
        "either.")


def test_stm32cube_ai_list_checks_the_ranks_st_documents():
    """ST's list takes Einsum on 4-D tensors only and MatMul up to 3-D: a 2-D Einsum breaks the first."""
    einsum = helper.make_node("Einsum", ["f", "f"], ["y2"], equation="bi,bi->b", name="mix")
    result = coverage(small_cnn(extra=[einsum]), "stm32cube-ai")
    assert statuses(result)["mix"] == ("violates", "2-D input (runs 4-D)")
    assert {status for status, _ in statuses(result).values()} == {"supported", "violates"}
    # Attributes ST supports only at their defaults: Reshape(allowzero=1) breaks it where the shape holds a 0 (a
    # zero-sized dimension); with none, allowzero changes nothing and the Reshape runs (torch writes allowzero=1).
    def reshaped(shape):
        built = small_cnn(extra=[helper.make_node("Reshape", ["f", "shape"], ["y2"], allowzero=1, name="rs")])
        built.graph.initializer.append(helper.make_tensor("shape", onnx.TensorProto.INT64, [len(shape)], shape))
        return statuses(coverage(built, "stm32cube-ai"))["rs"]
    assert reshaped([1, 8, 0]) == ("violates", "allowzero=1 (runs 0)")
    assert reshaped([1, 8]) == ("supported", "")
    nonzero = helper.make_node("NonZero", ["f"], ["y2"], name="nz")   # not in ST's list of 132
    assert statuses(coverage(small_cnn(extra=[nonzero]), "stm32cube-ai"))["nz"] == (
        "unsupported", "has no STM32Cube.AI kernel: declare a kernel you wrote with --custom-op NonZero")


def test_npu_fallback_time_is_in_the_latency_and_its_budget(tmp_path):
    """The stride-4 conv falls back from Vela to the host (hand MCU, see the Ethos-U55 test: 136.864 us there).
    On the accelerator at int8 it took max(9216 MACs / 0.5 GMAC/s = 18.43 us, (2048 + 128) B / 100 MB/s + 576 B /
    50 MB/s = 33.28 us) + 100 us dispatch = 133.28 us, and the whole model 1538.12 us (1 ms per inference + 5 ops
    x 0.1 ms + 38.12 us of rooflines). With the fallback: 1538.12 - 133.28 + 136.864 = 1541.704 us."""
    path = tmp_path / "m.onnx"
    path.write_bytes(small_cnn(stride=4).SerializeToString())
    npu = mcu(operators="vela", ram_bytes=10**6)
    result = check(path, [npu], "int8", Budgets(max_latency_s=1.54e-3), rate_hz=100).targets[0]
    est = result.estimate
    assert est.fallback_s == pytest.approx(136.864e-6)
    assert est.latency_s == pytest.approx(1541.704e-6)
    assert est.compute_s == pytest.approx(38.12e-6 - 33.28e-6) and est.overhead_s == pytest.approx(1.4e-3)
    assert est.energy_j == pytest.approx(0.1 * 1541.704e-6)
    # duty 100/s x 1.541704 ms: 0.01 W x (1 - d) + 0.1 W x d
    assert est.avg_power_w == pytest.approx(0.01 + 0.09 * 0.1541704)
    # 1.538 ms would meet the 1.54 ms budget; with the host's share it does not.
    latency = result.verdict("latency")
    assert (latency.value, latency.ok) == (pytest.approx(1.541704), False) and not result.fits
    assert result.to_dict()["estimates"]["fallback_ms"] == pytest.approx(0.136864)
    assert check(path, [npu], "int8", Budgets(max_latency_s=1.545e-3)).targets[0].fits


ONLY_TFLM_MCU = """
name = "only-mcu"
display_name = "Only MCU"
tier = "tiny"
processor = "test"
runtime = "TFLM"
operators = "tflm"
precisions = ["fp32", "int8"]
ram = "1 MiB"
flash = "1 MiB"
runtime_ram = 0
runtime_flash = 0
weights_in_ram = false
peak_gmacs = {fp32 = 1, int8 = 1}
efficiency = 0.5
memory_bandwidth = "1 GB/s"
inference_overhead = "0 ms"
active_power = "1 mW"
idle_power = "0 mW"
[source]
ram = "test"
flash = "test"
runtime_ram = "test"
runtime_flash = "test"
weights_in_ram = "test"
peak_gmacs = "test"
efficiency = "test"
memory_bandwidth = "test"
inference_overhead = "test"
active_power = "test"
idle_power = "test"
processor = "test"
"""


def test_repeated_failing_ops_are_named_once_with_their_count(tmp_path):
    """A transformer repeats its unsupported op in every block: the operators line groups nodes of one op and
    reason ('ReduceProd x5 (p0, p1, p2 and 2 more) ...'), and a different op keeps its own entry."""
    chain = [prod(f"p{i}", "f" if i == 0 else f"q{i - 1}") for i in range(5)]
    for i, node in enumerate(chain):
        node.output[0] = f"q{i}"
        node.ClearField("attribute")
        node.attribute.extend([helper.make_attribute("keepdims", 1)])
    chain.append(helper.make_node("Erf", ["q4"], ["y2"], name="erf"))
    path = tmp_path / "m.onnx"
    path.write_bytes(small_cnn(extra=chain).SerializeToString())
    result = check(path, [mcu(operators="tflm", latency_budget_s=10.0, ram_bytes=10**6)], "fp32").targets[0]
    erf = next(n for n in result.operators.not_running if n.op_type == "Erf")
    assert describe_operators(result) == (
        f"hand-mcu: TensorFlow Lite Micro cannot run 6 of 11 ops: ReduceProd x5 (p0, p1, p2 and 2 more) {PROD_REASON}, "
        f"Erf (erf) {erf.reason}")


def test_a_hand_written_port_runs_a_qdq_model_of_the_kernels_it_declares(tmp_path, capsys):
    """The Uno's list is what its port declares: the int8 model's QuantizeLinear / DequantizeLinear pairs are the
    declared kernels' scales, not ops a port must also write; an undeclared op is still refused."""
    source, int8 = tmp_path / "m.onnx", tmp_path / "m.int8.onnx"
    source.write_bytes(small_cnn().SerializeToString())
    assert main(["quantize", str(source), "-o", str(int8), "--json"]) == 0
    capsys.readouterr()
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in onnx.load(int8).graph.node}
    declared = [arg for op in ("Conv", "Relu", "GlobalAveragePool", "Flatten", "Gemm") for arg in ("--custom-op", op)]
    main(["check", str(int8), "-t", "arduino-uno", *declared, "--json"])   # exit 1: its 8 KiB input is over 2 KiB
    target = json.loads(capsys.readouterr().out)["targets"][0]
    assert target["operators"]["verdict"] == "supported" and target["operators"]["not_running"] == []
    assert [c["metric"] for c in target["checks"] if not c["ok"]] == ["ram"]
    main(["check", str(int8), "-t", "arduino-uno", *declared[:-2], "--json"])
    refused = json.loads(capsys.readouterr().out)["targets"][0]["operators"]["not_running"]
    assert [n["op_type"] for n in refused] == ["Gemm"]
