"""Work shared between the analysis and the tier line: the footprint's graph handed to operator coverage, nodes of
one kind judged once, and the JSON layout. Each test checks a shortcut gives what the long way gives."""

import dataclasses
import json

import numpy as np
from helpers import model, weight
from onnx import helper, numpy_helper

from edgefit.analysis.footprint import analysed_graph, analyze
from edgefit.devices.operators import operator_list_names
from edgefit.devices.operators.coverage import ModelGraph, operator_coverage
from edgefit.report.json_format import dumps


def statuses(footprint, graph, runtime, precision):
    return [(n.layer, n.status, n.reason) for n in operator_coverage(graph, footprint, runtime, precision).nodes]


def small_cnn():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"], name="pool"),
             helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1, name="fc")]
    return model(nodes, [("x", [1, 8, 16, 16])], [("y", [1, 4])], [weight("w", 8, 8, 3, 3), weight("fc", 4, 8)])


def test_coverage_on_the_analysis_graph_equals_coverage_on_a_fresh_read():
    built = small_cnn()
    footprint = analyze(built)
    handed = analysed_graph(footprint)
    assert handed is not None and [n.op_type for n in handed.index.nodes] == ["Conv", "Relu", "GlobalAveragePool",
                                                                             "Flatten", "Gemm"]
    for runtime in operator_list_names():
        for precision in ("fp32", "int8"):
            assert (statuses(footprint, ModelGraph(None, footprint, handed), runtime, precision)
                    == statuses(footprint, ModelGraph(built, footprint), runtime, precision)), (runtime, precision)


def test_only_the_last_footprint_holds_its_graph():
    first = analyze(small_cnn())
    copy = dataclasses.replace(first, warnings=())
    assert analysed_graph(first) is not None and analysed_graph(copy) is None
    second = analyze(small_cnn())
    assert analysed_graph(first) is None and analysed_graph(second) is not None


def test_nodes_of_one_kind_keep_reasons_that_name_their_tensors():
    # Two Relus alike in all but names, on 5-D tensors: NNAPI runs up to 4-D, and each reason names its own input.
    built = model([helper.make_node("Relu", ["x"], ["a"], name="first"),
                   helper.make_node("Relu", ["a"], ["y"], name="second")],
                  [("x", [1, 2, 3, 4, 5])], [("y", [1, 2, 3, 4, 5])])
    footprint = analyze(built)
    graph = ModelGraph(None, footprint, analysed_graph(footprint))
    assert graph.kinds == ([0, 0], [0])
    assert statuses(footprint, graph, "nnapi", "fp32") == [
        ("first", "violates", "5-D tensor x (runs up to 4-D)"), ("second", "violates", "5-D tensor a (runs up to 4-D)")]


def test_nodes_of_one_kind_that_read_constant_values_are_judged_each():
    # ReduceMean over axis 1 and over axis 2 (keepdims 0): equal shapes, equal attributes, constant axes of one
    # element; only the axes' values tell them apart, and the Edge TPU reduces the spatial axes only.
    axes = [numpy_helper.from_array(np.array([axis], np.int64), f"axis{axis}") for axis in (1, 2)]
    built = model([helper.make_node("ReduceMean", ["x", "axis1"], ["over_c"], keepdims=0, name="over_c"),
                   helper.make_node("ReduceMean", ["x", "axis2"], ["over_h"], keepdims=0, name="over_h")],
                  [("x", [1, 4, 4, 4])], [("over_c", [1, 4, 4]), ("over_h", [1, 4, 4])], axes, opset=18)
    footprint = analyze(built)
    graph = ModelGraph(None, footprint, analysed_graph(footprint))
    assert graph.kinds == ([0, 0], [0])
    assert statuses(footprint, graph, "edgetpu", "int8") == [
        ("over_c", "violates", "works on axis 1 (runs the spatial axes only)"), ("over_h", "supported", "")]


def test_json_layout_puts_each_top_level_item_on_its_line():
    data = {"model": "m.onnx", "layers": [{"name": "a", "macs": 1}, {"name": "b", "macs": None}],
            "inputs": {"x": [1, 3]}, "ratio": float("nan"), "empty": []}
    text = dumps(data)
    assert text == ('{\n  "model": "m.onnx",\n  "layers": [\n    {"name": "a", "macs": 1},\n'
                    '    {"name": "b", "macs": null}\n  ],\n  "inputs": {\n    "x": [1, 3]\n  },\n'
                    '  "ratio": null,\n  "empty": []\n}\n')
    assert json.loads(text) == {**data, "ratio": None}
