"""edgefit calibrate: NNLS, the relative-error fit, measurement files, timing, and the written profile."""

from __future__ import annotations

import json
import math
import shutil
import tomllib

import numpy as np
import onnx
import pytest
from helpers import model, weight
from onnx import helper

from edgefit.analysis.footprint import analyze
from edgefit.cli import main
from edgefit.devices.calibrate import (
    calibrate,
    fit_coefficients,
    fit_power,
    load_measurements,
    nnls,
    toml_dumps,
    write_profile,
)
from edgefit.devices.latency import FEATURE_NAMES, LatencyCoefficients, latency_features
from edgefit.devices.profiles import BUILTIN_PROFILES_DIR, load_profile
from edgefit.devices.timing import Timing, TimingPlan, host_last_level_cache, kernels, time_model
from edgefit.errors import ConfigError, MeasurementError
from edgefit.units import parse_energy_j

# Per-class costs of a plausible CPU: 50, 20, 10, 25 (integer) GMAC/s, 2 Gelem/s, 4 GB/s moved, 30 ns per LRN
# element, 0.2 ns per conv weight, 2 us per op, 20 us per inference.
TRUE = LatencyCoefficients(2e-11, 5e-11, 1e-10, 4e-11, 5e-10, 5e-9, 2.5e-10, 3e-8, 1e-10, 2e-10, 2e-6, 2e-5)
BASE = LatencyCoefficients(1e-11, 2e-11, 5e-11, 2e-11, 2e-10, 2e-9, 1e-10, 1e-8, 5e-11, 1e-10, 1e-6,
                           1e-5)   # within 2-3x of the truth


# ---- units --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, joules", [("1.1mJ", 1.1e-3), ("250 uJ", 250e-6), ("250µJ", 250e-6), ("0.5J", 0.5),
                                          ("3", 3.0), ("2mWh", 7.2), ("40nJ", 40e-9)])
def test_parse_energy(text, joules):
    assert parse_energy_j(text) == pytest.approx(joules)


@pytest.mark.parametrize("text", ["3mW", "fast", "-1mJ", "1e999J", True])
def test_parse_energy_rejects(text):
    with pytest.raises(ConfigError):
        parse_energy_j(text)


# ---- NNLS ---------------------------------------------------------------------------------------------

def test_nnls_recovers_a_nonnegative_solution_exactly():
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 1, (20, 5))
    truth = np.array([0.5, 0.0, 2.0, 0.1, 3.0])
    assert nnls(a, a @ truth) == pytest.approx(truth, abs=1e-9)


def test_nnls_meets_the_optimality_conditions_when_the_bound_binds():
    # Unconstrained least squares wants negative values here; the NNLS optimum satisfies the KKT conditions:
    # x >= 0, the gradient a^T (b - a x) is zero where x > 0 and <= 0 where x = 0.
    rng = np.random.default_rng(2)
    a = rng.standard_normal((30, 6))
    b = a @ np.array([1.0, -2.0, 0.5, -1.0, 3.0, 0.0]) + 0.1 * rng.standard_normal(30)
    assert (np.linalg.lstsq(a, b, rcond=None)[0] < 0).any()
    x = nnls(a, b)
    gradient = a.T @ (b - a @ x)
    assert (x >= 0).all()
    assert (x == 0).sum() >= 2
    assert np.abs(gradient[x > 0]).max() < 1e-8
    assert gradient[x == 0].max() < 1e-8


def test_nnls_one_variable_by_hand():
    # min (x - 3)^2 + (2x - 2)^2 -> x = (3 + 4) / (1 + 4); with b negative the bound holds x at 0.
    assert nnls(np.array([[1.0], [2.0]]), np.array([3.0, 2.0]))[0] == pytest.approx(7 / 5)
    assert nnls(np.array([[1.0], [2.0]]), np.array([-3.0, -2.0]))[0] == 0.0


# ---- the fit ------------------------------------------------------------------------------------------

