"""The shape of steps/: no import cycles, leaves stay leaves, MLflow only at the edge, artifact
paths only from contracts, and code fingerprints that follow exactly the code a step runs."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

from steps.contracts import MAIN, STANDALONE, STEPS
from steps.reuse import code_fingerprint, imported_modules, module_closure

ROOT = Path(__file__).resolve().parents[2]
STEPS_DIR = ROOT / "steps"
MODULES = sorted(p.stem for p in STEPS_DIR.glob("*.py") if p.stem != "__init__")
# The modules that talk to MLflow; everything else is plain Python.
MLFLOW_EDGE = {"runs", "trials", "registry", "model", "plugins"}


def graph() -> dict[str, set[str]]:
    """Module -> the steps modules it imports, lazy (in-function) imports included."""
    return {m: imported_modules((STEPS_DIR / f"{m}.py").read_text()) for m in MODULES}


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
    edges = {"a": imported_modules("def f():\n    from steps import b\n"), "b": {"a"}}
    assert cycles(edges) == [["a", "b", "a"]]


def test_steps_has_no_import_cycle():
    assert cycles(graph()) == []


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("errors", set()),
        ("contracts", set()),
        ("processes", set()),
        ("config", {"contracts", "errors"}),
        ("server", {"errors"}),
        ("features", {"contracts", "errors"}),
        ("history", {"contracts"}),
    ],
)
def test_leaves_import_only_what_is_below_them(module, allowed):
    assert graph()[module] <= allowed


def imports_mlflow(source: str) -> bool:
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import) and any(
            a.name.split(".")[0] == "mlflow" for a in node.names
        ):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "mlflow":
            return True
    return False


def test_only_the_edge_modules_import_mlflow():
    talking = {m for m in MODULES if imports_mlflow((STEPS_DIR / f"{m}.py").read_text())}
    assert talking == MLFLOW_EDGE


ARTIFACT_SUFFIXES = (".parquet", ".pkl", ".json", ".png", ".csv", ".npz", ".ubj")


@pytest.mark.parametrize("entry_point", [*STEPS, *STANDALONE, MAIN])
def test_steps_take_artifact_paths_from_contracts(entry_point):
    tree = ast.parse((STEPS_DIR / f"{entry_point}.py").read_text())
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
    shutil.copytree(STEPS_DIR, tmp_path / "steps", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def fingerprints(project: Path) -> dict[str, str]:
    return {step: code_fingerprint(project, step) for step in (*STEPS, MAIN)}


def changed_by(project: Path, module: str) -> set[str]:
    """The entry points whose fingerprint an edit of `module` changes."""
    before = fingerprints(project)
    source = project / "steps" / f"{module}.py"
    source.write_text(source.read_text().replace("one line", "a single line") + "\n# edited\n")
    after = fingerprints(project)
    return {step for step in before if before[step] != after[step]}


def test_editing_the_download_code_changes_only_ingest_and_main(project):
    assert changed_by(project, "tlc") == {"ingest", MAIN}


def test_editing_the_boosting_code_changes_the_steps_that_train(project):
    changed = changed_by(project, "boosting")
    assert {"hpo", "train_best"} <= changed
    assert not changed & {"ingest", "featurize"}


def test_editing_the_plugins_changes_no_step(project):
    assert changed_by(project, "plugins") == set()


@pytest.mark.parametrize("step", [*STEPS, *STANDALONE, MAIN])
def test_a_fingerprint_covers_the_modules_its_step_imports(step):
    covered = {p.stem for p in module_closure(STEPS_DIR, step)}
    assert step in covered and "contracts" in covered
    assert "plugins" not in covered  # no step runs the mlflow-run plugins
