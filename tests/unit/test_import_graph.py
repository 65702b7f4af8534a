"""The import graph of `engine`, `simulator` and `bench`: no cycle, and every floor imports down.

The graph is read statically: every module is parsed with `ast`, and every `import` and
`from ... import` counts wherever it sits (top level, inside a function, under `try` or `if`),
relative ones resolved against the module's package. An import is an edge to the deepest
project module it names: `from a.b import c` points at `a.b.c` when that is a module, else at
`a.b`; a package import is an import of its `__init__`. Imports of anything else (the standard
library, trio, h2...) are not edges.

Two choices, and why:
- Importing `a.b.c` first runs `a/__init__` and `a/b/__init__`, but those parent imports are not
  edges: Python finishes a parent before it starts a child, unless the parent itself imports the
  child, which is an edge of its own; a child that then needs a name from its half-initialised
  parent says `from a import name`, another edge, so every such cycle is still seen.
- Imports under `if TYPE_CHECKING:` count, and a failure marks them. They create no runtime cycle,
  but a cycle through one is still two modules that cannot be read or changed one without the
  other (`http.app` and `http.routes` were such a pair): move the shared type to a module both
  import, rather than hide the import.
Imports by name at run time (entry points, `importlib.import_module`) are invisible here by
design: they are how `lockstep serve` reaches the simulator and `lockstep` its subcommands
without importing them.

The floors, lowest first: the engine core (every `engine.*` outside `engine.server` and
`engine.cli`), the server and the command line, then the simulator and the benchmarks. Besides
the static rules, `import engine` in a fresh interpreter must stay light: no HTTP server, no
terminal views, no database, no contract models, no simulator, no benchmarks.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[2]
PACKAGES: Final = ("engine", "simulator", "bench", "webui")

Graph = Mapping[str, Mapping[str, "Edge"]]
"""module -> (imported module -> the edge); every module of the tree is a key."""


@dataclass(frozen=True, slots=True)
class Edge:
    """`source` imports `target` (first at `line`); `typing_only`: only under TYPE_CHECKING."""

    source: str
    target: str
    line: int
    typing_only: bool

    def __str__(self) -> str:
        where = f"line {self.line}" + (", under TYPE_CHECKING" if self.typing_only else "")
        return f"{self.source} -> {self.target} ({where})"


# -- reading the tree -------------------------------------------------------------------------


def discover(root: Path, packages: Sequence[str]) -> dict[str, Path]:
    """Every module under `packages`, by dotted name (a package by its `__init__.py`)."""
    modules: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    """`if TYPE_CHECKING:` or `if typing.TYPE_CHECKING:`."""
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


class _Collector(ast.NodeVisitor):
    """The edges of one module, in source order."""

    def __init__(self, module: str, is_package: bool, modules: Collection[str]) -> None:
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.modules = modules
        self.typing_depth = 0
        self.edges: dict[str, Edge] = {}

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        self.typing_depth += 1
        for stmt in node.body:
            self.visit(stmt)
        self.typing_depth -= 1
        for stmt in node.orelse:  # the `else:` of TYPE_CHECKING is what runs
            self.visit(stmt)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = self._base(node)
        if base is None:
            return
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            self._add(sub if sub in self.modules else base, node.lineno)

    def _base(self, node: ast.ImportFrom) -> str | None:
        """The module a `from` import reads from (None: above the top of the tree)."""
        if node.level == 0:
            return node.module
        parts = self.package.split(".") if self.package else []
        if node.level - 1 > len(parts):
            return None
        parts = parts[: len(parts) - (node.level - 1)]
        if node.module:
            parts.append(node.module)
        return ".".join(parts) or None

    def _add(self, name: str, line: int) -> None:
        target = _deepest_module(name, self.modules)
        if target is None:
            return
        typing_only = self.typing_depth > 0
        seen = self.edges.get(target)
        if seen is None or (seen.typing_only and not typing_only):  # a runtime import wins
            self.edges[target] = Edge(self.module, target, line, typing_only)


def _deepest_module(name: str, modules: Collection[str]) -> str | None:
    """`name` or its longest prefix that is a project module (`import a.b.c as x` reaches it)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def build_graph(root: Path, packages: Sequence[str]) -> dict[str, dict[str, Edge]]:
    """The import graph of every module under `packages`."""
    modules = discover(root, packages)
    graph: dict[str, dict[str, Edge]] = {}
    for name, path in modules.items():
        collector = _Collector(name, path.name == "__init__.py", modules)
        collector.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        graph[name] = collector.edges
    return graph


@cache
def project() -> Graph:
    """The graph of this checkout (read once per test session)."""
    return build_graph(ROOT, PACKAGES)


# -- cycles -----------------------------------------------------------------------------------


