"""Real servers on 127.0.0.1 for the remote tests, started and stopped by the tests.

PostgreSQL 15 (a private cluster as user postgres), S3 (moto_server), `mlflow server` and
`git daemon`, each on a free port, each a process group killed at teardown. The `mlflow server`
command line and environment are the ones of docker/compose.yaml's `mlflow` service, with its
${VARS} filled in and its service names (postgres:5432, minio:9000) mapped to the local ports,
so a passing test proves the compose file's server command works.
"""

from __future__ import annotations

import configparser
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import psycopg2
import requests
import yaml

from tests.conftest import BIN_DIR, PROJECT_DIR

COMPOSE_FILE = PROJECT_DIR / "docker" / "compose.yaml"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
GIT_DAEMON = Path("/usr/lib/git-core/git-daemon")
HOST = "127.0.0.1"
REGION = "us-east-1"
ADMIN = "admin"

# Modes of `mlflow server`: the compose file's (proxied artifacts), direct S3 access by clients,
# and basic auth on top of the proxied mode.
PROXIED, DIRECT, AUTH = "proxied", "direct", "auth"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def new_secret(prefix: str) -> str:
    """A distinct random secret, easy to search for in logged data."""
    return f"{prefix}-{secrets.token_hex(12)}"


class Process:
    """A server in its own process group, its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                argv,
                env=dict(env),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.is_file() else ""

    def stop(self) -> None:
        """SIGTERM to the whole group, SIGKILL if it lingers."""
        if self.popen.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.popen.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue


def wait_until(ready: Any, what: str, process: Process | None = None, timeout: float = 90) -> None:
    """Poll `ready()` until true; fail early if `process` died, with its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and not process.alive():
            raise RuntimeError(f"{what} exited early:\n{process.log_tail()}")
        try:
            if ready():
                return
        except (OSError, requests.RequestException):
            pass
        time.sleep(0.5)
    tail = process.log_tail() if process else ""
    raise RuntimeError(f"{what} not ready after {timeout:.0f} s\n{tail}")


# --- PostgreSQL -------------------------------------------------------------------------------


class Postgres:
    """A private PostgreSQL 15 cluster on 127.0.0.1, password auth over TCP as in the compose
    file's postgres image (so the server's PGPASSWORD is really used). PostgreSQL refuses to run
    as root: as root, the cluster belongs to user postgres."""

    user = "postgres"

    def __init__(self) -> None:
        self.port = free_port()
        self.password = new_secret("pg")
        # Under /tmp itself: pytest's temp folders are private to root, user postgres cannot
        # enter them.
        self.root = Path(tempfile.mkdtemp(prefix="nyc-taxi-pg-"))
        self.data = self.root / "data"

    def _as_postgres(self, *argv: str) -> None:
        as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*as_user, *argv], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(argv[0]).name} failed:\n{done.stdout}{done.stderr}")

    def start(self) -> Postgres:
        if not (PG_BIN / "initdb").is_file():
            raise RuntimeError(f"no PostgreSQL 15 in {PG_BIN}: apt-get install postgresql-15")
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        self._as_postgres(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-U",
            self.user,
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            f"--pwfile={pwfile}",
        )
        options = f"-p {self.port} -k {self.root} -c listen_addresses={HOST}"
        self._as_postgres(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "postgres.log"),
            "-w",
            "start",
        )
        return self

    def create_database(self, name: str) -> None:
        connection = psycopg2.connect(
            host=HOST, port=self.port, user=self.user, password=self.password, dbname="postgres"
        )
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()

    def uri(self, database: str) -> str:
        """The SQLAlchemy URI without the password (the server gets PGPASSWORD)."""
        return f"postgresql+psycopg2://{self.user}@{HOST}:{self.port}/{database}"

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


# --- S3 (moto) --------------------------------------------------------------------------------


