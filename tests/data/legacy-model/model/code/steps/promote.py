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

from steps import registry, runs
from steps.cli import exits_cleanly
from steps.config import check_model_name
from steps.contracts import CHAMPION, CHAMPION_AFTER_TAG, MODEL_NAME, PROMOTE, PROMOTION_FILE
from steps.errors import PipelineError
from steps.history import ChampionMove, previous_champion

PREVIOUS = "previous"


def check_reason(reason: str) -> str:
    """The reason, stripped; an empty one is refused (a rollback must say why)."""
    text = " ".join(reason.split())
    if not text:
        raise PipelineError(
            "reason is empty; say why champion moves, e.g. -P reason='v7 overestimates "
            "airport trips since 2023-03'"
        )
    return text


def choose_version(requested: str, current: str | None, history: list[ChampionMove]) -> str:
    """The version `requested` names: a number as given, or `previous` from the history."""
    text = requested.strip().lower()
    if text == PREVIOUS:
        found = previous_champion(history, current)
        if found is None:
            where = f"v{current} is the only champion it has had" if current else "no champion yet"
            raise PipelineError(
                f"there is no previous champion to go back to ({where}); pass a version number"
            )
        return found
    if not text.isdigit() or int(text) < 1:
        raise PipelineError(
            f"version must be a version number like 3, or '{PREVIOUS}', got {requested!r}"
        )
    return str(int(text))


def came_from(move: ChampionMove) -> str:
    return "no champion" if move.previous == "none" else f"v{move.previous}"


def describe(model_name: str, move: ChampionMove, asked: str) -> str:
    """The promote run's description (markdown, shown at the top of its page in the UI)."""
    how = " (the previous champion)" if asked.strip().lower() == PREVIOUS else ""
    return (
        f"**`{model_name}@{CHAMPION}` moved from {came_from(move)} to v{move.version}**{how}\n\n"
        f"- by {move.by}, at {move.at}\n"
        f"- why: {move.reason}\n\n"
        f"Load it with `mlflow.pyfunc.load_model('models:/{model_name}@{CHAMPION}')`; the "
        f"registered model's `champion_history.*` tags list every move."
    )


def move_champion(model_name: str, version: str, reason: str, by: str, run_id: str) -> ChampionMove:
    """Check the request against the registry, move `champion` and record the move."""
    check_model_name(model_name)
    why = check_reason(reason)
    if registry.model_tags(model_name) is None:
        raise PipelineError(
            f"there is no registered model {model_name!r} in {runs.tracking_uri()}; "
            "pass --model-name of a model that register created"
        )
    # Under the lock, the champion and its history cannot change between reading and moving.
    with registry.champion_lock(model_name, f"{PROMOTE} by {by}"):
        current = registry.alias_target(model_name, CHAMPION)
        target = choose_version(version, current, registry.champion_history(model_name))
        if registry.live_version(model_name, target) is None:
            raise PipelineError(
                f"model {model_name!r} has no version {target} (never registered, or deleted); "
                f"pass one of its versions: {', '.join(registry.version_numbers(model_name))}"
            )
        if target == current:
            raise PipelineError(
                f"v{target} already is the champion of {model_name!r}; pass another version"
            )
        return registry.move_champion(model_name, target, current, by, PROMOTE, run_id, why)


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
        runs.set_description(describe(model_name, move, version))
        print(
            f"promote: runs:/{run.info.run_id} {model_name} {CHAMPION} "
            f"{came_from(move)} -> v{move.version}: {move.reason}"
        )


if __name__ == "__main__":
    main()
