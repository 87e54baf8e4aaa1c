"""Every module of the package imports on its own in a fresh interpreter (as aiohttp's
circular-import test does): an import circle, or a module that only works when another was
imported first, fails here."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import ticos_agent


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(ticos_agent.__path__, "ticos_agent."))


def _import_alone(name: str) -> tuple[str, int, str]:
    proc = subprocess.run([sys.executable, "-W", "error::ImportWarning", "-c", f"import {name}"],
                          capture_output=True, text=True, timeout=60)
    return name, proc.returncode, proc.stderr[-2000:]


def test_every_module_imports_alone_in_a_fresh_interpreter():
    modules = _modules()
    assert {"ticos_agent.agent", "ticos_agent.intake", "ticos_agent.turns", "ticos_agent.actuators.system",
            "ticos_agent.storage.store", "ticos_agent.audio.player"} <= set(modules)
    with ThreadPoolExecutor(max_workers=4) as pool:
        failures = [(n, err) for n, rc, err in pool.map(_import_alone, modules) if rc != 0]
    assert failures == [], "\n\n".join(f"{n}:\n{err}" for n, err in failures)


def _imports_of(path, module: str, package: bool) -> set[str]:
    """Modules of the package that ``module`` imports anywhere (also inside functions and
    ``if TYPE_CHECKING:``), resolved to module names."""
    import ast

    base = module.split(".") if package else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base[: len(base) - node.level + 1] + (node.module.split(".") if node.module else [])
            elif node.module and node.module.startswith("ticos_agent"):
                parts = node.module.split(".")
            else:
                continue
            target = ".".join(parts)
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # `from . import x`
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("ticos_agent"))
    return found


def test_no_module_imports_one_that_imports_it():
    """Static: the import graph (lazy and type-only imports included) has no circle."""
    from pathlib import Path

    root = Path(ticos_agent.__file__).parent
    files = {}
    for path in root.rglob("*.py"):
        rel = path.relative_to(root.parent).with_suffix("")
        package = rel.name == "__init__"
        name = ".".join(rel.parts[:-1] if package else rel.parts)
        files[name] = (path, package)
    graph = {name: {t for t in _imports_of(path, name, pkg) if t in files and t != name}
             for name, (path, pkg) in files.items()}
    # a package's __init__ re-exporting its submodules is not a circle with them
    graph = {n: {t for t in ts if not (files[n][1] and t.startswith(n + "."))} for n, ts in graph.items()}
    for n, ts in graph.items():
        graph[n] = {t for t in ts if not (files[t][1] and n.startswith(t + "."))}

    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for t in sorted(graph[n]):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    assert cycles == [], "import circles: " + "; ".join(" -> ".join(c) for c in cycles)
