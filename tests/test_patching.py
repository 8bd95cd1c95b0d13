"""Patch-based execution: the schedule reproduces the stage output exactly when run patch by patch in
onnxruntime, and the peak of a 3-layer CNN matches the figure worked out by hand."""

import numpy as np
import onnx
import pytest
from helpers import model, weight
from onnx import TensorProto, helper

from edgefit.analysis.footprint import analyze
from edgefit.analysis.patching import advise_patching, patch_plans, patch_schedule
from edgefit.runtime import session


def three_layer_cnn():
    """x [1,4,16,16] fp32 (4096 B) -> conv 4->8 3x3 pad 1 (8192 B) -> relu (8192 B) -> conv 8->4 3x3 stride 2 pad 1
    ([1,4,8,8], 1024 B) -> global average pool -> flatten."""
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv2"),
             helper.make_node("GlobalAveragePool", ["c"], ["g"]),
             helper.make_node("Flatten", ["g"], ["y"])]
    return model(nodes, [("x", [1, 4, 16, 16])], [("y", [1, 4])],
                 [weight("w1", 8, 4, 3, 3, seed=1), weight("w2", 4, 8, 3, 3, seed=2)])


def test_three_layer_peak_by_hand():
    """Layer by layer the relu holds a and r: 8192 + 8192 = 16384 B.

    2x2 patches over all three layers: the bottom-right tile of c (rows/cols 4..8) needs r rows 7..16
    (4*2-1 .. 7*2-1+3), so a is computed over 9x9 and x read over rows/cols 6..16 (10x10):
      patch arena = the relu step, a 8x9x9x4 + r 8x9x9x4 = 2592 + 2592 = 5184 B (x window 1600 B is dead by then);
      patch phase = x 4096 + c 1024 + 5184 = 10304 B; the rest (c 1024 + g 16) = 1040 B.
    MACs: conv1 73728 over 16x16 outputs; its windows cover 8x8 + 8x9 + 9x8 + 9x9 = 289 positions:
      73728 * 289 / 256 = 83232; conv2 18432 is tiled exactly; total 101664 against 92160 (+10.3%)."""
    built = three_layer_cnn()
    footprint = analyze(built)
    assert footprint.peak_activation_bytes == 16384 and footprint.macs == 92160
    plans = {(p.layers, p.grid): p for p in patch_plans(built, footprint)}
    plan = plans[(3, 2)]
    assert (plan.largest_patch_bytes, plan.patch_phase_bytes, plan.rest_bytes, plan.peak_bytes) == (
        5184, 10304, 1040, 10304)
    assert (plan.macs, plan.base_macs, plan.unpatched_bytes) == (101664, 92160, 16384)
    assert plan.extra_macs_pct == pytest.approx(10.3125)
    # A stage can end only where one tensor crosses to the rest (after conv1, relu or conv2, never at the pool);
    # cut after conv1, the relu left to the rest alone holds a + r = 16384 B, so that cut gets no plan.
    assert sorted({layers for layers, _ in plans}) == [2, 3]


def test_advice_picks_the_smallest_and_the_cheapest_within_a_limit():
    built = three_layer_cnn()
    footprint = analyze(built)
    plans = patch_plans(built, footprint)
    advice = advise_patching(plans, limit_bytes=10304)
    assert advice.smallest.peak_bytes == min(p.peak_bytes for p in plans)
    assert advice.cheapest_fitting.peak_bytes <= 10304
    assert advice.cheapest_fitting.macs == min(p.macs for p in plans if p.peak_bytes <= 10304)
    assert advise_patching(plans, limit_bytes=1000).cheapest_fitting is None
    assert advise_patching([]).smallest is None
    # int8 activations: a quarter, except that 8x9x9 = 648-byte windows take 656 bytes at 16-byte alignment:
    # x 1024 + c 256 + 656 + 656 = 2592.
    plan8 = {(p.layers, p.grid): p for p in patch_plans(built, footprint, "int8")}[(3, 2)]
    assert (plan8.peak_bytes, plan8.unpatched_bytes) == (2592, 4096)


def small_cnn():
    """Odd sizes, a depthwise stride-2 conv, a dilated conv, pools, batch norm, a per-channel Add and a residual
    Add over an equal-size branch: every rule of the receptive-field walk."""
    c = 6
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Clip", ["a", "lo", "hi"], ["a6"], name="relu6"),
             helper.make_node("Conv", ["a6", "wd"], ["d"], pads=[1, 1, 1, 1], strides=[2, 2], group=c, name="dw"),
             helper.make_node("BatchNormalization", ["d", "s", "t", "m", "v"], ["bn"], name="bn"),
             helper.make_node("Conv", ["bn", "wdil"], ["e"], pads=[2, 2, 2, 2], dilations=[2, 2], name="dilated"),
             helper.make_node("Add", ["e", "bn"], ["res"], name="residual"),
             helper.make_node("MaxPool", ["res"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                              name="maxpool"),
             helper.make_node("Add", ["p", "cb"], ["pb"], name="bias"),
             helper.make_node("AveragePool", ["pb"], ["q"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="avgpool"),
             helper.make_node("Conv", ["q", "w3"], ["stage"], name="pointwise"),
             helper.make_node("GlobalAveragePool", ["stage"], ["g"]),
             helper.make_node("Flatten", ["g"], ["y"])]
    rng = np.random.default_rng(3)
    consts = [weight("w1", c, 3, 3, 3, seed=1), weight("b1", c, seed=2), weight("wd", c, 1, 3, 3, seed=3),
              weight("wdil", c, c, 3, 3, seed=4), weight("w3", 5, c, 1, 1, seed=5), weight("cb", 1, c, 1, 1, seed=6),
              onnx.numpy_helper.from_array(np.float32(0), "lo"), onnx.numpy_helper.from_array(np.float32(6), "hi"),
              onnx.numpy_helper.from_array(rng.uniform(0.5, 2, c).astype(np.float32), "s"),
              weight("t", c, seed=7), weight("m", c, seed=8),
              onnx.numpy_helper.from_array(rng.uniform(0.5, 2, c).astype(np.float32), "v")]
    return model(nodes, [("x", [1, 3, 23, 19])], [("y", [1, 5])], consts)


def _run_stage(built, stage_output, x, nodes=None):
    sub = onnx.ModelProto()
    sub.CopyFrom(built)
    if nodes is not None:
        del sub.graph.node[:]
        sub.graph.node.extend(nodes)
    del sub.graph.output[:]
    sub.graph.output.append(helper.make_tensor_value_info(stage_output, TensorProto.FLOAT, None))
    del sub.graph.input[:]
    sub.graph.input.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape)))
    return session(sub).run(None, {"x": x})[0]


