"""docker/: the pipeline image and the tracking stack's compose file, checked as files.
tests/docker builds both images and runs them; tests/integration/test_remote.py runs the compose
file's `mlflow server` command line with the venv's MLflow."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import tomllib
import yaml

from tests.integration.servers import compose_variables, server_command, substitute

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE_TEXT = (DOCKER / "compose.yaml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
SERVICES = COMPOSE["services"]
MLFLOW_PORT = "5000"


def env_example() -> dict[str, str]:
    pairs = {}
    for line in (DOCKER / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def dockerfile(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = (DOCKER / name).read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    instructions = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            instructions.append((keyword.upper(), " ".join(args.split())))
    return instructions


def flags(argv: list[str]) -> dict[str, str]:
    """`--flag value` pairs of a command line."""
    return {arg: argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg.startswith("--")}


def test_compose_has_the_tracking_stack_services():
    assert set(SERVICES) == {"postgres", "minio", "minio-init", "mlflow"}
    assert SERVICES["postgres"]["image"].startswith("postgres:15")
    assert SERVICES["mlflow"]["build"]["dockerfile"] == "mlflow-server.Dockerfile"
    depends = SERVICES["mlflow"]["depends_on"]
    assert depends["postgres"]["condition"] == "service_healthy"
    assert depends["minio-init"]["condition"] == "service_completed_successfully"


def test_every_build_in_compose_has_its_context_and_dockerfile():
    builds = {name: s["build"] for name, s in SERVICES.items() if "build" in s}
    assert set(builds) == {"mlflow"}
    for build in builds.values():
        assert (DOCKER / build["context"] / build["dockerfile"]).is_file(), build


def test_compose_tags_the_server_image_with_the_projects_mlflow():
    name, _, version = SERVICES["mlflow"]["image"].partition(":")
    assert name == "mlflow-server"
    assert f"mlflow=={version}" in project_dependencies()


def test_only_the_mlflow_port_is_published():
    assert SERVICES["mlflow"]["ports"] == [f"{MLFLOW_PORT}:{MLFLOW_PORT}"]
    for name, service in SERVICES.items():
        if name != "mlflow":
            assert "ports" not in service, name
        assert service.get("network_mode") != "host", name


@pytest.mark.parametrize(
    ("service", "path"), [("postgres", "/var/lib/postgresql/data"), ("minio", "/data")]
)
def test_data_lives_in_named_volumes(service, path):
    volume, _, mounted = SERVICES[service]["volumes"][0].partition(":")
    assert mounted == path
    assert volume in COMPOSE["volumes"]  # named, so `docker compose down` keeps it


def test_every_variable_comes_from_env_example_and_no_secret_is_written_in():
    example = env_example()
    used = compose_variables(COMPOSE_TEXT)
    assert used <= set(example), used - set(example)
    assert {"MLFLOW_ALLOWED_HOSTS", "POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD"} <= used
    for name, service in SERVICES.items():
        for key, value in (service.get("environment") or {}).items():
            if any(word in key for word in ("PASSWORD", "SECRET")):
                assert re.fullmatch(r"\$\{\w+\}", str(value)), (name, key, value)
    gitignored = (ROOT / ".gitignore").read_text().splitlines()
    assert ".env" in gitignored  # docker/.env, with the real secrets, is never committed


def test_bucket_is_created_by_the_one_shot_minio_client():
    init = SERVICES["minio-init"]
    assert init["image"].startswith("quay.io/minio/mc:")
    assert init["restart"] == "no"
    script = " ".join(init["command"])
    assert 'mc mb --ignore-existing "stack/$$MLFLOW_BUCKET"' in script
    assert init["environment"]["MLFLOW_BUCKET"] == "${MLFLOW_BUCKET}"


def test_mlflow_server_command_line():
    command = SERVICES["mlflow"]["command"]
    assert command[:2] == ["mlflow", "server"]
    given = flags(command)
    assert given["--backend-store-uri"] == (
        "postgresql+psycopg2://${POSTGRES_USER}@postgres:5432/${POSTGRES_DB}"
    )
    assert given["--artifacts-destination"] == "s3://${MLFLOW_BUCKET}/artifacts"
    assert given["--host"] == "0.0.0.0"
    assert given["--port"] == MLFLOW_PORT
    assert given["--allowed-hosts"] == "${MLFLOW_ALLOWED_HOSTS}"
    assert "--default-artifact-root" not in given and "--no-serve-artifacts" not in command
    env = SERVICES["mlflow"]["environment"]
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert env["PGPASSWORD"] == "${POSTGRES_PASSWORD}"
    assert env["AWS_SECRET_ACCESS_KEY"] == "${MINIO_ROOT_PASSWORD}"
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"


def test_server_command_fills_the_variables_and_maps_service_addresses():
    values = {key: f"<{key}>" for key in env_example()}
    argv, env = server_command(
        values, {"postgres:5432": "127.0.0.1:1111"}, {"--port": "2222", "--workers": "1"}
    )
    given = flags(argv)
    assert given["--backend-store-uri"] == (
        "postgresql+psycopg2://<POSTGRES_USER>@127.0.0.1:1111/<POSTGRES_DB>"
    )
    assert given["--port"] == "2222" and given["--workers"] == "1"
    assert given["--allowed-hosts"] == "<MLFLOW_ALLOWED_HOSTS>"
    assert env["PGPASSWORD"] == "<POSTGRES_PASSWORD>"
    with pytest.raises(KeyError, match="MLFLOW_ALLOWED_HOSTS"):
        substitute("--allowed-hosts ${MLFLOW_ALLOWED_HOSTS}", {})
    assert substitute("${A:-x} $$B", {}) == "x $B"


def project_dependencies() -> list[str]:
    return list(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])


@pytest.mark.parametrize("name", ["Dockerfile", "mlflow-server.Dockerfile"])
def test_base_image_is_an_argument_defaulting_to_the_official_python(name):
    instructions = dockerfile(name)
    assert instructions[:2] == [("ARG", "BASE_IMAGE=python:3.11-slim"), ("FROM", "${BASE_IMAGE}")]
    assert [keyword for keyword, _ in instructions].count("FROM") == 1


@pytest.mark.parametrize("name", ["Dockerfile", "mlflow-server.Dockerfile"])
def test_images_carry_no_machines_pip_trust(name):
    # A test machine's CA bundle and index settings belong to the base image the test passes.
    text = (DOCKER / name).read_text()
    for setting in ("pip.conf", "cert", "index-url", "trusted-host", "PIP_"):
        assert setting not in text, setting


def test_server_image_pins_the_projects_mlflow():
    mlflow_pin = next(d for d in project_dependencies() if d.startswith("mlflow=="))
    run = " ".join(
        args for keyword, args in dockerfile("mlflow-server.Dockerfile") if keyword == "RUN"
    )
    installed = shlex.split(run)
    assert mlflow_pin in installed
    assert any(p.startswith("psycopg2-binary") for p in installed)
    assert any(p.startswith("boto3") for p in installed)


def test_pipeline_image_installs_like_ci_and_runs_main():
    instructions = dockerfile("Dockerfile")
    runs = [args for keyword, args in instructions if keyword == "RUN"]
    assert any("apt-get install" in r and " make " in f"{r} " and " git" in r for r in runs)
    assert runs[-1] == "make install"
    assert "make install" in (ROOT / ".ci" / "run").read_text().splitlines()
    cmd = [args for keyword, args in instructions if keyword == "CMD"]
    assert json.loads(cmd[-1]) == [
        ".venv/bin/mlflow",
        "run",
        ".",
        "-e",
        "main",
        "--env-manager",
        "local",
    ]
    # Configured only by the environment at `docker run`: nothing baked in but the venv on PATH
    # (the steps' commands call `python`).
    baked = [args for keyword, args in instructions[2:] if keyword in ("ENV", "ARG")]
    assert baked == ['PATH="/app/.venv/bin:${PATH}"']


def test_pipeline_image_installs_the_dependencies_before_copying_the_code():
    # So an edit to the code reuses the dependencies' layer and reinstalls only the project.
    instructions = dockerfile("Dockerfile")
    copies = [i for i, (keyword, _) in enumerate(instructions) if keyword == "COPY"]
    assert [instructions[i][1] for i in copies] == ["pyproject.toml ./", ". ."]
    between = [args for keyword, args in instructions[copies[0] : copies[1]] if keyword == "RUN"]
    assert len(between) == 1 and "pyproject.toml" in between[0] and "pip install" in between[0]


def test_pipeline_image_leaves_local_state_and_secrets_out_of_the_context():
    ignored = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    assert {".venv", ".env", "**/.env", "mlflow.db", "mlruns", "data"} <= set(ignored)
