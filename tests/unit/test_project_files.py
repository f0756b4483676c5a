"""The project's contracts between files: MLproject <-> step CLIs, conda.yaml <-> pyproject."""

import importlib
from pathlib import Path

import click
import pytest
import tomllib
import yaml

from taxi_duration.core.contracts import MAIN, STANDALONE, STEPS
from taxi_duration.core.reuse import mlproject_types
from taxi_duration.tracking.plugins import is_mlflow_run_command

ROOT = Path(__file__).resolve().parents[2]
MLPROJECT = yaml.safe_load((ROOT / "MLproject").read_text())


@pytest.mark.parametrize("entry_point", [*STEPS, *STANDALONE, MAIN])
def test_every_mlproject_parameter_is_an_option_of_its_module(entry_point):
    spec = MLPROJECT["entry_points"][entry_point]
    assert spec["command"].startswith(f"python -m steps.{entry_point} ")
    command = importlib.import_module(f"steps.{entry_point}").main
    options = {p.name for p in command.params}
    assert set(spec["parameters"]) == options
    for name in spec["parameters"]:
        assert f"--{name.replace('_', '-')} {{{name}}}" in spec["command"]


@pytest.mark.parametrize("entry_point", [*STEPS, *STANDALONE, MAIN])
def test_help_matches_mlproject(entry_point):
    """`python -m steps.<step> --help` shows every MLproject parameter, with MLproject's default,
    and (for the steps) the module docstring that --help prints names each of them."""
    spec = MLPROJECT["entry_points"][entry_point]["parameters"]
    module = importlib.import_module(f"steps.{entry_point}")
    types = mlproject_types(ROOT, entry_point)
    options = {p.name: p for p in module.main.params}
    help_text = module.main.get_help(click.Context(module.main))
    for name, declared in spec.items():
        assert f"--{name.replace('_', '-')}" in help_text, name
        if entry_point != MAIN:  # main's docstring says "every parameter of the steps"
            assert name in (module.__doc__ or ""), f"{entry_point} docstring lacks {name}"
        if isinstance(declared, dict) and "default" in declared:
            convert = types[name]
            assert convert(options[name].default) == convert(declared["default"]), name
        else:
            assert options[name].required, f"{name} has no MLproject default: make it required"


def test_main_exposes_every_step_parameter_except_the_run_uris():
    step_params = set()
    for step in STEPS:
        step_params |= set(MLPROJECT["entry_points"][step]["parameters"])
    run_uris = {"ingest_run", "features_run", "hpo_run", "train_run"}
    main_only = {"force"}
    assert set(MLPROJECT["entry_points"][MAIN]["parameters"]) == step_params - run_uris | main_only


def test_main_defaults_match_the_steps_defaults():
    main = MLPROJECT["entry_points"][MAIN]["parameters"]
    for step in STEPS:
        for name, spec in MLPROJECT["entry_points"][step]["parameters"].items():
            if isinstance(spec, dict) and "default" in spec:
                assert main[name]["default"] == spec["default"], name


def test_conda_env_and_pyproject_pin_the_same_packages():
    conda = yaml.safe_load((ROOT / "conda.yaml").read_text())
    pip_list = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict))
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert sorted(pip_list) == sorted(pyproject["project"]["dependencies"])


def test_experiment_provider_answers_only_inside_mlflow_run():
    assert is_mlflow_run_command(["/venv/bin/mlflow", "run", ".", "-e", "main"])
    assert not is_mlflow_run_command(["/venv/bin/mlflow", "ui"])
    assert not is_mlflow_run_command(["python", "-m", "steps.ingest"])
    assert not is_mlflow_run_command(["pytest"])
