"""The checks that need no running code: type hints (mypy), lint rules (ruff), import cycles.

mypy and ruff read their settings from pyproject.toml (`[tool.mypy]`, `[tool.ruff]`), so what
runs here is what a developer runs by hand: `python -m mypy`, `python -m ruff check`.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def installed(module: str) -> bool:
    return run(module, "--version", timeout=60).returncode == 0


@pytest.mark.skipif(not installed("mypy"), reason="mypy is not installed (it is in the test extra)")
def test_the_type_hints_hold():
    checked = run("mypy")
    assert checked.returncode == 0, f"mypy found problems:\n{checked.stdout}{checked.stderr}"


@pytest.mark.skipif(not installed("ruff"), reason="ruff is not installed (it is in the test extra)")
def test_the_lint_rules_pass():
    checked = run("ruff", "check")
    assert checked.returncode == 0, f"ruff found problems:\n{checked.stdout}{checked.stderr}"


def test_the_checks_are_the_strict_ones():
    """The two checks above are only as good as their settings: mypy in strict mode over the package and
    the benchmarks, ruff with sorted imports, bugbear and the 3.10 forms besides pyflakes and pycodestyle."""
    tomllib = pytest.importorskip("tomllib")
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]
    assert settings["mypy"]["strict"] is True and {"remote_kernel", "bench"} <= set(settings["mypy"]["files"])
    assert {"F", "E4", "E7", "E9", "W", "I", "B", "UP"} <= set(settings["ruff"]["lint"]["select"])


def _imports(path: Path, package: str) -> set[str]:
    """The modules of `package` that the module at `path` imports, at any level of the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(package):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith(package))
    return found


def import_graph(package: str = "remote_kernel") -> dict[str, set[str]]:
    """Module -> the modules of the package it imports (lazy imports inside functions count too)."""
    modules = {".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): path
               for path in (ROOT / package).rglob("*.py")}
    return {name: {imported for imported in _imports(path, package) if imported in modules and imported != name}
            for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle, once each (depth-first search, a cycle reported from where it closes)."""
    found: list[list[str]] = []
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for imported in sorted(graph.get(module, ())):
            if state.get(imported) == "open":
                found.append(trail[trail.index(imported):] + [module, imported] if imported in trail
                             else [module, imported])
            elif imported not in state:
                visit(imported, trail + [module])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_kernel_package_has_no_import_cycle():
    """The language table assembles `python.py` and `javascript.py`, which import only leaves (`helper.py`)."""
    graph = {name: deps for name, deps in import_graph().items() if name.startswith("remote_kernel.kernel")}
    assert "remote_kernel.kernel.languages" not in graph["remote_kernel.kernel.javascript"]
    assert cycles(graph) == []


#: the layers (docs/architecture.md): each package, and the packages it must never import
FORBIDDEN = {
    "remote_kernel.sessions": ("remote_kernel.kernel", "remote_kernel.pool", "remote_kernel.cli"),  # no Jupyter
    "remote_kernel.pool": ("remote_kernel.kernel", "remote_kernel.sessions", "remote_kernel.cli"),  # serves the contract
    "remote_kernel.kernel": ("remote_kernel.pool", "remote_kernel.cli"),  # an embedded pool is a child process
    "remote_kernel.settings": ("remote_kernel.kernel", "remote_kernel.pool", "remote_kernel.sessions",
                               "remote_kernel.cli"),  # read by the kernel and the pool alike
    "remote_kernel.exits": ("remote_kernel.kernel", "remote_kernel.pool", "remote_kernel.sessions",
                            "remote_kernel.cli"),  # used by the kernel and the pool alike
}


def test_the_layers_import_only_what_they_may():
    crossings = [f"{module} imports {imported}"
                 for module, imports in sorted(import_graph().items())
                 for package, forbidden in FORBIDDEN.items() if module == package or module.startswith(package + ".")
                 for imported in sorted(imports) if imported.startswith(forbidden)]
    assert not crossings, "\n".join(crossings)


def test_the_language_table_kernelspecs_settings_and_contract_import_only_the_standard_library():
    """The wheel's build hook imports the first two (through kernelspec.py) before the dependencies are
    installed; the kernel reads its settings and the contract's facts before anything heavy loads."""
    code = ("import sys\nbefore = set(sys.modules)  # what the interpreter's site brought\n"
            "import remote_kernel.kernelspec, remote_kernel.kernel.languages, remote_kernel.kernel.config, "
            "remote_kernel.contract, remote_kernel.settings, remote_kernel.exits\n"
            "print(sorted({m.split('.')[0] for m in set(sys.modules) - before}\n"
            "             - set(sys.stdlib_module_names) - {'remote_kernel'}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"imported beyond the standard library: {done.stdout}"
