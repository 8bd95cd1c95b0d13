"""edgefit gate: edgefit.toml parsing, budgets and baselines, every output format, exit codes, config errors."""

import json
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import onnx
import pytest
from helpers import strict_json
from test_check import dense_model
from test_profiles import VALID, write_profile

from edgefit.cli import main
from edgefit.devices.profiles import BUILTIN_PROFILES_DIR, load_profile_file
from edgefit.errors import ConfigError
from edgefit.gate import load_gate_config, run_gate

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def project(tmp_path):
    """A project with one small model: a 64 x 10 Gemm, 650 params, 2600 B of fp32 weights."""
    onnx.save(dense_model(64, 10), tmp_path / "model.onnx")
    return tmp_path


def write_config(project: Path, text: str) -> Path:
    path = project / "edgefit.toml"
    path.write_text(textwrap.dedent(text))
    return path


PASSING = """\
    [defaults]
    precision = "int8"

    [[gate]]
    name = "small on esp32"
    model = "model.onnx"
    target = "esp32"
    max_latency = "50ms"

    [[gate]]
    model = "model.onnx"
    target = "nano33ble"
    rate = 1
    max_power = "25mW"
    """

# The second gate asks for 1 KiB of RAM: the ESP32 needs 220 KiB for ESP-IDF alone.
FAILING = PASSING.replace('max_latency = "50ms"', 'max_latency = "50ms"\nmax_ram = "1KiB"')


def test_config_parsing(project):
    config = load_gate_config(write_config(project, PASSING))
    first, second = config.gates
    assert first.name == "small on esp32" and first.model == project / "model.onnx"
    assert first.precision == "int8" and first.budgets.max_latency_s == pytest.approx(0.05)
    assert second.name == "model.onnx on nano33ble", "unnamed gates are named after model and target"
    assert second.rate_hz == 1.0 and second.budgets.max_power_w == pytest.approx(0.025)


def test_passing_gate(project, capsys):
    report = run_gate(write_config(project, PASSING))
    assert report.passed and len(report.results) == 2
    assert [r.target.profile.name for r in report.results] == ["esp32", "arduino-nano-33-ble-sense"]
    assert main(["gate", "--config", str(project / "edgefit.toml")]) == 0
    out = capsys.readouterr().out
    assert "2/2 gates passed" in out and "small on esp32" in out


def test_failing_gate_exits_1(project, capsys):
    config = write_config(project, FAILING)
    report = run_gate(config)
    assert not report.passed and [r.passed for r in report.results] == [False, True]
    assert main(["gate", "-c", str(config)]) == 1
    assert "FAIL small on esp32: RAM" in " ".join(capsys.readouterr().out.split())


