"""The project's contracts between files: MLproject <-> step CLIs, conda.yaml <-> pyproject."""

import importlib
from pathlib import Path

import click
import pytest
import tomllib
import yaml

from taxi_duration.core.contracts import (
    BACKTEST,
    MAIN,
    PROJECT_NAME,
    RETRAIN,
    STANDALONE,
    STEPS,
)
from taxi_duration.core.reuse import mlproject_types
from taxi_duration.tracking.plugins import (
    is_mlflow_run_command,
    names_this_project,
    runs_this_project,
)

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


def test_the_mlproject_is_named_as_the_plugins_know_it():
    assert MLPROJECT["name"] == PROJECT_NAME


def test_the_plugins_act_for_this_project_only(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "MLproject").write_text("name: other-team\nentry_points: {}\n")
    assert runs_this_project(["/venv/bin/mlflow", "run", str(ROOT), "-e", "main"])
    assert runs_this_project(["/venv/bin/mlflow", "run", "-e", "main", str(ROOT), "-P", "a=1"])
    assert not runs_this_project(["/venv/bin/mlflow", "run", str(other), "-e", "main"])
    assert not runs_this_project(["/venv/bin/mlflow", "run", str(tmp_path / "none")])
    assert not runs_this_project(["/venv/bin/mlflow", "ui"])
    assert names_this_project("https://github.com/org/nyc-taxi-duration.git")
    assert names_this_project("git://127.0.0.1:9418/nyc-taxi-duration")
    assert names_this_project("https://github.com/org/mono#projects/nyc-taxi-duration")
    assert not names_this_project("https://github.com/org/other-team.git")


@pytest.mark.parametrize("entry_point", [RETRAIN, BACKTEST])
def test_the_monthly_loop_passes_every_training_parameter_of_main_with_its_default(entry_point):
    main = MLPROJECT["entry_points"][MAIN]["parameters"]
    loop = MLPROJECT["entry_points"][entry_point]["parameters"]
    passed = set(main) - {"train_month", "val_month", "test_month", "force"}
    assert passed <= set(loop)
    for name in passed - {"model_name"}:  # backtest registers into models of its own
        assert loop[name] == main[name], name