@pytest.mark.parametrize("grid", [2, 3])
def test_patch_schedule_reproduces_the_stage_output(grid):
    """Run each patch's window of x through the stage with the schedule's per-patch pads, stitch the tiles, and
    compare with the stage run whole. The residual Add reads bn over the union of both readers' windows."""
    built = small_cnn()
    footprint = analyze(built)
    layers = 10
    x = np.random.default_rng(0).standard_normal((1, 3, 23, 19)).astype(np.float32)
    whole = _run_stage(built, "stage", x)
    assert whole.shape == (1, 5, 6, 5)
    stitched = np.full_like(whole, np.nan)
    stage_nodes = list(built.graph.node[:layers])
    for run in patch_schedule(built, footprint, layers, grid):
        nodes = []
        for index, node in enumerate(stage_nodes):
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            if index in run.pads:
                del copy.attribute[:]
                copy.attribute.extend(a for a in node.attribute if a.name != "pads")
                copy.attribute.append(helper.make_attribute("pads", [*run.pads[index][:2], *run.pads[index][2:]]))
            nodes.append(copy)
        nodes = _with_crops(nodes, run, built)
        r0, r1, c0, c1 = run.input_window
        tile = _run_stage(built, "stage", np.ascontiguousarray(x[:, :, r0:r1, c0:c1]), nodes)
        t0, t1, u0, u1 = run.tile
        stitched[:, :, t0:t1, u0:u1] = tile
    np.testing.assert_allclose(stitched, whole, rtol=1e-5, atol=1e-5)


def _with_crops(nodes, run, built):
    """Where a reader needs a smaller window than the tensor was computed over (the residual Add reads bn over
    the dilated conv's output window, bn itself covers the dilated conv's input window), slice it first."""
    produced = {node.output[0]: index for index, node in enumerate(nodes)}
    result = []
    for index, node in enumerate(nodes):
        if node.op_type == "Add" and all(name in produced for name in node.input):
            mine = run.windows[index]
            for slot, name in enumerate(node.input):
                theirs = run.windows[produced[name]]
                if theirs != mine:
                    starts = [mine[0] - theirs[0], mine[2] - theirs[2]]
                    ends = [mine[1] - theirs[0], mine[3] - theirs[2]]
                    crop = f"{name}_crop{index}"
                    result.append(helper.make_node(
                        "Slice", [name, f"{crop}_s", f"{crop}_e", f"{crop}_a"], [crop]))
                    for suffix, values in (("s", starts), ("e", ends), ("a", [2, 3])):
                        result.append(helper.make_node("Constant", [], [f"{crop}_{suffix}"],
                                                       value=onnx.numpy_helper.from_array(
                                                           np.array(values, np.int64), f"{crop}_{suffix}")))
                    node.input[slot] = crop
        result.append(node)
    return _sorted(result)


def _sorted(nodes):
    """Constants first, then the rest in order (the Slice nodes were added before their Constants)."""
    return [n for n in nodes if n.op_type == "Constant"] + [n for n in nodes if n.op_type != "Constant"]


def test_check_reports_the_patch_plan_when_ram_binds(tmp_path):
    """A device leaving 12,000 B to activations (22,000 B RAM, 10,000 B runtime): the layer-by-layer arena of
    16384 B does not fit; the cheapest plan within 12,000 B is 2x2 over the three layers (10304 B, +10%)."""
    from test_estimate import mcu

    from edgefit.devices.check import check
    from edgefit.report.check_text import describe_patch_plan

    path = tmp_path / "cnn.onnx"
    path.write_bytes(three_layer_cnn().SerializeToString())
    device = mcu(ram_bytes=22_000, latency_budget_s=10.0)
    result = check(path, [device], "fp32").targets[0]
    assert not result.verdict("ram").ok
    advice = result.patch_plan
    assert advice.limit_bytes == 12_000
    assert (advice.cheapest_fitting.grid, advice.cheapest_fitting.layers, advice.cheapest_fitting.peak_bytes) == (
        2, 3, 10304)
    assert result.to_dict()["estimates"]["patch_plan"]["cheapest_fitting"]["peak_bytes"] == 10304
    roomy = check(path, [mcu(ram_bytes=64_000, latency_budget_s=10.0)], "fp32").targets[0]
    assert roomy.patch_plan is None and "patch_plan" not in roomy.to_dict()["estimates"]
    assert describe_patch_plan(result) == ("fits hand-mcu RAM with 2x2 patches over the first 3 layers: peak "
                                           "16.00 KiB -> 10.06 KiB, +10% MACs (patch-based execution)")
    tight = check(path, [mcu(ram_bytes=12_000, latency_budget_s=10.0)], "fp32").targets[0]
    assert tight.patch_plan.cheapest_fitting is None
    assert describe_patch_plan(tight).startswith("hand-mcu: patch-based execution at best")
