"""Classical-ML models (ai.onnx.ml, as sklearn-onnx writes them): weights live in node attributes."""

import numpy as np
from onnx import TensorProto, helper

import edgefit
from helpers import build, vi

ML = helper.make_opsetid("ai.onnx.ml", 3)


def linear_zipmap_tree():
    """x [5, 4] -> LinearClassifier (3 classes) -> ZipMap; x -> TreeEnsembleRegressor (one tree: root + 2 leaves)."""
    linear = helper.make_node("LinearClassifier", ["x"], ["label", "probs"], domain="ai.onnx.ml", name="linear",
                              coefficients=list(np.arange(12, dtype=float)), intercepts=[0.1, 0.2, 0.3],
                              classlabels_ints=[0, 1, 2], post_transform="SOFTMAX")
    zipmap = helper.make_node("ZipMap", ["probs"], ["out"], domain="ai.onnx.ml", name="zipmap",
                              classlabels_int64s=[0, 1, 2])
    tree = helper.make_node(
        "TreeEnsembleRegressor", ["x"], ["reg"], domain="ai.onnx.ml", name="tree", n_targets=1,
        nodes_treeids=[0, 0, 0], nodes_nodeids=[0, 1, 2], nodes_featureids=[0, 0, 0], nodes_values=[0.5, 0, 0],
        nodes_modes=["BRANCH_LEQ", "LEAF", "LEAF"], nodes_truenodeids=[1, 0, 0], nodes_falsenodeids=[2, 0, 0],
        target_treeids=[0, 0], target_nodeids=[1, 2], target_ids=[0, 0], target_weights=[1.0, 2.0])
    maps = helper.make_sequence_type_proto(helper.make_map_type_proto(
        TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, [])))
    return build([linear, zipmap, tree], [vi("x", TensorProto.FLOAT, [5, 4])],
                 [vi("label", TensorProto.INT64, [5]), helper.make_value_info("out", maps),
                  vi("reg", TensorProto.FLOAT, [5, 1])], extra_opsets=[ML])


def test_attribute_weights_are_counted():
    fp = edgefit.analyze(linear_zipmap_tree())
    layers = {layer.name: layer for layer in fp.layers}
    # LinearClassifier: 12 coefficients + 3 intercepts = 15 params (60 B) + 3 int64 class labels (24 B).
    assert (layers["linear"].params, layers["linear"].weight_bytes) == (15, 84)
    # ZipMap: its 3 int64 labels are data (24 B), not parameters.
    assert (layers["zipmap"].params, layers["zipmap"].weight_bytes) == (0, 24)
    # Tree: 3 thresholds + 2 leaf values = 5 params (20 B); 21 int64 node/target ids (168 B); the mode strings
    # "BRANCH_LEQ", "LEAF", "LEAF" (18 B).
    assert (layers["tree"].params, layers["tree"].weight_bytes) == (5, 20 + 168 + 18)
    assert fp.params == 20 and fp.params_by_dtype == {"float32": 20}
    assert fp.weight_bytes_by_dtype == {"float32": 80, "int64": 216, "string": 18}


def test_cost_rules_and_honest_sequence_memory():
    fp = edgefit.analyze(linear_zipmap_tree())
    layers = {layer.name: layer for layer in fp.layers}
    # 5 samples x 12 coefficients = 60 MACs; FLOPs 2 x 60 + 5 x 3 intercepts = 135.
    assert (layers["linear"].macs, layers["linear"].flops) == (60, 135)
    assert (layers["zipmap"].macs, layers["zipmap"].flops) == (0, 0)
    # One comparison per sample on the tree's only branching level.
    assert (layers["tree"].macs, layers["tree"].flops) == (0, 5)
    # The ZipMap output is a sequence of maps: its size follows the data, said as such (no onnxruntime attempt).
    assert fp.unknowns == ("activation RAM excludes 1 sequence/map value(s), whose size depends on the data: out",)
    assert fp.warnings == ()


def test_tree_ensemble_cost_is_the_deepest_path_of_each_tree():
    # Tree 0: root -> (node 1 -> leaves 3, 4), leaf 2: two comparisons on its deepest path. Tree 1: one branch and
    # two leaves: one comparison. 7 samples: 7 x (2 + 1) = 21.
    ids = dict(nodes_treeids=[0, 0, 0, 0, 0, 1, 1, 1], nodes_nodeids=[0, 1, 2, 3, 4, 0, 1, 2],
               nodes_featureids=[0, 1, 0, 0, 0, 2, 0, 0], nodes_values=[0.5, 0.2, 0, 0, 0, 0.7, 0, 0],
               nodes_modes=["BRANCH_LEQ", "BRANCH_LT", "LEAF", "LEAF", "LEAF", "BRANCH_GT", "LEAF", "LEAF"],
               nodes_truenodeids=[1, 3, 0, 0, 0, 1, 0, 0], nodes_falsenodeids=[2, 4, 0, 0, 0, 2, 0, 0])
    tree = helper.make_node("TreeEnsembleClassifier", ["x"], ["label", "scores"], domain="ai.onnx.ml", name="forest",
                            classlabels_int64s=[0, 1], class_treeids=[0, 0, 0, 1, 1], class_nodeids=[2, 3, 4, 1, 2],
                            class_ids=[0, 1, 1, 0, 1], class_weights=[1.0, 1.0, 1.0, 1.0, 1.0], **ids)
    fp = edgefit.analyze(build([tree], [vi("x", TensorProto.FLOAT, [7, 3])],
                               [vi("label", TensorProto.INT64, [7]), vi("scores", TensorProto.FLOAT, [7, 2])],
                               extra_opsets=[ML]))
    assert (fp.macs, fp.flops) == (0, 21)
    # 8 thresholds + 5 class weights are parameters.
    assert fp.params == 13
