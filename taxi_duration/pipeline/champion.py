"""Who is champion: register's gate (the candidate against the champion on the same test month,
as MLflow's validate_evaluation_results judges it) and its move of `champion` under the lock,
safe against other registers; promote's move by hand, with its reason. Every move is recorded
in the champion's history."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from taxi_duration.core.contracts import (
    CHALLENGER,
    CHAMPION,
    PROMOTE,
    REGISTER,
    RMSE_METRIC,
    SCORING_COLUMNS,
    TARGET,
)
from taxi_duration.core.errors import PipelineError
from taxi_duration.core.params import check_model_name
from taxi_duration.model import features
from taxi_duration.tracking import pyfunc, registry, runs
from taxi_duration.tracking.history import ChampionMove, previous_champion

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
    shortfall = pyfunc.improvement_shortfall(candidate_rmse, incumbent.test_rmse, min_improvement)
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
    loaded = pyfunc.load(f"models:/{model_name}/{champion.version}")
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
