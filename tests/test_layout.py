"""The layout keeps its rules: what each layer may import, at module level and in a fresh
interpreter, and that the public API is where the README says."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import solver

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "pandas", "networkx", "ortools", "pulp", "highspy", "matplotlib")

# Which of the package's own parts each part may import (the project's design notes: cli -> analysis, runner,
# plan -> algorithms -> core; frontend and hardware -> core; models -> nothing of solver).
ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    "algorithms": {"core", "algorithms"},
    "hardware": {"core", "hardware"},
    "frontend": {"core", "hardware", "frontend"},
    "engines": {"core", "hardware", "frontend", "engines"},
    "plan": {"core", "hardware", "frontend", "engines", "plan"},
    "experiments": {"core", "algorithms", "hardware", "frontend", "plan", "experiments"},
    "analysis": {"core", "algorithms", "hardware", "frontend", "engines", "plan", "analysis"},
    "runner": {"core", "hardware", "frontend", "plan", "runner"},
    "cli": {"core", "algorithms", "hardware", "frontend", "engines", "plan", "analysis",
            "experiments", "runner", "cli"},
}


def _fresh(code: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, check=True)
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _loaded_after(statement: str) -> list[str]:
    code = (f"import json, sys\n{statement}\n"
            f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    return _fresh(code)  # type: ignore[return-value]


@pytest.mark.parametrize("statement", [
    "import solver",
    "import solver.core",
    "import solver.algorithms",
    "from solver import Problem, solve, SolveOptions, METHODS, ILP_BACKENDS",
    "import solver.cli.app as app; app.build_parser()",
])
def test_planning_imports_nothing_heavy(statement: str) -> None:
    assert _loaded_after(statement) == []


def test_models_import_nothing_of_solver() -> None:
    code = ("import json, sys, models, models.spec, models.zoo, models.hf, models.transformer, "
            "models.layers, models.vision\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'solver')))")
    assert _fresh(code) == []
    for path in (ROOT / "models").rglob("*.py"):
        assert not [name for name in _imports(path) if name.split(".")[0] == "solver"], path


def _imports(path: Path) -> list[str]:
    """Absolute names of every module ``path`` imports (at any level), relative ones resolved."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[:len(parts) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.append(module)
            names += [f"{module}.{a.name}" for a in node.names]
    return names


def _part(path: Path) -> str:
    return path.relative_to(ROOT / "solver").parts[0]


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_each_part_imports_only_what_it_may(part: str) -> None:
    found = []
    for path in sorted((ROOT / "solver" / part).rglob("*.py")):
        if path.name == "__main__.py":
            continue  # an entry point hook (python -m), not a library module
        for name in _imports(path):
            pieces = name.split(".")
            if pieces[0] == "solver" and len(pieces) > 1 and (ROOT / "solver" / pieces[1]).is_dir() \
                    and pieces[1] not in ALLOWED[part]:
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    assert found == []


def test_no_module_is_left_outside_the_parts() -> None:
    loose = sorted(p.name for p in (ROOT / "solver").glob("*.py") if p.name != "__init__.py")
    assert loose == []
    assert {p.name for p in (ROOT / "solver").iterdir() if p.is_dir() and
            not p.name.startswith("__")} == set(ALLOWED) | {"data"}


def test_every_public_name_resolves_and_modules_declare_all() -> None:
    for name in solver.__all__:
        assert getattr(solver, name) is not None, name
    for path in (ROOT / "solver").rglob("*.py"):
        if path.name == "__main__.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assert any(isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
            for node in tree.body), f"{path.relative_to(ROOT)} has no __all__"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = solver.nope  # type: ignore[attr-defined]


# Internal modules tests and benchmarks may import, each for a reason the public API does not
# cover; any other deep import should go through ``solver`` or a package's own exports.
INTERNAL_OK = {
    "solver.algorithms.ilp": "stand-in backends (IlpBackend)",
    "solver.algorithms.ilp.canonical": "the segment model's candidates and pruning",
    "solver.algorithms.ilp.model": "stand-in backends' results, the time scale",
    "solver.algorithms.ilp.tiered": "the tiered warm start (a benchmark reference)",
    "solver.analysis.batch": "the journal's file name",
    "solver.cli.exit_codes": "the exit table itself",
    "solver.core.free": "patching the exact free search's state limit",
    "solver.cli.run": "the runner's shared option definitions",
    "solver.cli.solve": "patching the solve command's options",
    "solver.cli.worker": "the runner's command line",
    "solver.cli.zoo": "patching a handler (interrupt, exit table)",
    "solver.runner.l2": "torch internals of --pin-l2",
    "solver.runner.pipeline": "torch internals of a stage",
    "solver.runner.profiling": "patching the timing",
    "solver.plan.schedule": "each schedule's op order per stage, patched to test the deadlock guard",
}


def test_tests_benchmarks_and_notebooks_use_the_public_api() -> None:
    internal = set()
    for path in [*(ROOT / "tests").glob("*.py"), *(ROOT / "benchmarks").glob("*.py"),
                 ROOT / "notebooks" / "build.py"]:
        text = path.read_text(encoding="utf-8")
        internal |= {name for name in _imports_text(text)
                     if name.startswith("solver.") and name.count(".") >= 2}
    assert internal <= set(INTERNAL_OK), sorted(internal - set(INTERNAL_OK))


def _imports_text(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        line = line.strip()
        if (line.startswith("from solver") and " import " in line) or line.startswith("import solver."):
            names.add(line.split()[1])
    return names
