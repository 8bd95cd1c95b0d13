"""Runtime stacks in device profiles: parsing, lookup, malformed tables, and estimates that use their per-class
latency coefficients (seconds worked out by hand) instead of the datasheet roofline."""

import json

import pytest
from test_latency import conv_bn_relu_dw_fc
from test_profiles import VALID, write_profile

from edgefit.analysis.footprint import analyze
from edgefit.cli import main
from edgefit.devices.estimate import estimate
from edgefit.devices.latency import LatencyCoefficients
from edgefit.devices.profiles import load_profile_file
from edgefit.errors import ProfileError

STACKS = VALID.replace('idle_power = "1 mW"\n', 'idle_power = "1 mW"\ndefault_runtime = "fast"\n') + """
[runtimes.slow]
display_name = "Slow stack"
basis = "published measurement"
source = "test"
[runtimes.slow.fp32]
conv = "0.25 GMAC/s"
depthwise = "50 MMAC/s"
fc = "0.125 GMAC/s"
elementwise = "50 Melem/s"
per_op = "40 us"
per_inference = "0.2 ms"

[runtimes.fast]
display_name = "Fast stack"
basis = "published measurement"
expected_error = 0.2
source = "test"
active_power = "50 mW"
active_power_source = "test rail"
[runtimes.fast.fp32]
conv = "0.5 GMAC/s"
depthwise = "0.1 GMAC/s"
fc = "250 MMAC/s"
elementwise = "100 Melem/s"
per_op = "20 us"
per_inference = "0.1 ms"
"""


def test_stacks_parse_default_first_with_rates_as_seconds_per_unit(tmp_path):
    profile = load_profile_file(write_profile(tmp_path, STACKS))
    assert [stack.name for stack in profile.runtimes] == ["fast", "slow"]
    assert profile.default_runtime == "fast" and profile.runtime_stack() is profile.runtimes[0]
    fast = profile.runtime_stack("Fast")
    assert fast.coefficients["fp32"].vector() == pytest.approx(
        LatencyCoefficients(2e-9, 1e-8, 4e-9, 2e-9, 1e-8, 1e-8, 2.5e-9, 1e-8, 0.0, 0.0, 20e-6, 1e-4).vector(),
        rel=1e-12)
    # A table written before integer / moved / transcendental / lrn / uncached / conv_weights existed: integer MACs
    # at the conv rate, bytes moved at the elementwise rate per fp32 element (4 bytes), transcendental elements at
    # the elementwise rate, LRN elements at the transcendental rate, bytes beyond the cache and conv weights at no
    # extra cost, so its estimates did not change.
    assert (fast.active_power_w, fast.expected_error, fast.basis) == (0.05, 0.2, "published measurement")
    assert profile.runtime_stack("slow").expected_error is None
    assert list(profile.to_dict()["runtimes"][0]["latency_coefficients"]["fp32"]) == [
        "conv", "depthwise", "fc", "integer", "elementwise", "transcendental", "moved", "lrn", "uncached",
        "conv_weights", "per_op", "per_inference"]


def test_an_infinite_rate_is_a_free_class_and_dotted_names_are_quoted(tmp_path):
    text = STACKS.replace('elementwise = "50 Melem/s"', "elementwise = inf").replace("[runtimes.slow", '[runtimes."slow-1.0"')
    profile = load_profile_file(write_profile(tmp_path, text))
    assert profile.runtime_stack("slow-1.0").coefficients["fp32"].s_per_elementwise_element == 0.0


def test_first_table_is_the_default_without_default_runtime(tmp_path):
    profile = load_profile_file(write_profile(tmp_path, STACKS.replace('default_runtime = "fast"\n', "")))
    assert profile.default_runtime == "slow"