def _synthetic_features(count: int, seed: int = 0) -> np.ndarray:
    """Models from ~0.03 ms to ~200 ms: a size over 4 decades times an independent mix of layer classes."""
    rng = np.random.default_rng(seed)
    size = 10 ** rng.uniform(0, 4, count)
    mix = rng.uniform(0.1, 1.0, (count, 10))
    columns = [size * 1e6 * mix[:, 0], size * 2e5 * mix[:, 1], size * 1e5 * mix[:, 2], size * 2e5 * mix[:, 3],
               size * 1e4 * mix[:, 4], size * 2e3 * mix[:, 6], size * 4e4 * mix[:, 5], size * 3e2 * mix[:, 8],
               size * 1e5 * mix[:, 7], size * 2e4 * mix[:, 9],
               np.round(5 + size ** 0.5 * 8 * rng.uniform(0.2, 1.0, count)), np.ones(count)]
    return np.column_stack(columns)


def test_fit_recovers_known_coefficients_from_noisy_measurements():
    x = _synthetic_features(40)
    y = x @ TRUE.vector()
    assert y.min() < 1e-4 and y.max() > 0.05   # spans the decades the relative weighting is for
    noisy = y * (1 + 0.01 * np.random.default_rng(3).standard_normal(len(y)))
    fit = fit_coefficients(x, noisy, BASE)
    assert fit.kept == {}
    assert fit.fitted == FEATURE_NAMES
    # With 1% timing noise the per-MAC rates, which dominate, come back within 5%; the overheads and the
    # elementwise rate, a small share of every latency, within 25%.
    assert fit.coefficients.vector()[:3] == pytest.approx(TRUE.vector()[:3], rel=0.05)
    assert fit.coefficients.vector()[3:] == pytest.approx(TRUE.vector()[3:], rel=0.25)
    exact = fit_coefficients(x, y, BASE)
    assert exact.coefficients.vector() == pytest.approx(TRUE.vector(), rel=1e-6)


def test_fit_minimises_relative_not_absolute_error():
    # One free coefficient (the others pinned at zero): measurements x = 1 -> 1 s and x = 1000 -> 1100 s.
    # Relative least squares: min (c - 1)^2 + (1000 c / 1100 - 1)^2 -> c = (1 + r) / (1 + r^2), r = 1000 / 1100;
    # absolute least squares would give c ~ 1.0999 and miss the small model by 10%.
    features = np.zeros((2, len(FEATURE_NAMES)))
    features[:, 0] = [1.0, 1000.0]
    zero = LatencyCoefficients(*[0] * len(FEATURE_NAMES))
    fit = fit_coefficients(features, np.array([1.0, 1100.0]), zero, keep_base=FEATURE_NAMES[1:])
    r = 1000 / 1100
    assert fit.coefficients.s_per_conv_mac == pytest.approx((1 + r) / (1 + r * r))


def test_features_no_model_has_keep_the_base_coefficient():
    x = _synthetic_features(12)
    x[:, 1] = 0.0   # no depthwise convolution anywhere
    fit = fit_coefficients(x, x @ TRUE.vector(), BASE)
    assert "depthwise_macs" in fit.kept and "no measured model" in fit.kept["depthwise_macs"]
    assert fit.coefficients.s_per_depthwise_mac == BASE.s_per_depthwise_mac
    others = [k for k in range(len(FEATURE_NAMES)) if k != 1]
    assert fit.coefficients.vector()[others] == pytest.approx(TRUE.vector()[others], rel=1e-6)


def test_collinear_features_are_not_guessed():
    # Every model dispatches one op per 1000 elements: the data cannot split their cost between the two, so one
    # of them keeps the base coefficient and the other absorbs both (predictions stay right).
    x = _synthetic_features(12)
    x[:, FEATURE_NAMES.index("ops")] = x[:, 4] / 1000
    y = x @ TRUE.vector()
    fit = fit_coefficients(x, y, BASE)
    assert len(fit.kept) == 1
    (name, reason), = fit.kept.items()
    assert name in ("elementwise_elements", "ops") and "not separable" in reason
    assert getattr(fit.coefficients, "s_per_" + {"elementwise_elements": "elementwise_element", "ops": "op"}[name]) \
        == getattr(BASE, "s_per_" + {"elementwise_elements": "elementwise_element", "ops": "op"}[name])
    predicted = x @ fit.coefficients.vector()
    assert predicted == pytest.approx(y, rel=0.02)


