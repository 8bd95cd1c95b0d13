"""The README stays a front page (at most 300 lines, links that resolve, quick start as CI runs it) and every
section of the former 1,833-line README (commit af8be57) is on a page of the docs site.

`mkdocs build --strict` (in .ci/run) checks the site's own links and anchors; these tests need no docs packages.
"""

import re
import unicodedata
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
README = REPO / "README.md"

# Every top- and second-level section of the former README -> the page that holds it now, under the same heading,
# or (page, heading) where the heading was reworded (a section that became a page is under the page's title).
MOVED = {
    "Quick start (fresh machine, Python 3.11 or newer)": "install.md",
    "What edgefit answers": "index.md",
    "`edgefit analyze`": ("commands/analyze.md", "edgefit analyze"),
    "What each number means": "concepts.md",
    "How shapes are resolved": "concepts.md",
    "Loading and safety": "concepts.md",
    "JSON (`--json`)": "commands/analyze.md",
    "Python API": ("python-api.md", "Python API"),
    "Will it fit? `edgefit check`, device profiles and the CI gate": ("commands/check.md", "edgefit check"),
    "Options of `edgefit check`": "commands/check.md",
    "Device profiles": "devices/profiles.md",
    "How the numbers are estimated": "devices/latency-model.md",
    "Latency model: layer classes and runtime stacks": "devices/latency-model.md",
    "Runtime memory models": "devices/runtime-memory.md",
    "Will it run there? Operator coverage per runtime": ("devices/operator-coverage.md", "Operator coverage: will it run there?"),
    "Patch-based execution (when RAM binds)": "devices/patch-based-execution.md",
    "Calibrating a profile: `edgefit calibrate`": ("commands/calibrate.md", "edgefit calibrate: calibrating a profile"),
    "JSON (`edgefit check --json`)": "commands/check.md",
    "The CI gate: `edgefit gate`": ("commands/gate.md", "edgefit gate: the CI gate"),
    "A page to look at: `edgefit report`": ("commands/report.md", "edgefit report: a page to look at"),
    "Making a model fit: fuse, prune, quantize": "commands/passes.md",
    "Fidelity": "concepts.md",
    "fuse": ("commands/fuse.md", "edgefit fuse"),
    "prune": ("commands/prune.md", "edgefit prune"),
    "quantize": ("commands/quantize.md", "edgefit quantize"),
    "optimize": ("commands/optimize.md", "edgefit optimize"),
    "reorder": "commands/optimize.md",
    "Library": ("python-api.md", "Passes, fidelity and the pipeline"),
    "Results on the sample models": "benchmarks.md",
    "Benchmark: edgefit int8 against onnxruntime's quantize_static defaults": "benchmarks.md",
    "From a budget to a model that fits: `edgefit fit`": ("commands/fit.md", "edgefit fit: from a budget to a model that fits"),
    "Architecture": "architecture.md",
    "The path of a model": "architecture.md",
    "How to add a pass, a report format, a command": "architecture.md",
    "One graph representation, edited in linear time": "architecture.md",
    "Benchmarks": ("benchmarks.md", "Benchmarks and reproductions"),
    "Benchmark: MLPerf Tiny reproduction": "benchmarks.md",
    "Fuzzing: `benchmarks/fuzz.py`": "benchmarks.md",
    "Sample models": "sample-models.md",
    "Dependencies": ("install.md", "Dependencies"),
}


def _headings(text: str) -> list[str]:
    """Markdown headings outside fenced code blocks."""
    found, fence = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and (match := re.match(r"#{1,6} (.+)", line)):
            found.append(match.group(1).strip())
    return found


def _slug(heading: str) -> str:
    """The anchor Python-Markdown's toc (mkdocs) and GitHub give a heading."""
    text = unicodedata.normalize("NFKD", heading.replace("`", "")).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", text).strip().lower())


def _nav_pages(nav) -> list[str]:
    pages = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_the_readme_is_a_front_page():
    text = README.read_text()
    assert len(text.splitlines()) <= 300
    # the order a newcomer needs: quick start, the table, examples, exit codes, the rest of the docs
    order = [h for h in _headings(text) if h.startswith(("Quick start", "What edgefit", "One example", "Exit codes",
                                                          "Documentation"))]
    assert order == ["Quick start (fresh machine, Python 3.11 or newer)", "What edgefit answers",
                     "One example per command", "Exit codes", "Documentation"]


def test_the_quick_start_is_what_ci_runs():
    blocks = re.findall(r"```bash\n(.*?)\n```", README.read_text(), re.S)
    first, second = blocks[0], blocks[1]
    ci = (REPO / ".ci" / "run").read_text()
    assert first.endswith("pip install -e . && edgefit analyze sample_models/kws_dscnn.onnx")
    assert second.endswith('pip install -e ".[test]" && python -m pytest -q')
    assert "edgefit analyze sample_models/kws_dscnn.onnx" in ci and 'pip install --quiet -e ".[test]"' in ci
    assert "python -m pytest -q" in ci and "mkdocs build --strict" in ci and "set -euo pipefail" in ci


def test_every_readme_link_resolves():
    links = re.findall(r"\]\(([^)\s]+)\)", README.read_text())
    assert len(links) > 30
    for link in links:
        if link.startswith(("http://", "https://")):
            continue
        path, _, anchor = link.partition("#")
        target = REPO / path
        assert target.exists(), link
        if anchor:
            assert anchor in {_slug(h) for h in _headings(target.read_text())}, link


def _page(where) -> str:
    return where if isinstance(where, str) else where[0]


@pytest.mark.parametrize("heading, where", MOVED.items())
def test_every_former_section_is_on_a_page(heading, where):
    page, now = (where, heading) if isinstance(where, str) else where
    assert now in _headings((DOCS / page).read_text())


def test_every_page_is_in_the_site_navigation():
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    nav = _nav_pages(config["nav"])
    assert all((DOCS / page).is_file() for page in nav)
    mine = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert {_page(w) for w in MOVED.values()} | {"ci.md", "commands/profiles.md"} <= set(nav)
    assert len(nav) == len(set(nav))
    assert {"ci.md", "commands/profiles.md"} <= mine
    requirements = (DOCS / "requirements.txt").read_text()
    assert re.search(r"^mkdocs==[\d.]+$", requirements, re.M) and re.search(r"^mkdocs-material==[\d.]+$",
                                                                               requirements, re.M)
