"""What a new user meets first: --version, help that reads like a person wrote it, and input errors that come
back before onnx and numpy are imported."""

import json
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import typer.main

from edgefit.cli import app, main
from edgefit.cli.metavars import humanize_metavars

REPO = Path(__file__).resolve().parents[1]
KWS = REPO / "sample_models" / "kws_dscnn.onnx"

# A Python type or a choice list in angle brackets, as typer >= 0.20 prints it when an option names no metavar:
# <list[str]>, <bool>, <int range>, <table|json>. Prose such as "<stem>.<device>.onnx" in a help text is fine.
TYPE_METAVAR = re.compile(r"<(?:list\[[^>]*\]|bool|str|int|float|path|text|file|tuple[^>]*|[a-z]+ range"
                          r"|[\w.-]+(?:\|[\w.-]+)+)>", re.IGNORECASE)


def _command_paths(command, prefix=()):
    """Every command and group of the app, as the words a user types before --help."""
    yield prefix
    for name, sub in getattr(command, "commands", {}).items():
        yield from _command_paths(sub, (*prefix, name))


ALL_COMMANDS = list(_command_paths(typer.main.get_command(app)))


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_prints_the_distribution_name_and_version(flag, capsys):
    assert main([flag]) == 0
    assert capsys.readouterr().out.strip() == f"edgefit-onnx {version('edgefit-onnx')}"


def test_every_command_is_walked():
    names = {" ".join(path) for path in ALL_COMMANDS}
    assert {"", "analyze", "check", "gate", "fuse", "prune", "quantize", "optimize", "fit", "report", "calibrate",
            "profiles", "profiles list", "profiles show"} <= names


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda p: " ".join(p) or "edgefit")
def test_help_shows_no_python_type_names(path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")   # one row per option: a metavar is never cut in two
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Usage: edgefit" in out
    assert TYPE_METAVAR.findall(out) == []


def test_shared_options_read_like_a_person_wrote_them(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["check", "--help"]) == 0
    rows = {line.split()[1]: line.split()[2:] for line in capsys.readouterr().out.splitlines()
            if line.startswith("│ --")}
    assert rows["--input-shape"][0] == "NAME=AxBxC"
    assert rows["--dim"][0] == "NAME=VALUE"
    assert rows["--max-ram"][0] == "SIZE" and rows["--max-latency"][0] == "DURATION"
    assert rows["--rate"][0] == "RATE" and rows["--profiles-dir"][0] == "DIR"
    assert rows["--precision"][0] == "fp32|fp16|int8"     # an Enum: its values
    assert rows["--json"][0] == "Print"                   # a flag takes no value: the help text follows


def test_an_option_without_a_metavar_gets_one_from_its_type():
    """What a new option of another command gets without declaring metavar=."""
    probe = typer.Typer(add_completion=False)

    @probe.command()
    def run(model: Path, ops: list[str] = typer.Option(None, "--op"), n: int = 1, ratio: float = 0.5,
            out: Path = typer.Option(None, "--out"), quiet: bool = False) -> None:
        pass

    command = typer.main.get_command(probe)
    humanize_metavars(command)
    metavars = {p.name: p.metavar for p in command.params}
    assert metavars == {"model": "MODEL", "ops": "TEXT", "n": "N", "ratio": "NUMBER", "out": "PATH", "quiet": ""}


def _run_fresh(args: list[str]) -> tuple[int, bool, bool, str]:
    """Run the CLI in a fresh interpreter; return the exit code, whether onnx / numpy got imported, and stderr."""
    code = ("import json, sys; from edgefit.cli import main; rc = main(sys.argv[1:]); "
            "print(json.dumps([rc, 'onnx' in sys.modules, 'numpy' in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    rc, onnx_loaded, numpy_loaded = json.loads(done.stdout.strip().splitlines()[-1])
    return rc, onnx_loaded, numpy_loaded, done.stderr


@pytest.mark.parametrize("args, message", [
    (["analyze", "/no/such/model.onnx"], "error: model file not found: /no/such/model.onnx"),
    (["check", "sample_models", "-t", "esp32"], "error: model file sample_models is a directory, not a file"),
    (["fuse", "/dev/null"], "error: model file /dev/null is a device; edgefit reads regular files only"),
    (["check", str(KWS), "-t", "esp33"], "error: unknown device profile 'esp33'; did you mean 'esp32-s3' or 'esp32' or 'esp32-cam'?"),
    (["fit", str(KWS), "-t", "esp33"], "error: unknown device profile 'esp33'; did you mean 'esp32-s3' or 'esp32' or 'esp32-cam'?"),
    (["quantize", str(KWS), "-t", "esp33"], "error: unknown device profile 'esp33'; did you mean 'esp32-s3' or 'esp32' or 'esp32-cam'?"),
])
def test_input_errors_come_before_onnx_and_numpy_are_imported(args, message):
    rc, onnx_loaded, numpy_loaded, err = _run_fresh(args)
    assert rc == 2
    assert err.startswith(message) and len(err.strip().splitlines()) == 1
    assert (onnx_loaded, numpy_loaded) == (False, False)


def test_a_good_model_still_gets_analysed():
    """The early check passes a regular file through unchanged."""
    rc, onnx_loaded, _, err = _run_fresh(["analyze", str(KWS), "--json"])
    assert rc == 0 and onnx_loaded and err == ""
