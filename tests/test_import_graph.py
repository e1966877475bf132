"""Imports go one way: no cycle among the modules of transfer/mmseg_side (counting imports
inside functions, which would otherwise hide one), and pretrain/ never imports transfer/.
Read from the source: needs no framework installed."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(path: Path, package: str) -> set[str]:
    """Dotted names of everything ``path`` imports, anywhere in the file."""
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


def test_mmseg_side_imports_have_no_cycle():
    package = "transfer.mmseg_side"
    folder = ROOT / "transfer" / "mmseg_side"
    modules = {f"{package}.{p.stem}": p for p in folder.glob("*.py") if p.stem != "__init__"}
    graph = {name: {m for m in imported_modules(path, package) if m in modules and m != name}
             for name, path in modules.items()}
    assert graph[f"{package}.register"], "the parser found no import in register.py"
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_pretrain_never_imports_transfer_or_a_framework():
    for path in sorted((ROOT / "pretrain").rglob("*.py")):
        package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
        bad = sorted(m for m in imported_modules(path, package)
                     if m.split(".")[0] in ("transfer", "mmseg", "mmcv", "mmengine", "detectron2"))
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"