def test_features_negligible_in_every_measurement_keep_the_base_coefficient():
    # CNNs whose only fc work is a tiny classifier head: at the base's rate it is under 2% of every latency, so
    # its coefficient is not fitted (free, it would absorb the other features' error).
    x = _synthetic_features(12)
    x[:, 2] = 100.0
    y = x @ TRUE.vector()
    assert (x[:, 2] * BASE.s_per_fc_mac / y).max() < 0.02
    fit = fit_coefficients(x, y, BASE)
    assert set(fit.kept) == {"fc_macs"} and "under 2% of every measured latency" in fit.kept["fc_macs"]
    assert fit.coefficients.s_per_fc_mac == BASE.s_per_fc_mac


def test_fewer_measurements_than_coefficients():
    x = _synthetic_features(4)
    with pytest.raises(MeasurementError, match="4 measurement.* cannot determine 12 coefficients"):
        fit_coefficients(x, x @ TRUE.vector(), BASE)
    kept = ("integer_macs", "transcendental_elements", "moved_bytes", "lrn_elements", "uncached_bytes",
            "conv_weight_elements", "ops", "inference")
    pinned = fit_coefficients(x, x @ TRUE.vector(), BASE, keep_base=kept)
    assert set(pinned.kept) == set(kept)
    assert pinned.coefficients.s_per_op == BASE.s_per_op


def test_fit_power_by_hand():
    # energy = P x latency exactly at P = 0.2 W; with one energy off by +10%, P minimises the relative errors.
    assert fit_power(np.array([0.01, 0.02]), np.array([0.002, 0.004])) == pytest.approx(0.2)
    ratio = np.array([0.01 / 0.002, 0.02 / 0.0044])
    assert fit_power(np.array([0.01, 0.02]), np.array([0.002, 0.0044])) == pytest.approx(ratio.sum() / (ratio @ ratio))


# ---- models and measurement files --------------------------------------------------------------------

def _conv_net(channels: int, size: int, depthwise: bool = False) -> onnx.ModelProto:
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Conv", ["b", "w2"], ["c"], pads=[1, 1, 1, 1], group=channels if depthwise else 1),
             helper.make_node("Add", ["c", "b"], ["d"]),
             helper.make_node("GlobalAveragePool", ["d"], ["e"]),
             helper.make_node("Flatten", ["e"], ["f"]),
             helper.make_node("Gemm", ["f", "w3"], ["y"])]
    inits = [weight("w1", channels, 3, 3, 3), weight("w2", channels, 1 if depthwise else channels, 3, 3),
             weight("w3", channels, 10)]
    return model(nodes, [("x", [1, 3, size, size])], [("y", [1, 10])], inits)


def _mlp(width: int) -> onnx.ModelProto:
    nodes = [helper.make_node("Gemm", ["x", "w1"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Gemm", ["b", "w2"], ["y"])]
    return model(nodes, [("x", [1, 64])], [("y", [1, 8])], [weight("w1", 64, width), weight("w2", width, 8)])


def _conv1d_net(channels: int, steps: int) -> onnx.ModelProto:
    """A 1-D conv over few steps (many weights per MAC), a Sigmoid, a 1x1 conv to 8 channels."""
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1]),
             helper.make_node("Sigmoid", ["a"], ["b"]),
             helper.make_node("Conv", ["b", "w2"], ["y"])]
    return model(nodes, [("x", [1, channels, steps])], [("y", [1, 8, steps])],
                 [weight("w1", channels, channels, 3), weight("w2", 8, channels, 1)])


MODELS = {"conv8.onnx": _conv_net(8, 16), "conv16.onnx": _conv_net(16, 32), "conv32.onnx": _conv_net(32, 16),
          "dw16.onnx": _conv_net(16, 32, depthwise=True), "dw32.onnx": _conv_net(32, 24, depthwise=True),
          "mlp64.onnx": _mlp(64), "mlp512.onnx": _mlp(512), "mlp2048.onnx": _mlp(2048),
          "conv1d.onnx": _conv1d_net(128, 4)}


