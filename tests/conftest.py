"""Shared helpers: the committed TLC samples, step and `mlflow run` runners, and one trained
store (a whole pipeline run) that every test which only reads its results shares."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

PROJECT_DIR = Path(__file__).resolve().parents[1]
DATA_DIR = PROJECT_DIR / "tests" / "data"
BIN_DIR = Path(sys.executable).parent

# Two test files run at once on two cores, and a test may run two pipelines at once: every
# process that trains gets one OpenMP thread. XGBoost otherwise starts one per core, and a
# thread waiting for a sibling that has no core spins, burning the CPU the other tests need.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Small budgets: the tests check wiring and contracts, the benchmark checks model quality.
# Six trials: enough that hpo is still running when its first trial shows up, so the tests that
# kill a pipeline mid-search can take the shared trained store as their uninterrupted reference.
FAST_HPO = {"max_evals": "6", "num_boost_round": "60", "early_stopping_rounds": "10"}


# The order test files are handed to the pytest-xdist workers (`make test` passes
# --no-loadscope-reorder so it holds): the slowest kinds first, so the last file a worker takes
# is a short one and the two finish together; the unit tests fill the gaps at the end. The
# docker file (image builds, then a whole pipeline in a container) is the longest single file;
# the first reliability file builds the trained store while the second (the registry races)
# needs none, so no worker starts by waiting for the other.
KINDS = ("docker", "reliability", "e2e", "integration", "ui", "unit")


def kind_of(item: pytest.Item) -> str:
    return Path(str(item.fspath)).relative_to(PROJECT_DIR / "tests").parts[0]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by its folder (KINDS) and order the tests by it, file order kept."""
    rank = {kind: number for number, kind in enumerate(KINDS)}
    kinds = {item: kind_of(item) for item in items}
    for item, kind in kinds.items():
        if kind in rank:
            item.add_marker(kind)
    items.sort(key=lambda item: rank.get(kinds[item], len(KINDS)))


@pytest.fixture(autouse=True)
def models_code_stays_with_them():
    """Loading a model with code paths puts its code first on sys.path and drops the modules of
    the same names, so they are imported from it; the models registered before the library
    layout ship a `steps` package of their own. Undo that after each test, so a later test in
    the same worker imports the project's `steps`, not a model's."""
    path = list(sys.path)
    yield
    if sys.path == path:
        return
    sys.path[:] = path
    ours = str(PROJECT_DIR / "steps")
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] == "steps" and not str(getattr(module, "__file__", "")).startswith(
            ours
        ):
            del sys.modules[name]


@pytest.fixture
def data_dir() -> Path:
    return DATA_DIR


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN_DIR}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(PROJECT_DIR)
    env.update(extra)
    return env


def make_command(*args: str) -> list[str]:
    """`make <args>` on the project's Makefile from any folder, with the venv that runs the
    tests as the installed one (`-o`: make never reinstalls it)."""
    venv = BIN_DIR.parent
    makefile = str(PROJECT_DIR / "Makefile")
    return ["make", "-f", makefile, "-o", f"{venv}/bin/.installed", f"VENV={venv}", *args]


def bare_env(**extra: str) -> dict[str, str]:
    """A shell where the venv is not activated: only the system's PATH, and HOME."""
    return {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), **extra}