def _components(graph: Graph) -> Iterator[list[str]]:
    """Strongly connected components (Tarjan), each as a sorted list of modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(node: str) -> Iterator[list[str]]:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                yield from visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: list[str] = []
            while not component or component[-1] != node:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            yield sorted(component)

    for node in sorted(graph):
        if node not in index:
            yield from visit(node)


def _cycle_through(graph: Graph, start: str, members: Collection[str]) -> list[Edge]:
    """A shortest cycle from `start` back to itself inside one component (breadth first)."""
    paths: dict[str, list[Edge]] = {start: []}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for target, edge in sorted(graph[node].items()):
                if target == start:
                    return [*paths[node], edge]
                if target in members and target not in paths:
                    paths[target] = [*paths[node], edge]
                    following.append(target)
        frontier = following
    raise AssertionError(f"{start} is in a component but on no cycle")


@dataclass(frozen=True, slots=True)
class Knot:
    """Modules that all import each other, directly or not, and one cycle among them."""

    modules: tuple[str, ...]
    cycle: tuple[Edge, ...]

    def __str__(self) -> str:
        text = "cycle:\n    " + _describe(self.cycle)
        if len(self.modules) > len(self.cycle):  # fixing this cycle would not untie the knot
            text += "\n  within: " + ", ".join(self.modules)
        return text


def cycles(graph: Graph) -> list[Knot]:
    """Every knot of modules that import each other (a module importing itself included)."""
    found: list[Knot] = []
    for component in _components(graph):
        if len(component) > 1 or component[0] in graph[component[0]]:
            cycle = _cycle_through(graph, component[0], set(component))
            found.append(Knot(tuple(component), tuple(cycle)))
    return found


def _describe(edges: Iterable[Edge]) -> str:
    return "\n    ".join(str(edge) for edge in edges)


# -- the rules --------------------------------------------------------------------------------


def within(module: str, *packages: str) -> bool:
    """`module` is one of `packages` or inside one."""
    return any(module == p or module.startswith(p + ".") for p in packages)


def is_engine_core(module: str) -> bool:
    """The embeddable engine: `engine` and `engine.*` outside the server and the command line."""
    return within(module, "engine") and not within(module, "engine.server", "engine.cli")


def edges_from(graph: Graph, belongs: Callable[[str], bool]) -> list[Edge]:
    """Every edge out of the modules `belongs` picks, in module order."""
    return [edge for module in sorted(graph) if belongs(module) for edge in graph[module].values()]


def in_engine(module: str) -> bool:
    """Anything under `engine`, the server and the command line included."""
    return within(module, "engine")


def in_simulator(module: str) -> bool:
    """The fake APNs and the simulated iPhones."""
    return within(module, "simulator")


def test_the_walker_reads_the_whole_tree() -> None:
    graph = project()
    assert {"engine", "engine.engine", "engine.server.http.app", "simulator.server"} <= set(graph)
    assert "bench.cli" in graph
    assert "engine.server.http.routes" in graph["engine.server.http.app"]
    assert "engine.server.service" in graph["engine.server.serve"]  # a package: its __init__


def test_no_import_cycles() -> None:
    found = cycles(project())
    assert not found, "import cycles (move what both sides need into a module of its own):\n  " + (
        "\n  ".join(str(knot) for knot in found)
    )


def _assert_none(edges: Sequence[Edge], problem: str) -> None:
    assert not edges, f"{problem}:\n    " + _describe(edges)


def test_the_engine_core_imports_nothing_built_on_it() -> None:
    above = ("engine.server", "engine.cli", "simulator", "bench")
    bad = [e for e in edges_from(project(), is_engine_core) if within(e.target, *above)]
    _assert_none(bad, "the engine core imports a floor built on it")


def test_nothing_in_engine_imports_the_simulator_or_the_benchmarks() -> None:
    # `lockstep serve` reaches the simulator through the `lockstep.simulate` entry point.
    bad = [e for e in edges_from(project(), in_engine) if within(e.target, "simulator", "bench")]
    _assert_none(bad, "engine imports the simulator or the benchmarks")


def test_the_simulator_imports_only_the_engines_wire_vocabulary() -> None:
    # The fake APNs speaks the engine's wire words (reasons, wire constants, provider tokens,
    # the payload builder); it never leans on the server, the command line or the benchmarks.
    vocabulary = ("engine.apns", "engine.payload")
    bad = [
        e
        for e in edges_from(project(), in_simulator)
        if within(e.target, "engine", "bench") and not within(e.target, *vocabulary)
    ]
    _assert_none(bad, "the simulator imports beyond the engine's wire vocabulary")


def test_the_page_imports_nothing_of_the_project() -> None:
    # The lock screens page (webui) is served by the server and by the simulator alike: a leaf
    # both may import, so it must import neither (nor the engine or the benchmarks).
    bad = [
        e
        for e in edges_from(project(), lambda module: within(module, "webui"))
        if within(e.target, "engine", "simulator", "bench")
    ]
    _assert_none(bad, "the page's package imports the project")
    assert "webui" in project()


# What `import engine` must not load: the server's stack, the contract models, the tools.
_HEAVY: Final = ("hypercorn", "h11", "rich", "sqlite3", "_sqlite3", "simulator", "bench")
_HEAVY_ENGINE: Final = ("engine.server", "engine.cli")


def test_no_test_module_imports_another() -> None:
    # What tests share lives in tests/helpers; a test module importing another runs the other's
    # module-level code and couples the two (and hides which tests a helper serves).
    graph = build_graph(ROOT, ("tests",))
    suites = ("tests.unit", "tests.integration", "tests.e2e", "tests.browser", "tests.micro")
    bad = [
        edge
        for edge in edges_from(graph, lambda module: True)
        if within(edge.target, *suites) and not edge.target.endswith(suites)
    ]
    _assert_none(bad, "a test module imports another (move what both use to tests/helpers)")


def test_import_engine_stays_light() -> None:
    code = (
        "import json, sys\nimport engine\nprint(json.dumps([engine.__file__, sorted(sys.modules)]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    where, loaded = json.loads(out.stdout)
    assert Path(where).resolve() == ROOT / "engine" / "__init__.py"  # this checkout's engine
    assert "engine.engine" in loaded  # a real import, not an empty shell
    heavy = [m for m in loaded if within(m, *_HEAVY, *_HEAVY_ENGINE)]
    assert not heavy, f"`import engine` loads {heavy}"


# -- the walker itself ------------------------------------------------------------------------


def _tree(root: Path, files: Mapping[str, str]) -> dict[str, dict[str, Edge]]:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return build_graph(root, ["pkg"])


def test_every_kind_of_import_is_an_edge(tmp_path: Path) -> None:
    graph = _tree(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.sub import thing\n",
            "pkg/sub/__init__.py": "from . import leaf\nthing = 1\n",
            "pkg/sub/leaf.py": (
                "from typing import TYPE_CHECKING\n"
                "import os\n"
                "if TYPE_CHECKING:\n"
                "    from ..other import Kind\n"
                "else:\n"
                "    import pkg.other.deep as deep\n"
                "def later() -> None:\n"
                "    from .. import other\n"
                "try:\n"
                "    from pkg.sub.leaf import nothing\n"
                "except ImportError:\n"
                "    pass\n"
            ),
            "pkg/other/__init__.py": "",
            "pkg/other/deep.py": "import pkg.sub\n",
        },
    )
    assert {t: (e.line, e.typing_only) for t, e in graph["pkg.sub.leaf"].items()} == {
        "pkg.other": (8, False),  # in a function: a runtime import, which outranks line 4's
        "pkg.other.deep": (6, False),
        "pkg.sub.leaf": (10, False),  # a self-import
    }
    assert set(graph["pkg"]) == {"pkg.sub"}  # `thing` is no module: the package's __init__
    assert set(graph["pkg.sub"]) == {"pkg.sub.leaf"}
    assert set(graph["pkg.other.deep"]) == {"pkg.sub"}


def test_a_runtime_import_outranks_a_typing_one(tmp_path: Path) -> None:
    graph = _tree(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "import typing\nif typing.TYPE_CHECKING:\n    import pkg.b\nimport pkg.b\n",
            "pkg/b.py": "",
        },
    )
    assert graph["pkg.a"]["pkg.b"] == Edge("pkg.a", "pkg.b", 4, typing_only=False)


def test_cycles_are_found_and_described(tmp_path: Path) -> None:
    graph = _tree(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/app.py": "from pkg.routes import TABLE\n",
            "pkg/routes.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.app import App\n"
            ),
            "pkg/solo.py": "def f() -> None:\n    from . import solo\n",
            "pkg/fine.py": "import pkg.app\n",
            "pkg/x.py": "import pkg.y\n",
            "pkg/y.py": "import pkg.z\nimport pkg.x\n",
            "pkg/z.py": "import pkg.y\n",
        },
    )
    found = cycles(graph)
    assert [str(knot) for knot in found] == [
        (
            "cycle:\n"
            "    pkg.app -> pkg.routes (line 1)\n"
            "    pkg.routes -> pkg.app (line 3, under TYPE_CHECKING)"
        ),
        "cycle:\n    pkg.solo -> pkg.solo (line 2)",
        (
            "cycle:\n"
            "    pkg.x -> pkg.y (line 1)\n"
            "    pkg.y -> pkg.x (line 2)\n"
            "  within: pkg.x, pkg.y, pkg.z"
        ),
    ]