@pytest.fixture
def board(tmp_path):
    """Nine small models and a measurement file whose latencies follow TRUE exactly."""
    folder = tmp_path / "models"
    folder.mkdir()
    entries = []
    for name, built in MODELS.items():
        onnx.save(built, folder / name)
        latency = TRUE.predict(latency_features(analyze(built), "fp32"))
        entries.append(f'[[measurement]]\nmodel = "models/{name}"\nlatency = "{latency * 1e3!r}ms"\n'
                       f'energy = "{latency * 3.5 * 1e3!r}mJ"\n')
    path = tmp_path / "board.toml"
    path.write_text('base = "raspberry-pi-5"\n\n' + "\n".join(entries))
    return path


def test_calibrate_recovers_the_coefficients_and_power(board):
    result = calibrate(board)
    fit = result.fit_for("fp32").fit
    assert set(fit.fitted) | set(fit.kept) == set(FEATURE_NAMES)
    for name, value in zip(FEATURE_NAMES, fit.coefficients.vector()):
        if name in fit.fitted:
            assert value == pytest.approx(TRUE.vector()[FEATURE_NAMES.index(name)], rel=1e-4), name
    assert result.active_power_w == pytest.approx(3.5)
    assert all(abs(r.error) < 1e-6 for r in result.rows)
    # Leave-one-out: each model predicted by a fit to the eight others. Exact data predicts most exactly; conv8,
    # the model whose elementwise work and op count vary most apart from its MACs, is harder to extrapolate to.
    x = np.array([r.features.vector() for r in result.rows])
    y = np.array([r.latency_s for r in result.rows])
    base = result.fit_for("fp32").base
    for i, row in enumerate(result.rows):
        others = np.arange(len(y)) != i
        refit = fit_coefficients(x[others], y[others], base, require_enough=False)
        assert row.loo_error == pytest.approx(refit.coefficients.predict(row.features) / y[i] - 1, abs=1e-12)
    assert np.median([abs(r.loo_error) for r in result.rows]) < 1e-6
    assert max(result.rows, key=lambda r: abs(r.loo_error)).label == "models/conv8.onnx"


def test_measurement_file_fields(tmp_path, board):
    path = _write(tmp_path, 'base = "raspberry-pi-5"\nkeep_base = ["inference", "ops"]\n[[measurement]]\n'
                  'model = "models/conv8.onnx"\nlatency = "250us"\nenergy = "1.5mJ"\n'
                  'input_shape = { x = [1, 3, 16, 16] }\ndim = { batch = 1 }\nprecision = "int8"\n')
    spec = load_measurements(path)
    assert spec.base == "raspberry-pi-5" and spec.keep_base == ("ops", "inference")   # FEATURE_NAMES order
    (m,) = spec.measurements
    assert m.model == tmp_path / "models" / "conv8.onnx" and m.label == "models/conv8.onnx"
    assert m.latency_s == pytest.approx(250e-6) and m.energy_j == pytest.approx(1.5e-3)
    assert m.input_shapes == {"x": [1, 3, 16, 16]} and m.dims == {"batch": 1} and m.precision == "int8"


