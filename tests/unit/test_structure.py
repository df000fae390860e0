"""The code's shape: layers point one way, no import cycles (function-level imports count), no
product module over 500 lines."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("streaming_jobs", "serving", "intent_resources", "intent_assets", "feature_repo")
# package -> what it must not import: streaming_jobs <- serving <- intent_resources <- intent_assets
FORBIDDEN = {
    "streaming_jobs": {"serving", "intent_resources", "intent_assets", "dagster"},
    "serving": {"intent_resources", "intent_assets", "dagster"},
    "intent_resources": {"intent_assets"},
    "feature_repo": {"intent_assets", "intent_resources", "pyspark", "dagster"},
}
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _imports(name: str, path: Path) -> set[str]:
    """Every module `name` imports, anywhere in its body, as dotted names."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".")
                keep = len(parts) - node.level + (1 if path.name == "__init__.py" else 0)
                base = ".".join(parts[:keep] + ([node.module] if node.module else []))
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()

    def owner(target: str) -> str | None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for target in _imports(name, path):
            found = owner(target)
            if found and found != name:
                edges[name].add(found)
    return edges


def test_layers_point_one_way():
    upward = []
    for name, path in _modules().items():
        banned = FORBIDDEN.get(name.split(".")[0], set())
        upward += [f"{name} imports {t}" for t in sorted(_imports(name, path))
                   if t.split(".")[0] in banned]
    assert upward == []


def test_no_import_cycles():
    edges = _graph()
    cycles = []
    for start in list(edges):
        # a path back to `start` through modules that are not its own package's __init__
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in edges.get(node, ()):
                if nxt == start and not any(m.startswith(start + ".") for m in path) \
                        and not start.startswith(nxt + "."):
                    cycles.append(" -> ".join(path + [nxt]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
    assert cycles == []


def test_no_product_module_over_500_lines():
    long = {str(p.relative_to(ROOT)): n for p in _modules().values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}
