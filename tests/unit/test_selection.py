"""train_best's trial choice and register's champion decision (pure cores)."""

import pytest

from taxi_duration.core.errors import PipelineError
from taxi_duration.model.selection import Candidate, select_trial
from taxi_duration.pipeline.champion import Gate, Incumbent, decide_champion
from taxi_duration.tracking.history import ChampionMove


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
    short = decide_champion(5.9, incumbent, gate=Gate(min_improvement=0.5))
    assert not short.promote
    assert short.reason == (
        "test RMSE 5.9000 does not beat champion v3's 6.0000 (re-scored on 2021-03) "
        "by min_improvement 0.5; champion stays"
    )
    assert "candidate model root_mean_squared_error = 5.9" in short.validation
    assert "threshold = 0.5" in short.validation
    enough = decide_champion(5.5, incumbent, gate=Gate(0.5))  # exactly the gain asked
    assert enough.promote and enough.validation == "root_mean_squared_error passed"
    assert "beats champion v3's 6.0000 (re-scored on 2021-03) by min_improvement 0.5" in (
        enough.reason
    )


def test_no_champion_or_the_same_version_needs_no_comparison():
    assert decide_champion(9.9, None, gate=Gate(5)).promote
    same = decide_champion(9.9, Incumbent("3", 6.0, "tested on 2021-03"), "3", Gate(5))
    assert same.promote and same.reason == "v3 is already the champion" and not same.validation


# --- the gate's refusals (issue: a champion decision that never answers wrong quietly) --------


def test_a_gain_without_the_asked_confidence_keeps_the_champion():
    unsure = Incumbent("3", 6.0, "re-scored", confidence=0.80)
    stays = decide_champion(5.98, unsure, "4", Gate(min_confidence=0.95))
    assert not stays.promote
    assert "with confidence 80.0%, below min_confidence 0.95" in stays.reason
    sure = decide_champion(
        5.98, Incumbent("3", 6.0, "re-scored", confidence=0.999), "4", Gate(0, 0.95)
    )
    assert sure.promote and "with confidence 99.9%" in sure.reason
    unmeasured = decide_champion(5.9, Incumbent("3", 6.0, "recorded"), "4", Gate(0, 0.95))
    assert not unmeasured.promote and "confidence unmeasured" in unmeasured.reason


def test_a_month_the_champion_learnt_from_is_never_used_to_compare():
    unfair = Incumbent("3", float("nan"), "not compared", unfair="it trained on 2023-03 (...)")
    stays = decide_champion(1.0, unfair, "4")
    assert not stays.promote
    assert stays.reason == (
        "not compared with champion v3 on this test month: it trained on 2023-03 (...); "
        "champion stays"
    )


def test_a_version_a_person_set_aside_is_not_made_champion_again():
    rollback = ChampionMove("2", "3", "2026-12-01T08:00:00.000Z", "ana", "promote", "r9", "bad")
    stays = decide_champion(1.0, Incumbent("2", 6.0, "recorded"), "3", Gate(), aside=rollback)
    assert not stays.promote
    assert stays.reason == (
        "v3 was taken off champion by ana with promote at 2026-12-01T08:00:00.000Z (bad); only "
        "promote makes it champion again: v2 stays"
    )
