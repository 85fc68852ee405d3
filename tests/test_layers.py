"""The import graph of ``icechart``: no upward import between layers and no cycle at all.

Layers, lowest first (README "Layout"): base -> io -> features -> model -> infer -> products ->
pipeline -> cli. A module may import modules of its own or a lower layer only. Every import
counts, also those inside functions and under ``if TYPE_CHECKING``: an import deferred to
dodge a cycle is still a cycle. Read with :mod:`ast`, nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "icechart"
LAYERS = ("base", "io", "features", "model", "infer", "products", "pipeline", "cli")

# Longest prefix wins; every module must match one (test_every_module_has_a_layer).
LAYER_OF = {
    # base: tables, errors, config, files, and the numpy-only metrics
    "icechart._version": "base",
    "icechart.errors": "base",
    "icechart.classes": "base",
    "icechart.config": "base",
    "icechart.hashing": "base",
    "icechart.atomic": "base",
    "icechart.paths": "base",
    "icechart.score": "base",
    "icechart.calibration": "base",
    "icechart.memory": "base",
    # io: reading scenes and charts, writing synthetic scenes, batch plumbing (lock, manifest)
    "icechart.io": "io",
    "icechart.synth": "io",
    "icechart.ops": "io",
    "icechart.features": "features",
    "icechart.model": "model",
    "icechart.infer": "infer",
    "icechart.products": "products",
    # pipeline: the library calls behind the commands, training, the public API
    "icechart.pipeline": "pipeline",
    "icechart.training": "pipeline",
    "icechart.train": "pipeline",
    "icechart.testing": "pipeline",
    "icechart": "pipeline",
    "icechart.cli": "cli",
    "icechart.__main__": "cli",
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> str:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        layer = LAYER_OF.get(".".join(parts[:n]))
        if layer is not None:
            return layer
    raise KeyError(module)


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """icechart modules that ``module`` imports (``from a import b`` -> ``a.b`` when a module)."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "icechart")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module.split(".") if is_pkg else module.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            if base.split(".")[0] != "icechart":
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.add(sub if sub in known else base)
    out.discard(module)
    return out


def graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {m: imports_of(m, p, known) & known for m, p in mods.items()}


def upward_imports(g: dict[str, set[str]]) -> list[str]:
    bad = []
    for m, deps in sorted(g.items()):
        for d in sorted(deps):
            if LAYERS.index(layer_of(d)) > LAYERS.index(layer_of(m)):
                bad.append(f"{m} ({layer_of(m)}) imports {d} ({layer_of(d)})")
    return bad


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer() -> None:
    missing = []
    for m in _modules():
        try:
            layer_of(m)
        except KeyError:
            missing.append(m)
    assert not missing, f"give these modules a layer in LAYER_OF (and the README): {missing}"


def test_no_upward_imports() -> None:
    bad = upward_imports(graph())
    assert not bad, "upward imports between layers:\n" + "\n".join(bad)


def test_no_import_cycles() -> None:
    found = cycles(graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_check_catches_what_it_should(tmp_path: Path) -> None:
    """The checker itself: a cycle, an upward import, deferred and relative imports are found."""
    g = {"icechart.io.a": {"icechart.infer.b"}, "icechart.infer.b": {"icechart.io.a"}}
    assert cycles(g) == [["icechart.infer.b", "icechart.io.a"]]
    assert upward_imports(g) == ["icechart.io.a (io) imports icechart.infer.b (infer)"]
    src = tmp_path / "x.py"
    src.write_text(
        "from typing import TYPE_CHECKING\nfrom . import netcdf\nfrom ..infer import predict\n"
        "if TYPE_CHECKING:\n    import icechart.cli.main\n"
        "def f():\n    from icechart.classes import FILL\n"
    )
    known = {"icechart.products.netcdf", "icechart.infer.predict", "icechart.cli.main", "icechart.classes"}
    assert imports_of("icechart.products.x", src, known) == known


@pytest.mark.parametrize("layer", LAYERS)
def test_layers_are_documented(layer: str) -> None:
    readme = (PACKAGE.parent / "README.md").read_text()
    assert f"`{layer}`" in readme, f"README's layout section does not name layer `{layer}`"
