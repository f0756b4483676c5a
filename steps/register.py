"""register: register the trained model, alias it `challenger`, and move `champion` only if it wins.

Input: train_run (runs:/<id> of a train_best run). Parameters: model_name; min_improvement
(minutes, >= 0, default 0: how much lower than the champion's the candidate's test RMSE must be).
The new version is tagged with its metrics, data months, encoding and source run, and always
gets alias `challenger`. `champion` moves to it when there is no champion, or when its test RMSE
is lower than the champion's on the same test month by at least min_improvement (re-scoring the
champion on this test month when it was tested on another), as MLflow's
validate_evaluation_results judges root_mean_squared_error. Never uses stages. Every move of
`champion` is appended to the champion's history in the registry (see promote).
Descriptions (markdown, in the MLflow UI): the registered model's, when it has none (what it
predicts, its inputs, how to load and serve it); the version's (its train_best run, data,
RMSEs, why it became champion or not); the register run's (the comparison).
Artifact: registration.json (what was registered, what was compared, with the threshold and
both RMSEs, and why the champion moved or stayed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import click
import pandas as pd

from steps import features, model, registry, runs
from steps.cli import exits_cleanly
from steps.config import check_min_improvement, check_model_name
from steps.contracts import (
    CHALLENGER,
    CHAMPION,
    CHAMPION_AFTER_TAG,
    CHAMPION_HISTORY_PREFIX,
    CHAMPION_MOVE_TAG,
    CHAMPION_SINCE_TAG,
    CHAMPION_UNTIL_TAG,
    COURSE_FEATURES,
    DISTANCE,
    DO,
    FEATURIZE,
    MODEL_NAME,
    MODEL_URI_TAG,
    PICKUP,
    PICKUP_ALIASES,
    PU,
    REGISTER,
    REGISTRATION_FILE,
    RMSE_METRIC,
    SCORING_COLUMNS,
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
    """Whether the candidate becomes champion, the sentence that says why, and what MLflow's
    validate_evaluation_results answered ("" when nothing was compared)."""

    promote: bool
    reason: str
    validation: str = ""


def decide_champion(
    candidate_rmse: float,
    incumbent: Incumbent | None,
    candidate_version: str | None = None,
    min_improvement: float = 0.0,
) -> Decision:
    """Promote when there is no champion, or when the candidate's test RMSE is lower than the
    champion's by at least `min_improvement` minutes (0: strictly lower), as MLflow's
    validate_evaluation_results judges it.

    `candidate_version` is set when the candidate is already registered (a rerun of register).
    """
    if incumbent is None:
        return Decision(True, "no champion yet")
    if candidate_version == incumbent.version:
        return Decision(True, f"v{incumbent.version} is already the champion")
    shortfall = model.improvement_shortfall(candidate_rmse, incumbent.test_rmse, min_improvement)
    compared = (
        f"champion v{incumbent.version}'s {incumbent.test_rmse:.4f} ({incumbent.how})"
        f"{f' by min_improvement {min_improvement:g}' if min_improvement > 0 else ''}"
    )
    if shortfall is None:
        return Decision(
            True,
            f"test RMSE {candidate_rmse:.4f} beats {compared}",
            f"{RMSE_METRIC} passed",
        )
    return Decision(
        False,
        f"test RMSE {candidate_rmse:.4f} does not beat {compared}; champion stays",
        shortfall,
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
    predictions = loaded.predict(test_trips[list(SCORING_COLUMNS)])
    rmse = features.rmse(test_trips[TARGET].to_numpy(), predictions)
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
    min_improvement: float = 0.0,
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
        decision = decide_champion(test_rmse, incumbent, number, min_improvement)
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
    min_improvement: float = 0.0,
    outcome_description: Callable[[Decision, Incumbent | None], str] | None = None,
    model_description: str = "",
) -> Published:
    """Register the model of `run_id` (once), alias it `challenger`, and settle `champion`;
    then describe the version with the outcome (`outcome_description`) and the registered
    model (`model_description`) if it has no description yet.

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
            model_name,
            number,
            test_rmse,
            data_tags,
            trips,
            mover or Mover(runs.user()),
            min_improvement,
        )
        if outcome_description is not None:
            registry.describe_version(model_name, number, outcome_description(decision, incumbent))
        if model_description:
            registry.describe_model_if_blank(model_name, model_description)
    except BaseException:
        if created:  # never leave a version without its aliases
            registry.withdraw_version(model_name, number)
        raise
    return Published(number, created, decision, incumbent)