def run_step(module: str, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run one step's CLI (`python -m steps.<module> ...`) as a user would, outside `mlflow run`."""
    return subprocess.run(
        [sys.executable, "-m", f"steps.{module}", *args],
        cwd=cwd,
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=600,
    )


def mlflow_run_command(
    *args: str, params: dict[str, str] | None = None, project: Path = PROJECT_DIR
) -> list[str]:
    """`mlflow run <project> ... --env-manager local -P k=v ...` as an argument list."""
    command = [str(BIN_DIR / "mlflow"), "run", str(project), *args, "--env-manager", "local"]
    for key, value in (params or {}).items():
        command += ["-P", f"{key}={value}"]
    return command


def mlflow_run(
    *args: str,
    cwd: Path,
    params: dict[str, str] | None = None,
    project: Path = PROJECT_DIR,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    """Run `mlflow run` in `cwd` and wait for it."""
    return subprocess.run(
        mlflow_run_command(*args, params=params, project=project),
        cwd=cwd,
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=900,
    )


def copy_project(dst: Path) -> Path:
    """A copy of what `mlflow run` needs (MLproject, conda.yaml, steps/ and the library), safe
    to edit: its steps run the copy's library, which comes first on their path."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("MLproject", "conda.yaml"):
        shutil.copy(PROJECT_DIR / name, dst / name)
    for package in ("steps", "taxi_duration"):
        shutil.copytree(
            PROJECT_DIR / package, dst / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    return dst


def error_lines(stderr: str) -> list[str]:
    """The pipeline's own error lines (`<step>: error: ...`) in a process's stderr."""
    return [line for line in stderr.splitlines() if ": error: " in line]


@dataclass(frozen=True)
class TrainedStore:
    """An embedded store (sqlite:///<root>/mlflow.db, artifacts in <root>/mlruns) that one full
    pipeline run left, and what that `mlflow run` printed."""

    root: Path
    result: subprocess.CompletedProcess[str]

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(self.uri)

    def copy_to(self, folder: Path) -> TrainedStore:
        """A private copy of the database in `folder`: the runs and registry changes made there
        stay its own. The pipeline's runs keep their artifacts (the models among them) in the
        shared folder, where new runs of that experiment also write theirs, each under its own
        run id; an experiment created in the copy keeps its artifacts in `folder`."""
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.root / "mlflow.db", folder / "mlflow.db")
        return TrainedStore(folder, self.result)


@pytest.fixture(scope="session")
def trained_store(tmp_path_factory: pytest.TempPathFactory) -> TrainedStore:
    """`mlflow run <project> -e main` once, as a user types it (no tracking URI: the embedded
    store in a fresh directory; no --experiment-name), on the samples with a small budget.

    Shared by every test that only reads it; a test that writes runs or moves aliases takes
    `store_copy` instead. Under pytest-xdist the workers share one run: the first to get the
    lock makes it, the others wait and read what it printed.
    """
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    root, printed = shared / "trained", shared / "trained.json"
    with (shared / "trained.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not printed.exists():
            root.mkdir()
            params = {"source": str(DATA_DIR), **FAST_HPO}
            ran = mlflow_run("-e", "main", cwd=root, params=params, MLFLOW_TRACKING_URI="")
            outcome = {"args": ran.args, "returncode": ran.returncode}
            outcome |= {"stdout": ran.stdout, "stderr": ran.stderr}
            printed.write_text(json.dumps(outcome))
    result = subprocess.CompletedProcess(**json.loads(printed.read_text()))
    assert result.returncode == 0, result.stderr[-4000:]
    return TrainedStore(root, result)


@pytest.fixture
def store_copy(trained_store: TrainedStore, tmp_path: Path) -> TrainedStore:
    """A private copy of the trained store's database for one test (TrainedStore.copy_to)."""
    return trained_store.copy_to(tmp_path)


# --- the browser tests' screenshots (tests/ui), said at the end of the session --------------
# The folder UI_SCREENSHOTS names, else `ui-screenshots` in the session's temp folder (the one
# the pytest-xdist workers' folders sit in). The hook lives here: under xdist, the controller
# that prints the summary loads this conftest but never tests/ui's.


def screenshots_folder(config: pytest.Config) -> Path:
    if os.environ.get("UI_SCREENSHOTS"):
        return Path(os.environ["UI_SCREENSHOTS"])
    base = config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "ui-screenshots"


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    folder = screenshots_folder(config)
    if folder.is_dir() and any(folder.iterdir()):
        terminalreporter.write_line(f"ui screenshots: {folder}")
