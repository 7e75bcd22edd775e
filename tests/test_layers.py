"""The layer rule (docs/architecture.md), read from the source: every import, at the top of a module
or inside a function, points down or sideways, never up, and no modules import each other in a
circle.

    serving, monitoring  <-  components  <-  pipelines  <-  pipelines.cli

`dags/` imports only Airflow, the standard library and its own shared module (checked here from the
source, and in Airflow's own Python by tests/dags/test_dag_files.py). Tests (`tests/`,
`components/**/*_test.py`) may import anything.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import pytest

from tests.conftest import REPO

PACKAGES = ("serving", "monitoring", "components", "pipelines")
# Longest prefix wins: pipelines.cli sits above the rest of pipelines.
LAYERS = {"serving": 0, "monitoring": 0, "components": 1, "pipelines": 2, "pipelines.cli": 3}


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules(root: Path) -> Dict[str, Path]:
    """Every non-test module of the layered packages, by dotted name."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if not path.name.endswith("_test.py"):
                modules[module_name(root, path)] = path
    return modules


def imported_names(module: str, path: Path) -> List[Tuple[int, str]]:
    """(line, dotted name) of every import in the file, wherever it stands; `from a import b` gives
    both a.b and a (b may be a module or a name in a)."""
    names = []
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join(package + ([node.module] if node.module else []))
            names += [(node.lineno, f"{base}.{alias.name}") for alias in node.names] + [(node.lineno, base)]
    return names


def resolve(name: str, modules: Dict[str, Path]) -> Optional[str]:
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def import_graph(root: Path) -> Tuple[Dict[str, Set[str]], Dict[Tuple[str, str], int]]:
    """module -> the project modules it imports, and the line of each edge."""
    modules = project_modules(root)
    graph: Dict[str, Set[str]] = {name: set() for name in modules}
    lines: Dict[Tuple[str, str], int] = {}
    for name, path in modules.items():
        for line, imported in imported_names(name, path):
            target = resolve(imported, modules)
            # `import pipelines.cli.common` also names the package pipelines.cli: count the module only.
            if target and target != name and not name.startswith(target + "."):
                graph[name].add(target)
                lines.setdefault((name, target), line)
    return graph, lines


def layer(module: str) -> int:
    prefixes = [p for p in LAYERS if module == p or module.startswith(p + ".")]
    return LAYERS[max(prefixes, key=len)]


def upward_edges(root: Path) -> List[str]:
    graph, lines = import_graph(root)
    return [f"{modules_path(root, a)}:{lines[(a, b)]}: {a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
            for a in sorted(graph) for b in sorted(graph[a]) if layer(b) > layer(a)]


def modules_path(root: Path, module: str) -> str:
    return str(project_modules(root)[module].relative_to(root))


def cycles(root: Path) -> List[List[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    graph, _ = import_graph(root)
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_a_higher_layer():
    edges = upward_edges(REPO)
    assert not edges, ("upward imports (move the code down a layer, or pass what it needs in):\n"
                       + "\n".join(edges))


def test_no_import_cycles():
    found = cycles(REPO)
    assert not found, "modules that import each other in a circle:\n" + "\n".join(map(str, found))


def test_the_graph_sees_every_layered_package():
    graph, _ = import_graph(REPO)
    seen = {layer(module) for module in graph}
    assert seen == {0, 1, 2, 3}
    # Spot checks that function-level imports are read too (they are most of the CLI's imports).
    assert "pipelines.runner" in graph["pipelines.cli.run"]
    assert "serving.home" in graph["serving.config"]


def _write(root: Path, files: Dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for package in PACKAGES:
        (root / package).mkdir(exist_ok=True)
        (root / package / "__init__.py").touch()
    return root


def test_the_checker_catches_an_upward_import_inside_a_function(tmp_path):
    root = _write(tmp_path, {
        "serving/store.py": "def load():\n    from pipelines.config import ProjectPaths\n    return ProjectPaths\n",
        "pipelines/config.py": "ProjectPaths = object\n",
        "components/util/spans.py": "from pipelines.cli.common import date_arg\n",
        "pipelines/cli/__init__.py": "",
        "pipelines/cli/common.py": "from . import __name__ as n\n",
    })
    edges = upward_edges(root)
    assert any("serving/store.py:2: serving.store (layer 0) imports pipelines.config (layer 2)" in e for e in edges)
    assert any("components.util.spans (layer 1) imports pipelines.cli.common (layer 3)" in e for e in edges)
    assert len(edges) == 2


def test_the_checker_catches_a_cycle_within_one_layer(tmp_path):
    root = _write(tmp_path, {
        "pipelines/runner.py": "from pipelines import node_runner\n",
        "pipelines/node_runner.py": "def f():\n    from pipelines.runner import run\n",
        "pipelines/summary.py": "from pipelines.runner import x\n",
    })
    assert cycles(root) == [["pipelines.node_runner", "pipelines.runner"]]
    assert upward_edges(root) == []


def foreign_dag_imports(dags: Path) -> List[str]:
    """Imports of the DAG folder's files that are not Airflow, the standard library or a module
    of the DAG folder itself."""
    own = {path.stem for path in dags.glob("*.py")}
    found = []
    for path in sorted(dags.glob("*.py")):
        for line, name in imported_names(path.stem, path):
            top = name.split(".")[0]
            if top and top not in ("airflow", "__future__") and top not in sys.stdlib_module_names and top not in own:
                found.append(f"{path.name}:{line}: {name}")
    return sorted(set(found))


def test_dag_files_import_only_airflow_and_the_standard_library():
    assert foreign_dag_imports(REPO / "dags") == []


def test_the_dag_check_catches_a_project_import(tmp_path):
    (tmp_path / "shared.py").write_text("import os\nfrom airflow.sdk import DAG\n")
    (tmp_path / "my_dag.py").write_text("import shared\n\ndef f():\n    from pipelines.config import X\n")
    assert foreign_dag_imports(tmp_path) == ["my_dag.py:4: pipelines.config", "my_dag.py:4: pipelines.config.X"]


@pytest.mark.parametrize("module, expected", [("pipelines.cli", 3), ("pipelines.cli.serve", 3),
                                              ("pipelines.worker.server", 2), ("components.util.keras", 1),
                                              ("serving.home", 0)])
def test_layer_of_a_module(module, expected):
    assert layer(module) == expected