def test_unknown_stack_names_the_choices(tmp_path):
    profile = load_profile_file(write_profile(tmp_path, STACKS))
    with pytest.raises(ProfileError, match="profile 'test-board' has no runtime 'tflm': it offers fast, slow"):
        profile.runtime_stack("tflm")
    plain = load_profile_file(write_profile(tmp_path, VALID))
    assert plain.runtimes == () and plain.runtime_stack() is None and plain.default_runtime is None
    with pytest.raises(ProfileError, match="it has no runtime stacks"):
        plain.runtime_stack("tflm")


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace('basis = "published measurement"\nsource', 'source', 1),
     "field 'runtimes.slow': missing key 'basis'"),
    (lambda t: t.replace('basis = "published measurement"', 'basis = "guess"', 1), "basis: expected one of"),
    (lambda t: t.replace('conv = "0.25 GMAC/s"', 'conv = "0.25 GB/s"'),
     "field 'runtimes.slow.fp32': conv: expected a rate such as '0.45 GMAC/s'"),
    (lambda t: t.replace('elementwise = "50 Melem/s"', 'elementwise = "50 MMAC/s"'), "elementwise: expected a rate"),
    (lambda t: t.replace('conv = "0.25 GMAC/s"', "conv = 0"), "conv: expected a positive rate"),
    (lambda t: t.replace('fc = "0.125 GMAC/s"\n', ""), "missing key 'fc'"),
    (lambda t: t.replace('per_op = "40 us"', 'per_op = "40 us"\nper_layer = "1 us"'), "unknown key 'per_layer'"),
    (lambda t: t.replace('per_op = "40 us"', 'per_op = "-40 us"'), "per_op: invalid duration"),
    (lambda t: t.replace("[runtimes.slow.fp32]", "[runtimes.slow.fp16]"),
     "field 'runtimes.slow.fp16': the profile does not run fp16"),
    (lambda t: t.replace("[runtimes.slow.fp32]", "[runtimes.slow.int4]"), "unknown key 'int4' (expected active_power"),
    (lambda t: t.replace('default_runtime = "fast"', 'default_runtime = "quick"'),
     "field 'default_runtime': 'quick' is not one of the profile's [runtimes.*] tables (slow, fast)"),
    (lambda t: t.replace('active_power_source = "test rail"\n', ""), "active_power and active_power_source go"),
    (lambda t: t.replace("expected_error = 0.2", "expected_error = -0.2"), "expected_error: expected a positive"),
    (lambda t: t.replace('source = "test"\n', 'source = "test"\nspeed = "fast"\n', 1), "unknown key 'speed'"),
    (lambda t: t.split("[runtimes.slow.fp32]")[0] + "[runtimes.fast]" + t.split("[runtimes.fast]")[1],
     "field 'runtimes.slow': no latency table; add a [runtimes.slow.int8] table"),
    (lambda t: t.replace("[runtimes.slow.fp32]", "[runtimes.slow.v2.fp32]"),
     "unknown table 'v2'; a runtime name with a dot must be quoted, as in [runtimes.\"stm32cube-ai-8.1\"]"),
    (lambda t: t.replace('default_runtime = "fast"', 'default_runtime = "fast"\ncalibration = "yes"'),
     "field 'calibration': expected a table"),
    (lambda t: t.replace('source = "test"\n', 'source = "test"\nmemory_model = "tflm-micro"\n', 1),
     "field 'runtimes.slow': memory_model: unknown memory model 'tflm-micro'"),
    (lambda t: t.replace('source = "test"\n', 'source = "test"\noperators = "cube"\n', 1),
     "field 'runtimes.slow': operators: unknown operator list 'cube'"),
    (lambda t: t.replace('source = "test"\n', 'source = "test"\nruntime_ram = "8 KiB"\n', 1),
     "runtime_ram / runtime_flash and footprint_source go together"),
    (lambda t: t.replace('source = "test"\n', 'source = "test"\nfootprint_source = "map file"\n', 1),
     "runtime_ram / runtime_flash and footprint_source go together"),
    (lambda t: t.replace('source = "test"\n', 'source = "test"\nruntime_flash = "-2 KB"\nfootprint_source = "x"\n', 1),
     "field 'runtimes.slow': invalid size"),
])
def test_malformed_runtime_tables_name_file_and_field(tmp_path, edit, message):
    path = write_profile(tmp_path, edit(STACKS))
    with pytest.raises(ProfileError) as error:
        load_profile_file(path)
    assert str(path) in str(error.value) and message in str(error.value)


def test_estimate_uses_the_stack_coefficients_by_hand(tmp_path):
    """Features of conv_bn_relu_dw_fc (see test_latency): conv 18,432, depthwise 4,608, fc 80 MACs, 18 elements,
    6 ops. Fast stack: 36.864 + 46.08 + 0.32 + 0.18 us of compute; 6 x 20 us + 100 us overhead = 303.444 us."""
    profile = load_profile_file(write_profile(tmp_path, STACKS))
    footprint = analyze(conv_bn_relu_dw_fc())
    est = estimate(footprint, profile, "fp32")
    assert est.compute_s == pytest.approx(83.444e-6, rel=1e-9)
    assert est.overhead_s == pytest.approx(220e-6, rel=1e-9)
    assert est.energy_j == pytest.approx(0.05 * 303.444e-6, rel=1e-9), "the stack's measured power, not 30 mW"
    assert (est.runtime, est.basis, est.expected_error) == ("fast", "published measurement", 0.2)
    slow = estimate(footprint, profile, "fp32", runtime="slow")
    assert slow.latency_s == pytest.approx(2 * 303.444e-6, rel=1e-9)
    assert slow.energy_j == pytest.approx(0.030 * 2 * 303.444e-6, rel=1e-9), "no stack power: the profile's"
    # No int8 table: the datasheet roofline, and the estimate says so.
    int8 = estimate(footprint, profile, "int8")
    assert (int8.runtime, int8.basis, int8.expected_error) == ("fast", "datasheet", None)
    assert int8.latency_s == pytest.approx(estimate(footprint, load_profile_file(
        write_profile(tmp_path, VALID, "plain.toml")), "int8").latency_s, rel=1e-12)


