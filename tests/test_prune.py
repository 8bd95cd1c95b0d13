"""prune: exact sparsity, sparse-storage figures, and structured cuts that shrink params/MACs by hand-computed
amounts while the model keeps running."""

import numpy as np
import onnx
import pytest
from helpers import model, weight
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper, numpy_helper

from edgefit import analyze
from edgefit.errors import PassError
from edgefit.passes import prune
from edgefit.passes.base import model_digest
from edgefit.passes.prune import sparse_storage
from edgefit.runtime import session

RNG = np.random.default_rng(3)


def two_layer_mlp():
    return model([helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], transB=1, name="fc1"),
                  helper.make_node("Relu", ["h"], ["r"], name="relu"),
                  helper.make_node("MatMul", ["r", "W2"], ["y"], name="fc2")],
                 [("x", ["N", 20])], [("y", ["N", 10])],
                 [weight("W1", 30, 20, seed=1), weight("b1", 30, seed=2), weight("W2", 30, 10, seed=3)])


def zeros(proto, name):
    tensor = next(t for t in proto.graph.initializer if t.name == name)
    return int(np.sum(numpy_helper.to_array(tensor) == 0))


def runs(proto, shape):
    name = proto.graph.input[0].name
    return session(proto).run(None, {name: RNG.standard_normal(shape).astype(np.float32)})[0]


@settings(max_examples=25, deadline=None)
@given(st.floats(min_value=0.0, max_value=0.95), st.booleans())
def test_requested_sparsity_is_hit_exactly(sparsity, per_layer):
    proto = two_layer_mlp()
    result = prune(proto, sparsity, per_layer=per_layer)
    if per_layer:
        assert zeros(result.model, "W1") == round(sparsity * 600)
        assert zeros(result.model, "W2") == round(sparsity * 300)
    else:
        assert zeros(result.model, "W1") + zeros(result.model, "W2") == round(sparsity * 900)
    assert result.stats.achieved_sparsity == pytest.approx(
        (zeros(result.model, "W1") + zeros(result.model, "W2")) / 900)


def test_global_pruning_removes_the_smallest_magnitudes_across_layers():
    proto = two_layer_mlp()
    result = prune(proto, 0.5)
    kept = np.concatenate([numpy_helper.to_array(t).ravel() for t in result.model.graph.initializer
                           if t.name in ("W1", "W2")])
    original = np.concatenate([numpy_helper.to_array(t).ravel() for t in proto.graph.initializer
                               if t.name in ("W1", "W2")])
    threshold = np.sort(np.abs(original))[449]
    assert np.all(np.abs(kept[kept != 0]) >= threshold)
    assert zeros(result.model, "b1") == 0   # biases are not pruned


def test_skip_first_and_names_and_unknown_names():
    proto = two_layer_mlp()
    result = prune(proto, 0.5, per_layer=True, skip=("first",))
    assert zeros(result.model, "W1") == 0 and zeros(result.model, "W2") == 150
    assert [layer.layer for layer in result.stats.layers] == ["fc2"]
    assert prune(proto, 0.5, skip=("fc2",)).stats.layers[0].layer == "fc1"
    with pytest.raises(PassError, match="names no prunable layer"):
        prune(proto, 0.5, skip=("nope",))


def test_pruning_leaves_its_input_alone_and_stays_runnable():
    proto = two_layer_mlp()
    digest = model_digest(proto)
    result = prune(proto, 0.7)
    assert model_digest(proto) == digest
    onnx.checker.check_model(result.model, full_check=True)
    assert runs(result.model, (2, 20)).shape == (2, 10)


def test_sparse_storage_picks_the_smaller_of_bitmask_and_csr():
    dense = np.ones((4, 8), dtype=np.float32)
    assert sparse_storage(dense) == (128, "dense")
    half = dense.copy()
    half[:, ::2] = 0
    # bitmask: 32 bits = 4 bytes + 16 values x 4 = 68; CSR: 64 + 16 uint8 cols + 5 uint8 row pointers = 85
    assert sparse_storage(half) == (68, "bitmask")
    very_sparse = np.zeros((4, 8), dtype=np.float32)
    very_sparse[0, 0] = 1
    # bitmask 4 + 4 = 8; CSR: 4 + 1 + 5 = 10
    assert sparse_storage(very_sparse) == (8, "bitmask")
    big_sparse = np.zeros((4, 1024), dtype=np.float32)
    big_sparse[:, 0] = 1
    # bitmask 512 + 16 = 528; CSR: 16 + 4 x 2 (uint16 cols) + 5 x 1 = 29
    assert sparse_storage(big_sparse) == (29, "csr")


def conv_bn_conv():
    """x[1,3,8,8] -> Conv 8 3x3 pad 1 -> BN -> Relu -> Conv 4 3x3 pad 1 -> y[1,4,8,8]."""
    bn = [numpy_helper.from_array(RNG.uniform(0.5, 1.5, 8).astype(np.float32), n) for n in ("g", "beta", "m")]
    bn.append(numpy_helper.from_array(RNG.uniform(0.5, 1.5, 8).astype(np.float32), "v"))
    return model([helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
                  helper.make_node("BatchNormalization", ["c1", "g", "beta", "m", "v"], ["n1"], name="bn1"),
                  helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
                  helper.make_node("Conv", ["r1", "W2", "B2"], ["y"], pads=[1, 1, 1, 1], name="conv2")],
                 [("x", [1, 3, 8, 8])], [("y", [1, 4, 8, 8])],
                 [weight("W1", 8, 3, 3, 3, seed=1), weight("B1", 8, seed=2), *bn,
                  weight("W2", 4, 8, 3, 3, seed=3), weight("B2", 4, seed=4)])