def incumbent_version(incumbent: Incumbent | None) -> str:
    return incumbent.version if incumbent else "none"


# --- what a person reads: descriptions (markdown in the MLflow UI) and registration.json -----

# What each of the model's input columns (contracts.SCORING_COLUMNS) holds.
INPUT_MEANINGS: dict[str, str] = {
    PICKUP: (
        "pickup time, as a datetime or an ISO 8601 string (2021-03-01T08:15:00); also read as "
        f"{' or '.join(PICKUP_ALIASES[:2])}. Only versions trained with `features=time` (tag "
        "`features`) read it"
    ),
    PU: "pickup taxi zone, a TLC zone ID (1..265)",
    DO: "dropoff taxi zone, a TLC zone ID (1..265)",
    DISTANCE: "trip distance in miles, as the taximeter reports it",
}


@dataclass(frozen=True)
class Candidacy:
    """The train_best run a version comes from, and what it measured."""

    run_id: str
    experiment_id: str
    data_tags: Mapping[str, str]
    val_rmse: float
    test_rmse: float

    @property
    def run_link(self) -> str:
        """A markdown link to the run's page, relative to the MLflow UI's root."""
        page = f"#/experiments/{self.experiment_id}/runs/{self.run_id}"
        return f"[train_best run `{self.run_id}`]({page})"

    @property
    def data(self) -> str:
        tags = self.data_tags
        return (
            f"{tags.get('taxi', '?')} taxi trips: trained on {tags.get('train_month', '?')}, "
            f"validated on {tags.get('val_month', '?')}, tested on {tags.get('test_month', '?')}"
        )


def model_description(model_name: str) -> str:
    """The registered model's description: what it predicts, its inputs, how to use it."""
    uri = f"models:/{model_name}@{CHAMPION}"
    serve = "make serve" if model_name == MODEL_NAME else f"make serve MODEL_URI={uri}"
    rows = "\n".join(f"| `{c}` | {INPUT_MEANINGS.get(c, '')} |" for c in SCORING_COLUMNS)
    return f"""\
Predicts how long a New York City taxi trip takes, **in minutes**, from where it starts, where \
it ends, how far it goes and when it starts: XGBoost trained on the TLC trip records.

**Input**: raw trip records (a pandas DataFrame; JSON or CSV when served) with these columns; \
other columns, such as a whole TLC row, are ignored.

| column | what it holds |
|---|---|
{rows}

**Output**: the predicted duration in minutes, one number per record.

**Aliases**: `{CHAMPION}` is the version in use; `{CHALLENGER}` is the version registered last. \
Each version's description says why it became {CHAMPION} or not.

**Load it**: `mlflow.pyfunc.load_model('{uri}')`, then `.predict(trips)`.

**Serve it**: `{serve}` answers `POST /invocations` on http://127.0.0.1:5001.

**History**: every move of `{CHAMPION}` is a tag `{CHAMPION_HISTORY_PREFIX}*` of this model, and \
versions carry `{CHAMPION_SINCE_TAG}` / `{CHAMPION_UNTIL_TAG}`; `mlflow run . -e promote \
-P version=previous -P reason='...'` rolls back.
"""


def outcome(decision: Decision, incumbent: Incumbent | None) -> str:
    """One line: which version is champion after this register, and why."""
    if decision.promote:
        return f"**became {CHAMPION}**: {decision.reason}"
    return f"**{CHALLENGER}; v{incumbent_version(incumbent)} stays {CHAMPION}**: {decision.reason}"


def version_description(
    candidacy: Candidacy,
    decision: Decision | None = None,
    incumbent: Incumbent | None = None,
) -> str:
    """A version's description: which run, which data, its RMSEs, and (once decided) why it
    became champion or not."""
    lines = [
        f"XGBoost retrained by {candidacy.run_link} on {candidacy.data}.",
        "",
        f"- validation RMSE: {candidacy.val_rmse:.3f} minutes",
        f"- test RMSE: **{candidacy.test_rmse:.3f} minutes**",
    ]
    if decision is not None:
        lines.append(f"- {outcome(decision, incumbent)}")
    return "\n".join(lines) + "\n"


def comparison(
    candidacy: Candidacy,
    number: str,
    incumbent: Incumbent | None,
    min_improvement: float,
    decision: Decision,
) -> dict[str, Any]:
    """What the gate compared, for registration.json: the metric, the threshold, both RMSEs."""
    return {
        "metric": RMSE_METRIC,
        "test_month": candidacy.data_tags.get("test_month"),
        "taxi": candidacy.data_tags.get("taxi"),
        "min_improvement": min_improvement,
        "candidate": {"version": number, "test_rmse": candidacy.test_rmse},
        "champion": (
            None
            if incumbent is None
            else {
                "version": incumbent.version,
                "test_rmse": incumbent.test_rmse,
                "how": incumbent.how,
            }
        ),
        "validation": decision.validation,
    }