class S3:
    """moto's S3 server on 127.0.0.1; buckets live in memory."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://{HOST}:{self.port}"
        self.access_key = "testing"
        self.secret_key = new_secret("s3")
        self.process = Process(
            "moto_server",
            [str(BIN_DIR / "moto_server"), "-H", HOST, "-p", str(self.port)],
            os.environ,
            log_dir / "moto.log",
        )
        wait_until(lambda: requests.get(self.endpoint, timeout=2).ok, "moto_server", self.process)

    def client_env(self) -> dict[str, str]:
        """What a process that talks to this S3 directly needs."""
        return {
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": REGION,
        }

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=REGION,
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def keys(self, bucket: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def read(self, bucket: str, key: str) -> bytes:
        return bytes(self.client().get_object(Bucket=bucket, Key=key)["Body"].read())

    def stop(self) -> None:
        self.process.stop()


# --- the compose file's mlflow service --------------------------------------------------------

_VAR = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")


def substitute(text: str, values: Mapping[str, str]) -> str:
    """Compose's interpolation: ${VAR}, ${VAR:-default}, ${VAR:?error}; $$ is a literal $."""

    def one(match: re.Match[str]) -> str:
        name, kind, arg = match.groups()
        if values.get(name):
            return values[name]
        if kind == "-":
            return arg
        raise KeyError(f"compose.yaml needs ${{{name}}}, which the test did not set")

    return _VAR.sub(one, text).replace("$$", "$")


def compose_variables(text: str) -> set[str]:
    """Every ${VAR} a compose text reads (not $$VAR, which the container's shell expands)."""
    return {m.group(1) for m in _VAR.finditer(text.replace("$$", ""))}


def compose_service(name: str) -> dict[str, Any]:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    return dict(compose["services"][name])


def server_command(
    values: Mapping[str, str], addresses: Mapping[str, str], flags: Mapping[str, str]
) -> tuple[list[str], dict[str, str]]:
    """The compose file's `mlflow server` argv and environment, with its ${VARS} from `values`,
    service addresses (`postgres:5432`) replaced by `addresses`, and flag values replaced or
    added from `flags` (--host, --port, --workers)."""
    service = compose_service("mlflow")

    def local(text: str) -> str:
        text = substitute(str(text), values)
        for service_address, address in addresses.items():
            text = text.replace(service_address, address)
        return text

    argv = [local(arg) for arg in service["command"]]
    env = {key: local(value) for key, value in service["environment"].items()}
    for flag, value in flags.items():
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    return argv, env


# --- mlflow server ----------------------------------------------------------------------------