def test_json_format(project, capsys):
    assert main(["gate", "-c", str(write_config(project, FAILING)), "--format", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert (data["passed"], data["gates"], data["failed"]) == (False, 2, 1)
    first = data["results"][0]
    assert first["name"] == "small on esp32" and first["target"] == "esp32" and first["precision"] == "int8"
    ram = next(c for c in first["checks"] if c["metric"] == "ram")
    assert ram["ok"] is False and ram["limit"] == 1024 and ram["limit_source"] == "budget"


def test_junit_format_one_testcase_per_gate_and_budget(project, capsys):
    assert main(["gate", "-c", str(write_config(project, FAILING)), "--format", "junit"]) == 1
    root = ET.fromstring(capsys.readouterr().out)
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    # esp32: ram, flash, latency, precision, operators; nano: ram, flash, latency, power, precision, operators
    assert len(cases) == 11 == int(suite.get("tests")) == int(root.get("tests"))
    failed = [c for c in cases if c.find("failure") is not None]
    assert len(failed) == 1 == int(suite.get("failures"))
    assert failed[0].get("name") == "ram on esp32"
    assert failed[0].get("classname") == "edgefit.gate.small on esp32"
    assert "RAM" in failed[0].find("failure").get("message")


def test_markdown_format(project, capsys):
    assert main(["gate", "-c", str(write_config(project, FAILING)), "--format", "markdown"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("### edgefit gate: ❌ 1 of 2 gates failed")
    assert "| gate | model | target | precision | budget | estimate | limit | margin | result |" in out
    assert "|---|---|---|---|---|---|---|---|---|" in out
    rows = [line for line in out.splitlines() if line.startswith("| small on esp32")]
    assert len(rows) == 5 and sum("❌ over" in r for r in rows) == 1


def test_html_format(project, capsys):
    from html.parser import HTMLParser

    class Cells(HTMLParser):
        def __init__(self):
            super().__init__()
            self.rows, self.in_row = [], False

        def handle_starttag(self, tag, attrs):
            if tag == "tr":
                self.rows.append([])
            if tag == "td":
                self.rows[-1].append(dict(attrs).get("class", ""))

    assert main(["gate", "-c", str(write_config(project, FAILING)), "--format", "html"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("<!DOCTYPE html>") and "1 of 2 gates failed" in out
    parser = Cells()
    parser.feed(out)
    body = parser.rows[1:]   # the first row holds the headers
    assert len(body) == 11 and sum(row[-1] == "over" for row in body) == 1


def test_github_format(project, capsys):
    assert main(["gate", "-c", str(write_config(project, FAILING)), "--format", "github"]) == 1
    lines = capsys.readouterr().out.splitlines()
    errors = [line for line in lines if line.startswith("::error ")]
    assert len(errors) == 1
    assert errors[0].startswith("::error file=model.onnx,title=edgefit gate%3A small on esp32::esp32 at int8: RAM")
    assert lines[-1].startswith("edgefit gate: 1/2 gates passed")
    assert main(["gate", "-c", str(write_config(project, PASSING)), "-f", "github"]) == 0
    assert "::error" not in capsys.readouterr().out


def test_baseline_growth_fails_while_under_budget(project, capsys):
    main(["analyze", str(project / "model.onnx"), "--json"])
    baseline = json.loads(capsys.readouterr().out)
    assert baseline["weight_bytes"] == 650 * 4
    (project / "same.json").write_text(json.dumps(baseline))
    # A baseline 10% smaller than today: today's model grew 11% since, beyond 5%.
    shrunk = dict(baseline, weight_bytes=int(baseline["weight_bytes"] / 1.1))
    (project / "smaller.json").write_text(json.dumps(shrunk))
    gate = """\
        [[gate]]
        model = "model.onnx"
        target = "esp32"
        max_latency = "1s"
        baseline = "{baseline}"
        max_growth = "5%"
        """
    same = run_gate(write_config(project, gate.format(baseline="same.json")))
    assert same.passed
    growth = {v.metric: v for v in same.results[0].growth}
    assert growth["flash_growth"].limit == pytest.approx(2600 * 1.05) and growth["flash_growth"].ok
    assert growth["ram_growth"].value == baseline["peak_activation_bytes"]

    grown = run_gate(write_config(project, gate.format(baseline="smaller.json")))
    assert not grown.passed
    failed = [v for v in grown.results[0].verdicts if not v.ok]
    assert [v.metric for v in failed] == ["flash_growth"], "under every budget, failed only by the growth"
    assert failed[0].limit_source == "baseline +5%"


def test_baseline_without_max_growth_allows_no_growth(project, capsys):
    main(["analyze", str(project / "model.onnx"), "--json"])
    baseline = json.loads(capsys.readouterr().out)
    (project / "base.json").write_text(json.dumps(dict(baseline, peak_activation_bytes=1)))
    report = run_gate(write_config(project, """\
        [[gate]]
        model = "model.onnx"
        target = "esp32"
        max_latency = "1s"
        baseline = "base.json"
        """))
    assert [v.metric for r in report.results for v in r.verdicts if not v.ok] == ["ram_growth"]


@pytest.mark.parametrize("text, message", [
    ('[[gate]]\nmodel = "model.onnx"\ntarget = "esp32"\nmax_rams = "1KB"\n',
     "[[gate]] #1: unknown key 'max_rams' (did you mean 'max_ram'?)"),
    ('[[gate]]\nmodel = "model.onnx"\n', "[[gate]] #1: missing 'target'"),
    ('[[gate]]\nmodel = "missing.onnx"\ntarget = "esp32"\n', "model file 'missing.onnx' not found"),
    ('[[gate]]\nmodel = "model.onnx"\ntarget = "esp32"\nbaseline = "nope.json"\n',
     "baseline file 'nope.json' not found"),
    ('[[gate]]\nmodel = "model.onnx"\ntarget = "esp32"\nmax_growth = "5%"\n', "max_growth needs a baseline"),
    ('[[gate]]\nmodel = "model.onnx"\ntarget = "esp32"\nprecision = "int4"\n', "precision 'int4'"),
    ('[[gate]]\nmodel = "model.onnx"\ntarget = "esp32"\nmax_latency = "soon"\n', "invalid duration 'soon'"),
    ('[[gate]]\nmodel = "model.onnx"\ntarget = "esp32"\nrate = -1\n', "rate -1"),
    ('[[gate]]\nname = "x"\nmodel = "model.onnx"\ntarget = "esp32"\ninput_shape = {x = "1xAx3"}\n',
     "[[gate]] #1 (x): input_shape.x"),
    ('[defaults]\nmodel = "model.onnx"\n[[gate]]\ntarget = "esp32"\n', "[defaults]: unknown key 'model'"),
    ('gates = []\n', "unknown key 'gates' (did you mean 'gate'?)"),
    ('[defaults]\nprecision = "int8"\n', "no [[gate]] entries"),
    ('[[gate]\n', "not valid TOML"),
])
def test_malformed_config(project, text, message):
    path = write_config(project, text)
    with pytest.raises(ConfigError) as error:
        run_gate(path)
    assert message in str(error.value)
    assert str(path) in str(error.value)


def test_config_errors_exit_2(project, capsys):
    assert main(["gate", "-c", str(project / "absent.toml")]) == 2
    assert "no such file" in capsys.readouterr().err
    path = write_config(project, '[[gate]]\nmodel = "model.onnx"\ntarget = "esp32"\nbaseline = "b.json"\n')
    (project / "b.json").write_text('{"weight_bytes": 1}')
    assert main(["gate", "-c", str(path)]) == 2
    assert "missing or invalid 'peak_activation_bytes'" in capsys.readouterr().err
    write_config(project, '[[gate]]\nmodel = "model.onnx"\ntarget = "esp32-cma"\n')
    assert main(["gate", "-c", str(path)]) == 2
    assert "did you mean 'esp32-cam'" in capsys.readouterr().err


def test_custom_profiles_dir_in_config(project):
    (project / "boards").mkdir()
    builtin = (BUILTIN_PROFILES_DIR / "esp32.toml").read_text()
    (project / "boards" / "my-board.toml").write_text(
        builtin.replace('name = "esp32"', 'name = "my-board"').replace(
            'aliases = ["esp32-wroom-32", "esp32-devkitc"]', "aliases = []"))
    report = run_gate(write_config(project, 'profiles_dir = "boards"\n[[gate]]\nmodel = "model.onnx"\n'
                                            'target = "my-board"\nmax_latency = "1s"\n'))
    assert report.passed and report.results[0].target.profile.name == "my-board"


def test_repository_config_gates_the_sample_models():
    report = run_gate(REPO / "edgefit.toml")
    assert report.passed, [(r.spec.name, [v.metric for v in r.verdicts if not v.ok]) for r in report.failed]
    assert {r.spec.model.name for r in report.results} == {
        "kws_dscnn.onnx", "vww_mobilenet_v1_025.onnx", "ic_resnet8.onnx", "ad_autoencoder.onnx", "digits_cnn.onnx"}


def test_json_switch_equals_json_format(project, capsys):
    import json

    config = str(write_config(project, FAILING))
    assert main(["gate", "-c", config, "--format", "json"]) == 1
    by_format = json.loads(capsys.readouterr().out)
    assert main(["gate", "-c", config, "--json"]) == 1
    assert json.loads(capsys.readouterr().out) == by_format
    assert by_format["passed"] is False


AWKWARD_NAME = 'ctrl \\u0001 <b>&\\"</b> a|b\\r\\nnext\\rline'   # TOML escapes


@pytest.fixture
def awkward_gate(tmp_path):
    onnx.save(dense_model(64, 10), tmp_path / "m`x.onnx")
    config = tmp_path / "edgefit.toml"
    config.write_text(textwrap.dedent(f"""\
        [[gate]]
        name = "{AWKWARD_NAME}"
        model = "m`x.onnx"
        target = "esp32"
        max_latency = "50ms"
        max_ram = "1KiB"
        """))
    return config


@pytest.mark.parametrize("rate", ["inf", "nan"])
def test_gate_rate_must_be_finite(tmp_path, rate):
    onnx.save(dense_model(8, 2), tmp_path / "m.onnx")
    (tmp_path / "m.onnx").write_bytes((Path(__file__).resolve().parent.parent / "sample_models" /
                                       "kws_dscnn.onnx").read_bytes())
    config = tmp_path / "edgefit.toml"
    config.write_text(f'[[gate]]\nmodel = "m.onnx"\ntarget = "esp32"\nrate = {rate}\n')
    with pytest.raises(ConfigError, match=f"rate {rate}: expected a positive, finite number"):
        load_gate_config(config)


def test_junit_survives_control_characters(awkward_gate, capsys):
    assert main(["gate", "-c", str(awkward_gate), "--format", "junit"]) == 1
    root = ET.fromstring(capsys.readouterr().out.split("\n", 1)[1])
    cases = list(root.iter("testcase"))
    assert cases[0].get("classname") == 'edgefit.gate.ctrl \\x01 <b>&"</b> a|b\r\nnext\rline'
    failure = next(c for c in cases if c.find("failure") is not None).find("failure")
    assert failure.get("message").startswith("RAM ") and failure.get("type") == "OverBudget"


def test_markdown_rows_survive_line_breaks_pipes_html_and_backticks(awkward_gate, capsys):
    assert main(["gate", "-c", str(awkward_gate), "--format", "markdown"]) == 1
    out = capsys.readouterr().out
    assert "\r" not in out
    rows = [line for line in out.splitlines() if line.startswith("| ctrl")]
    assert len(rows) == 5          # RAM, flash, latency, precision, operators: one line each
    assert rows[0].startswith('| ctrl \x01 &lt;b&gt;&amp;"&lt;/b&gt; a\\|b next line | ``m`x.onnx`` | esp32 |')


def test_annotations_point_at_the_model_from_the_working_directory(tmp_path, monkeypatch, capsys):
    (tmp_path / "ml").mkdir()
    onnx.save(dense_model(64, 10), tmp_path / "ml" / "m.onnx")
    (tmp_path / "ml" / "edgefit.toml").write_text('[[gate]]\nmodel = "m.onnx"\ntarget = "esp32"\nmax_ram = "1KiB"\n')
    monkeypatch.chdir(tmp_path)
    assert main(["gate", "-c", "ml/edgefit.toml", "--format", "github"]) == 1
    assert capsys.readouterr().out.startswith("::error file=ml/m.onnx,title=edgefit gate%3A m.onnx on esp32::")
    assert main(["gate", "-c", str(tmp_path / "ml" / "edgefit.toml"), "--format", "junit"]) == 1
    root = ET.fromstring(capsys.readouterr().out.split("\n", 1)[1])
    assert {case.get("file") for case in root.iter("testcase")} == {"ml/m.onnx"}


def test_toml_with_a_byte_order_mark_is_read_and_non_utf8_is_one_line_error(tmp_path, capsys):
    onnx.save(dense_model(8, 2), tmp_path / "m.onnx")
    config = tmp_path / "edgefit.toml"
    config.write_bytes(b'\xef\xbb\xbf[[gate]]\nmodel = "m.onnx"\ntarget = "esp32"\n')
    assert [g.target for g in load_gate_config(config).gates] == ["esp32"]
    boards = tmp_path / "boards"
    boards.mkdir()
    write_profile(boards).write_bytes(b"\xef\xbb\xbf" + VALID.encode())
    assert load_profile_file(boards / "test-board.toml").name == "test-board"
    config.write_bytes(b'[[gate]]\nname = "caf\xe9"\nmodel = "m.onnx"\ntarget = "esp32"\n')   # Latin-1
    assert main(["gate", "-c", str(config)]) == 2
    assert capsys.readouterr().err == f"error: {config}: not valid TOML: not UTF-8 text (byte 0xe9 at offset 20)\n"
    (boards / "test-board.toml").write_bytes(VALID.replace("Test board", "T\xe9st").encode("latin-1"))
    assert main(["profiles", "list", "--profiles-dir", str(boards)]) == 2
    assert "test-board.toml: not valid TOML: not UTF-8 text (byte 0xe9" in capsys.readouterr().err


def test_baseline_written_by_powershell_as_utf16_is_read(tmp_path, capsys):
    onnx.save(dense_model(64, 10), tmp_path / "m.onnx")
    assert main(["analyze", str(tmp_path / "m.onnx"), "--json"]) == 0
    (tmp_path / "base.json").write_bytes(capsys.readouterr().out.encode("utf-16"))   # with its BOM
    config = tmp_path / "edgefit.toml"
    config.write_text('[[gate]]\nmodel = "m.onnx"\ntarget = "esp32"\nbaseline = "base.json"\n')
    assert main(["gate", "-c", str(config), "--json"]) == 0
    checks = strict_json(capsys.readouterr().out)["results"][0]["checks"]
    growth = {c["metric"]: (c["value"], c["limit"]) for c in checks if c["metric"].endswith("_growth")}
    assert growth == {"flash_growth": (2600, 2600.0), "ram_growth": (304, 304.0)}   # (64 + 10) x 4 B, 16-aligned


def test_gate_json_with_another_format_is_a_usage_error(awkward_gate, capsys):
    assert main(["gate", "-c", str(awkward_gate), "--json", "--format", "junit"]) == 2
    assert capsys.readouterr().err == "error: --json and --format junit ask for two formats; give one\n"


SLOW_BOARD = """\
    profiles_dir = "boards"

    [[gate]]
    name = "no latency budget"
    model = "model.onnx"
    target = "test-board"

    [[gate]]
    name = "40 ms budget"
    model = "model.onnx"
    target = "test-board"
    max_latency = "40ms"
    """


@pytest.fixture
def slow_board(project):
    """A tiny board that takes 50 ms per inference for the invoke alone: slower than the tiny band's 10 ms."""
    from test_profiles import VALID

    (project / "boards").mkdir()
    (project / "boards" / "test-board.toml").write_text(VALID.replace('inference_overhead = "0.1ms"',
                                                                      'inference_overhead = "50ms"'))
    return write_config(project, SLOW_BOARD)


def test_gate_latency_without_budget_is_context_with_one_it_decides(slow_board, capsys):
    report = run_gate(slow_board)
    context, budget = (r.target.verdict("latency") for r in report.results)
    assert context.value > 50 and context.kind == "context" and context.ok and context.band_position == "above"
    assert (budget.kind, budget.limit, budget.limit_source, budget.ok) == ("budget", 40.0, "budget", False)
    assert [r.passed for r in report.results] == [True, False]

    assert main(["gate", "-c", str(slow_board), "--json"]) == 1
    first = json.loads(capsys.readouterr().out)["results"][0]
    latency = next(c for c in first["checks"] if c["metric"] == "latency")
    assert (latency["kind"], latency["limit"], latency["ok"]) == ("context", None, True)
    assert latency["band"] == {"tier": "tiny", "low": 1.0, "high": 10.0, "position": "above"}
    assert (first["estimates"]["basis"], first["estimates"]["expected_error"]) == ("datasheet", None)

    assert main(["gate", "-c", str(slow_board)]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "slower than the typical 1–10 ms of the Tiny tier (no latency budget: set one with max_latency or rate" in out
    assert "FAIL 40 ms budget: latency" in out and "FAIL no latency budget" not in out


def test_gate_formats_show_context_as_not_checked(slow_board, capsys):
    assert main(["gate", "-c", str(slow_board), "--format", "junit"]) == 1
    suite = ET.fromstring(capsys.readouterr().out).find("testsuite")
    skipped = [c for c in suite.findall("testcase") if c.find("skipped") is not None]
    assert [c.get("classname") for c in skipped] == ["edgefit.gate.no latency budget"]
    assert skipped[0].find("skipped").get("message").startswith("no budget: latency ")
    assert (suite.get("skipped"), suite.get("failures")) == ("1", "1")

    assert main(["gate", "-c", str(slow_board), "--format", "markdown"]) == 1
    rows = [r for r in capsys.readouterr().out.splitlines()
            if r.startswith("| no latency budget") and "| latency |" in r]
    assert len(rows) == 1
    assert "| no budget | slower than the typical 1–10 ms of the Tiny tier | ℹ️ context |" in rows[0]

    assert main(["gate", "-c", str(slow_board), "--format", "html"]) == 1
    out = capsys.readouterr().out
    assert out.count('<td class="context">context</td>') == 1 and out.count('<td class="over">over</td>') == 1

    assert main(["gate", "-c", str(slow_board), "--format", "github"]) == 1
    errors = [line for line in capsys.readouterr().out.splitlines() if line.startswith("::error ")]
    assert len(errors) == 1 and "title=edgefit gate%3A 40 ms budget" in errors[0]
    assert errors[0].endswith("(estimate from datasheet figures, expected error unknown)")


def test_gate_rate_is_a_latency_budget(project, slow_board):
    # 10 inferences/s leave 100 ms each (the 50 ms board keeps up); 25/s leave 40 ms (it does not).
    config = SLOW_BOARD.split("[[gate]]")[0] + '[[gate]]\nmodel = "model.onnx"\ntarget = "test-board"\nrate = {rate}\n'
    for rate, passed in ((10, True), (25, False)):
        latency = run_gate(write_config(project, config.format(rate=rate))).results[0].target.verdict("latency")
        assert (latency.limit_source, latency.limit, latency.ok) == ("rate", pytest.approx(1000 / rate), passed)


@pytest.mark.parametrize("shape", ["1x١x49x10", "1x0x49x10", [1, 2**63, 1, 1], [1, True, 1, 1]])
def test_gate_input_shapes_take_positive_ascii_integers_only(tmp_path, shape):
    from edgefit.errors import ConfigError
    from edgefit.gate import load_gate_config

    value = f'"{shape}"' if isinstance(shape, str) else "[" + ", ".join(str(d).lower() for d in shape) + "]"
    (tmp_path / "m.onnx").write_bytes((Path(__file__).resolve().parent.parent / "sample_models" /
                                       "kws_dscnn.onnx").read_bytes())
    config = tmp_path / "edgefit.toml"
    config.write_text(f'[[gate]]\nmodel = "m.onnx"\ntarget = "esp32"\ninput_shape = {{ x = {value} }}\n',
                      encoding="utf-8")
    with pytest.raises(ConfigError, match="input_shape.x: expected positive dimensions"):
        load_gate_config(config)
