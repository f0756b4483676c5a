"""When a finished step run can stand in for a new one: same code, same typed parameters and
the same input content. Pure apart from reading files.

- The code fingerprint hashes what a step's code depends on: its module under steps/, the
  library modules (taxi_duration/) it imports, transitively and lazy imports included,
  MLproject and conda.yaml, and the installed versions of the libraries those modules import
  whose results the step depends on (numpy, pandas, pyarrow, scipy, scikit-learn, xgboost,
  hyperopt). Not the git commit: an uncommitted edit changes it, a commit that touched only the
  README does not; an upgrade of xgboost in the environment does.
- Content digests: each step records a digest of what it wrote for the next step to read
  (tag pipeline.output_digest), and each step run records the digest of what it read
  (pipeline.input_digest). Reuse compares those, not run ids, so an upstream step that reruns
  and writes the very same bytes does not invalidate what comes after it.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import shlex
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from taxi_duration.core.contracts import LIBRARY, STEPS, STEPS_PACKAGE
from taxi_duration.core.errors import PipelineError

# The project's own packages: the entry points and the library they import.
PACKAGES = (STEPS_PACKAGE, LIBRARY)
PROJECT_FILES = ("MLproject", "conda.yaml")


def imported_modules(source: str) -> set[str]:
    """Dotted names the source imports from this project's packages, lazy imports included:
    `from taxi_duration.model import boosting` gives taxi_duration.model and
    taxi_duration.model.boosting (a module, or a name that module_file then finds no file for)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] in PACKAGES:
                found.add(node.module)
                found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] in PACKAGES}
    return found


def module_file(project_dir: Path, dotted: str) -> Path | None:
    """The file behind a dotted module name in the project (a package: its __init__.py)."""
    base = project_dir.joinpath(*dotted.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def module_closure(project_dir: Path, module: str) -> list[Path]:
    """The file of `module` (dotted, e.g. steps.hpo) and of every project module it reaches
    through imports, with the packages above each (importing a module runs them), sorted."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        parts = todo.pop().split(".")
        for end in range(1, len(parts) + 1):
            path = module_file(project_dir, ".".join(parts[:end]))
            if path is not None and path not in seen:
                seen.add(path)
                todo.extend(imported_modules(path.read_text()))
    return sorted(seen)


# The libraries whose results a step's output depends on (import name -> distribution): an
# upgrade of one changes the fingerprint of every step whose code imports it, so a step is not
# reused across it. MLflow, matplotlib and the like only record and draw: left out.
RESULT_LIBRARIES = {
    "numpy": "numpy",
    "pandas": "pandas",
    "pyarrow": "pyarrow",
    "scipy": "scipy",
    "sklearn": "scikit-learn",
    "xgboost": "xgboost",
    "hyperopt": "hyperopt",
}


def installed_version(distribution: str) -> str:
    """The version of a distribution installed in this environment ("absent" if none)."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def library_versions(
    files: list[Path], version: Callable[[str], str] = installed_version
) -> list[str]:
    """`name==version` of each result library (RESULT_LIBRARIES) the files import, sorted."""
    imported: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
    found = {RESULT_LIBRARIES[name] for name in imported if name in RESULT_LIBRARIES}
    return [f"{name}=={version(name)}" for name in sorted(found)]


def code_fingerprint(
    project_dir: Path, entry_point: str, version: Callable[[str], str] = installed_version
) -> str:
    """sha256 over what the entry point's code depends on: the files (names and bytes) of its
    module under steps/, the library modules it reaches, MLproject and conda.yaml; and the
    installed versions of the result libraries those modules import."""
    modules = module_closure(project_dir, f"{STEPS_PACKAGE}.{entry_point}")
    files = modules + [project_dir / n for n in PROJECT_FILES if (project_dir / n).is_file()]
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(project_dir)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    for pinned in library_versions(modules, version):
        digest.update(pinned.encode() + b"\0")
    return digest.hexdigest()[:16]


def digest_files(root: Path, paths: list[str]) -> str:
    """sha256 over files under `root` (relative names and bytes), in the order given."""
    digest = hashlib.sha256()
    for relative in paths:
        digest.update(relative.encode() + b"\0")
        with (root / relative).open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def digest_values(*values: Any) -> str:
    """sha256 of JSON-serialisable values, key order and float spelling made canonical."""
    text = json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def mlproject_types(project_dir: Path, entry_point: str) -> dict[str, Callable[[Any], Any]]:
    """Each parameter's declared MLproject type as a converter (int, float or str)."""
    spec = yaml.safe_load((project_dir / "MLproject").read_text())["entry_points"][entry_point]
    converters: dict[str, Callable[[Any], Any]] = {"int": _int, "float": float}
    types: dict[str, Callable[[Any], Any]] = {}
    for name, declared in spec.get("parameters", {}).items():
        kind = declared.get("type", "string") if isinstance(declared, dict) else declared
        types[name] = converters.get(kind, str)
    return types


def _int(value: Any) -> int:
    return int(float(value))


def unquote(value: str) -> str:
    """A parameter as the step received it. `mlflow run` logs string parameters the way it put
    them on the command line, shell-quoted ('~/.cache/x' for ~/.cache/x, '' for an empty one)."""
    try:
        parts = shlex.split(value)
    except ValueError:
        return value
    return parts[0] if len(parts) == 1 else value


def params_equal(
    stored: Mapping[str, str], wanted: Mapping[str, Any], types: Mapping[str, Callable[[Any], Any]]
) -> bool:
    """Compare parameters as typed values (1 == 1.0 for a float), not as strings."""
    for name, value in wanted.items():
        if name not in stored:
            return False
        convert = types.get(name, str)
        try:
            if convert(unquote(stored[name])) != convert(value):
                return False
        except (TypeError, ValueError):
            return False
    return True


def parse_force(force: str) -> set[str]:
    """`force` as a set of steps: '' or 'false' none, 'true' or 'all' every step, else a list."""
    text = force.strip().lower()
    if text in ("", "false", "none", "0"):
        return set()
    if text in ("true", "all", "1"):
        return set(STEPS)
    wanted = {part.strip() for part in text.split(",") if part.strip()}
    unknown = wanted - set(STEPS)
    if unknown:
        raise PipelineError(
            f"force names unknown step(s) {', '.join(sorted(unknown))}; use true, or a "
            f"comma-separated list of {', '.join(STEPS)}"
        )
    return wanted
