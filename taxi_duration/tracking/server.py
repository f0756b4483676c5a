"""Fail fast on a tracking server that cannot work: one request, a short timeout, one clear line.

Without this, MLflow retries an unreachable server for minutes, and a server that rejects the
Host header (a VM reached by its public address, started without --allowed-hosts) or a missing
login is only discovered after the download. `check_tracking_server` runs once in the
`mlflow run` process before its first request (plugins.py) and again at the start of every
step (runs.py). Plain HTTP through `requests`: this module does not import MLflow.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

import requests

from taxi_duration.core.errors import PipelineError

TIMEOUT_SECONDS = 10
HOST_REJECTED = "Invalid Host header"


def check_tracking_server(uri: str) -> None:
    """Raise PipelineError unless an http(s) tracking server at `uri` answers an API call.

    Other stores (sqlite, postgresql, databricks) are left to MLflow.
    """
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return
    host = parsed.netloc.rsplit("@", 1)[-1]
    try:
        response = requests.post(
            f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search",
            json={"max_results": 1},
            auth=_auth(),
            headers=_bearer(),
            timeout=TIMEOUT_SECONDS,
            verify=_verify(),
        )
    except requests.RequestException as exc:
        reason = type(exc).__name__
        raise PipelineError(
            f"cannot reach the tracking server at {redact(uri)} ({reason}); check "
            "MLFLOW_TRACKING_URI, that `mlflow server` runs there, and that the firewall or "
            "security group opens "
            f"port {parsed.port or (443 if parsed.scheme == 'https' else 80)}"
        ) from None
    if response.ok:
        return
    status = response.status_code
    if status == 403 and HOST_REJECTED in response.text:
        raise PipelineError(
            f"the tracking server at {redact(uri)} rejected the Host header {host!r} (HTTP 403); "
            f"start it with --allowed-hosts '{host}' (or list every name clients use)"
        )
    if status == 401:
        raise PipelineError(
            f"the tracking server at {redact(uri)} requires a login (HTTP 401); set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
            + (" (the ones set were refused)" if os.environ.get("MLFLOW_TRACKING_USERNAME") else "")
        )
    if status == 403:
        raise PipelineError(
            f"the tracking server at {redact(uri)} refused user "
            f"{os.environ.get('MLFLOW_TRACKING_USERNAME', '?')!r} (HTTP 403); ask its admin for "
            "access or use another account"
        )
    raise PipelineError(
        f"the tracking server at {redact(uri)} answered HTTP {status} to an API call; check that "
        "MLFLOW_TRACKING_URI points at an MLflow tracking server"
    )


def redact(uri: str) -> str:
    """`uri` without a password (http://user:secret@host -> http://user:***@host)."""
    parsed = urlparse(uri)
    if parsed.password is None:
        return uri
    netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@")
    return parsed._replace(netloc=netloc).geturl()


def lost_server_message(exc: BaseException, uri: str) -> str | None:
    """One line for an MLflow call that gave up on the tracking server mid-step, else None."""
    text = str(exc)
    # "... failed with exception <connection error>" is MLflow giving up on the network;
    # "... failed with error code 403" is an answer, not a lost server.
    if not (" failed with exception " in text or isinstance(exc, requests.ConnectionError)):
        return None
    cause = text.split(" failed with exception ", 1)[-1].split(" (Caused by", 1)[0]
    return (
        f"lost the tracking server at {redact(uri)} after MLflow's retries ({cause[:160]}); "
        "nothing after that point was recorded: rerun main once the server is back "
        "(finished steps are reused)"
    )


WRITE_PERMISSIONS = ("EDIT", "MANAGE")


def check_can_write(uri: str, experiment_id: str, experiment_name: str) -> None:
    """Raise PipelineError if a basic-auth server lets the logged-in user only read the
    experiment (MLflow would otherwise fail at its first write, with a traceback).

    Servers without basic auth do not answer the permission API; they are left to MLflow.
    """
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if urlparse(uri).scheme not in ("http", "https") or not user:
        return
    try:
        response = requests.get(
            f"{uri.rstrip('/')}/api/3.0/mlflow/users/permissions/get",
            params={"username": user, "resource_type": "experiment", "resource_id": experiment_id},
            auth=_auth(),
            headers=_bearer(),
            timeout=TIMEOUT_SECONDS,
            verify=_verify(),
        )
    except requests.RequestException:
        return
    if not response.ok:
        return
    permission = str(response.json().get("permission", ""))
    if permission not in WRITE_PERMISSIONS:
        raise PipelineError(
            f"user {user!r} may not write to experiment {experiment_name!r} (id {experiment_id}) "
            f"at {redact(uri)}: permission {permission} (HTTP 403 on write); ask its owner or an "
            "admin for EDIT, or pass --experiment-name with a new experiment"
        )


def _auth() -> tuple[str, str] | None:
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    return (user, password) if user and password else None


def _bearer() -> dict[str, str]:
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def _verify() -> bool | str:
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        return False
    return os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or True
