"""The pass protocol and registry: passes found by name, parse their own arguments, declare requires/ensures,
render their own stats, and every pass is checked for leaving its input untouched."""

import io
from dataclasses import dataclass

import pytest
from helpers import model
from onnx import helper
from rich.console import Console

from edgefit.errors import ConfigError
from edgefit.passes import PassOptions, parse_passes, run_passes
from edgefit.passes import registry
from edgefit.passes.base import Pass, PassResult, copy_model
from edgefit.passes.decompose import Decompose
from edgefit.passes.fuse import Fuse
from edgefit.passes.prune import Prune
from edgefit.passes.quantize import Quantize
from edgefit.passes.reorder import Reorder
from edgefit.report.passes_terminal import _render_stats


def test_registry_finds_every_pass_module_by_name():
    assert registry.passes() == {"decompose": Decompose, "fuse": Fuse, "prune": Prune, "quantize": Quantize,
                                 "reorder": Reorder}
    assert isinstance(registry.get_pass("prune"), Prune)
    with pytest.raises(ConfigError, match="unknown pass 'shrink' in --passes; passes are decompose, fuse, prune, quantize, reorder"):
        registry.get_pass("shrink")


def test_each_pass_parses_its_own_arguments():
    assert Prune.parse_args(["0.3", "structured"], "prune:0.3:structured") == {"sparsity": 0.3, "structured": True}
    assert Quantize.parse_args(["fp16"], "quantize:fp16") == {"mode": "fp16"}
    assert Fuse.parse_args([], "fuse") == {}
    with pytest.raises(ConfigError, match="unexpected argument 'fast'"):
        Fuse.parse_args(["fast"], "fuse:fast")
    spec = parse_passes("prune:0.25:per-layer", PassOptions(sparsity=0.9, mode="fp16"))[0]
    assert (spec.options.sparsity, spec.options.per_layer, spec.options.mode) == (0.25, True, "fp16")


def test_a_pass_whose_requirement_an_earlier_pass_removes_is_refused():
    with pytest.raises(ConfigError, match="prune needs float weights, which quantize before it removes"):
        parse_passes("fuse,quantize,prune:0.5")
    assert [s.name for s in parse_passes("fuse,prune:0.5,quantize")] == ["fuse", "prune:0.5", "quantize"]


@dataclass(frozen=True)
class RenameStats:
    renamed: int
    notes: tuple[str, ...] = ()
    name: str = "rename"

    def to_dict(self):
        return {"name": self.name, "renamed": self.renamed, "notes": list(self.notes)}

    def render(self, console):
        console.print(f"  renamed {self.renamed} node(s)")


class Rename(Pass):
    """A pass added the way a new pass is: one class with a name, its own arguments and its own stats."""

    name = "rename"
    usage = "rename[:PREFIX]"

    @classmethod
    def parse_args(cls, args, spec):
        return {"exclude": tuple(args)}   # borrow a field for the prefix

    def run(self, proto, options, progress):
        result = copy_model(proto)
        prefix = options.exclude[0] if options.exclude else "n"
        for k, node in enumerate(result.graph.node):
            node.name = f"{prefix}{k}"
        return PassResult(result, RenameStats(len(result.graph.node), ("names are positional",)))


def test_a_new_pass_is_one_class_registered_by_name(monkeypatch):
    monkeypatch.setitem(registry.passes(), "rename", Rename)
    proto = model([helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Neg", ["h"], ["y"])],
                  [("x", [2])], [("y", [2])])
    result = run_passes(proto, "fuse,rename:layer")
    assert [n.name for n in result.model.graph.node] == ["layer0", "layer1"]
    assert result.steps[1].stats.to_dict() == {"name": "rename", "renamed": 2, "notes": ["names are positional"]}
    out = io.StringIO()
    _render_stats(Console(file=out, width=100), result.steps[1].spec, result.steps[1].stats)
    assert out.getvalue().splitlines() == ["", "rename:layer", "  renamed 2 node(s)", "  note: names are positional"]


def test_every_pass_is_checked_for_touching_its_input_also_outside_a_pipeline():
    class Vandal(Rename):
        def run(self, proto, options, progress):
            proto.graph.node[0].name = "renamed"
            return PassResult(proto, RenameStats(1))

    proto = model([helper.make_node("Relu", ["x"], ["y"])], [("x", [2])], [("y", [2])])
    with pytest.raises(RuntimeError, match="pass rename modified its input"):
        Vandal().apply(proto)


def test_one_progress_type_reports_every_long_step():
    from edgefit.fidelity import synthetic_samples

    proto = model([helper.make_node("Relu", ["x"], ["y"])], [("x", [1, 4])], [("y", [1, 4])])
    heard = []
    run_passes(proto, "fuse,quantize", fidelity_samples=synthetic_samples(proto, 3),
               progress=lambda label, done, total: heard.append((label, done, total)))
    # One sample per batch (the input's batch is 1): the original once, then each pass's result; the original's
    # outputs are reused, so each fidelity step counts 3 samples.
    assert heard[:3] == [("running original", 1, 3), ("running original", 2, 3), ("running original", 3, 3)]
    assert [h for h in heard if h[0] == "fidelity after fuse"] == [("fidelity after fuse", k, 3) for k in (1, 2, 3)]
    assert heard[-1] == ("fidelity after quantize", 3, 3)
    assert any(label == "calibrating" for label, _, _ in heard)
