"""The package's shape: no import cycles among lowbit's modules, and imports at module level
except the lazily loaded ones named here (read from the source with ``ast``, nothing imported)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "src"
# what may be imported inside a function: Triton (optional) and its kernels, and three heavy
# readers that would add about 1.5 s to every process
LAZY = ("triton", "lowbit.kernels.codecs_triton", "lowbit.kernels.quantize_triton", "mlxtend", "sklearn",
        "ml_dtypes", "matplotlib")


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in (ROOT / "lowbit").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = (path, ast.parse(path.read_text()))
    return out


def _targets(module: str, node, modules) -> list[str]:
    """The lowbit modules an import statement names (a name imported from a package counts as its
    submodule where one exists)."""
    is_pkg = modules[module][0].name == "__init__.py"
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = module if is_pkg else module.rsplit(".", 1)[0]
    for _ in range(node.level - 1):
        base = base.rsplit(".", 1)[0]
    mod = (base + ("." + node.module if node.module else "")) if node.level else (node.module or "")
    return [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]


def _imports():
    modules = _modules()
    top, inner = {}, {}
    for name, (_, tree) in modules.items():
        nested = {id(s) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                  for s in ast.walk(f) if isinstance(s, (ast.Import, ast.ImportFrom))}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and getattr(node, "module", "") != "__future__":
                where = inner if id(node) in nested else top
                where.setdefault(name, set()).update(_targets(name, node, modules))
    return modules, top, inner


def test_no_import_cycles_among_lowbits_modules():
    modules, top, _ = _imports()
    graph = {m: {t for t in top.get(m, ()) if t in modules and t != m} for m in modules}
    state, stack = {}, []

    def visit(m):  # depth-first search; a grey node met again closes a cycle
        state[m] = "grey"
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == "grey":
                raise AssertionError("import cycle: " + " → ".join(stack[stack.index(t):] + [t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = "black"

    for m in sorted(modules):
        if m not in state:
            visit(m)
    assert len(modules) > 50  # the walk saw the package


def test_imports_inside_functions_are_only_the_lazy_ones():
    _, _, inner = _imports()
    bad = {m: sorted(t for t in ts if not any(t == lazy or t.startswith(lazy + ".") for lazy in LAZY))
           for m, ts in inner.items()}
    assert not {m: ts for m, ts in bad.items() if ts}, bad
