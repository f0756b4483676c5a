"""train_best's trial choice and register's champion decision (pure cores)."""

import pytest

from taxi_duration.core.errors import PipelineError
from taxi_duration.model.selection import Candidate, select_trial
from taxi_duration.pipeline.champion import Incumbent, decide_champion


def cand(run_id, rmse, n_trees, depth):
    return Candidate(run_id, {"max_depth": depth}, rmse, n_trees)


TRIALS = [cand("best", 6.00, 400, 10), cand("cheap", 6.04, 120, 6), cand("cheapest", 6.30, 50, 3)]


def test_select_trial_without_tolerance_takes_the_best_rmse():
    assert select_trial(TRIALS, 0.0).run_id == "best"


def test_select_trial_with_tolerance_takes_the_cheapest_within_it():
    assert select_trial(TRIALS, 0.05).run_id == "cheap"
    assert select_trial(TRIALS, 1.0).run_id == "cheapest"


def test_select_trial_breaks_cost_ties_by_rmse():
    tied = [cand("worse", 6.02, 100, 6), cand("better", 6.01, 100, 6)]
    assert select_trial(tied, 0.5).run_id == "better"


def test_select_trial_needs_at_least_one_trial():
    with pytest.raises(PipelineError, match="no finished trials"):
        select_trial([], 0.0)


def test_first_model_becomes_champion():
    decision = decide_champion(6.1, None)
    assert decision.promote and "no champion" in decision.reason


def test_champion_moves_only_on_strictly_better_test_rmse():
    incumbent = Incumbent("3", 6.0, "tested on 2021-03")
    assert decide_champion(5.9, incumbent).promote
    assert not decide_champion(6.0, incumbent).promote
    stays = decide_champion(6.2, incumbent)
    assert not stays.promote and "champion stays" in stays.reason and "v3" in stays.reason


def test_a_tie_keeps_the_champion_and_says_what_mlflow_found():
    stays = decide_champion(6.0, Incumbent("3", 6.0, "tested on 2021-03"))
    assert not stays.promote
    assert "root_mean_squared_error minimum absolute change check failed" in stays.validation


def test_min_improvement_is_the_gain_the_candidate_must_reach():
    incumbent = Incumbent("3", 6.0, "re-scored on 2021-03")
    short = decide_champion(5.9, incumbent, min_improvement=0.5)
    assert not short.promote
    assert short.reason == (
        "test RMSE 5.9000 does not beat champion v3's 6.0000 (re-scored on 2021-03) "
        "by min_improvement 0.5; champion stays"
    )
    assert "candidate model root_mean_squared_error = 5.9" in short.validation
    assert "threshold = 0.5" in short.validation
    enough = decide_champion(5.5, incumbent, min_improvement=0.5)  # exactly the gain asked
    assert enough.promote and enough.validation == "root_mean_squared_error passed"
    assert "beats champion v3's 6.0000 (re-scored on 2021-03) by min_improvement 0.5" in (
        enough.reason
    )


def test_no_champion_or_the_same_version_needs_no_comparison():
    assert decide_champion(9.9, None, min_improvement=5).promote
    same = decide_champion(9.9, Incumbent("3", 6.0, "tested on 2021-03"), "3", 5)
    assert same.promote and same.reason == "v3 is already the champion" and not same.validation
