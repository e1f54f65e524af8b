"""The code's shape (README "How the parts depend on each other"): imports point down the layers,
no module imports another in a cycle (lazy imports inside functions count too), and no module
grows past the size the structure allows without saying why."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("model_def", "plugins", "eventspd_export", "calibration")
# Lowest first. A module may import modules of its own layer or below, never above.
LAYERS = (
    ("model", ("model_def", "plugins.torch_ext", "plugins._C")),
    ("core", ("eventspd_export.artifacts", "eventspd_export.data", "eventspd_export.runtime",
              "eventspd_export.evaluation.metrics")),
    ("stages", ("eventspd_export.export", "eventspd_export.check", "eventspd_export.trt",
                "eventspd_export.evaluation", "eventspd_export.train", "eventspd_export.bench",
                "calibration", "plugins")),
    ("cli", ("eventspd_export.cli", "eventspd_export.__main__")),
)
MAX_LINES = 500
# Over MAX_LINES on purpose, each one cohesive thing (its docstring says so).
LARGE_OK = {"eventspd_export.data.simulator"}


def layer_of(module: str) -> int:
    """The layer of the longest matching prefix (eventspd_export.evaluation.metrics is core,
    the rest of eventspd_export.evaluation a stage)."""
    if module in PACKAGES:
        return 0  # package __init__ files hold docstrings (plugins: the compiled _C is "plugins")
    best, rank = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, rank = len(p), i
    if rank is None:
        raise AssertionError(f"{module}: in no layer of tests/test_layout.py")
    return rank


def modules(root: Path = ROOT) -> dict[str, Path]:
    found = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules that ``name`` imports anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `import a.b.c` where only a.b is ours: the longest known
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    found = modules(root)
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def upward_imports(g: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} ({LAYERS[layer_of(m)][0]}) imports {t} ({LAYERS[layer_of(t)][0]})"
                  for m, targets in g.items() for t in targets if layer_of(t) > layer_of(m))


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), package inits left out:
    importing a.b.c runs a/__init__ and a/b/__init__, which is no dependency of a.b.c's code."""
    inits = {m for m, p in modules().items() if p.name == "__init__.py"}
    g = {m: {t for t in ts if t not in inits} for m, ts in g.items() if m not in inits}
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
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


def test_every_module_is_in_a_layer():
    for name in modules():
        layer_of(name)


def test_imports_point_down():
    assert upward_imports(graph()) == []


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_modules_stay_small():
    big = {name: n for name, path in modules().items()
           if (n := len(path.read_text().splitlines())) > MAX_LINES and name not in LARGE_OK}
    assert big == {}, f"modules over {MAX_LINES} lines (split them, or add to LARGE_OK with a reason): {big}"


def test_the_checks_can_fail(tmp_path):
    """Mutations: an upward import and a cycle written into a copy of two modules are found."""
    g = graph()
    g["model_def.config"] = g["model_def.config"] | {"eventspd_export.cli.app"}
    assert any("model_def.config (model) imports eventspd_export.cli.app (cli)" in line
               for line in upward_imports(g))
    g = graph()
    g["eventspd_export.artifacts"] = g["eventspd_export.artifacts"] | {"eventspd_export.data.windows"}
    g["eventspd_export.data.windows"] = g["eventspd_export.data.windows"] | {"eventspd_export.artifacts"}
    assert ["eventspd_export.artifacts", "eventspd_export.data.windows"] in cycles(g)
    # and a relative import is resolved like an absolute one
    pkg = tmp_path / "model_def"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import x\n")
    (pkg / "b.py").write_text("def f():\n    from model_def import a\n")
    found = {"model_def", "model_def.a", "model_def.b"}
    assert imports("model_def.a", pkg / "a.py", found) == {"model_def.b"}
    assert imports("model_def.b", pkg / "b.py", found) == {"model_def.a"}


@pytest.mark.parametrize("name", sorted(LARGE_OK))
def test_large_modules_say_why(name):
    doc = ast.get_docstring(ast.parse(modules()[name].read_text())) or ""
    assert "one cohesive" in doc.lower(), f"{name}: over {MAX_LINES} lines; its docstring must say why"
