"""Who is champion: register's gate (the candidate against the champion on the same test month,
as MLflow's validate_evaluation_results judges it) and its move of `champion` under the lock,
safe against other registers; promote's move by hand, with its reason. Every move is recorded
in the champion's history."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from taxi_duration.core.contracts import (
    CHALLENGER,
    CHAMPION,
    PROMOTE,
    REGISTER,
    RMSE_METRIC,
    SCORING_COLUMNS,
    TARGET,
    TEST_ROWS_DIGEST_TAG,
    TEST_ROWS_TAG,
)
from taxi_duration.core.errors import PipelineError
from taxi_duration.core.params import check_model_name
from taxi_duration.model import features
from taxi_duration.model.gate import paired_confidence, seen_month
from taxi_duration.tracking import pyfunc, registry, runs
from taxi_duration.tracking.history import ChampionMove, previous_champion, set_aside

# How many times the champion may move under a register's feet before it gives up.
SETTLE_ROUNDS = 10


@dataclass(frozen=True)
class Gate:
    """What a candidate must show to replace the champion: a test RMSE lower by at least
    `min_improvement` minutes (MLflow's validate_evaluation_results judges it), and, when
    `min_confidence` > 0, that much confidence that its error is lower on the same rows."""

    min_improvement: float = 0.0
    min_confidence: float = 0.0


@dataclass(frozen=True)
class ScoredRows:
    """The rows the candidate was scored on: their digest, and for a comparison that needs them
    the raw trips (scoring columns and actual minutes) and the candidate's predictions."""

    digest: str
    trips: pd.DataFrame | None = None
    predictions: np.ndarray | None = None

    @property
    def count(self) -> int:
        return 0 if self.trips is None else len(self.trips)


@dataclass(frozen=True)
class Incumbent:
    """The current champion, as the gate measured it against the candidate: its test RMSE on
    the candidate's rows and how it was found (its recorded figure, or re-scored), the
    confidence that the candidate does better (None: not measured), or why it could not be
    compared at all (a month it learnt from)."""

    version: str
    test_rmse: float
    how: str
    confidence: float | None = None
    unfair: str | None = None


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
    gate: Gate = Gate(),
    aside: ChampionMove | None = None,
) -> Decision:
    """Promote when there is no champion, or when the candidate's test RMSE is lower than the
    champion's on the same rows by at least `gate.min_improvement` minutes (0: strictly lower),
    as MLflow's validate_evaluation_results judges it, with at least `gate.min_confidence`.

    Never when the comparison is unfair (the test month is one the champion learnt from), and
    never for a version a person took `champion` away from (`aside`: the promote that did it;
    only another promote brings it back). `candidate_version` is set when the candidate is
    already registered.
    """
    if incumbent is None:
        return Decision(True, "no champion yet")
    if candidate_version == incumbent.version:
        return Decision(True, f"v{incumbent.version} is already the champion")
    if aside is not None:
        return Decision(
            False,
            f"v{candidate_version} was taken off {CHAMPION} by {aside.by} with promote at "
            f"{aside.at} ({aside.reason}); only promote makes it {CHAMPION} again: "
            f"v{incumbent.version} stays",
        )
    if incumbent.unfair is not None:
        return Decision(
            False,
            f"not compared with {CHAMPION} v{incumbent.version} on this test month: "
            f"{incumbent.unfair}; {CHAMPION} stays",
        )
    shortfall = pyfunc.improvement_shortfall(
        candidate_rmse, incumbent.test_rmse, gate.min_improvement
    )
    compared = (
        f"{CHAMPION} v{incumbent.version}'s {incumbent.test_rmse:.4f} ({incumbent.how})"
        f"{f' by min_improvement {gate.min_improvement:g}' if gate.min_improvement > 0 else ''}"
    )
    if shortfall is not None:
        return Decision(
            False,
            f"test RMSE {candidate_rmse:.4f} does not beat {compared}; {CHAMPION} stays",
            shortfall,
        )
    sure = incumbent.confidence
    if gate.min_confidence > 0 and (sure is None or sure < gate.min_confidence):
        shown = "unmeasured" if sure is None else f"{sure:.1%}"
        return Decision(
            False,
            f"test RMSE {candidate_rmse:.4f} beats {compared}, but with confidence {shown}, "
            f"below min_confidence {gate.min_confidence:g}: a gain chance alone gives; "
            f"{CHAMPION} stays",
            f"{RMSE_METRIC} passed; paired test: confidence {shown} < {gate.min_confidence:g}",
        )
    confident = "" if sure is None else f" with confidence {sure:.1%}"
    return Decision(
        True,
        f"test RMSE {candidate_rmse:.4f} beats {compared}{confident}",
        f"{RMSE_METRIC} passed" + ("" if sure is None else f"; paired test: confidence {sure:.1%}"),
    )


