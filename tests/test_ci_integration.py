"""The CI user's path: the composite GitHub Action (action.yml) and the pre-commit hook (.pre-commit-hooks.yaml).

Both files are read as GitHub and pre-commit read them (YAML), and their commands are run here on a small gate
configuration: the action's gate script with the environment a runner gives it, the hook's entry as pre-commit
calls it (no file names). Nothing is stubbed: `edgefit` is the installed command.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "sample_models" / "digits_cnn.onnx"
EDGEFIT = shutil.which("edgefit", path=str(Path(sys.executable).parent)) or shutil.which("edgefit")


def _gate_config(folder: Path, max_ram: str) -> Path:
    """One gate: the digits CNN (3,818 parameters, 4,096 B of fp32 activations) on the ESP32 at fp32."""
    shutil.copy(DIGITS, folder / "digits.onnx")
    config = folder / "edgefit.toml"
    config.write_text(f'[[gate]]\nname = "digits"\nmodel = "digits.onnx"\ntarget = "esp32"\nprecision = "fp32"\n'
                      f'max_ram = "{max_ram}"\n')
    return config


@pytest.fixture(scope="module")
def action():
    return yaml.safe_load((REPO / "action.yml").read_text())


@pytest.fixture(scope="module")
def hook():
    hooks = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert [h["id"] for h in hooks] == ["edgefit-gate"]
    return hooks[0]


def test_the_action_is_composite_with_the_documented_inputs(action):
    assert action["runs"]["using"] == "composite"
    assert {"config", "format", "python-version", "edgefit-source", "summary"} <= set(action["inputs"])
    assert action["inputs"]["config"]["default"] == "edgefit.toml"
    assert action["inputs"]["format"]["default"] == "github"
    for step in action["runs"]["steps"]:
        if "run" in step:
            assert step["shell"] == "bash"   # a composite step's run needs its shell
            # inputs travel as environment variables, never pasted into the script (shell injection)
            assert "${{" not in step["run"]
    assert action["outputs"]["exit-code"]["value"] == "${{ steps.gate.outputs.exit-code }}"


def _gate_step(action) -> dict:
    (step,) = [s for s in action["runs"]["steps"] if s.get("id") == "gate"]
    assert "edgefit" in step["run"] and "gate" in step["run"]
    return step


def _run_gate_step(action, folder: Path, **inputs) -> tuple[subprocess.CompletedProcess, str, str]:
    """The gate step's script in bash, with the environment GitHub gives it: each input under its env name, and
    the runner's files for step outputs and the job summary."""
    step = _gate_step(action)
    defaults = {name: spec.get("default", "") for name, spec in action["inputs"].items()}
    values = {**defaults, **inputs}
    env = dict(os.environ)
    for name, expression in step["env"].items():
        match = re.fullmatch(r"\$\{\{ inputs\.([\w-]+) \}\}", expression)
        assert match, expression
        env[name] = values[match.group(1)]
    summary, output = folder / "summary.md", folder / "output.txt"
    env.update(GITHUB_STEP_SUMMARY=str(summary), GITHUB_OUTPUT=str(output),
               PATH=f"{Path(EDGEFIT).parent}{os.pathsep}{env['PATH']}")
    done = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=300)
    return done, summary.read_text() if summary.exists() else "", output.read_text() if output.exists() else ""


def test_the_action_gate_step_passes_and_writes_the_summary(action, tmp_path):
    _gate_config(tmp_path, "300 KiB")
    done, summary, output = _run_gate_step(action, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "::error" not in done.stdout           # github format: annotations only for breaches
    assert done.stdout == "edgefit gate: 1/1 gates passed (figures are estimates)\n"
    assert summary.startswith("### edgefit gate: ✅ all 1 gates passed")
    assert "| digits | `digits.onnx` | esp32 | fp32 | RAM |" in summary
    assert output == "exit-code=0\n"


def test_the_action_gate_step_annotates_a_breach_and_fails(action, tmp_path):
    _gate_config(tmp_path, "1 KiB")                # the arena alone is 4,096 B
    done, summary, output = _run_gate_step(action, tmp_path)
    assert done.returncode == 1
    assert done.stdout.startswith("::error file=digits.onnx,title=edgefit gate%3A digits::esp32 at fp32: ")
    assert "❌" in summary and "| digits | `digits.onnx` | esp32 | fp32 | RAM |" in summary
    assert output == "exit-code=1\n"


def test_the_action_gate_step_reports_a_broken_config_as_exit_2(action, tmp_path):
    (tmp_path / "edgefit.toml").write_text("[[gate]]\nmodel = 'missing.onnx'\ntarget = 'esp32'\n")
    done, _, output = _run_gate_step(action, tmp_path, summary="false")
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and "missing.onnx" in done.stderr
    assert output == "exit-code=2\n"


def test_the_hook_runs_the_gate_on_the_whole_configuration(hook):
    assert hook["language"] == "python"            # pre-commit pip-installs this repository: `edgefit` exists
    assert hook["pass_filenames"] is False
    files = re.compile(hook["files"])
    assert all(files.search(p) for p in ("models/kws.onnx", "edgefit.toml", "boards/my-board.toml",
                                         ".edgefit/baselines/kws.json"))
    assert not any(files.search(p) for p in ("README.md", "src/train.py"))


@pytest.mark.parametrize("max_ram, code", [("300 KiB", 0), ("1 KiB", 1)])
def test_the_hook_entry_passes_and_fails_as_the_gate_does(hook, tmp_path, max_ram, code):
    _gate_config(tmp_path, max_ram)
    command = shlex.split(hook["entry"]) + list(hook.get("args", []))
    assert command[0] == "edgefit"
    done = subprocess.run([EDGEFIT, *command[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == code, done.stderr
    assert ("1/1 gates passed" if code == 0 else "0/1 gates passed") in done.stdout
