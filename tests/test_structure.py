"""The package's shape: no import cycles between edgefit modules, and the CLI starts without onnx or numpy."""

import ast
import subprocess
import sys
from pathlib import Path

import edgefit

PACKAGE = Path(edgefit.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(tree: ast.AST, modules: set[str]) -> set[str]:
    """edgefit modules a module imports anywhere (functions too), except under `if TYPE_CHECKING:`."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, "edgefit imports are absolute"
            base = node.module
            for alias in node.names:   # `from pkg import submodule` depends on the submodule
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {name for name in found if name in modules}


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    graph = {}
    for name, path in files.items():
        graph[name] = _imports(ast.parse(path.read_text()), modules) - {name}
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}   # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_of_edgefit_is_a_dag():
    graph = import_graph()
    assert {"edgefit.cli", "edgefit.cli.options", "edgefit.devices.check", "edgefit.gate"} <= set(graph)
    assert "edgefit.cli.options" in graph["edgefit.cli.check"]          # the graph sees real edges
    assert _find_cycle(graph) is None, " -> ".join(_find_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_commands_never_import_the_cli_root_and_reports_never_import_commands():
    graph = import_graph()
    for name, imports in graph.items():
        if name.startswith("edgefit.cli."):
            assert "edgefit.cli" not in imports, name
        if not name.startswith("edgefit.cli") and name != "edgefit.__main__":   # `python -m edgefit` runs the CLI
            assert not any(i.startswith("edgefit.cli") for i in imports), name
    assert "edgefit.report.check_text" not in graph["edgefit.devices.check"]


def test_help_and_profiles_list_do_not_import_onnx_or_numpy():
    code = ("import sys\nfrom edgefit.cli import main\n"
            "codes = [main(['--help']), main(['profiles', 'list']), main(['check', '--help'])]\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('onnx', 'numpy', 'onnxruntime'))\n"
            "print(codes, heavy, file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stderr.strip().splitlines()[-1] == "[0, 0, 0] []"


def test_lazy_package_attributes_resolve_to_the_defining_modules():
    from edgefit.analysis.footprint import analyze
    from edgefit.gate import run_gate

    assert edgefit.analyze is analyze and edgefit.run_gate is run_gate
    assert set(edgefit.__all__) <= set(dir(edgefit))