def _write(tmp_path, text: str) -> str:
    path = tmp_path / "m.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("text, message", [
    ('base = "raspberry-pi-5"\n[[measurement]]\nmodel = "missing.onnx"\nlatency = "1ms"\n', "model file not found"),
    ('base = "raspberry-pi-5"\n[[measurement]]\nmodel = "models/conv8.onnx"\nlatency = "1 parsec"\n',
     "latency: invalid duration '1 parsec'"),
    ('base = "raspberry-pi-5"\n[[measurement]]\nmodel = "models/conv8.onnx"\nlatency = "-2ms"\n',
     "latency: invalid duration '-2ms'"),
    ('base = "raspberry-pi-5"\n[[measurement]]\nmodel = "models/conv8.onnx"\nlatency = "0ms"\n',
     "latency must be positive"),
    ('base = "raspberry-pi-5"\n[[measurement]]\nmodel = "models/conv8.onnx"\nlatency = "1ms"\nenergy = "2mW"\n',
     "energy: invalid energy '2mW'"),
    ('base = "raspberry-pi-5"\n[[measurement]]\nmodel = "models/conv8.onnx"\nlatncy = "1ms"\n',
     "unknown key 'latncy' (did you mean 'latency'?)"),
    ('base = "raspberry-pi-5"\nbaes = 1\n', "unknown key 'baes'"),
    ('base = "raspberry-pi-5"\n[[measurement]\n', "not valid TOML"),
    ('[[measurement]]\nmodel = "models/conv8.onnx"\nlatency = "1ms"\n', "missing base"),
    ('base = "raspberry-pi-5"\n', "no [[measurement]] entries"),
    ('base = "raspberry-pi-5"\n[[measurement]]\nmodel = "models/conv8.onnx"\n', "has no latency"),
    ('base = "no-such-board"\n[[measurement]]\nmodel = "models/conv8.onnx"\nlatency = "1ms"\n',
     "unknown device profile 'no-such-board'"),
    ('base = "raspberry-pi-5"\n[[measurement]]\nmodel = "models/conv8.onnx"\nlatency = "1us"\n'
     '[[measurement]]\nmodel = "models/mlp64.onnx"\nlatency = "1us"\n', "2 measurement(s) cannot determine 6"),
    ('base = "raspberry-pi-5"\n[[measurement]]\nmodel = "models/conv8.onnx"\nlatency = "1ms"\n'
     'input_shape = { x = "big" }\n', "input_shape must be a table like"),
    ('base = "raspberry-pi-5"\n[[measurement]]\nmodel = "models/conv8.onnx"\nlatency = "1ms"\nprecision = "int4"\n',
     "precision must be one of"),
    ('base = "raspberry-pi-5"\nkeep_base = ["gpu"]\n[[measurement]]\nmodel = "models/conv8.onnx"\nlatency = "1ms"\n',
     "keep_base must list feature names"),
])
def test_bad_measurement_files_are_one_line_errors(tmp_path, board, capsys, text, message):
    path = _write(tmp_path, text)
    assert main(["calibrate", path, "-o", str(tmp_path / "out.toml")]) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert not (tmp_path / "out.toml").exists()


def test_keep_base_lets_few_measurements_fit(tmp_path, board):
    path = _write(tmp_path, 'base = "raspberry-pi-5"\nkeep_base = ["depthwise_macs", "elementwise_elements", "ops"]\n'
                  + "".join(f'[[measurement]]\nmodel = "models/{name}"\nlatency = "{ms}ms"\n'
                            for name, ms in [("conv8.onnx", 0.1), ("conv16.onnx", 0.9), ("mlp512.onnx", 0.05)]))
    result = calibrate(path)
    assert {"depthwise_macs", "elementwise_elements", "ops"} <= set(result.fit_for("fp32").fit.kept)
    assert all(math.isfinite(r.fitted_s) for r in result.rows)


def _runtime_shaped_matmul() -> onnx.ModelProto:
    """A MatMul behind a Reshape to a shape given at run time: its input shape, hence its MACs, are unknown."""
    nodes = [helper.make_node("Reshape", ["x", "s"], ["r"]), helper.make_node("MatMul", ["r", "w"], ["y"])]
    built = model(nodes, [("x", [1, 64])], [("y", None)], [weight("w", 64, 8)])
    built.graph.input.append(helper.make_tensor_value_info("s", onnx.TensorProto.INT64, [2]))
    return built


