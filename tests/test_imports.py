"""The kernel package's modules, and the laptop side's (kit/), import one another one way: no circle, counting
the imports made inside functions too (a circle deferred into a function still ties both modules together,
and breaks as soon as either import moves to the top)."""
import ast
from pathlib import Path

import pytest

import kernel

pytestmark = pytest.mark.kernel  # runs inside the notebook: also tested on Kaggle's versions (tests/run)

PACKAGE = Path(kernel.__file__).parent
KIT = Path(__file__).resolve().parents[1] / "kit"


def imports(path: Path, modules: set[str], package: str = "kernel") -> set[str]:
    """The package's modules that the module at `path` imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module != package and not (node.module or "").startswith(package + "."):
                continue
            base = (node.module or "").removeprefix(package).lstrip(".") if node.level == 0 else \
                node.module or ""
            names = [base.split(".")[0]] if base else [a.name for a in node.names]  # `from . import x, y`
            found |= {n for n in names if n in modules}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith(package + ".")} & modules
    return found - {path.stem}


def graph(folder: Path = PACKAGE) -> dict[str, set[str]]:
    modules = {p.stem for p in folder.glob("*.py")} - {"__init__"}
    return {m: imports(folder / f"{m}.py", modules, folder.name) for m in modules}


def circle(g: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `g` (its modules in order, the first repeated at the end), or None."""
    state: dict[str, str] = {}  # module -> "open" while on the path, "done" once all below it are seen

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = "open"
        for n in sorted(g[m]):
            if state.get(n) == "open": return path[path.index(n):] + [n]
            if n not in state and (found := visit(n, path + [n])): return found
        state[m] = "done"
        return None
    for m in sorted(g):
        if m not in state and (found := visit(m, [m])): return found
    return None


def test_the_graph_is_read_from_every_kind_of_import_and_a_circle_is_found(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from . import data, model\nfrom .plan import Budget\nimport kernel.predict\n"
                     "def f():\n    from kernel.memory import estimate\n    from .config import Config\n")
    parsed = imports(probe, {"data", "model", "plan", "predict", "memory", "config", "train"})
    assert parsed == {"data", "model", "plan", "predict", "memory", "config"}
    assert circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert circle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circle_in_the_kernel_package():
    g = graph()
    assert {"train", "ensemble", "model", "memory", "checkpoint"} <= set(g) and g["ensemble"]
    found = circle(g)
    assert found is None, f"import circle: {' -> '.join(found)}"



def test_no_import_circle_on_the_laptop_side_and_build_py_imports_no_private_name():
    g = graph(KIT)
    assert {"push", "submit", "status", "ledger", "kaggle"} <= set(g) and g["submit"]
    found = circle(g)
    assert found is None, f"import circle in kit/: {' -> '.join(found)}"
    assert "ledger" in g["push"] and "ledger" in g["submit"] and not g["ledger"]  # it records; it calls no one
    private = [f"{n.module}.{a.name}" for n in ast.walk(ast.parse((KIT.parent / "build.py").read_text()))
               if isinstance(n, ast.ImportFrom) for a in n.names if a.name.startswith("_")]
    assert not private, private
