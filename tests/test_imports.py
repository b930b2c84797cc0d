"""The import direction of STYLE.md, checked by scanning every import statement (top
level, in functions, under TYPE_CHECKING; relative ones resolved):

    scenes, rasterizer   import nothing of ours
    renderers            scenes and rasterizer
    viewer               renderers and scenes (never app, nor rasterizer: it has no need)
    app                  everything
    gsplat               only rasterizer/ and renderers/splat/

that no two modules import each other, directly or round a longer loop (module-level and
lazy imports both count), that the generic loop, eval, runs, the live hookup and the viewer
never import a method (`renderers.splat`), and that importing the library packages loads
no heavy optional dependency."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("scenes", "rasterizer", "renderers", "viewer", "app")
ALLOWED = {  # package -> the other splatlab packages it may import
    "scenes": set(),
    "rasterizer": set(),
    "renderers": {"scenes", "rasterizer"},
    "viewer": {"renderers", "scenes"},
    "app": set(PACKAGES) - {"app"},
}
HEAVY = ("open3d", "pycolmap", "viser", "gsplat")


def module_name(path: Path) -> tuple[str, bool]:
    """splatlab's dotted module name of a file under the repo (package dirs map 1:1)."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    is_pkg = parts[-1] == "__init__"
    if is_pkg:
        parts = parts[:-1]
    return ".".join(["splatlab", *parts]), is_pkg


def imports_of(source: str, module: str, is_pkg: bool) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of every import in `source`, wherever it appears."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            else:
                pkg = module.split(".") if is_pkg else module.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([node.module] if node.module else []))
            if node.module is None or base == "splatlab":  # `from . import x`: x may be a module
                found += [(node.lineno, f"{base}.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, base))
    return found


def all_imports():
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            module, is_pkg = module_name(path)
            for line, name in imports_of(path.read_text(encoding="utf-8"), module, is_pkg):
                yield pkg, f"{path.relative_to(REPO)}:{line}", name


def test_scanner_resolves_imports():
    src = ("import gsplat.strategy\nfrom ..scenes import types\nfrom . import model\n"
           "def f():\n    from splatlab.app import cli\n    from .io import x\n")
    got = [n for _, n in imports_of(src, "splatlab.renderers.splat.strategy", False)]
    assert got == ["gsplat.strategy", "splatlab.renderers.scenes", "splatlab.renderers.splat.model",
                   "splatlab.app", "splatlab.renderers.splat.io"]
    got = [n for _, n in imports_of("from .. import scenes\nfrom .x import y\nfrom splatlab import app\n",
                                    "splatlab.viewer", True)]
    assert got == ["splatlab.scenes", "splatlab.viewer.x", "splatlab.app"]


def test_every_package_is_scanned():
    found = {pkg for pkg, _, _ in all_imports()}
    assert found == set(PACKAGES)


def test_gsplat_is_imported_only_by_rasterizer_and_renderers_splat():
    bad = [f"{where} imports {name}" for pkg, where, name in all_imports()
           if name.split(".")[0] == "gsplat"
           and not (where.startswith("rasterizer/") or where.startswith("renderers/splat/"))]
    assert not bad, "\n".join(bad)


# Modules that drive any method: they reach a method only through RENDERERS.
GENERIC = ("app/train.py", "app/data.py", "app/eval.py", "app/runs.py", "app/live.py", "viewer/")


def test_generic_modules_never_import_a_method():
    bad = [f"{where} imports {name}" for _, where, name in all_imports()
           if where.startswith(GENERIC) and name.startswith("splatlab.renderers.splat")]
    assert not bad, "\n".join(bad)


def module_graph() -> dict[str, set[str]]:
    """splatlab module -> the splatlab modules it names in any import. A name that is not a
    module (`from .pkg import attr`) counts as its package; parent packages that Python
    loads on the way are not edges (every package would otherwise be a loop with its
    submodules)."""
    modules = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            modules[module_name(path)[0]] = path
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for m, path in modules.items():
        _, is_pkg = module_name(path)
        for name in imported_modules(path.read_text(encoding="utf-8"), m, is_pkg):
            while name and name not in modules and name.startswith("splatlab."):
                name = name.rsplit(".", 1)[0]
            if name in modules and name != m:
                graph[m].add(name)
    return graph


def imported_modules(source: str, module: str, is_pkg: bool) -> list[str]:
    """Like `imports_of`, but `from pkg import name` also yields `pkg.name` (a submodule
    when it is one; `module_graph` falls back to `pkg` otherwise)."""
    names = [n for _, n in imports_of(source, module, is_pkg)]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            base = [n for ln, n in imports_of(ast.unparse(node), module, is_pkg)][0]
            names += [f"{base}.{a.name}" for a in node.names]
    return names


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_lazy_and_long_loops():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    src = "def f():\n    from splatlab.app import train\n"
    assert "splatlab.app.train" in imported_modules(src, "splatlab.app.eval", False)


def test_no_import_cycles():
    graph = module_graph()
    assert "splatlab.app.data" in graph["splatlab.app.eval"]  # the scan sees lazy imports
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_import_direction():
    bad = []
    for pkg, where, name in all_imports():
        parts = name.split(".")
        if parts[0] != "splatlab":
            continue
        if len(parts) == 1:
            bad.append(f"{where} imports the splatlab namespace itself")
            continue
        target = parts[1]
        if target != pkg and target not in ALLOWED[pkg]:
            bad.append(f"{where} ({pkg}) imports {name}")
    assert not bad, "\n".join(bad)


def test_library_packages_import_no_heavy_dependency():
    """One fresh interpreter imports each package in turn and reports which heavy modules
    each newly loaded (gsplat included: only the rasterizer's backends load it, lazily)."""
    mods = ["splatlab.rasterizer", "splatlab.scenes", "splatlab.renderers", "splatlab.viewer",
            "splatlab.renderers.splat.strategies", "splatlab.renderers.splat.exporters",
            "splatlab.renderers.splat.relocation"]
    code = (
        "import importlib, json, sys\n"
        f"heavy = {HEAVY!r}\n"
        "out = {}\n"
        f"for m in {mods!r}:\n"
        "    importlib.import_module(m)\n"
        "    out[m] = sorted(h for h in heavy if h in sys.modules)\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded == {m: [] for m in mods}, loaded


@pytest.mark.parametrize("name", ["DefaultStrategy", "MCMCStrategy", "Strategy"])
def test_strategies_reach_gsplat_lazily(name):
    import gsplat.strategy

    from splatlab.renderers.splat import strategies

    assert getattr(strategies, name) is getattr(gsplat.strategy, name)
    with pytest.raises(AttributeError):
        strategies.NoSuchStrategy  # noqa: B018
