"""register: register the trained model, alias it `challenger`, and move `champion` only if it wins.

Input: train_run (runs:/<id> of a train_best run). Parameter: model_name.
The new version is tagged with its metrics, data months, encoding and source run, and always
gets alias `challenger`. `champion` moves to it when its test RMSE beats the champion's on the
same test month (re-scoring the champion on this test month when it was tested on another),
or when there is no champion. Never uses stages. Every move of `champion` is appended to the
champion's history in the registry (see promote).
Artifact: registration.json (what was registered and why the champion moved or stayed).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import click
import pandas as pd

from steps import boosting, model, registry, runs
from steps.cli import exits_cleanly
from steps.config import check_model_name
from steps.contracts import (
    CHALLENGER,
    CHAMPION,
    CHAMPION_AFTER_TAG,
    FEATURIZE,
    MODEL_INPUT_COLUMNS,
    MODEL_NAME,
    MODEL_URI_TAG,
    REGISTER,
    REGISTRATION_FILE,
    TARGET,
    trips_split_path,
)
from steps.errors import PipelineError

# How many times the champion may move under a register's feet before it gives up.
SETTLE_ROUNDS = 10


@dataclass(frozen=True)
class Incumbent:
    """The current champion and its test RMSE on the candidate's test month."""

    version: str
    test_rmse: float
    how: str  # "tag" (same test month) or "rescored" (evaluated on this test month)


@dataclass(frozen=True)
class Decision:
    """Whether the candidate becomes champion, and the sentence that says why."""

    promote: bool
    reason: str


def decide_champion(
    candidate_rmse: float, incumbent: Incumbent | None, candidate_version: str | None = None
) -> Decision:
    """Promote when there is no champion or the candidate's test RMSE is strictly lower.

    `candidate_version` is set when the candidate is already registered (a rerun of register).
    """
    if incumbent is None:
        return Decision(True, "no champion yet")
    if candidate_version == incumbent.version:
        return Decision(True, f"v{incumbent.version} is already the champion")
    if candidate_rmse < incumbent.test_rmse:
        return Decision(
            True,
            f"test RMSE {candidate_rmse:.4f} beats champion v{incumbent.version}'s "
            f"{incumbent.test_rmse:.4f} ({incumbent.how})",
        )
    return Decision(
        False,
        f"test RMSE {candidate_rmse:.4f} does not beat champion v{incumbent.version}'s "
        f"{incumbent.test_rmse:.4f} ({incumbent.how}); champion stays",
    )


def incumbent_score(
    model_name: str, data_tags: dict[str, str], test_trips: pd.DataFrame
) -> Incumbent | None:
    """The champion's test RMSE on the same taxi and test month as the candidate, if any."""
    champion = registry.aliased_version(model_name, CHAMPION)
    if champion is None:
        return None
    tags = champion.tags
    same_data = all(tags.get(k) == data_tags.get(k) for k in ("taxi", "test_month"))
    if same_data and "test_rmse" in tags:
        tested_on = f"tested on {tags['test_month']}"
        return Incumbent(str(champion.version), float(tags["test_rmse"]), tested_on)
    loaded = model.load(f"models:/{model_name}/{champion.version}")
    predictions = loaded.predict(test_trips[list(MODEL_INPUT_COLUMNS)])
    rmse = boosting.rmse(test_trips[TARGET].to_numpy(), predictions)
    return Incumbent(str(champion.version), rmse, f"re-scored on {data_tags.get('test_month')}")


@dataclass(frozen=True)
class Mover:
    """Who moves `champion` from this register: the user and the register run (for the
    champion's history; the run is empty when publish is called outside a run)."""

    by: str
    run_id: str = ""

    @property
    def holder(self) -> str:
        return f"{REGISTER} run {self.run_id}" if self.run_id else f"{REGISTER} by {self.by}"


def settle_champion(
    model_name: str,
    number: str,
    test_rmse: float,
    data_tags: dict[str, str],
    test_trips: pd.DataFrame,
    mover: Mover,
) -> tuple[Decision, Incumbent | None]:
    """Move `champion` to version `number` if it beats the champion, safely against other
    registers (and promotes) at the same moment.

    The comparison can take seconds (re-scoring the champion on this test month), so it is made
    first; the move itself is made under the champion lock (registry.champion_lock), and only
    if the champion is still the one compared with. If it moved meanwhile, the new champion is
    compared in turn. Moves are thus one after the other, each replacing the champion it beat,
    so whatever the interleaving the best version stands. The move is appended to the
    champion's history.
    """
    for _ in range(SETTLE_ROUNDS):
        incumbent = incumbent_score(model_name, data_tags, test_trips)
        decision = decide_champion(test_rmse, incumbent, number)
        if not decision.promote or (incumbent is not None and incumbent.version == number):
            return decision, incumbent
        compared = incumbent.version if incumbent else None
        with registry.champion_lock(model_name, mover.holder):
            if registry.alias_target(model_name, CHAMPION) == compared:
                registry.move_champion(
                    model_name, number, compared, mover.by, REGISTER, mover.run_id, decision.reason
                )
                return decision, incumbent
    raise PipelineError(
        f"could not settle alias {CHAMPION!r} of model {model_name!r} for version {number}: "
        f"other registers kept moving it ({SETTLE_ROUNDS} rounds); run register again"
    )


