"""Bad input through the CLI: exit code 2, exactly one `error:` line on stderr, never a traceback.

Also: a custom-domain op is not an error (its cost is an honest unknown). Loading errors: test_model.py; shape
options: test_shapes.py; unit parsers: test_units.py.
"""

from __future__ import annotations

import json

import numpy as np
from helpers import assert_usage_error, build, good_model, run_cli, save, vi
from onnx import TensorProto, helper, numpy_helper

import edgefit

F = TensorProto.FLOAT


# ---------------------------------------------------------------------------------------------------------------
# The good case, so the error cases below are errors for the stated reason only
# ---------------------------------------------------------------------------------------------------------------

def test_good_model_through_the_cli(tmp_path, capsys):
    rc, out, err = run_cli(capsys, save(good_model(), tmp_path), "--dim", "N=2", "--json")
    assert rc == 0, err
    data = json.loads(out)
    # params 108 + 4 = 112; MACs 2*4*6*6 = 288 outputs x 27 = 7776.
    assert data["params"] == 112 and data["macs"] == 7776 and data["inputs"] == {"x": [2, 3, 8, 8]}


# ---------------------------------------------------------------------------------------------------------------
# Files that are not (valid) models
# ---------------------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------------------
# Models that parse but are not valid graphs
# ---------------------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------------------
# Bad options
# ---------------------------------------------------------------------------------------------------------------


def test_bad_alignment(tmp_path, capsys):
    assert_usage_error(capsys, save(good_model(), tmp_path), "--alignment", "0", mentions="alignment")


# ---------------------------------------------------------------------------------------------------------------
# Not an error: an op from a custom domain
# ---------------------------------------------------------------------------------------------------------------

def test_custom_domain_op_is_an_honest_unknown(tmp_path, capsys):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Foo", ["r"], ["f"], name="foo", domain="com.acme"),
             helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")]
    w = numpy_helper.from_array(np.ones((4, 2), np.float32), "W")
    model = build(nodes, [vi("x", F, [1, 4])], [vi("f", F, [1, 4]), vi("y", F, [1, 2])], [w],
                  extra_opsets=[helper.make_opsetid("com.acme", 1)])
    path = save(model, tmp_path)
    fp = edgefit.analyze(path)
    # MatMul [1,4]x[4,2] = 8 MACs; Relu 4 FLOPs; Foo unknown, listed by name and domain.
    assert fp.params == 8
    assert next(l for l in fp.layers if l.name == "foo").macs is None
    assert next(l for l in fp.layers if l.name == "mm").macs == 8
    assert any("com.acme.Foo" in u and "foo" in u for u in fp.unknowns)
    rc, out, err = run_cli(capsys, path, "--json")
    assert rc == 0 and "Traceback" not in out + err
    assert any("com.acme.Foo" in u for u in json.loads(out)["unknowns"])
    rc, out, err = run_cli(capsys, path)          # the rich summary renders unknown MACs too
    assert rc == 0 and "Traceback" not in out + err


# ---------------------------------------------------------------------------------------------------------------
# edgefit.units
# ---------------------------------------------------------------------------------------------------------------


