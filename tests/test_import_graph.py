"""Imports go one way. Over every module of pretrain/, transfer/ (all sub-packages) and tools/,
counting imports inside functions (which would otherwise hide one):

- no cycle, including one through a package's ``__init__`` (importing ``a.b.c`` runs
  ``a/__init__.py`` and ``a/b/__init__.py`` first: a cycle through them is a cycle);
- pretrain/ never imports transfer/, tools/ or a framework (it runs on torch alone);
- transfer/ never imports tools/ (the tools are entry points on top of both).

Read from the source: needs no framework installed."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pretrain", "transfer")
FRAMEWORKS = ("mmseg", "mmcv", "mmengine", "detectron2")


def imported_modules(path: Path, package: str) -> set[str]:
    """Dotted names of everything ``path`` imports, anywhere in the file (functions included):
    ``import a.b`` gives ``a.b``; ``from a import b`` gives ``a`` and ``a.b`` (``b`` may be a
    submodule or a name defined in ``a``); relative imports are resolved against ``package``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return trail[trail.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt, trail + [nxt])):
                return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def project_modules(root: Path = ROOT, packages=PACKAGES, scripts: str = "tools"
                    ) -> dict[str, tuple[Path, str]]:
    """Module name -> (file, package its relative imports resolve against). Packages by
    dotted name (``a/__init__.py`` is ``a``); scripts (not a package: run as files, each
    folder on sys.path for its own files) as ``tools/x`` and ``tools/prepare/y``."""
    modules = {}
    for top in packages:
        for path in sorted((root / top).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                modules[".".join(parts[:-1])] = (path, ".".join(parts[:-1]))
            else:
                modules[".".join(parts)] = (path, ".".join(parts[:-1]))
    for path in sorted((root / scripts).rglob("*.py")) if (root / scripts).is_dir() else []:
        modules[path.relative_to(root).with_suffix("").as_posix()] = (path, "")
    return modules


def _ancestors(name: str) -> list[str]:
    """``a.b.c`` -> ``[a, a.b]``: the packages importing it runs first (none for a script)."""
    parts = name.split(".") if "/" not in name else [name]
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def resolve(name: str, importer: str, modules: dict, packages=PACKAGES) -> str | None:
    """The project module the dotted import ``name`` loads (``a.b.NAME``: a.b), or None for
    the standard library and third parties. A script's ``import x`` is its neighbour ``x.py``
    unless ``x`` is one of our packages (tools/_bootstrap.py puts the root first on sys.path:
    ``import pretrain`` in tools/pretrain.py is the package)."""
    top = name.split(".", 1)[0]
    if top in packages:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None
    if "/" in importer and "." not in name:
        neighbour = f"{importer.rpartition('/')[0]}/{name}"
        return neighbour if neighbour in modules else None
    return None


def import_graph(root: Path = ROOT, packages=PACKAGES, scripts: str = "tools"
                 ) -> dict[str, set[str]]:
    """Module -> the project modules importing it runs (imports anywhere in the file).

    Importing ``a.b.c`` runs ``a`` and ``a.b`` too: they count, except the importer's own
    packages (already running when it runs). ``from P import NAME`` of a name P defines counts
    P even when it is the importer's own package: P may not have defined NAME yet."""
    modules = project_modules(root, packages, scripts)
    graph = {}
    for name, (path, package) in modules.items():
        own = set(_ancestors(name))
        edges = set()

        def add(target: str | None) -> None:
            if target is not None:
                edges.add(target)
                edges.update(a for a in _ancestors(target) if a not in own and a in modules)

        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(resolve(alias.name, name, modules, packages))
            elif isinstance(node, ast.ImportFrom):
                base = package.rsplit(".", node.level - 1)[0] if node.level else ""
                source = ".".join(p for p in (base, node.module or "") if p)
                for alias in node.names:
                    submodule = f"{source}.{alias.name}"
                    add(submodule if submodule in modules
                        else resolve(source, name, modules, packages))
        edges.discard(name)
        graph[name] = edges
    return graph


def test_no_import_cycle_anywhere():
    graph = import_graph()
    assert len(graph) > 100, f"only {len(graph)} modules found"
    # the parser sees imports inside functions, relative imports and script neighbours
    assert "transfer.fingerprint" in graph["transfer.detectron2_side.config"]
    assert "transfer.mmseg_side.register" in graph
    assert graph["transfer.mmseg_side.register"], "the parser found no import in register.py"
    assert "tools/_bootstrap" in graph["tools/pretrain"]
    assert "pretrain.config" in graph["tools/pretrain"]  # the package, not the script
    assert "tools/prepare/_common" in graph["tools/prepare/voc_aug"]
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize("files, expected", [
    # inside a function: the cycle fingerprint <-> detectron2_side.config had
    ({"pk/__init__.py": "", "pk/a.py": "from pk.b import f\n",
      "pk/b.py": "def f():\n    from pk import a\n"}, ["pk.a", "pk.b", "pk.a"]),
    # through a package's __init__: importing pk.sub.c runs pk/sub/__init__.py, which imports
    # pk.sub.d, which imports pk.a
    ({"pk/__init__.py": "", "pk/a.py": "import pk.sub.c\n", "pk/sub/__init__.py":
      "from .d import X\n", "pk/sub/c.py": "", "pk/sub/d.py": "from pk.a import Y\n"},
     ["pk.a", "pk.sub", "pk.sub.d", "pk.a"]),
    # a name taken from a partly run __init__: pk/sub/__init__ imports .d, which takes X from it
    ({"pk/__init__.py": "", "pk/sub/__init__.py": "from .d import Y\nX = 1\n",
      "pk/sub/d.py": "from pk.sub import X\nY = 2\n"}, ["pk.sub", "pk.sub.d", "pk.sub"]),
    # scripts: a tool importing its neighbour, which imports it back
    ({"pk/__init__.py": "", "scripts/x.py": "import y\n",
      "scripts/y.py": "def f():\n    import x\n"},
     ["scripts/x", "scripts/y", "scripts/x"]),
])
def test_the_graph_sees_hidden_cycles(tmp_path, files, expected):
    graph = import_graph(_write(tmp_path, files), ("pk",), "scripts")
    assert find_cycle(graph) == expected


def test_the_graph_leaves_harmless_imports_alone(tmp_path):
    """A module importing a sibling (its package's __init__ already runs), an __init__
    importing its submodules, and a submodule importing a sibling submodule by
    ``from pk import sibling`` are no cycles."""
    graph = import_graph(_write(tmp_path, {
        "pk/__init__.py": "from .a import A\nfrom . import b\n",
        "pk/a.py": "from pk import b\nfrom .b import B\nA = 1\n",
        "pk/b.py": "B = 2\n"}), ("pk",), "scripts")
    assert find_cycle(graph) is None, graph
    assert graph["pk.a"] == {"pk.b"} and graph["pk"] == {"pk.a", "pk.b"}


def _imports_of(folder: str) -> dict[str, set[str]]:
    out = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
        out[str(path.relative_to(ROOT))] = imported_modules(path, package)
    return out


TOOL_NAMES = {p.stem for p in (ROOT / "tools").rglob("*.py")} - set(PACKAGES)


def _is_tool(name: str) -> bool:
    top = name.split(".")[0]
    return top == "tools" or top in TOOL_NAMES


def test_pretrain_never_imports_transfer_tools_or_a_framework():
    for path, names in _imports_of("pretrain").items():
        bad = sorted(m for m in names
                     if m.split(".")[0] in ("transfer", *FRAMEWORKS) or _is_tool(m))
        assert not bad, f"{path} imports {bad}"


def test_transfer_never_imports_tools():
    assert "_bootstrap" in TOOL_NAMES and "_common" in TOOL_NAMES
    for path, names in _imports_of("transfer").items():
        bad = sorted(m for m in names if _is_tool(m))
        assert not bad, f"{path} imports {bad}"


def test_the_shared_helpers_need_neither_torch_nor_the_rest_of_pretrain():
    """pretrain/common/ is what transfer/ and tools/ borrow: the standard library, PyYAML and
    (inside ``slurm.submit`` only) submitit, so a suite runner or a table tool never pays torch's import (a run of
    tests/test_shared_helpers.py checks the same in a fresh interpreter)."""
    import sys
    for path, names in _imports_of("pretrain/common").items():
        bad = sorted(m for m in names
                     if m.split(".")[0] not in (*sys.stdlib_module_names, "yaml", "submitit", "pretrain")
                     or (m.startswith("pretrain.") and not m.startswith("pretrain.common")))
        assert not bad, f"{path} imports {bad}"
