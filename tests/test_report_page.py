"""edgefit report / analyze --format html|markdown: the page's content, parsed, against the analysis it draws."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from edgefit.analysis.footprint import analyze
from edgefit.analysis.timeline import live_bytes_per_step, memory_timeline
from edgefit.cli import main
from edgefit.model_report import build_report, layer_deltas
from edgefit.report.page import MAX_BARS, render_page
from edgefit.report.terminal import memory_sparkline

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"


class Page(HTMLParser):
    """Every element as (tag, attributes), plus the text, for assertions."""

    def __init__(self, text: str):
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def by_id(self, element_id: str) -> dict[str, str]:
        return next(attrs for _, attrs in self.elements if attrs.get("id") == element_id)

    def with_class(self, tag: str, cls: str) -> list[dict[str, str]]:
        return [attrs for t, attrs in self.elements if t == tag and cls in attrs.get("class", "").split()]


def _branchy(path: Path) -> Path:
    """x (1x64 f32, 256 B) -> Relu a -> Relu b; a -> Neg c; Add(b, c) -> y. Every tensor is 256 B."""
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu_a"), helper.make_node("Relu", ["a"], ["b"], name="relu_b"),
             helper.make_node("Neg", ["a"], ["c"], name="neg_c"), helper.make_node("Add", ["b", "c"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "branchy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _chain(path: Path, layers: int) -> Path:
    nodes = [helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}"], name=f"relu{i}") for i in range(layers)]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info(f"t{layers}", TensorProto.FLOAT, [1, 8])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_timeline_live_bytes_by_hand(tmp_path):
    # relu_a: x, a live (512); relu_b: x dies at a's reader... x is read only by relu_a, so at relu_b: a, b (512);
    # neg_c: a, b, c (768: a's last reader); add: b, c, y (768).
    fp = analyze(_branchy(tmp_path / "m.onnx"))
    timeline = memory_timeline(fp)
    assert timeline.live_bytes == (512, 512, 768, 768)
    assert timeline.peak_live_bytes == 768 and timeline.peak_step == 2
    assert timeline.arena_bytes == fp.peak_activation_bytes
    # Placed buffers never overlap while both are alive.
    for i, a in enumerate(timeline.buffers):
        for b in timeline.buffers[i + 1:]:
            if a.first <= b.last and b.first <= a.last:
                assert a.offset + a.bytes <= b.offset or b.offset + b.bytes <= a.offset


def test_live_bytes_per_step_is_the_sum_of_covering_lifetimes():
    from edgefit.analysis.memory import Buffer

    buffers = [Buffer("a", 4, "float32", 16, 0, 2), Buffer("b", 2, "float32", 8, 1, 1), Buffer("c", 1, "float32", 4, 3, 3)]
    assert live_bytes_per_step(buffers) == (16, 24, 16, 4)
    assert live_bytes_per_step([]) == ()


def test_page_timeline_matches_analyze_json(tmp_path, capsys):
    model = SAMPLES / "kws_dscnn.onnx"
    assert main(["analyze", str(model), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    out = tmp_path / "report.html"
    assert main(["report", str(model), "-o", str(out), "-t", "stm32h7", "-t", "raspberry-pi-5"]) == 0
    page = Page(out.read_text())
    timeline = page.by_id("timeline")
    assert int(timeline["data-peak-bytes"]) == figures["peak_activation_bytes"] == 64_000
    assert int(timeline["data-lower-bound-bytes"]) == figures["activation_lower_bound_bytes"]
    assert int(timeline["data-steps"]) == len(figures["layers"])
    # One bar per layer in each per-layer chart, and the MACs bars add up to the model's MACs.
    for chart in ("layer-macs", "layer-weights", "layer-outputs", "layer-latency"):
        assert int(page.by_id(chart)["data-bins"]) == len(figures["layers"])
    macs_bars = [a for t, a in page.elements if t == "rect" and "bar" in a.get("class", "")][:len(figures["layers"])]
    assert sum(float(a["data-value"]) for a in macs_bars) == figures["macs"]
    assert {a["data-target"] for _, a in page.elements if "data-target" in a} == {"stm32h7", "raspberry-pi-5"}
    assert "Fits:" in "".join(page.text) or "Tiny" in "".join(page.text)


def test_page_has_no_remote_resources_and_no_scripts(tmp_path):
    text = render_page(build_report(SAMPLES / "vww_mobilenet_v1_025.onnx", None))
    assert "http://" not in text and "https://" not in text
    assert "<script" not in text and "<link" not in text and "@import" not in text
    page = Page(text)
    assert len({a["data-target"] for _, a in page.elements if "data-target" in a}) >= 15   # every profile


def test_large_models_are_binned(tmp_path):
    report = build_report(_chain(tmp_path / "chain.onnx", 1000), ())
    text = render_page(report)
    page = Page(text)
    assert int(page.by_id("layer-macs")["data-layers"]) == 1000
    bins = int(page.by_id("layer-outputs")["data-bins"])
    assert bins == MAX_BARS
    bars = [a for a in page.with_class("rect", "bar")]
    assert len(bars) == 3 * MAX_BARS            # MACs, weights, outputs; no target, so no latency chart
    outputs = bars[2 * MAX_BARS:]
    assert sum(int(a["data-layers"]) for a in outputs) == 1000
    assert sum(float(a["data-value"]) for a in outputs) == 1000 * 32
    assert int(page.by_id("timeline")["data-bins"]) == MAX_BARS
    steps = page.with_class("rect", "step")
    assert len(steps) == MAX_BARS and max(int(a["data-live-bytes"]) for a in steps) == 64
    assert len(text) < 3_000_000


def test_compare_lists_before_after_and_removed_layers(tmp_path, capsys):
    model = SAMPLES / "kws_dscnn.onnx"
    fused = tmp_path / "fused.onnx"
    assert main(["fuse", str(model), "-o", str(fused)]) == 0
    capsys.readouterr()
    out = tmp_path / "cmp.html"
    assert main(["report", str(model), "-o", str(out), "-t", "stm32h7", "--compare", str(fused), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    page = Page(out.read_text())
    before, after = analyze(model), analyze(fused)
    layers = {a["data-figure"]: a for t, a in page.elements if t == "tr" and "data-figure" in a}
    assert int(layers["layers"]["data-before"]) == len(before.layers)
    assert int(layers["layers"]["data-after"]) == len(after.layers) < len(before.layers)
    assert int(layers["parameters"]["data-after"]) == after.params
    removed = {d["name"] for d in data["comparison"]["layers"] if d["removed"]}
    assert removed == {l.name for l in before.layers} - {l.name for l in after.layers} and removed
    assert {a["data-layer"] for _, a in page.elements if "data-layer" in a} >= removed


def test_layer_deltas_pair_by_name():
    from edgefit.analysis.footprint import LayerStats

    def layer(name, macs):
        return LayerStats(name, "Conv", 0, 0, macs, macs, 0, 0, "float32")

    deltas = layer_deltas([layer("a", 10), layer("b", 5)], [layer("a", 4), layer("c", 1)])
    assert [(d.name, d.change("macs")) for d in deltas] == [("a", -6), ("b", -5), ("c", 1)]
    assert deltas[1].after is None and deltas[2].before is None


def test_report_refuses_its_input_and_eval_without_compare(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    _branchy(model)
    before = model.read_bytes()
    assert main(["report", str(model), "-o", str(model)]) == 2
    assert model.read_bytes() == before
    assert main(["report", str(model), "-o", str(tmp_path / "r.html"), "--eval", str(model)]) == 2
    assert "--compare" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def test_analyze_formats_render_the_same_figures(capsys):
    model = SAMPLES / "ic_resnet8.onnx"
    fp = analyze(model)
    assert main(["analyze", str(model), "--format", "markdown"]) == 0
    markdown = capsys.readouterr().out
    assert f"| parameters | {fp.params:,} |" in markdown
    assert f"| MACs | {fp.macs:,} " in markdown
    assert main(["analyze", str(model), "-f", "html"]) == 0
    page = Page(capsys.readouterr().out)
    assert int(page.by_id("timeline")["data-peak-bytes"]) == fp.peak_activation_bytes
    assert main(["analyze", str(model), "-f", "html", "--json"]) == 2


def test_sparkline_marks_the_peak():
    from edgefit.analysis.memory import Buffer
    from types import SimpleNamespace

    fp = SimpleNamespace(buffers=[Buffer("a", 1, "float32", 100, 0, 0), Buffer("b", 1, "float32", 400, 1, 1),
                                  Buffer("c", 1, "float32", 10, 2, 2)])
    line = memory_sparkline(fp, width=10)
    assert line.plain.split()[1] == "▂█▁"
    assert memory_sparkline(fp, width=10, unicode=False).plain.split()[1] == ".#_"


_PROBE = """<script>
window.addEventListener('load', () => {
  const box = document.getElementById('timeline').getBoundingClientRect();
  document.body.setAttribute('data-timeline-size', box.width + 'x' + box.height);
});
</script></body>"""


def _browser() -> str | None:
    return next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(name)), None)


@pytest.mark.skipif(_browser() is None, reason="no headless browser (Debian's chromium package) installed; "
                                                ".ci/run installs one")
def test_page_loads_in_a_real_browser_without_console_errors(tmp_path):
    page = render_page(build_report(SAMPLES / "kws_dscnn.onnx", ["stm32h7"]))
    # The probe script is the test's own: the page itself has none.
    probed = tmp_path / "probe.html"
    probed.write_text(page.replace("</body>", _PROBE))
    result = subprocess.run(
        [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=2000", "--dump-dom", probed.as_uri()],
        capture_output=True, text=True, timeout=120)
    console_errors = [line for line in result.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console_errors, console_errors
    size = re.search(r'data-timeline-size="([\d.]+)x([\d.]+)"', result.stdout)
    assert size, result.stdout[-2000:]
    assert float(size.group(1)) > 0 and float(size.group(2)) > 0


def test_compare_with_eval_measures_fidelity_in_onnxruntime(tmp_path, capsys):
    import numpy as np

    # y = x @ W with W = I (4x4) against a copy whose W is I * 0.5: cosine 1 (same direction), max error half the
    # largest |x|, and the classifier-shaped output agrees on every argmax.
    def model(path, scale):
        weight = helper.make_tensor("W", TensorProto.FLOAT, [4, 4], (np.eye(4, dtype=np.float32) * scale).ravel())
        graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"], name="fc")], "fc",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [weight])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
        return path

    x = np.array([[1, -2, 3, 0.5], [4, 0, -1, 2]], dtype=np.float32)
    np.savez(tmp_path / "eval.npz", x=x)
    out = tmp_path / "r.html"
    assert main(["report", str(model(tmp_path / "a.onnx", 1.0)), "-o", str(out), "--compare",
                 str(model(tmp_path / "b.onnx", 0.5)), "--eval", str(tmp_path / "eval.npz"), "--json"]) == 0
    fidelity = json.loads(capsys.readouterr().out)["comparison"]["fidelity"]
    assert fidelity["samples"] == 2 and fidelity["inputs"] == "user"
    assert fidelity["cosine"] == pytest.approx(1.0)
    assert fidelity["max_abs_error"] == pytest.approx(2.0)      # |4 - 2|
    page = Page(out.read_text())
    assert page.by_id("fidelity") is not None and "cosine" in "".join(page.text)
