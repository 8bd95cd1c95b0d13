"""--input-value on every command that takes a MODEL, and --custom-op / custom_ops where fit, profiles and gates
take them.

The model: an If on an int64 scalar `sr` (Equal(sr, 16000)), as Silero VAD chooses its 16 kHz or 8 kHz network.
Hand count, x [1, 8] float:
- then_branch (16 kHz): MatMul x @ W[8, 4] = 1 x 8 x 4 = 32 MACs; activation workspace: its output, 16 bytes;
- else_branch (8 kHz): Gather of columns 4..11 (the 8 kHz window, which a 16 kHz frame of 8 samples does not
  hold: onnxruntime refuses it at run time, as Silero's 8 kHz network cannot run on 576 samples), MatMul W[8, 8]
  (64) -> Relu -> MatMul W[8, 4] (32) = 96 MACs; workspace 32 + 32 bytes (two live [1, 8] float tensors).
Arena (16-byte alignment): x 32 + the condition 16 + y 16 + the branch's workspace = 80 (then) or 128 (else).
So a fidelity run that fed sr = 0 (the zeros integer inputs get) would take the else branch and fail: the
commands below succeed only because the given value is in the samples too.
"""

import json
import textwrap

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgefit.cli import main
from edgefit.fidelity import synthetic_samples
from edgefit.fitting import fit
from tests.helpers import I64, F, build, vi
from tests.test_profiles import VALID, write_profile

THEN_MACS, ELSE_MACS = 32, 96
THEN_ARENA, ELSE_ARENA = 80, 128
RUNTIME_RAM = 4096   # VALID's runtime_ram = "4 KiB"


