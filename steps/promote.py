"""promote: move the `champion` alias to a chosen version by hand (a rollback), in a run of its own.

Parameters: model_name; version (a version number, or `previous`: the champion before the
current one, read from the history the registry keeps); reason (free text, required: why).
The move is appended to the champion's history, which register also appends to: a
registered-model tag `champion_history.<time>.<id>` per move, and version tags
`champion_since` / `champion_until`. The run records who (MLFLOW_TRACKING_USERNAME, else the OS
user), when, why and from which version to which (tags from_version, to_version, moved_by,
moved_at), a description, and the artifact promotion.json.
Refused in one line, the run FAILED and the aliases unchanged: an unknown model, a version that
does not exist or was deleted, `previous` with no earlier champion, an empty reason, a version
that already is the champion.
"""

from __future__ import annotations

from dataclasses import asdict

import click

from taxi_duration.core.contracts import (
    CHAMPION,
    CHAMPION_AFTER_TAG,
    MODEL_NAME,
    PROMOTE,
    PROMOTION_FILE,
)
from taxi_duration.pipeline.champion import PREVIOUS, move_champion
from taxi_duration.pipeline.cli import exits_cleanly
from taxi_duration.pipeline.registry_notes import came_from, promotion_description
from taxi_duration.tracking import runs


@click.command(help=__doc__)
@click.option("--model-name", default=MODEL_NAME, show_default=True)
@click.option("--version", required=True, help=f"A version number, or '{PREVIOUS}'.")
@click.option("--reason", required=True, help="Why champion moves (free text).")
@exits_cleanly(PROMOTE)
def main(model_name: str, version: str, reason: str) -> None:
    with runs.step_run(PROMOTE) as run:
        runs.log_params({"model_name": model_name, "version": version, "reason": reason})
        move = move_champion(model_name, version, reason, runs.user(), run.info.run_id)
        record = {"model_name": model_name, "requested": version, **asdict(move)}
        runs.log_json(record, PROMOTION_FILE)
        runs.set_tags(
            {
                "model_name": model_name,
                "from_version": move.previous,
                "to_version": move.version,
                "moved_by": move.by,
                "moved_at": move.at,
                CHAMPION_AFTER_TAG: move.version,
            }
        )
        runs.set_description(promotion_description(model_name, move, version))
        print(
            f"promote: runs:/{run.info.run_id} {model_name} {CHAMPION} "
            f"{came_from(move)} -> v{move.version}: {move.reason}"
        )


if __name__ == "__main__":
    main()
