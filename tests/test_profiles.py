"""Device profiles: every built-in loads and validates, lookups by alias, did-you-mean, the search path, and
malformed profiles rejected with the file and the field named."""

import json
import os
import textwrap
from pathlib import Path

import onnx
import pytest

from edgefit.cli import main
from edgefit.devices.fields import TIERS, normalize_name
from edgefit.devices.profiles import (
    BUILTIN_PROFILES_DIR,
    PROFILES_ENV,
    TIER_LATENCY_BAND_S,
    list_profiles,
    load_profile,
    load_profile_file,
)
from edgefit.errors import ProfileError

DESIGN_DEVICES = {"dgx-a100", "tpu-v4-pod", "jetson-agx-orin", "intel-nuc-12-pro", "iphone-15-pro",
                  "arduino-nano-33-ble-sense", "esp32-cam"}
USER_TARGETS = {"esp32", "esp32-s3", "stm32h7", "grove-vision-ai-v2", "raspberry-pi-5", "coral-dev-board",
                "arduino-uno", "android-midrange"}

# A complete, valid profile; tests break one field at a time.
VALID = textwrap.dedent("""\
    name = "test-board"
    display_name = "Test board"
    tier = "tiny"
    processor = "Cortex-M4 @ 100 MHz"
    runtime = "TFLM"
    precisions = ["fp32", "int8"]
    ram = "128 KiB"
    flash = "512 KB"
    runtime_ram = "4 KiB"
    runtime_flash = "40 KB"
    weights_in_ram = false
    efficiency = 0.3
    memory_bandwidth = "400 MB/s"
    inference_overhead = "0.1ms"
    active_power = "30 mW"
    idle_power = "1 mW"

    [peak_gmacs]
    fp32 = 0.1
    int8 = 0.2

    [source]
    processor = "datasheet"
    ram = "datasheet"
    flash = "datasheet"
    runtime_ram = "estimate"
    runtime_flash = "estimate"
    weights_in_ram = "TFLM"
    efficiency = "estimate"
    memory_bandwidth = "datasheet"
    inference_overhead = "estimate"
    active_power = "datasheet"
    idle_power = "datasheet"
    peak_gmacs = "TRM"
    """)