def incumbent_score(
    model_name: str, data_tags: Mapping[str, str], rows: ScoredRows, gate: Gate
) -> Incumbent | None:
    """The champion measured against the candidate on the candidate's test rows, if any.

    Its recorded test RMSE serves only when it was measured on rows with the same digest and no
    confidence is asked for; otherwise it is re-scored on the candidate's rows (raw records:
    each model reads the columns it needs). A test month the champion trained or validated on
    is never used to compare.
    """
    champion = registry.aliased_version(model_name, CHAMPION)
    if champion is None:
        return None
    version, tags = str(champion.version), champion.tags
    unfair = seen_month(tags, data_tags.get("taxi", ""), data_tags.get("test_month", ""))
    if unfair is not None:
        return Incumbent(version, math.nan, "not compared", unfair=unfair)
    recorded = tags.get(TEST_ROWS_DIGEST_TAG) == rows.digest and "test_rmse" in tags
    if recorded and gate.min_confidence == 0:
        how = f"its recorded test RMSE on the same {tags.get(TEST_ROWS_TAG, '?')} rows"
        return Incumbent(version, float(tags["test_rmse"]), how)
    if rows.trips is None or rows.trips.empty:
        raise PipelineError(
            f"{CHAMPION} v{version} of {model_name!r} was tested on other rows and the test "
            "trips to re-score it on are missing; rerun register from its train_best run"
        )
    loaded = pyfunc.load(f"models:/{model_name}/{version}")
    predictions = np.asarray(loaded.predict(rows.trips[list(SCORING_COLUMNS)]), dtype="float64")
    actual = rows.trips[TARGET].to_numpy()
    confidence = (
        None
        if rows.predictions is None
        else paired_confidence(actual, rows.predictions, predictions)
    )
    how = f"re-scored on the candidate's {rows.count:,} test rows of {data_tags.get('test_month')}"
    return Incumbent(version, features.rmse(actual, predictions), how, confidence)


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
    data_tags: Mapping[str, str],
    rows: ScoredRows,
    mover: Mover,
    gate: Gate = Gate(),
) -> tuple[Decision, Incumbent | None]:
    """Move `champion` to version `number` if it beats the champion, safely against other
    registers (and promotes) at the same moment.

    The comparison can take seconds (re-scoring the champion on the test rows), so it is made
    first; the move itself is made under the champion lock (registry.champion_lock), and only
    if the champion is still the one compared with. If it moved meanwhile, the new champion is
    compared in turn. Moves are thus one after the other, each replacing the champion it beat,
    so whatever the interleaving the best version stands. The move is appended to the
    champion's history; so is a decision to keep the champion against a version a person set
    aside, the one register decision that answers a person's.
    """
    for _ in range(SETTLE_ROUNDS):
        incumbent = incumbent_score(model_name, data_tags, rows, gate)
        aside = set_aside(registry.champion_history(model_name), number)
        decision = decide_champion(test_rmse, incumbent, number, gate, aside)
        if incumbent is not None and aside is not None and incumbent.version != number:
            registry.record_champion_hold(
                model_name, incumbent.version, mover.by, REGISTER, mover.run_id, decision.reason
            )
        if not decision.promote or (incumbent is not None and incumbent.version == number):
            return decision, incumbent
        compared = incumbent.version if incumbent else None
        with registry.champion_lock(model_name, mover.holder) as lock:
            if registry.alias_target(model_name, CHAMPION) == compared:
                lock.check()
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
    data_tags: Mapping[str, str],
    rows: ScoredRows,
    version_tags: Mapping[str, str] | None = None,
    description: str = "",
    mover: Mover | None = None,
    gate: Gate = Gate(),
    outcome_description: Callable[[Decision, Incumbent | None], str] | None = None,
    model_description: str = "",
) -> Published:
    """Register the model of `run_id` (once), alias it `challenger`, and settle `champion`;
    then describe the version with the outcome (`outcome_description`) and the registered
    model (`model_description`) if it has no description yet.

    Everything register does to the registry, in one call (the concurrency tests call it from
    many processes at once). The version carries its test RMSE and the digest and count of the
    rows it was measured on, which a later register compares with.
    """
    tags = {
        **data_tags,
        "test_rmse": f"{test_rmse:.6f}",
        TEST_ROWS_DIGEST_TAG: rows.digest,
        **({TEST_ROWS_TAG: str(rows.count)} if rows.count else {}),
        **(version_tags or {}),
    }
    number, created = registry.get_or_create_version(
        model_name, model_uri, run_id, tags, description
    )
    try:
        registry.set_alias(model_name, CHALLENGER, number)
        decision, incumbent = settle_champion(
            model_name,
            number,
            test_rmse,
            data_tags,
            rows,
            mover or Mover(runs.user()),
            gate,
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
    with registry.champion_lock(model_name, f"{PROMOTE} by {by}") as lock:
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
        lock.check()
        return registry.move_champion(model_name, target, current, by, PROMOTE, run_id, why)