def test_an_unusable_measurement_is_skipped_with_its_reason(tmp_path, board, capsys):
    onnx.save(_runtime_shaped_matmul(), tmp_path / "models" / "reshaped.onnx")
    board.write_text(board.read_text() + '\n[[measurement]]\nmodel = "models/reshaped.onnx"\nlatency = "1ms"\n')
    out = tmp_path / "out.toml"
    assert main(["calibrate", str(board), "-o", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    warnings = captured.err.splitlines()
    assert warnings == ["warning: skipped models/reshaped.onnx: MACs unknown for MatMul_1 (MACs/FLOPs not counted: "
                        "shape of input 0 (r) is unknown (1 node: MatMul_1)): its features would miss that work"]
    document = json.loads(captured.out)
    assert [s["model"] for s in document["skipped"]] == ["models/reshaped.onnx"]
    assert len(document["rows"]) == len(MODELS)   # the nine others were fitted
    assert "models/reshaped.onnx" not in {r["model"] for r in document["rows"]}
    written = tomllib.loads(out.read_text())
    assert written["calibration"]["skipped"][0]["model"] == "models/reshaped.onnx"


def test_too_few_usable_measurements_say_how_many_are_needed(tmp_path, board, capsys):
    onnx.save(_runtime_shaped_matmul(), tmp_path / "models" / "reshaped.onnx")
    path = _write(tmp_path, 'base = "raspberry-pi-5"\n' + "".join(
        f'[[measurement]]\nmodel = "models/{name}"\nlatency = "1us"\n'
        for name in ("conv8.onnx", "mlp64.onnx", "reshaped.onnx")))
    assert main(["calibrate", path, "-o", str(tmp_path / "out.toml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    # conv8 and mlp64: no depthwise conv, so 5 coefficients remain to fit from 2 usable measurements.
    assert "2 measurement(s) cannot determine 6 coefficients" in err and "at least 6 usable measurements" in err
    assert "1 skipped, first models/reshaped.onnx: MACs unknown" in err
    assert not (tmp_path / "out.toml").exists()


def test_output_never_overwrites_inputs(tmp_path, board, capsys):
    assert main(["calibrate", str(board), "-o", str(board)]) == 2
    assert "refusing to overwrite the input" in capsys.readouterr().err
    assert main(["calibrate", str(board), "-o", str(tmp_path / "board.json")]) == 2
    assert "must end in .toml" in capsys.readouterr().err
    base_copy = tmp_path / "base.toml"
    shutil.copy(BUILTIN_PROFILES_DIR / "raspberry-pi-5.toml", base_copy)
    board.write_text(board.read_text().replace('base = "raspberry-pi-5"', 'base = "base.toml"'))
    before = base_copy.read_bytes()
    assert main(["calibrate", str(board), "-o", str(base_copy)]) == 2
    assert "refusing to overwrite the base profile" in capsys.readouterr().err
    assert base_copy.read_bytes() == before
    assert main(["calibrate", str(board), "-o", str(base_copy), "--force"]) == 0
    assert tomllib.loads(base_copy.read_text())["name"] == "base"
    # The library refuses as the CLI does.
    with pytest.raises(MeasurementError, match="refusing to overwrite the input"):
        write_profile(calibrate(board), board)


# ---- the written profile ------------------------------------------------------------------------------

def test_a_profile_that_would_not_load_replaces_nothing(tmp_path, board, monkeypatch, capsys):
    """The writer checks the temporary file loads as a profile before the rename (write_text_atomic's validate
    hook): a bad field stops it, names the output, keeps the old file and leaves no temporary file behind."""
    import edgefit.devices.calibrate as calibrate_module

    out = tmp_path / "out" / "my-board.toml"
    out.parent.mkdir()
    out.write_text("old")
    good = calibrate_module.profile_data
    monkeypatch.setattr(calibrate_module, "profile_data", lambda *a: {**good(*a), "ram": "lots"})
    assert main(["calibrate", str(board), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: the calibrated profile would not load: {out}: field 'ram'") and ".tmp" not in err
    assert out.read_text() == "old" and list(out.parent.iterdir()) == [out]
    monkeypatch.setattr(calibrate_module, "profile_data", good)
    assert main(["calibrate", str(board), "-o", str(out)]) == 0
    assert tomllib.loads(out.read_text())["name"] == "my-board"


def test_written_profile_round_trip(tmp_path, board, capsys):
    out = tmp_path / "my-board.toml"
    assert main(["calibrate", str(board), "-o", str(out), "--json"]) == 0
    reported = json.loads(capsys.readouterr().out)
    assert reported["written"] == str(out)
    assert reported["loo_error"] == pytest.approx(np.mean([abs(r["loo_error"]) for r in reported["rows"]]))

    data = tomllib.loads(out.read_text())
    assert data["name"] == "my-board" and "aliases" not in data
    assert data["calibration"]["base"] == "raspberry-pi-5"
    assert [m["model"] for m in data["calibration"]["models"]] == [f"models/{n}" for n in MODELS]
    assert data["calibration"]["loo_error"] == pytest.approx(reported["loo_error"], rel=1e-5)
    stack = data["runtimes"][data["default_runtime"]]
    assert stack["basis"] == "user calibration"
    assert stack["active_power"] == "3500.0 mW"
    assert stack["expected_error"] == pytest.approx(reported["loo_error"], rel=1e-5)

    assert main(["profiles", "show", str(out), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["name"] == "my-board"
    assert shown["default_runtime"] == "calibrated"
    assert shown["runtimes"][0]["active_power_w"] == pytest.approx(3.5)
    assert shown["calibration"]["base"] == "raspberry-pi-5"

    # The fitted profile predicts a model it was fitted on: check --target PATH uses the calibrated stack.
    fitted = reported["fits"][0]["coefficients"]
    coefficients = LatencyCoefficients(*(fitted[f"s_per_{n}"] for n in
                                         ("conv_mac", "depthwise_mac", "fc_mac", "integer_mac",
                                          "elementwise_element", "transcendental_element", "moved_byte",
                                          "lrn_element", "uncached_byte", "conv_weight", "op", "inference")))
    model_path = tmp_path / "models" / "conv16.onnx"
    expected_ms = coefficients.predict(latency_features(analyze(model_path), "fp32")) * 1e3
    main(["check", str(model_path), "--target", str(out), "--json"])
    checked = json.loads(capsys.readouterr().out)
    assert checked["targets"][0]["target"] == "my-board"
    estimates = checked["targets"][0]["estimates"]
    assert estimates["latency_ms"] == pytest.approx(expected_ms, rel=1e-4)
    assert estimates["basis"] == "user calibration"
    assert estimates["expected_error"] == pytest.approx(reported["loo_error"], rel=1e-5)
    assert estimates["energy_mj"] == pytest.approx(expected_ms * 3.5, rel=1e-4)


def test_target_accepts_a_profile_file(tmp_path, capsys):
    data = tomllib.loads((BUILTIN_PROFILES_DIR / "esp32.toml").read_text())
    data.update(name="my-esp", ram="100KiB", aliases=[])
    path = tmp_path / "my-esp.toml"
    path.write_text(toml_dumps(data))
    built = tmp_path / "m.onnx"
    onnx.save(_mlp(64), built)
    main(["check", str(built), "--target", str(path), "--json"])
    target = json.loads(capsys.readouterr().out)["targets"][0]
    assert target["target"] == "my-esp"
    ram = next(c for c in target["checks"] if c["metric"] == "ram")
    assert ram["limit"] == 100 * 1024
    assert load_profile(str(path)).name == "my-esp"
    assert main(["check", str(built), "--target", str(tmp_path / "absent.toml")]) == 2
    assert "cannot read profile" in capsys.readouterr().err


def test_toml_writer_round_trips():
    data = {"name": "a b", "tiny": 1.5e-11, "free": math.inf, "flag": True, "list": [1, 2],
            "rows": [{"model": "m.onnx", "ms": 0.5, "host": {"cpus": 2}}, {"model": "n.onnx"}],
            "table": {"text": "quote \" newline \n del \x7f", "nested": {"value": 1}}, "odd key": {"x": 1},
            "only": {"nested": {"value": 2}}, "empty": {}}
    assert tomllib.loads(toml_dumps(data)) == data


# ---- timing -------------------------------------------------------------------------------------------

def test_timing_statistics_by_hand():
    timing = Timing((0.001, 0.002, 0.003, 0.004, 0.010), threads=1, attempts=1)
    assert timing.median_s == 0.003
    assert timing.iqr_s == pytest.approx(0.002)   # numpy's linear percentiles: 0.004 - 0.002
    assert timing.spread == pytest.approx(2 / 3)


def test_kernels_cost_what_their_shapes_say():
    by_name = {k.name: k for k in kernels()}
    conv = latency_features(analyze(by_name["conv 3x3 32->32 @16x16"].model), "fp32")
    assert conv.conv_macs == 3 * 3 * 32 * 32 * 16 * 16 and conv.ops == 1
    depthwise = latency_features(analyze(by_name["depthwise 3x3 128 @16x16"].model), "fp32")
    assert depthwise.depthwise_macs == 3 * 3 * 128 * 16 * 16 and depthwise.conv_macs == 0
    pointwise = latency_features(analyze(by_name["conv 1x1 64->128 @16x16"].model), "fp32")
    assert pointwise.conv_macs == 64 * 128 * 16 * 16
    matmul = latency_features(analyze(by_name["matmul 1x512x512"].model), "fp32")
    assert matmul.fc_macs == 512 * 512 and matmul.ops == 1
    add = latency_features(analyze(by_name["add 16K elements"].model), "fp32")
    assert add.elementwise_elements == 16_384 and add.ops == 1


FAST = TimingPlan(warmup_s=0.0, min_warmup_runs=1, budget_s=0.002, min_runs=5, max_runs=50, max_spread=100.0)


def test_measure_times_models_and_kernels_here(tmp_path, board):
    result = calibrate(board, measure=True, timing_plan=FAST)
    assert result.measured_here and result.host["threads"] == 1
    assert any("ignored" in note for note in result.notes)   # the file's latencies gave way to the timings
    models = [r for r in result.rows if r.kind == "model"]
    # A model or kernel whose timings stay unstable on a busy host is skipped (and named), not fitted.
    timed_kernels = [r for r in result.rows if r.kind == "kernel"]
    assert all("unstable" in s.reason for s in result.skipped)
    assert len(models) + len(timed_kernels) + len(result.skipped) == len(MODELS) + len(kernels(host_last_level_cache()))
    assert len(models) >= len(MODELS) - 1
    for row in models:
        assert len(row.timing.samples_s) >= 5 and row.latency_s == row.timing.median_s
        assert row.timing.clock == "thread cpu"   # one thread: the inference runs on the calling thread
    # Bigger models take longer on any machine: the widest MLP has 64x the MACs of the narrowest.
    by_label = {r.label: r.latency_s for r in models}
    assert by_label["models/mlp2048.onnx"] > by_label["models/mlp64.onnx"]


def test_more_threads_are_timed_by_the_wall_clock():
    timing = time_model(_mlp(64), what="mlp", threads=2, plan=FAST)
    assert timing.clock == "wall" and timing.threads == 2 and len(timing.samples_s) >= 5
    with pytest.raises(MeasurementError, match="invalid thread count 0"):
        time_model(_mlp(64), what="mlp", threads=0, plan=FAST)


def test_unstable_timings_are_refused(tmp_path, board):
    unstable = TimingPlan(warmup_s=0.0, min_warmup_runs=1, budget_s=0.0, min_runs=8, max_runs=8, max_spread=0.0,
                          attempts=2)
    # Every model's timings stay unstable: each is skipped, and nothing is left to fit.
    with pytest.raises(MeasurementError, match=r"no usable measurement: 9 skipped, first models/conv8.onnx: "
                                               r"timings of models/conv8.onnx are unstable .* over 2 attempts"):
        calibrate(board, measure=True, timing_plan=unstable, kernels=False)


def test_gate_target_may_be_a_profile_file_relative_to_the_config(tmp_path, monkeypatch, capsys):
    project = tmp_path / "project"
    (project / "boards").mkdir(parents=True)
    onnx.save(_mlp(64), project / "m.onnx")
    data = tomllib.loads((BUILTIN_PROFILES_DIR / "esp32.toml").read_text())
    data.update(name="bench-board", aliases=[])
    (project / "boards" / "bench-board.toml").write_text(toml_dumps(data))
    (project / "edgefit.toml").write_text('[[gate]]\nmodel = "m.onnx"\ntarget = "boards/bench-board.toml"\n'
                                          'max_latency = "1s"\n')
    monkeypatch.chdir(tmp_path)   # the path is the config's, not the working directory's
    assert main(["gate", "-c", str(project / "edgefit.toml"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["target"] == "bench-board"


def test_a_timer_given_replaces_timing_here(board):
    """A benchmark re-runs a fit on stored timings: calibrate calls the timer as it calls time_model (the model,
    its label, 1 thread, the plan) and fits the medians it returns, timing nothing itself."""
    calls = []

    def stored(proto, *, what, threads, plan, input_shapes=None, dims=None):
        calls.append((what, threads, plan))
        return Timing((0.002, 0.001, 0.003), threads, 1, "thread cpu")   # median 2 ms

    result = calibrate(board, measure=True, timing_plan=FAST, kernels=False, timer=stored)
    assert [call[0] for call in calls] == [m["model"] for m in tomllib.loads(board.read_text())["measurement"]]
    assert all(threads == 1 and plan is FAST for _, threads, plan in calls)
    assert [row.latency_s for row in result.models] == [0.002] * len(calls)