def write_profile(directory: Path, text: str = VALID, name: str = "test-board.toml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


def test_every_builtin_profile_loads_and_is_sourced():
    profiles = list_profiles()
    names = {p.name for p in profiles}
    assert DESIGN_DEVICES | USER_TARGETS <= names
    assert {p.tier for p in profiles} == set(TIERS)
    for profile in profiles:
        assert profile.path.parent == BUILTIN_PROFILES_DIR
        assert profile.path.stem == profile.name, "one file per device, named after it"
        assert profile.ram_bytes > 0 and profile.flash_bytes > 0 and profile.active_power_w > 0
        assert set(profile.precisions) <= set(profile.peak_macs_per_s)
        for field in ("ram", "flash", "peak_gmacs", "efficiency", "memory_bandwidth", "active_power", "idle_power"):
            assert profile.sources[field].strip(), f"{profile.name}: {field} has no source"
        if profile.tier == "cloud":
            assert profile.network_rtt_s >= 0.1, "DESIGN.md: cloud round trips are 100-500 ms"
        if profile.tier in ("cloud", "edge", "mobile"):
            assert profile.weights_in_ram
        if profile.tier == "mobile":
            assert profile.battery_wh is not None


def test_design_device_facts():
    esp32 = load_profile("esp32")
    assert (esp32.ram_bytes, esp32.flash_bytes, esp32.tier) == (520 * 1024, 4 * 1024**2, "tiny")
    uno = load_profile("arduino-uno")
    assert (uno.ram_bytes, uno.flash_bytes) == (2 * 1024, 32 * 1024)
    nano = load_profile("arduino-nano-33-ble-sense")
    assert (nano.ram_bytes, nano.flash_bytes) == (256 * 1024, 1024**2)
    assert nano.active_power_w == pytest.approx(0.04) and nano.idle_power_w == pytest.approx(0.02)
    # The tiers' typical latency bands are context, not budgets: no built-in profile declares one, since what an
    # application needs is not a fact about the board.
    assert TIER_LATENCY_BAND_S == {"cloud": (0.1, 1.0), "edge": (0.01, 0.1), "mobile": (0.005, 0.05),
                                   "tiny": (0.001, 0.01)}
    assert {p.latency_budget_s for p in list_profiles()} == {None}


def test_lookup_by_alias_and_spelling():
    assert load_profile("esp32cam").name == "esp32-cam"
    assert load_profile("ESP32_CAM").name == "esp32-cam"
    assert load_profile("Ethos-U55").name == "grove-vision-ai-v2"
    assert normalize_name("  Raspberry Pi 5 ") == "raspberry-pi-5"


@pytest.mark.parametrize("typed, suggested", [("esp32-cma", "esp32-cam"), ("jetson", "jetson-agx-orin"),
                                               ("rasberry-pi-5", "raspberry-pi-5")])
def test_near_miss_gets_did_you_mean(typed, suggested):
    with pytest.raises(ProfileError, match=f"did you mean '{suggested}'"):
        load_profile(typed)


def test_unknown_name_without_near_miss():
    with pytest.raises(ProfileError, match="unknown device profile 'zzzz'") as error:
        load_profile("zzzz")
    assert "did you mean" not in str(error.value)


def test_user_directory_adds_and_overrides(tmp_path, monkeypatch):
    write_profile(tmp_path)
    override = VALID.replace('name = "test-board"', 'name = "esp32"').replace('ram = "128 KiB"', 'ram = "8 MiB"')
    write_profile(tmp_path, override, "my-esp32.toml")
    assert load_profile("test-board", tmp_path).ram_bytes == 128 * 1024
    assert load_profile("esp32", tmp_path).ram_bytes == 8 * 1024**2, "earlier directories shadow built-ins"
    assert load_profile("esp32").ram_bytes == 520 * 1024
    monkeypatch.setenv(PROFILES_ENV, str(tmp_path))
    assert load_profile("test-board").display_name == "Test board"


def test_defaults_for_optional_fields(tmp_path):
    profile = load_profile_file(write_profile(tmp_path))
    assert profile.latency_budget_s is None            # no application budget: latency is context
    assert (profile.basis, profile.expected_error) == ("datasheet", None)
    assert profile.flash_bandwidth_bytes_per_s == 400e6  # falls back to the memory bandwidth
    assert profile.network_rtt_s == 0 and profile.per_op_overhead_s == 0
    assert profile.efficiency == {"fp32": 0.3, "fp16": 0.3, "int8": 0.3}
    assert profile.macs_per_s("int8") == pytest.approx(0.2e9 * 0.3)
    assert profile.macs_per_s("fp16") == pytest.approx(0.1e9 * 0.3), "unsupported fp16 runs at the fp32 rate"


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace('ram = "128 KiB"\n', ""), "missing field 'ram'"),
    (lambda t: t.replace('ram = "128 KiB"', 'ram = "lots"'), "field 'ram': invalid size 'lots'"),
    (lambda t: t.replace('tier = "tiny"', 'tier = "huge"'), "field 'tier': expected one of cloud"),
    (lambda t: t.replace("efficiency = 0.3", "efficiency = 1.5"), "field 'efficiency'"),
    (lambda t: t.replace("efficiency = 0.3", "efficency = 0.3"), "unknown field 'efficency' (did you mean 'efficiency'?)"),
    (lambda t: t.replace("int8 = 0.2\n", ""), "field 'peak_gmacs': no rate for supported precision 'int8'"),
    (lambda t: t.replace('idle_power = "datasheet"\n', ""), "field 'idle_power' has no source"),
    (lambda t: t.replace('idle_power = "1 mW"', 'idle_power = "1 W"'), "idle power exceeds active power"),
    (lambda t: t.replace("weights_in_ram = false", 'weights_in_ram = "no"'), "field 'weights_in_ram'"),
    (lambda t: t.replace("[peak_gmacs]", "battery_mah = 200\n[peak_gmacs]") + 'battery_mah = "spec"\n',
     "give both or neither"),
    (lambda t: t + 'stray = "note"\n', "field 'source.stray': no such field"),
    (lambda t: t.replace('name = "test-board"', 'name = "test-board'), "not valid TOML"),
    (lambda t: t.replace('tier = "tiny"', 'tier = "tiny"\nbasis = "vibes"'),
     "field 'basis': expected one of datasheet"),
    (lambda t: t.replace('tier = "tiny"', 'tier = "tiny"\nexpected_error = "20%"') + 'expected_error = "x"\n',
     "field 'expected_error': expected a finite number, got '20%'"),
    (lambda t: t.replace('tier = "tiny"', 'tier = "tiny"\nexpected_error = 0') + 'expected_error = "x"\n',
     "field 'expected_error': expected a positive value"),
    (lambda t: t.replace('tier = "tiny"', 'tier = "tiny"\nexpected_error = 0.2'),
     "field 'expected_error' has no source note"),
    (lambda t: t.replace('tier = "tiny"', 'tier = "tiny"\nlatency_budget = "0ms"') + 'latency_budget = "x"\n',
     "field 'latency_budget': expected a positive value"),
])
def test_malformed_profile_names_file_and_field(tmp_path, edit, message):
    path = write_profile(tmp_path, edit(VALID))
    with pytest.raises(ProfileError) as error:
        load_profile_file(path)
    assert str(path) in str(error.value)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_duplicate_names_and_clashing_aliases(tmp_path):
    write_profile(tmp_path)
    write_profile(tmp_path, VALID, "copy.toml")
    with pytest.raises(ProfileError, match="already used by"):
        list_profiles(tmp_path)
    (tmp_path / "copy.toml").unlink()
    write_profile(tmp_path, VALID.replace('name = "test-board"', 'name = "other"\naliases = ["test-board"]'),
                  "other.toml")
    with pytest.raises(ProfileError, match="field 'aliases': 'test-board' is already"):
        list_profiles(tmp_path)


