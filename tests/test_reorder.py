"""The reorder pass: the planner's memory-aware order written into the node list lowers the file-order arena,
and the model's outputs stay bit-identical in onnxruntime."""

import json

import numpy as np
from helpers import model, weight
from onnx import helper

from edgefit.analysis.footprint import analyze
from edgefit.cli import main
from edgefit.passes import reorder, run_passes
from edgefit.passes.base import model_digest
from edgefit.runtime import session


def two_branches():
    """x [1,4,8,8] fp32 (1 KiB) feeds two branches that each widen to 64 channels (16 KiB) and narrow back to 4.

    File order runs both wide convs first, so both 16 KiB tensors live together:
      step 1 (wide_b): x 1024 + a 16384 + b 16384 = 33792 live bytes.
    Branch by branch the widest step holds one wide tensor at a time:
      x 1024 + small_a 1024 + b 16384 = 18432.
    Lower bound: a wide conv's input + output = 1024 + 16384 = 17408."""
    nodes = [helper.make_node("Conv", ["x", "wa"], ["a"], name="wide_a"),
             helper.make_node("Conv", ["x", "wb"], ["b"], name="wide_b"),
             helper.make_node("Conv", ["a", "na"], ["small_a"], name="narrow_a"),
             helper.make_node("Conv", ["b", "nb"], ["small_b"], name="narrow_b"),
             helper.make_node("Add", ["small_a", "small_b"], ["y"], name="join")]
    inits = [weight("wa", 64, 4, 1, 1, seed=1), weight("wb", 64, 4, 1, 1, seed=2),
             weight("na", 4, 64, 1, 1, seed=3), weight("nb", 4, 64, 1, 1, seed=4)]
    return model(nodes, [("x", [1, 4, 8, 8])], [("y", [1, 4, 8, 8])], inits)


def test_reorder_lowers_file_order_arena_and_keeps_outputs_identical():
    original = two_branches()
    digest = model_digest(original)
    result = reorder(original)
    assert model_digest(original) == digest
    stats = result.stats
    assert (stats.file_order_peak_before, stats.file_order_peak_after, stats.lower_bound) == (33792, 18432, 17408)
    assert [n.name for n in result.model.graph.node] == ["wide_a", "narrow_a", "wide_b", "narrow_b", "join"]
    assert stats.nodes_moved == 2
    assert analyze(result.model).file_order_peak_bytes == 18432
    x = np.random.default_rng(0).standard_normal((1, 4, 8, 8)).astype(np.float32)
    before = session(original).run(None, {"x": x})[0]
    after = session(result.model).run(None, {"x": x})[0]
    assert np.array_equal(before, after)


def test_reorder_leaves_a_chain_alone_and_says_why():
    chain = model([helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Neg", ["h"], ["y"])],
                  [("x", [1, 16])], [("y", [1, 16])])
    result = reorder(chain)
    assert result.stats.file_order_peak_after == result.stats.file_order_peak_before == 128
    assert result.stats.nodes_moved == 0 and result.stats.notes
    assert model_digest(result.model) == model_digest(chain)


def test_constant_only_nodes_run_before_their_readers():
    """A Constant node stored last (after its reader in file order would be invalid, so it sits between the
    branches): the planner leaves it out, and the pass places it before the node reading it."""
    nodes = [helper.make_node("Conv", ["x", "wa"], ["a"], name="wide_a"),
             helper.make_node("Conv", ["x", "wb"], ["b"], name="wide_b"),
             helper.make_node("Constant", [], ["nb"], name="nb_const",
                              value=weight("nb_value", 4, 64, 1, 1, seed=4)),
             helper.make_node("Conv", ["a", "na"], ["small_a"], name="narrow_a"),
             helper.make_node("Conv", ["b", "nb"], ["small_b"], name="narrow_b"),
             helper.make_node("Add", ["small_a", "small_b"], ["y"], name="join")]
    inits = [weight("wa", 64, 4, 1, 1, seed=1), weight("wb", 64, 4, 1, 1, seed=2), weight("na", 4, 64, 1, 1, seed=3)]
    branchy = model(nodes, [("x", [1, 4, 8, 8])], [("y", [1, 4, 8, 8])], inits)
    result = reorder(branchy)
    names = [n.name for n in result.model.graph.node]
    assert names == ["nb_const", "wide_a", "narrow_a", "wide_b", "narrow_b", "join"]
    assert result.stats.file_order_peak_after == 18432


def test_reorder_in_a_pipeline_and_on_the_command_line(tmp_path, capsys):
    pipeline = run_passes(two_branches(), "fuse,reorder")
    assert pipeline.steps[1].stats.file_order_peak_after == 18432
    source, target = tmp_path / "m.onnx", tmp_path / "out.onnx"
    source.write_bytes(two_branches().SerializeToString())
    assert main(["optimize", str(source), "-o", str(target), "--passes", "reorder", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passes"][0]["stats"]["file_order_peak_before"] == 33792
    assert report["after"]["file_order_peak_bytes"] == 18432
    assert main(["optimize", str(source), "-o", str(tmp_path / "o2.onnx"), "--passes", "fuse,reorder"]) == 0
    assert "file-order arena 33.00 KiB -> 18.00 KiB" in " ".join(capsys.readouterr().out.split())