@dataclass(frozen=True)
class Published:
    """What `publish` left in the registry: the version, whether it is new, the decision."""

    version: str
    created: bool
    decision: Decision
    incumbent: Incumbent | None

    @property
    def moved(self) -> bool:
        """Whether this call moved `champion` (not when it already was the champion)."""
        return self.decision.promote and incumbent_version(self.incumbent) != self.version


def publish(
    model_name: str,
    model_uri: str,
    run_id: str,
    test_rmse: float,
    data_tags: dict[str, str],
    version_tags: dict[str, str] | None = None,
    description: str = "",
    test_trips: pd.DataFrame | None = None,
    mover: Mover | None = None,
) -> Published:
    """Register the model of `run_id` (once), alias it `challenger`, and settle `champion`.

    Everything register does to the registry, in one call (the concurrency tests call it from
    many processes at once).
    """
    # settle_champion compares against the champion's test_rmse tag
    tags = {**data_tags, "test_rmse": f"{test_rmse:.6f}", **(version_tags or {})}
    number, created = registry.get_or_create_version(
        model_name, model_uri, run_id, tags, description
    )
    trips = test_trips if test_trips is not None else pd.DataFrame()
    try:
        registry.set_alias(model_name, CHALLENGER, number)
        decision, incumbent = settle_champion(
            model_name, number, test_rmse, data_tags, trips, mover or Mover(runs.user())
        )
    except BaseException:
        if created:  # never leave a version without its aliases
            registry.withdraw_version(model_name, number)
        raise
    return Published(number, created, decision, incumbent)


def incumbent_version(incumbent: Incumbent | None) -> str:
    return incumbent.version if incumbent else "none"


@click.command(help=__doc__)
@click.option("--train-run", required=True, help="runs:/<id> of a train_best run.")
@click.option("--model-name", default=MODEL_NAME, show_default=True)
@exits_cleanly(REGISTER)
def main(train_run: str, model_name: str) -> None:
    check_model_name(model_name)
    with runs.step_run(REGISTER) as run:
        runs.log_params({"train_run": train_run, "model_name": model_name})
        trained = runs.read_upstream(REGISTER, train_run)
        featurize = runs.lineage(trained)[FEATURIZE]
        test_path = runs.download(featurize.info.run_id, trips_split_path("test"))
        test_trips = pd.read_parquet(test_path)
        data_tags = runs.data_tags(trained)
        test_rmse = trained.data.metrics["test_rmse"]

        version_tags = {
            **data_tags,
            "encoding": trained.data.tags.get("encoding", ""),
            "test_rmse": f"{test_rmse:.6f}",
            "val_rmse": f"{trained.data.metrics['val_rmse']:.6f}",
            "source_run": trained.info.run_id,
        }
        description = (
            f"XGBoost trip duration; test RMSE {test_rmse:.3f} min on "
            f"{data_tags.get('taxi')} {data_tags.get('test_month')}"
        )
        published = publish(
            model_name,
            trained.data.tags[MODEL_URI_TAG],
            trained.info.run_id,
            test_rmse,
            data_tags,
            version_tags,
            description,
            test_trips,
            Mover(runs.user(), run.info.run_id),
        )
        number, created = published.version, published.created
        decision, incumbent = published.decision, published.incumbent
        aliases = [CHALLENGER] + ([CHAMPION] if decision.promote else [])
        record = {
            "model_name": model_name,
            "version": number,
            "aliases": aliases,
            "model_uri": f"models:/{model_name}@{CHAMPION if decision.promote else CHALLENGER}",
            "source_run": trained.info.run_id,
            "created": created,
            "tags": version_tags,
            **asdict(decision),
        }
        runs.log_json(record, REGISTRATION_FILE)
        runs.log_metrics({"model_version": int(number), "promoted": int(decision.promote)})
        champion_after = number if decision.promote else incumbent_version(incumbent)
        runs.set_tags(
            {
                "model_name": model_name,
                "model_version": number,
                CHAMPION_AFTER_TAG: champion_after,
                **data_tags,
            }
        )
        print(
            f"register: runs:/{run.info.run_id} {model_name} v{number} "
            f"aliases {', '.join(aliases)}: {decision.reason}"
        )


if __name__ == "__main__":
    main()
