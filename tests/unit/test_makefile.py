"""The Makefile installs what each command needs, and runs the venv's programs by path (so no
target needs an activated venv). Read as text; the targets themselves run in
tests/integration/test_make.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]
MAKEFILE = (ROOT / "Makefile").read_text()
EXTRAS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
TEST_TOOLS = ("pytest", "moto", "psycopg2", "pyspark", "playwright", "ruff", "mypy")


def rule(target: str) -> tuple[list[str], list[str]]:
    """(prerequisites, recipe lines) of a Makefile rule."""
    match = re.search(
        rf"^{re.escape(target)}:([^\n#]*)(?:##[^\n]*)?\n((?:\t[^\n]*\n)*)", MAKEFILE, re.M
    )
    assert match, target
    return match.group(1).split(), [line.strip() for line in match.group(2).splitlines()]


def installs(target: str) -> list[str]:
    """The `pip install` arguments of a stamp rule."""
    _, recipe = rule(target)
    return [line.split("pip install --quiet ", 1)[1] for line in recipe if "pip install" in line]


def test_install_brings_the_pipeline_dependencies_only():
    assert installs("$(BIN)/.installed")[-1] == "-e ."
    for tool in TEST_TOOLS:
        assert not any(
            dep.startswith(tool)
            for dep in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
                "dependencies"
            ]
        ), tool


def test_the_test_and_spark_tools_are_extras_added_by_test_and_lint():
    assert installs("$(BIN)/.installed-test") == ["-e '.[test,spark]'"]
    assert installs("$(BIN)/.installed-dev") == ["-e '.[dev]'"]
    assert rule("test")[0] == ["$(BIN)/.installed-test"]
    assert rule("lint")[0] == ["$(BIN)/.installed-dev"]
    assert EXTRAS["spark"] == ["pyspark==4.3.0"]
    assert any(d.startswith("playwright") for d in EXTRAS["test"])


@pytest.mark.parametrize("target", ["run", "bench", "ui", "data"])
def test_pipeline_targets_need_only_the_install(target):
    assert rule(target)[0] == ["install"]


@pytest.mark.parametrize("target", ["run", "test", "lint", "bench", "ui", "data"])
def test_targets_run_the_venvs_programs_by_path(target):
    for line in rule(target)[1]:
        command = re.sub(r'^PATH="[^"]*"\s+', "", line)  # run puts the venv first on PATH
        assert command.startswith("$(BIN)/"), line