def test_missing_profiles_dir(tmp_path, monkeypatch):
    with pytest.raises(ProfileError, match="--profiles-dir: .* is not a directory"):
        list_profiles(tmp_path / "nope")
    monkeypatch.setenv(PROFILES_ENV, str(tmp_path / "gone"))
    with pytest.raises(ProfileError, match=f"{PROFILES_ENV}: .* is not a directory"):
        list_profiles()


def test_cli_profiles_list_and_show(capsys):
    assert main(["profiles", "list"]) == 0
    out = capsys.readouterr().out
    assert "esp32-cam" in out and "Tiny devices" in out
    assert main(["profiles", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["profiles"]   # one JSON object, like every --json
    assert {p["name"] for p in listed} >= DESIGN_DEVICES
    assert main(["profiles", "show", "esp32cam", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["name"] == "esp32-cam" and shown["ram_bytes"] == 520 * 1024
    assert main(["profiles", "show", "esp32"]) == 0
    assert "ESP32 Series Datasheet" in capsys.readouterr().out


def test_cli_profile_errors_exit_2(tmp_path, capsys):
    assert main(["profiles", "show", "esp32-cma"]) == 2
    assert "did you mean 'esp32-cam'" in capsys.readouterr().err
    path = write_profile(tmp_path, VALID.replace('flash = "512 KB"\n', ""))
    assert main(["profiles", "list", "--profiles-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert path.name in err and "missing field 'flash'" in err


def test_check_all_without_any_profile_is_an_input_error(tmp_path, monkeypatch, capsys):
    from test_check import dense_model

    import edgefit.devices.profiles

    onnx.save(dense_model(8, 2), tmp_path / "m.onnx")
    monkeypatch.setattr(edgefit.devices.profiles, "BUILTIN_PROFILES_DIR", tmp_path / "nowhere")
    monkeypatch.delenv("EDGEFIT_PROFILES", raising=False)
    assert main(["check", str(tmp_path / "m.onnx"), "--all"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: no device profiles found (searched ")


def test_the_wheel_carries_every_profile(tmp_path):
    """Build the wheel as pip would and list the profiles from it, in a process that imports edgefit from it."""
    import shutil
    import subprocess
    import sys
    import zipfile

    repo = Path(__file__).resolve().parents[1]
    source = tmp_path / "source"   # a clean copy: pip builds in the tree, and a stale build/ would leak old files
    source.mkdir()
    for item in ("pyproject.toml", "README.md", "edgefit", "profiles"):
        if (repo / item).is_dir():
            shutil.copytree(repo / item, source / item, ignore=shutil.ignore_patterns("__pycache__"))
        elif (repo / item).exists():
            shutil.copy(repo / item, source / item)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
                   check=True, capture_output=True)
    wheel = next(tmp_path.glob("edgefit_onnx-*.whl"))   # the distribution edgefit-onnx, normalised
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path / "site")
        packed = sorted(Path(n).name for n in archive.namelist() if n.startswith("edgefit/profiles/"))
        modules = {n for n in archive.namelist() if n.endswith(".py")}
    assert BUILTIN_PROFILES_DIR == repo / "profiles"   # the source tree reads the top-level folder
    assert packed == sorted(p.name for p in BUILTIN_PROFILES_DIR.glob("*.toml"))
    # pyproject lists the packages by hand: every module of the source must be in the wheel.
    assert modules >= {p.relative_to(repo).as_posix() for p in (repo / "edgefit").rglob("*.py")}
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import edgefit.devices.profiles as d; "
            "print(json.dumps([str(d.BUILTIN_PROFILES_DIR), [p.name for p in d.list_profiles()]]))")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "site")], capture_output=True, text=True,
                          check=True, env={k: v for k, v in os.environ.items() if k != "EDGEFIT_PROFILES"})
    where, names = json.loads(done.stdout)
    assert Path(where) == tmp_path / "site" / "edgefit" / "profiles"
    assert sorted(names) == sorted(p.name for p in list_profiles())


def test_a_broken_profile_file_stops_only_commands_that_need_it(tmp_path, capsys):
    (tmp_path / "broken.toml").write_text('name = "mine"\ntier = ')
    model = str(Path(__file__).resolve().parent.parent / "sample_models" / "kws_dscnn.onnx")
    # Naming another device: the broken file does not matter.
    assert main(["check", model, "-t", "esp32", "--profiles-dir", str(tmp_path), "--json"]) in (0, 1)
    capsys.readouterr()
    # Every profile asked for: the broken one is an input error, named.
    assert main(["check", model, "--all", "--profiles-dir", str(tmp_path)]) == 2
    assert "broken.toml" in capsys.readouterr().err
    # A name not found may be the broken file: the error names both.
    assert main(["check", model, "-t", "mine", "--profiles-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown device profile 'mine'" in err and "broken.toml" in err