def test_user_calibration_reports_the_leave_one_out_error(tmp_path):
    text = STACKS.replace('basis = "published measurement"\nexpected_error = 0.2', 'basis = "user calibration"')
    text += '\n[calibration]\nmodels = ["a.onnx", "b.onnx"]\nloo_error = 0.12\ndate = "2026-11-29"\n'
    profile = load_profile_file(write_profile(tmp_path, text))
    assert profile.calibration["loo_error"] == 0.12
    est = estimate(analyze(conv_bn_relu_dw_fc()), profile, "fp32")
    assert (est.basis, est.expected_error) == ("user calibration", 0.12)


def test_cli_check_runtime(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    model.write_bytes(conv_bn_relu_dw_fc().SerializeToString())
    write_profile(tmp_path, STACKS)
    args = ["check", str(model), "--target", "test-board", "--profiles-dir", str(tmp_path), "--json"]
    assert main(args + ["--runtime", "slow"]) == 0
    estimates = json.loads(capsys.readouterr().out)["targets"][0]["estimates"]
    assert estimates["runtime"] == "slow" and estimates["basis"] == "published measurement"
    assert estimates["expected_error"] is None
    assert estimates["latency_ms"] == pytest.approx(0.606888, rel=1e-9)
    assert main(args + ["--runtime", "nope"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == "error: profile 'test-board' has no runtime 'nope': it offers fast, slow"
    assert captured.out == ""


def test_builtin_stacks_are_sourced_and_cover_int8():
    from edgefit.devices.fields import BASES
    from edgefit.devices.profiles import list_profiles

    stacks = [(p, s) for p in list_profiles() for s in p.runtimes]
    assert {p.name for p, _ in stacks} >= {"nucleo-h7a3zi-q", "nucleo-l4r5zi", "stm32h7"}
    for profile, stack in stacks:
        assert stack.basis in BASES and stack.source and stack.expected_error is not None, (profile.name, stack.name)
        assert "int8" in stack.coefficients, (profile.name, stack.name)


# The fast stack brings its own memory model, operator list and runtime footprint; the slow one inherits the
# profile's (TFLM arena, TFLM kernels, 4 KiB / 40 KB).
OWN_SETTINGS = STACKS.replace('runtime = "TFLM"\n', 'runtime = "TFLM"\nmemory_model = "tflm"\noperators = "tflm"\n').replace(
    'active_power_source = "test rail"\n', 'active_power_source = "test rail"\nmemory_model = "static"\n'
    'operators = "stm32cube-ai"\nruntime_ram = "8 KiB"\nruntime_flash = "20 KB"\nfootprint_source = "map file"\n')


def test_a_stack_overrides_memory_model_operators_and_runtime_footprint(tmp_path):
    profile = load_profile_file(write_profile(tmp_path, OWN_SETTINGS))
    fast = profile.stack_settings()
    assert (fast.runtime, fast.memory_model, fast.operators, fast.runtime_ram_bytes, fast.runtime_flash_bytes) == (
        "fast", "static", "stm32cube-ai", 8192, 20_000)
    assert fast.from_stack == ("memory_model", "operators", "runtime_ram_bytes", "runtime_flash_bytes")
    slow = profile.stack_settings("slow")
    assert (slow.memory_model, slow.operators, slow.runtime_ram_bytes, slow.runtime_flash_bytes, slow.from_stack) == (
        "tflm", "tflm", 4096, 40_000, ())
    assert profile.to_dict()["runtimes"][0]["footprint_source"] == "map file"
    # A profile without stacks: its own settings, no runtime.
    plain = load_profile_file(write_profile(tmp_path, VALID, "plain.toml")).stack_settings()
    assert (plain.runtime, plain.memory_model, plain.operators, plain.from_stack) == (None, "static", None, ())


def test_estimate_budgets_memory_by_the_stacks_model(tmp_path):
    """Static (fast): RAM = the planned activations + 8 KiB, flash = weights + 20 KB. TFLM (slow): the arena adds
    TFLM's interpreter state (a tail) to the same graph, plus the profile's 4 KiB and 40 KB."""
    profile = load_profile_file(write_profile(tmp_path, OWN_SETTINGS))
    footprint = analyze(conv_bn_relu_dw_fc())
    fast = estimate(footprint, profile, "fp32")
    assert (fast.memory.model, fast.memory.tail_bytes) == ("static", 0)
    assert fast.ram_bytes == footprint.activation_bytes_at("fp32") + 8192
    assert fast.flash_bytes == footprint.weight_bytes_at("fp32") + 20_000
    slow = estimate(footprint, profile, "fp32", runtime="slow")
    assert slow.memory.model == "tflm" and slow.memory.tail_bytes > 0
    assert slow.ram_bytes == slow.memory.arena_bytes + 4096
    assert slow.flash_bytes == footprint.weight_bytes_at("fp32") + 40_000
    assert fast.to_dict()["stack_settings"]["from_stack"] == [
        "memory_model", "operators", "runtime_ram_bytes", "runtime_flash_bytes"]


def test_check_judges_operators_on_the_stacks_list_and_says_whose(tmp_path, capsys):
    """An Erf node: STM32Cube.AI's list has it, TFLM's resolver has no kernel for it."""
    from onnx import helper
    from test_operators import small_cnn

    model = tmp_path / "m.onnx"
    model.write_bytes(small_cnn(extra=[helper.make_node("Erf", ["f"], ["y2"], name="erf")]).SerializeToString())
    write_profile(tmp_path, OWN_SETTINGS)
    args = ["check", str(model), "--target", "test-board", "--profiles-dir", str(tmp_path)]
    assert main(args + ["--json"]) == 0
    target = json.loads(capsys.readouterr().out)["targets"][0]
    assert target["operators"]["runtime"] == "stm32cube-ai" and target["operators"]["verdict"] == "supported"
    assert target["estimates"]["stack_settings"]["operators"] == "stm32cube-ai"
    assert main(args + ["--runtime", "slow", "--json"]) == 1
    target = json.loads(capsys.readouterr().out)["targets"][0]
    assert target["operators"]["runtime"] == "tflm" and target["operators"]["not_running"][0]["op_type"] == "Erf"
    assert target["estimates"]["stack_settings"]["from_stack"] == []
    main(args)
    out = " ".join(capsys.readouterr().out.split())
    assert "memory model static, operators stm32cube-ai of runtime fast" in out and "tensor arena" not in out
    main(args + ["--runtime", "slow"])
    out = " ".join(capsys.readouterr().out.split())
    assert "memory model tflm, operators tflm of the profile" in out and "set the tensor arena to" in out
    # profiles show: each stack's own values, and which stacks replace the profile's (one wide line per row)
    import io

    from rich.console import Console

    from edgefit.report.check_terminal import render_profile

    console = Console(file=io.StringIO(), width=400)
    render_profile(console, load_profile_file(tmp_path / "test-board.toml"))
    shown = console.file.getvalue()
    assert "(default); memory model static, operators stm32cube-ai, runtime RAM 8.00 KiB" in shown
    assert "runtimes fast set their own" in shown


def test_builtin_stm32cube_ai_stacks_bring_their_own_models():
    from edgefit.devices.profiles import list_profiles

    profiles = {p.name: p for p in list_profiles()}
    for name in ("stm32h7", "nucleo-l4r5zi"):
        default = profiles[name].stack_settings()
        assert default.runtime.startswith("stm32cube-ai")
        assert (default.memory_model, default.operators) == ("static", "stm32cube-ai"), name
        tflm = profiles[name].stack_settings("tflm-cmsis-nn")
        assert (tflm.memory_model, tflm.operators) == ("tflm-cmsis-nn", "tflm"), name
    cube = [(p.name, stack.name) for p in profiles.values() for stack in p.runtimes
            if stack.name.startswith("stm32cube-ai")]
    assert {name for name, _ in cube} >= {"stm32h7", "nucleo-l4r5zi", "nucleo-h7a3zi-q"}
    for name, stack in cube:   # generated C everywhere: a static plan, ST's operator list
        settings = profiles[name].stack_settings(stack)
        assert (settings.memory_model, settings.operators) == ("static", "stm32cube-ai"), (name, stack)