def test_structured_pruning_shrinks_params_and_macs_by_the_hand_computed_amounts():
    proto = conv_bn_conv()
    before = analyze(proto)
    result = prune(proto, 0.5, structured=True)
    after = analyze(result.model)
    # conv1 loses 4 of 8 filters: W1 4x3x3x3 = 108, B1 4, BN 4 x 4 = 16; conv2 loses 4 input channels: 4x4x9 = 144.
    assert before.params - after.params == 108 + 4 + 16 + 144
    # MACs per output pixel (64 pixels): conv1 4 x 27 fewer, conv2 4 x 36 fewer.
    assert before.macs - after.macs == 64 * (4 * 27 + 4 * 36)
    layer = result.stats.channels[0]
    assert (layer.layer, layer.channels_before, layer.channels_after) == ("conv1", 8, 4)
    assert set(layer.rewired) == {"bn1", "conv2"}
    assert any(s.startswith("conv2: its channels reach the graph output") for s in result.stats.skipped)
    # 4 of the 8 + 4 output channels of the two layers that could be cut went (conv2 could not be cut).
    assert result.stats.achieved_sparsity == 4 / 12
    onnx.checker.check_model(result.model, full_check=True)
    assert runs(result.model, (1, 3, 8, 8)).shape == (1, 4, 8, 8)


def test_structured_pruning_keeps_the_largest_l1_filters():
    proto = conv_bn_conv()
    w1 = numpy_helper.to_array(next(t for t in proto.graph.initializer if t.name == "W1"))
    kept = sorted(np.argsort(np.abs(w1).sum(axis=(1, 2, 3)))[4:])
    result = prune(proto, 0.5, structured=True)
    conv1 = result.model.graph.node[0]
    new_w1 = numpy_helper.to_array(next(t for t in result.model.graph.initializer if t.name == conv1.input[1]))
    np.testing.assert_array_equal(new_w1, w1[kept])


def test_structured_cut_flows_through_depthwise_conv():
    proto = model([helper.make_node("Conv", ["x", "W1"], ["a"], name="pw1"),
                   helper.make_node("Relu", ["a"], ["b"]),
                   helper.make_node("Conv", ["b", "Wd", "Bd"], ["c"], group=8, pads=[1, 1, 1, 1], name="dw"),
                   helper.make_node("Conv", ["c", "W2"], ["y"], name="pw2")],
                  [("x", [1, 4, 6, 6])], [("y", [1, 5, 6, 6])],
                  [weight("W1", 8, 4, 1, 1), weight("Wd", 8, 1, 3, 3, seed=1), weight("Bd", 8, seed=2),
                   weight("W2", 5, 8, 1, 1, seed=3)])
    result = prune(proto, 0.25, structured=True)
    assert [(c.layer, c.channels_after) for c in result.stats.channels] == [("pw1", 6)]
    dw = next(n for n in result.model.graph.node if n.name == "dw")
    assert next(a.i for a in dw.attribute if a.name == "group") == 6
    # pw1 loses 2 x 4, dw loses 2 x (9 + 1), pw2 loses 5 x 2
    assert analyze(proto).params - analyze(result.model).params == 8 + 20 + 10
    assert runs(result.model, (1, 4, 6, 6)).shape == (1, 5, 6, 6)


def test_structured_cut_flows_through_flatten_into_gemm():
    proto = model([helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
                   helper.make_node("Flatten", ["c"], ["f"]),
                   helper.make_node("Gemm", ["f", "F"], ["y"], transB=1, name="fc")],
                  [("x", ["N", 2, 3, 3])], [("y", ["N", 3])], [weight("W", 4, 2, 2, 2), weight("F", 3, 16, seed=1)])
    result = prune(proto, 0.5, structured=True)
    fc = next(n for n in result.model.graph.node if n.name == "fc")
    assert next(t for t in result.model.graph.initializer if t.name == fc.input[1]).dims == [3, 8]
    assert runs(result.model, (2, 2, 3, 3)).shape == (2, 3)


def test_structured_pruning_refuses_a_residual_add():
    proto = model([helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1], name="conv"),
                   helper.make_node("Add", ["c", "x"], ["s"], name="residual"),
                   helper.make_node("Relu", ["s"], ["y"])],
                  [("x", [1, 4, 5, 5])], [("y", [1, 4, 5, 5])], [weight("W", 4, 4, 3, 3)])
    with pytest.raises(PassError, match="residual.*not cut the same way"):
        prune(proto, 0.5, structured=True)


def test_structured_pruning_on_resnet_cuts_only_inner_block_convs(samples):
    result = prune(onnx.load(str(samples / "ic_resnet8.onnx")), 0.5, structured=True)
    assert [c.layer for c in result.stats.channels] == ["stage1_conv1", "stage2_conv1", "stage3_conv1"]
    assert any(s.startswith("stage1_conv2:") and "Add" in s for s in result.stats.skipped)
    assert runs(result.model, (1, 3, 32, 32)).shape == (1, 10)


def test_sparsity_out_of_range_is_refused():
    with pytest.raises(PassError, match="sparsity"):
        prune(two_layer_mlp(), 1.0)
