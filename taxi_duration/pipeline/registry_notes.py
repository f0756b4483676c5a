"""What register and promote write for people (markdown in the MLflow UI, and
registration.json's comparison): the registered model's description, each version's, and the
register and promote runs'."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from taxi_duration.core.contracts import (
    CHALLENGER,
    CHAMPION,
    CHAMPION_HISTORY_PREFIX,
    CHAMPION_SINCE_TAG,
    CHAMPION_UNTIL_TAG,
    DISTANCE,
    DO,
    MODEL_NAME,
    PICKUP,
    PICKUP_ALIASES,
    PU,
    RMSE_METRIC,
    SCORING_COLUMNS,
)
from taxi_duration.pipeline.champion import (
    PREVIOUS,
    Decision,
    Gate,
    Incumbent,
    ScoredRows,
    incumbent_version,
)
from taxi_duration.tracking.history import ChampionMove

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
    gate: Gate,
    rows: ScoredRows,
    decision: Decision,
) -> dict[str, Any]:
    """What the gate compared, for registration.json: the metric, the thresholds, the rows both
    RMSEs were measured on, both RMSEs and the confidence."""
    champion = None
    if incumbent is not None:
        champion = {
            "version": incumbent.version,
            "test_rmse": None if math.isnan(incumbent.test_rmse) else incumbent.test_rmse,
            "how": incumbent.how,
            "not_compared_because": incumbent.unfair,
        }
    return {
        "metric": RMSE_METRIC,
        "test_month": candidacy.data_tags.get("test_month"),
        "taxi": candidacy.data_tags.get("taxi"),
        "rows": {"count": rows.count, "digest": rows.digest},
        "min_improvement": gate.min_improvement,
        "min_confidence": gate.min_confidence,
        "confidence": None if incumbent is None else incumbent.confidence,
        "candidate": {"version": number, "test_rmse": candidacy.test_rmse},
        "champion": champion,
        "validation": decision.validation,
    }


def run_description(
    model_name: str,
    number: str,
    candidacy: Candidacy,
    decision: Decision,
    incumbent: Incumbent | None,
    gate: Gate,
    rows: ScoredRows,
) -> str:
    """The register run's description: what was registered, compared on which rows, and
    decided."""
    month = candidacy.data_tags.get("test_month", "?")
    table = [f"| candidate | v{number} | {candidacy.test_rmse:.4f} | its own test rows |"]
    if incumbent is not None and incumbent.version != number and incumbent.unfair is None:
        table.append(
            f"| {CHAMPION} | v{incumbent.version} | {incumbent.test_rmse:.4f} | {incumbent.how} |"
        )
    rule = (
        f"lower than the {CHAMPION}'s by at least **{gate.min_improvement:g} minutes**"
        if gate.min_improvement > 0
        else f"lower than the {CHAMPION}'s"
    )
    sure = (
        f", and a paired comparison of the two models' errors on those rows must be at least "
        f"**{gate.min_confidence:.0%}** confident that it is lower"
        if gate.min_confidence > 0
        else ""
    )
    measured = (
        ""
        if incumbent is None or incumbent.confidence is None
        else f" Confidence that the candidate's error is lower: **{incumbent.confidence:.1%}**."
    )
    lines = "\n".join(table)
    return f"""\
Registered `{model_name}` **v{number}** from {candidacy.run_link}: \
{outcome(decision, incumbent)}

| | version | test RMSE on {month} | measured on |
|---|---|---|---|
{lines}

Both are measured on the same {rows.count:,} test rows (digest `{rows.digest}`).{measured} \
The candidate becomes {CHAMPION} when its test RMSE is {rule} \
(`mlflow.validate_evaluation_results` on `{RMSE_METRIC}`){sure}; a test month the {CHAMPION} \
trained or validated on is never used to compare, and a version a person took {CHAMPION} away \
from with `promote` never becomes {CHAMPION} again through register.

Load the {CHAMPION} with `mlflow.pyfunc.load_model('models:/{model_name}@{CHAMPION}')`.
"""


def came_from(move: ChampionMove) -> str:
    return "no champion" if move.previous == "none" else f"v{move.previous}"


def promotion_description(model_name: str, move: ChampionMove, asked: str) -> str:
    """The promote run's description (markdown, shown at the top of its page in the UI)."""
    how = " (the previous champion)" if asked.strip().lower() == PREVIOUS else ""
    return (
        f"**`{model_name}@{CHAMPION}` moved from {came_from(move)} to v{move.version}**{how}\n\n"
        f"- by {move.by}, at {move.at}\n"
        f"- why: {move.reason}\n\n"
        f"Load it with `mlflow.pyfunc.load_model('models:/{model_name}@{CHAMPION}')`; the "
        f"registered model's `champion_history.*` tags list every move."
    )
