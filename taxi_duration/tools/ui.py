"""`make ui`: the MLflow UI on a tracking store, and the link that opens the pipeline's runs.

Prints the link to the experiment's runs table under "Model training" (MLflow 3 opens an
experiment on its GenAI overview otherwise), then becomes `mlflow ui` on the same store, host
and port. Arguments after `--` are passed to `mlflow ui` as they are (e.g. `-- --workers 1`).
"""

from __future__ import annotations

import os
import sys

import click

from taxi_duration.core.contracts import EXPERIMENT_NAME, runs_table_url
from taxi_duration.tracking import runs


def ui_lines(store_uri: str, experiment_id: str | None, ui_url: str, experiment: str) -> str:
    """What to tell the person before the UI starts."""
    if experiment_id is None:
        return (
            f"no experiment {experiment!r} in {store_uri} yet: `make run` fills it; "
            f"the MLflow UI opens at {ui_url}"
        )
    return f"the pipeline's runs in the MLflow UI:\n  {runs_table_url(ui_url, experiment_id)}"


@click.command(help=__doc__, context_settings={"ignore_unknown_options": True})
@click.option("--backend-store-uri", default="sqlite:///mlflow.db", show_default=True)
@click.option("--experiment-name", default=EXPERIMENT_NAME, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=5000, show_default=True)
@click.argument("mlflow_ui_args", nargs=-1, type=click.UNPROCESSED)
def main(
    backend_store_uri: str,
    experiment_name: str,
    host: str,
    port: int,
    mlflow_ui_args: tuple[str, ...],
) -> None:
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    experiment_id = runs.experiment_id_in(backend_store_uri, experiment_name)
    print(
        ui_lines(backend_store_uri, experiment_id, f"http://{shown_host}:{port}", experiment_name),
        flush=True,
    )
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", backend_store_uri]
    command += ["--host", host, "--port", str(port), *mlflow_ui_args]
    os.execv(sys.executable, command)


if __name__ == "__main__":
    main()
