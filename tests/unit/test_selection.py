"""train_best's trial choice and register's champion decision (pure cores)."""

import pytest

from steps.errors import PipelineError
from steps.register import Incumbent, decide_champion
from steps.train_best import Candidate, select_trial


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