def rate_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)

    def weight(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
    then_branch = helper.make_graph([helper.make_node("MatMul", ["x", "w16"], ["y16"], name="mm16")], "then", [],
                                    [vi("y16", F, [1, 4])], [weight("w16", 8, 4)])
    window = numpy_helper.from_array(np.arange(4, 12, dtype=np.int64), "window")
    else_branch = helper.make_graph(
        [helper.make_node("Gather", ["x", "window"], ["x8"], axis=1, name="window8"),
         helper.make_node("MatMul", ["x8", "w8a"], ["h8"], name="mm8a"),
         helper.make_node("Relu", ["h8"], ["r8"], name="relu8"),
         helper.make_node("MatMul", ["r8", "w8b"], ["y8"], name="mm8b")], "else", [],
        [vi("y8", F, [1, 4])], [window, weight("w8a", 8, 8), weight("w8b", 8, 4)])
    rate = numpy_helper.from_array(np.array(16000, np.int64), "rate")
    nodes = [helper.make_node("Equal", ["sr", "rate"], ["is16k"], name="is16k"),
             helper.make_node("If", ["is16k"], ["y"], name="if_rate", then_branch=then_branch,
                              else_branch=else_branch)]
    return build(nodes, [vi("x", F, [1, 8]), vi("sr", I64, [])], [vi("y", F, [1, 4])], [rate])


@pytest.fixture
def rate_path(tmp_path):
    path = tmp_path / "rate.onnx"
    onnx.save(rate_model(), path)
    return path


@pytest.fixture
def board(tmp_path):
    folder = tmp_path / "profiles"
    folder.mkdir()
    write_profile(folder, VALID)
    return folder


def cli(capsys, *args) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_the_model_runs_the_branch_sr_picks_and_refuses_the_8k_window():
    import onnxruntime as ort

    session = ort.InferenceSession(rate_model().SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.ones((1, 8), np.float32)
    assert session.run(None, {"x": x, "sr": np.array(16000, np.int64)})[0].shape == (1, 4)
    with pytest.raises(Exception, match="indices element out of data bounds"):
        session.run(None, {"x": x, "sr": np.array(8000, np.int64)})


def test_synthetic_samples_hold_the_given_value():
    samples = synthetic_samples(rate_model(), count=4, input_values={"sr": [16000]})
    assert len(samples.feeds) == 4
    for feed in samples.feeds:
        assert feed["sr"].dtype == np.int64 and feed["sr"].shape == () and int(feed["sr"]) == 16000
        assert feed["x"].shape == (1, 8) and feed["x"].dtype == np.float32
    # Without a value an integer input is zeros (any such input accepts them): the else branch here.
    assert all(int(feed["sr"]) == 0 for feed in synthetic_samples(rate_model(), count=2).feeds)


@pytest.mark.parametrize("command", [["fuse"], ["quantize", "--mode", "fp16"], ["optimize", "--passes", "fuse"]])
def test_pass_commands_count_and_run_the_branch_the_value_takes(rate_path, tmp_path, capsys, command):
    out_path = tmp_path / "out.onnx"
    rc, out, err = cli(capsys, *command, rate_path, "-o", out_path, "--input-value", "sr=16000", "--json")
    assert rc == 0, err
    data = json.loads(out)
    assert data["before"]["macs"] == THEN_MACS and data["after"]["macs"] == THEN_MACS
    assert data["before"]["peak_activation_bytes"] == THEN_ARENA
    assert data["fidelity"]["inputs"] == "synthetic" and data["fidelity"]["cosine"] == pytest.approx(1.0, abs=1e-3)
    # Without the value the fidelity samples hold sr = 0: the 8 kHz branch runs, and onnxruntime refuses it.
    rc, out, err = cli(capsys, *command, rate_path, "-o", out_path, "--force", "--json")
    assert rc == 2 and "window8" in err and "indices element out of data bounds" in err


def test_report_counts_the_branch_of_the_given_value(rate_path, tmp_path, capsys):
    for value, macs in (("sr=16000", THEN_MACS), ("sr=8000", ELSE_MACS)):
        rc, out, err = cli(capsys, "report", rate_path, "-o", tmp_path / "r.html", "--force", "--input-value", value,
                           "--json")
        assert rc == 0, err
        assert json.loads(out)["footprint"]["macs"] == macs
    rc, _, err = cli(capsys, "report", rate_path, "-o", tmp_path / "r.html", "--force", "--input-value", "rate=1")
    assert rc == 2 and "unknown input 'rate'" in err


def test_fit_counts_and_measures_the_branch_of_the_given_value(rate_path, board, tmp_path, capsys):
    # RAM 4096 + 80 = 4,176 bytes with sr = 16000 (4096 + 128 = 4,224 for both branches): 4,200 holds only then.
    args = ["fit", rate_path, "-t", "test-board", "--profiles-dir", board, "--max-ram", "4200",
            "-o", tmp_path / "fit.onnx", "--json"]
    rc, out, err = cli(capsys, *args, "--input-value", "sr=16000")
    assert rc == 0, err
    data = json.loads(out)
    assert data["fits"] and data["estimates"]["ram_bytes"] == RUNTIME_RAM + THEN_ARENA
    rc, out, err = cli(capsys, *args)
    assert rc == 2 and "indices element out of data bounds" in err


def write_gate(tmp_path, entries: str) -> str:
    path = tmp_path / "edgefit.toml"
    path.write_text(textwrap.dedent(entries))
    return str(path)


def test_gate_entry_input_value(rate_path, board, tmp_path, capsys):
    config = write_gate(tmp_path, f"""\
        profiles_dir = "{board.name}"

        [defaults]
        target = "test-board"
        max_ram = 4200

        [[gate]]
        name = "16 kHz"
        model = "{rate_path.name}"
        input_value = {{ sr = 16000 }}

        [[gate]]
        name = "8 kHz"
        model = "{rate_path.name}"
        input_value = {{ sr = [8000] }}
        """)
    rc, out, err = cli(capsys, "gate", "-c", config, "--json")
    assert rc == 1, err
    results = {r["name"]: r for r in json.loads(out)["results"]}
    ram = {name: next(v for v in r["checks"] if v["metric"] == "ram") for name, r in results.items()}
    assert ram["16 kHz"]["value"] == RUNTIME_RAM + THEN_ARENA and ram["16 kHz"]["ok"]
    assert ram["8 kHz"]["value"] == RUNTIME_RAM + ELSE_ARENA and not ram["8 kHz"]["ok"]
    for bad, message in (('"16000"', "input_value.sr: expected a number or a list of numbers"),
                         ("true", "input_value.sr: expected a number or a list of numbers"),
                         ("[]", "input_value.sr: expected a number or a list of numbers"),
                         ("16000.5", "--input-value sr: the input holds int64, not fractions")):
        config = write_gate(tmp_path, f"""\
            profiles_dir = "{board.name}"
            [[gate]]
            model = "{rate_path.name}"
            target = "test-board"
            input_value = {{ sr = {bad} }}
            """)
        rc, out, err = cli(capsys, "gate", "-c", config)
        assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, (bad, err)


# ---- custom ops: fit's other devices, profiles (profile level, per stack), gate entries ----------------------

def gelu_model() -> onnx.ModelProto:
    """x [1, 16] -> MatMul W[16, 16] -> com.microsoft.Gelu (what onnxruntime's transformer optimizer writes):
    onnxruntime runs it, no microcontroller runtime has a kernel for it."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
             helper.make_node("Gelu", ["h"], ["y"], domain="com.microsoft", name="gelu")]
    return build(nodes, [vi("x", F, [1, 16])], [vi("y", F, [1, 16])], [w],
                 extra_opsets=[helper.make_opsetid("com.microsoft", 1)])


@pytest.fixture
def gelu_path(tmp_path):
    path = tmp_path / "gelu.onnx"
    onnx.save(gelu_model(), path)
    return path


def test_fit_other_devices_judge_the_declared_custom_op(gelu_path, tmp_path):
    # A board whose 10 KB of flash cannot hold its own 40 KB runtime: nothing fits, flash binds, and the answer
    # lists the other known devices the closest candidate fits as it is.
    folder = tmp_path / "small"
    folder.mkdir()
    write_profile(folder, VALID.replace('flash = "512 KB"', 'flash = "10 KB"'))
    plain = fit(gelu_path, "test-board", profiles_dir=[folder]).targets[0].no_fit
    declared = fit(gelu_path, "test-board", profiles_dir=[folder], custom_ops=["com.microsoft.Gelu"]).targets[0].no_fit
    assert plain.metric == declared.metric == "flash" and plain.limit == 10_000
    # TFLM (the Nano), ESP-NN, STM32Cube.AI have no kernel for com.microsoft.Gelu unless the user wrote one.
    microcontrollers = {"arduino-nano-33-ble-sense", "esp32", "stm32h7"}
    assert not microcontrollers & set(plain.devices_that_fit)
    assert microcontrollers <= set(declared.devices_that_fit)
    assert set(plain.devices_that_fit) < set(declared.devices_that_fit)


def test_fit_cli_passes_custom_op_to_the_other_devices(gelu_path, tmp_path, capsys):
    folder = tmp_path / "small"
    folder.mkdir()
    write_profile(folder, VALID.replace('flash = "512 KB"', 'flash = "10 KB"'))
    rc, out, err = cli(capsys, "fit", gelu_path, "-t", "test-board", "--profiles-dir", folder,
                       "--custom-op", "com.microsoft.Gelu", "--json")
    assert rc == 1, err
    assert "arduino-nano-33-ble-sense" in json.loads(out)["targets"][0]["no_fit"]["devices_that_fit"]


STACKS = """\
[runtimes.micro]
display_name = "TFLM"
basis = "datasheet"
source = "test"
operators = "tflm"

[runtimes.micro.fp32]
conv = "10 MMAC/s"
depthwise = "10 MMAC/s"
fc = "10 MMAC/s"
elementwise = "1 Melem/s"
per_op = "10 us"
per_inference = "0 us"

[runtimes.cube]
display_name = "STM32Cube.AI"
basis = "datasheet"
source = "test"
operators = "stm32cube-ai"

[runtimes.cube.fp32]
conv = "10 MMAC/s"
depthwise = "10 MMAC/s"
fc = "10 MMAC/s"
elementwise = "1 Melem/s"
per_op = "10 us"
per_inference = "0 us"

"""


def stacked_profile(custom_ops: str = "") -> str:
    """VALID with two runtime stacks (TFLM first, the default; STM32Cube.AI), `custom_ops` at profile level."""
    text = VALID.replace("[peak_gmacs]", STACKS + "[peak_gmacs]", 1)
    return text.replace('runtime = "TFLM"\n', f'runtime = "TFLM"\n{custom_ops}\n') if custom_ops else text


@pytest.mark.parametrize("runtime, list_name", [([], "tflm"), (["--runtime", "cube"], "stm32cube-ai")])
def test_profile_custom_ops_hold_on_every_stack(gelu_path, tmp_path, capsys, runtime, list_name):
    declared = write_profile(tmp_path, stacked_profile('custom_ops = ["com.microsoft.Gelu"]'), "declared.toml")
    bare = write_profile(tmp_path, stacked_profile(), "bare.toml")
    rc, out, err = cli(capsys, "check", gelu_path, "-t", declared, *runtime, "--json")
    assert rc == 0, err
    operators = json.loads(out)["targets"][0]["operators"]
    assert operators["runtime"] == list_name and operators["verdict"] == "supported"
    rc, out, err = cli(capsys, "check", gelu_path, "-t", bare, *runtime, "--json")
    assert rc == 1, err
    operators = json.loads(out)["targets"][0]["operators"]
    assert operators["runtime"] == list_name and operators["verdict"] == "does-not-run"
    assert [(n["layer"], n["op_type"]) for n in operators["not_running"]] == [("gelu", "com.microsoft.Gelu")]
    assert operators["not_running"][0]["reason"].endswith("declare a kernel you wrote with --custom-op "
                                                          "com.microsoft.Gelu")
    # The same kernel declared on the command line instead.
    rc, _, err = cli(capsys, "check", gelu_path, "-t", bare, *runtime, "--custom-op", "com.microsoft.Gelu")
    assert rc == 0, err


def test_a_stack_takes_no_custom_ops_of_its_own(gelu_path, tmp_path, capsys):
    # Declared kernels belong to the board (the user's firmware), whichever stack runs the rest: a stack-level
    # key is refused, naming the keys a stack takes.
    text = stacked_profile().replace('operators = "stm32cube-ai"\n',
                                     'operators = "stm32cube-ai"\ncustom_ops = ["com.microsoft.Gelu"]\n')
    path = write_profile(tmp_path, text, "stack.toml")
    rc, _, err = cli(capsys, "check", gelu_path, "-t", path)
    assert rc == 2 and "field 'runtimes.cube': unknown key 'custom_ops'" in err
    assert len(err.strip().splitlines()) == 1


def test_gate_entry_custom_ops(gelu_path, tmp_path, capsys):
    def gate(extra: str, *options) -> tuple[int, dict]:
        config = write_gate(tmp_path, f"""\
            [[gate]]
            name = "gelu on the nano"
            model = "{gelu_path.name}"
            target = "nano33ble"
            {extra}
            """)
        rc, out, err = cli(capsys, "gate", "-c", config, *options, "--json")
        return rc, (json.loads(out) if out else {"error": err})

    rc, data = gate("")
    operators = next(v for v in data["results"][0]["checks"] if v["metric"] == "operators")
    assert rc == 1 and not operators["ok"]
    rc, data = gate('custom_ops = ["com.microsoft.Gelu"]')
    operators = next(v for v in data["results"][0]["checks"] if v["metric"] == "operators")
    assert rc == 0 and operators["ok"] and data["passed"]
    rc, data = gate("", "--custom-op", "com.microsoft.Gelu")   # the option adds to every entry
    assert rc == 0 and data["passed"]
    rc, data = gate('custom_ops = "com.microsoft.Gelu"')
    assert rc == 2 and data["error"].rstrip().endswith(
        "edgefit.toml: [[gate]] #1 (gelu on the nano): custom_ops: expected a list of op names such as "
        "[\"com.example.Frobnicate\"], got 'com.microsoft.Gelu'")