class MlflowServer:
    """`mlflow server` as docker/compose.yaml runs it, in one of three modes.

    proxied: the compose command as is; the server holds the S3 credentials, clients need only
    the tracking URI. direct: --default-artifact-root instead of --artifacts-destination and
    --no-serve-artifacts; clients also need the S3 endpoint and credentials. auth: proxied plus
    --app-name basic-auth, users in their own database; clients need a username and password.
    """

    def __init__(
        self,
        mode: str,
        postgres: Postgres,
        s3: S3,
        workdir: Path,
        name: str | None = None,
        workers: int = 1,
    ) -> None:
        self.mode = mode
        self.s3 = s3
        self.port = free_port()
        self.uri = f"http://{HOST}:{self.port}"
        self.bucket = f"mlflow-{name or mode}"
        self.database = f"mlflow_{(name or mode).replace('-', '_')}"
        self.admin_password = new_secret("admin") if mode == AUTH else ""
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        postgres.create_database(self.database)
        s3.create_bucket(self.bucket)
        values = {
            "POSTGRES_USER": postgres.user,
            "POSTGRES_PASSWORD": postgres.password,
            "POSTGRES_DB": self.database,
            "MINIO_ROOT_USER": s3.access_key,
            "MINIO_ROOT_PASSWORD": s3.secret_key,
            "MLFLOW_BUCKET": self.bucket,
            "MLFLOW_ALLOWED_HOSTS": f"{HOST}:{self.port}",
        }
        addresses = {"postgres:5432": f"{HOST}:{postgres.port}", "minio:9000": f"{HOST}:{s3.port}"}
        flags = {"--host": HOST, "--port": str(self.port), "--workers": str(workers)}
        argv, server_env = server_command(values, addresses, flags)
        self.compose_argv = list(argv)
        self.artifact_root = argv[argv.index("--artifacts-destination") + 1]
        if mode == DIRECT:
            at = argv.index("--artifacts-destination")
            argv[at : at + 2] = ["--default-artifact-root", argv[at + 1], "--no-serve-artifacts"]
        if mode == AUTH:
            argv += ["--app-name", "basic-auth"]
            server_env |= self._auth_env(postgres)
        assert argv[:2] == ["mlflow", "server"], argv
        self.argv = [str(BIN_DIR / "mlflow"), *argv[1:]]
        env = {k: v for k, v in os.environ.items() if not _is_client_setting(k)}
        self.env = env | server_env
        self.process = Process(
            f"mlflow server ({mode})", self.argv, self.env, workdir / "server.log"
        )

    def _auth_env(self, postgres: Postgres) -> dict[str, str]:
        database = f"{self.database}_users"
        postgres.create_database(database)
        config = configparser.ConfigParser()
        config["mlflow"] = {
            "default_permission": "READ",
            "database_uri": postgres.uri(database),
            "admin_username": ADMIN,
            "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
            # Without the cache every request pays a PBKDF2 check (about 1 s on 2 cores).
            "auth_cache_ttl_seconds": "300",
        }
        path = self.workdir / "basic_auth.ini"
        with path.open("w") as out:
            config.write(out)
        return {
            "MLFLOW_AUTH_CONFIG_PATH": str(path),
            "MLFLOW_AUTH_ADMIN_PASSWORD": self.admin_password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": new_secret("flask"),
        }

    @property
    def admin(self) -> tuple[str, str] | None:
        return (ADMIN, self.admin_password) if self.mode == AUTH else None

    def wait_ready(self, timeout: float = 120) -> MlflowServer:
        """Ready when the REST API answers (not /health, which skips Host checks and auth)."""

        def api_answers() -> bool:
            response = requests.get(
                f"{self.uri}/api/2.0/mlflow/experiments/search",
                params={"max_results": 1},
                auth=self.admin,
                timeout=5,
            )
            return response.status_code == 200

        wait_until(api_answers, self.process.name, self.process, timeout)
        return self

    def client_env(self, **credentials: str) -> dict[str, str]:
        """What a client needs in this mode: the tracking URI, plus S3 access when direct."""
        env = {"MLFLOW_TRACKING_URI": self.uri}
        if self.mode == DIRECT:
            env |= self.s3.client_env()
        return env | credentials

    def create_user(self, username: str, password: str) -> None:
        response = requests.post(
            f"{self.uri}/api/2.0/mlflow/users/create",
            json={"username": username, "password": password},
            auth=self.admin,
            timeout=10,
        )
        response.raise_for_status()

    def stop(self) -> None:
        self.process.stop()

    def restart(self) -> MlflowServer:
        """Start the same server again (same port, database and bucket) after stop()."""
        self.process = Process(
            self.process.name, self.argv, self.env, self.workdir / "server-restarted.log"
        )
        return self.wait_ready()


def _is_client_setting(name: str) -> bool:
    """Variables the test process may carry that must not leak into a server's environment."""
    return name.startswith(("AWS_", "MLFLOW_TRACKING_", "MLFLOW_S3_")) or name == "PGPASSWORD"


# --- git daemon -------------------------------------------------------------------------------


@contextmanager
def git_daemon(base_path: Path, log_dir: Path) -> Iterator[str]:
    """Serve every repository under `base_path` read-only at git://127.0.0.1:PORT/."""
    port = free_port()
    process = Process(
        "git daemon",
        [
            str(GIT_DAEMON),
            "--export-all",
            f"--base-path={base_path}",
            "--reuseaddr",
            f"--listen={HOST}",
            f"--port={port}",
        ],
        os.environ,
        log_dir / "git-daemon.log",
    )

    def listening() -> bool:
        with socket.create_connection((HOST, port), timeout=1):
            return True

    try:
        wait_until(listening, "git daemon", process, timeout=30)
        yield f"git://{HOST}:{port}"
    finally:
        process.stop()
