"""The shape of the code: steps/ holds the MLproject entry points and nothing else, the
taxi_duration library imports only downward through its layers and never from steps/, no import
cycles, MLflow only at the tracking edge, artifact paths only from contracts, and code
fingerprints that follow exactly the code a step runs."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest
import yaml

from taxi_duration.core.contracts import LIBRARY, MAIN, STANDALONE, STEPS, STEPS_PACKAGE
from taxi_duration.core.reuse import code_fingerprint, imported_modules, module_closure, module_file

ROOT = Path(__file__).resolve().parents[2]
LIBRARY_DIR = ROOT / LIBRARY
# The library's layers, lowest first: a module imports from its own layer and those below.
LAYERS = ("core", "data", "model", "tracking", "pipeline", "tools")


def dotted(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    """Every module of steps/ and of the library, by dotted name."""
    files = [*(ROOT / STEPS_PACKAGE).glob("*.py"), *LIBRARY_DIR.rglob("*.py")]
    return {dotted(path): path for path in files}


MODULES = project_modules()


def imports_of(module: str) -> set[str]:
    """The project modules a module imports (names that are not modules are dropped)."""
    found = imported_modules(MODULES[module].read_text())
    return {name for name in found if module_file(ROOT, name) is not None} - {module}


def layer(module: str) -> int:
    """The layer rank of a library module (its package's place in LAYERS; -1 for the root)."""
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 else -1


def test_the_library_has_exactly_the_layers_its_docstring_names():
    packages = {p.name for p in LIBRARY_DIR.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(LAYERS)
    described = (LIBRARY_DIR / "__init__.py").read_text()
    assert all(f"    {name} " in described for name in LAYERS)


def test_steps_holds_one_module_per_mlproject_entry_point_and_nothing_else():
    entry_points = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]
    modules = {p.stem for p in (ROOT / STEPS_PACKAGE).glob("*.py")} - {"__init__"}
    assert modules == set(entry_points)
    for name, spec in entry_points.items():
        assert spec["command"].startswith(f"python -m {STEPS_PACKAGE}.{name} "), name


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith(f"{LIBRARY}.")))
def test_a_library_module_imports_only_its_layer_and_those_below(module):
    imported = imports_of(module)
    assert not {m for m in imported if m.split(".")[0] == STEPS_PACKAGE}, "imports from steps/"
    above = {m for m in imported if m.startswith(f"{LIBRARY}.") and layer(m) > layer(module)}
    assert above == set(), f"{module} imports from a layer above its own"


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle, each as the path that closes it."""
    found, state = [], dict.fromkeys(edges, "new")

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                found.append([*path[path.index(nxt) :], nxt])
            elif state.get(nxt) == "new":
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for node in edges:
        if state[node] == "new":
            visit(node, [node])
    return found


def test_cycle_finder_finds_a_lazy_cycle():
    lazy = imported_modules("def f():\n    from taxi_duration.model import b\n")
    edges = {"taxi_duration.model.a": lazy, "taxi_duration.model.b": {"taxi_duration.model.a"}}
    assert ["taxi_duration.model.a", "taxi_duration.model.b", "taxi_duration.model.a"] in cycles(
        {k: {v for v in vs if v in edges} for k, vs in edges.items()}
    )


def test_there_is_no_import_cycle():
    assert cycles({m: imports_of(m) & set(MODULES) for m in MODULES}) == []


def imports_mlflow(source: str) -> bool:
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import) and any(
            a.name.split(".")[0] == "mlflow" for a in node.names
        ):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "mlflow":
            return True
    return False


def test_only_the_tracking_layer_talks_to_mlflow():
    talking = {m for m, path in MODULES.items() if imports_mlflow(path.read_text())}
    assert talking and all(m.startswith(f"{LIBRARY}.tracking.") for m in talking), talking


ARTIFACT_SUFFIXES = (".parquet", ".pkl", ".json", ".png", ".csv", ".npz", ".ubj")


@pytest.mark.parametrize("entry_point", [*STEPS, *STANDALONE, MAIN])
def test_steps_take_artifact_paths_from_contracts(entry_point):
    tree = ast.parse((ROOT / STEPS_PACKAGE / f"{entry_point}.py").read_text())
    literals = [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]
    assert not [s for s in literals if s.endswith(ARTIFACT_SUFFIXES)]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for name in ("MLproject", "conda.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    for package in (STEPS_PACKAGE, LIBRARY):
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    return tmp_path


def fingerprints(project: Path) -> dict[str, str]:
    return {step: code_fingerprint(project, step) for step in (*STEPS, MAIN)}


def changed_by(project: Path, module: str) -> set[str]:
    """The entry points whose fingerprint an edit of library module `module` changes."""
    before = fingerprints(project)
    source = project.joinpath(LIBRARY, *module.split(".")).with_suffix(".py")
    source.write_text(source.read_text() + "\n# edited\n")
    after = fingerprints(project)
    return {step for step in before if before[step] != after[step]}


def test_editing_the_download_code_changes_only_ingest_and_main(project):
    assert changed_by(project, "data.tlc") == {"ingest", MAIN}


def test_editing_the_boosting_code_changes_the_steps_that_train_only(project):
    assert changed_by(project, "model.boosting") == {"hpo", "train_best"}


def test_editing_the_plugins_changes_no_step(project):
    assert changed_by(project, "tracking.plugins") == set()


@pytest.mark.parametrize("step", [*STEPS, *STANDALONE, MAIN])
def test_a_fingerprint_covers_the_modules_its_step_imports(step):
    covered = {dotted(p) for p in module_closure(ROOT, f"{STEPS_PACKAGE}.{step}")}
    assert f"{STEPS_PACKAGE}.{step}" in covered
    assert f"{LIBRARY}.core.contracts" in covered
    assert f"{LIBRARY}.tracking.plugins" not in covered  # no step runs the mlflow-run plugins