def run_description(
    model_name: str,
    number: str,
    candidacy: Candidacy,
    decision: Decision,
    incumbent: Incumbent | None,
    min_improvement: float,
) -> str:
    """The register run's description: what was registered, compared, and decided."""
    month = candidacy.data_tags.get("test_month", "?")
    rows = [f"| candidate | v{number} | {candidacy.test_rmse:.4f} |"]
    if incumbent is not None and incumbent.version != number:
        rows.append(
            f"| {CHAMPION} | v{incumbent.version} | {incumbent.test_rmse:.4f} ({incumbent.how}) |"
        )
    rule = (
        f"lower than the {CHAMPION}'s by at least **{min_improvement:g} minutes**"
        if min_improvement > 0
        else f"lower than the {CHAMPION}'s"
    )
    table = "\n".join(rows)
    return f"""\
Registered `{model_name}` **v{number}** from {candidacy.run_link}: \
{outcome(decision, incumbent)}

| | version | test RMSE on {month} |
|---|---|---|
{table}

The candidate becomes {CHAMPION} when its test RMSE is {rule} \
(`mlflow.validate_evaluation_results` on `{RMSE_METRIC}`, min_improvement={min_improvement:g}).

Load the {CHAMPION} with `mlflow.pyfunc.load_model('models:/{model_name}@{CHAMPION}')`.
"""


@click.command(help=__doc__)
@click.option("--train-run", required=True, help="runs:/<id> of a train_best run.")
@click.option("--model-name", default=MODEL_NAME, show_default=True)
@click.option(
    "--min-improvement",
    type=float,
    default=0.0,
    show_default=True,
    help="Minutes of test RMSE the candidate must gain over the champion to replace it.",
)
@exits_cleanly(REGISTER)
def main(train_run: str, model_name: str, min_improvement: float) -> None:
    check_model_name(model_name)
    with runs.step_run(REGISTER) as run:
        runs.log_params(
            {"train_run": train_run, "model_name": model_name, "min_improvement": min_improvement}
        )
        check_min_improvement(min_improvement)
        trained = runs.read_upstream(REGISTER, train_run)
        featurize = runs.lineage(trained)[FEATURIZE]
        test_path = runs.download(featurize.info.run_id, trips_split_path("test"))
        test_trips = pd.read_parquet(test_path)
        data_tags = runs.data_tags(trained)
        test_rmse = trained.data.metrics["test_rmse"]

        version_tags = {
            **data_tags,
            "encoding": trained.data.tags.get("encoding", ""),
            "features": trained.data.tags.get("features", COURSE_FEATURES),
            "test_rmse": f"{test_rmse:.6f}",
            "val_rmse": f"{trained.data.metrics['val_rmse']:.6f}",
            "source_run": trained.info.run_id,
        }
        candidacy = Candidacy(
            trained.info.run_id,
            trained.info.experiment_id,
            data_tags,
            trained.data.metrics["val_rmse"],
            test_rmse,
        )
        published = publish(
            model_name,
            trained.data.tags[MODEL_URI_TAG],
            trained.info.run_id,
            test_rmse,
            data_tags,
            version_tags,
            version_description(candidacy),
            test_trips,
            Mover(runs.user(), run.info.run_id),
            min_improvement,
            outcome_description=lambda decision, incumbent: version_description(
                candidacy, decision, incumbent
            ),
            model_description=model_description(model_name),
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
            "comparison": comparison(candidacy, number, incumbent, min_improvement, decision),
        }
        runs.log_json(record, REGISTRATION_FILE)
        runs.log_metrics({"model_version": int(number), "promoted": int(decision.promote)})
        champion_after = number if decision.promote else incumbent_version(incumbent)
        runs.set_tags(
            {
                "model_name": model_name,
                "model_version": number,
                CHAMPION_AFTER_TAG: champion_after,
                CHAMPION_MOVE_TAG: registry.last_champion_move(model_name),
                **data_tags,
            }
        )
        runs.set_description(
            run_description(model_name, number, candidacy, decision, incumbent, min_improvement)
        )
        print(
            f"register: runs:/{run.info.run_id} {model_name} v{number} "
            f"aliases {', '.join(aliases)}: {decision.reason}"
        )


if __name__ == "__main__":
    main()
