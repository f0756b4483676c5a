"""What a person reads: run names, run descriptions (markdown) and the links to the UI."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa

from taxi_duration.core.contracts import DISTANCE, DO, PROJECT_DIR, PU, runs_table_url
from taxi_duration.core.params import parse_months
from taxi_duration.data import splits
from taxi_duration.model import features, search, selection
from taxi_duration.model.features import FilterStats
from taxi_duration.pipeline import champion, registry_notes
from taxi_duration.pipeline import orchestration as main
from taxi_duration.tools.ui import ui_lines
from tests.unit.test_main_plan import DEFAULTS

LINK = "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
SUMMARY = {
    "best_val_rmse": 6.0612,
    "n_trials": 50,
    "val_rmse": 6.0612,
    "search_train_rows": 62_494,
    "train_rows": 62_494,
    "test_rmse": 6.2871,
    "model_name": "nyc-taxi-duration",
    "model_version": "3",
    "promoted": False,
    "step_runs": {"ingest": "a1", "featurize": "b2", "hpo": "c3", "train_best": "d4"},
    "reused_steps": ["ingest"],
}


def table_rows(markdown: str) -> list[list[str]]:
    """The cells of every markdown table row."""
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in markdown.splitlines()
        if line.startswith("|") and not line.startswith("|---")
    ]


def test_runs_table_url_opens_model_training():
    assert runs_table_url("http://127.0.0.1:5000/", "7") == LINK


def test_main_run_name_says_taxi_months_features_encoding_and_trials():
    assert main.run_name(DEFAULTS) == "green 2021-01/2021-02/2021-03 time categorical 50 trials"
    course = {**DEFAULTS, "features": "course"}
    assert main.run_name(course) == "green 2021-01/2021-02/2021-03 course categorical 50 trials"


def test_only_mlflows_random_run_names_are_replaced():
    assert main.is_generated_name("skittish-gnat-540")
    assert not main.is_generated_name("my baseline")
    assert not main.is_generated_name("green 2021-01/2021-02/2021-03 categorical 50 trials")


def test_summary_points_at_a_server_page():
    hint = main.ui_hint("http://10.0.0.5:5000", "7")
    assert hint == [
        (
            "browse the runs at",
            "http://10.0.0.5:5000/#/experiments/7/runs?workflowType=machine_learning",
        )
    ]


def test_summary_says_make_ui_for_the_projects_own_store():
    assert main.ui_hint(f"sqlite:///{PROJECT_DIR / 'mlflow.db'}", "7") == [
        ("browse the runs with", "make ui"),
        ("then open", LINK),
    ]


def test_summary_starts_the_ui_on_another_store_without_an_activated_venv():
    (_, command), then = main.ui_hint("sqlite:////tmp/x/mlflow.db", "7")
    assert (
        command
        == f"{Path(sys.executable).parent / 'mlflow'} ui --backend-store-uri sqlite:////tmp/x/mlflow.db"
    )
    assert then == ("then open", LINK)


def test_rendered_summary_lines_up_the_link():
    text = main.render({**SUMMARY, "promoted": True}, "m1", "sqlite:////tmp/x/mlflow.db", "7")
    assert text.splitlines()[-1] == f"  then open             {LINK}"
    assert "alias champion" in text


def test_main_description_gives_figures_outcome_and_step_links():
    text = main.main_description(SUMMARY, DEFAULTS, "7")
    assert "trained on 2021-01, tuned on 2021-02, tested on 2021-03" in text
    assert "- test RMSE: **6.287 minutes**" in text
    assert "- registered: `nyc-taxi-duration` version 3, a challenger" in text
    assert (
        "[ingest](#/experiments/7/runs/a1) (reused), [featurize](#/experiments/7/runs/b2)," in text
    )


def test_ingest_description_tabulates_each_split():
    month = parse_months("2021-01", "2021-02", "2021-03")[0]
    trips = pd.DataFrame(
        {
            "pickup_datetime": pd.to_datetime(["2021-01-01 10:00", "2020-12-31 23:00"]),
            "dropoff_datetime": pd.to_datetime(["2021-01-01 10:12", "2021-01-01 00:10"]),
            PU: [74, 75],
            DO: [75, 74],
            DISTANCE: [1.5, 2.5],
        }
    )
    profile = {"train": splits.profile_split(pa.Table.from_pandas(trips), month)}
    text = splits.describe_ingest("green", "tests/data", profile)
    assert "**green** taxi trips from `tests/data`" in text
    assert ["train", "2021-01", "2", "1", "41.0", "2.0", "2"] in table_rows(text)


def test_featurize_description_tabulates_what_each_split_kept():
    stats = FilterStats(
        rows_in=3000, rows_kept=2892, dropped_duration=108, unknown_zone=4, invalid_distance=1
    )
    text = features.describe_features("course", "categorical", 3, {"train": stats}, 1.0, 60.0)
    assert "**1 to 60 minutes**" in text and "**categorical**" in text and "3 features" in text
    assert "pickup hour" not in text
    timed = features.describe_features("time", "categorical", 5, {"train": stats}, 1.0, 60.0)
    assert "**time**" in timed and "pickup hour" in timed and "5 features" in timed
    assert ["train", "3,000", "2,892", "108", "4", "1"] in table_rows(text)


def test_hpo_description_names_the_winner_and_how_to_compare():
    params = {"max_depth": 6, "learning_rate": 0.123456}
    results = [
        search.TrialResult(0, params, 6.5, 40, 1.0),
        search.TrialResult(1, params, 6.1, 55, 1.0),
    ]
    text = search.describe_search(results, search.Budget(2, 42, 100, 10), "local", 12.3)
    assert "**2** XGBoost configurations" in text
    assert "from 6.500 (worst trial) to **6.100 minutes**, reached by trial 1 with 55" in text
    assert ["learning_rate", "0.1235"] in table_rows(text)
    assert "*Compare*" in text


def test_train_best_description_says_what_was_retrained_and_where_it_errs():
    chosen = selection.Candidate("t9", {"max_depth": 7}, 6.1, 80, "trial-009")
    errors = {
        "distance": pd.DataFrame(
            {"trips": [900, 30], "rmse": [4.0, 11.5], "mean_error": [0.1, -3.0]},
            index=["0-1 mi", "10-20 mi"],
        )
    }
    shares = pd.Series({DISTANCE: 0.8, PU: 0.2})
    metrics = {"val_rmse": 6.1, "test_rmse": 6.3, "n_trees": 80.0}
    text = selection.describe_refit(
        chosen, 0.5, metrics, "2021-03", errors, shares, "models:/m-1", "time"
    )
    assert text.startswith("Retrained trial-009 (run `t9`), the cheapest trial (trees x depth)")
    assert "within 0.5 min of the best" in text
    assert "- test RMSE: **6.300 minutes**" in text
    assert "trips of 10-20 mi (RMSE 11.5 min over 30 trips)" in text
    assert "trip distance 80%, pickup zone 20%" in text


def test_train_best_description_lists_mlflows_standard_metrics_when_logged():
    chosen = selection.Candidate("t9", {"max_depth": 7}, 6.1, 80, "trial-009")
    errors = {
        "distance": pd.DataFrame(
            {"trips": [900], "rmse": [4.0], "mean_error": [0.1]}, index=["0-1 mi"]
        )
    }
    shares = pd.Series({DISTANCE: 1.0})
    metrics = {"val_rmse": 6.1, "test_rmse": 6.3, "n_trees": 80.0}
    standard = {"mean_absolute_error": 4.42, "r2_score": 0.691, "max_error": 38.4}
    with_them = selection.describe_refit(
        chosen, 0.0, metrics | standard, "2021-03", errors, shares, "models:/m-1", "time"
    )
    assert (
        "- on the test month (`mlflow.models.evaluate`): MAE 4.420 min, R² 0.691, "
        "max error 38.4 min\n" in with_them
    )
    without = selection.describe_refit(
        chosen, 0.0, metrics, "2021-03", errors, shares, "models:/m-1", "time"
    )
    assert "mlflow.models.evaluate" not in without


CANDIDACY = registry_notes.Candidacy(
    "r7",
    "4",
    {"taxi": "green", "train_month": "2021-01", "val_month": "2021-02", "test_month": "2021-03"},
    6.1234,
    6.2871,
)


def test_registered_model_description_says_what_it_predicts_inputs_load_and_serve():
    text = registry_notes.model_description("nyc-taxi-duration")
    assert "**in minutes**" in text
    assert [row for row in table_rows(text) if row[0] == "`PULocationID`"] == [
        ["`PULocationID`", "pickup taxi zone, a TLC zone ID (1..265)"]
    ]
    assert {row[0] for row in table_rows(text)} >= {"`DOLocationID`", "`trip_distance`"}
    assert "`mlflow.pyfunc.load_model('models:/nyc-taxi-duration@champion')`" in text
    assert "`make serve` answers" in text
    other = registry_notes.model_description("my-model")
    assert "`make serve MODEL_URI=models:/my-model@champion`" in other


def test_version_description_names_run_data_rmses_and_outcome():
    pending = registry_notes.version_description(CANDIDACY)
    assert pending.startswith(
        "XGBoost retrained by [train_best run `r7`](#/experiments/4/runs/r7) on green taxi "
        "trips: trained on 2021-01, validated on 2021-02, tested on 2021-03."
    )
    assert "- validation RMSE: 6.123 minutes\n- test RMSE: **6.287 minutes**\n" in pending
    assert "champion" not in pending
    incumbent = champion.Incumbent("2", 6.1, "tested on 2021-03")
    stays = champion.Decision(False, "test RMSE 6.2871 does not beat ...; champion stays")
    text = registry_notes.version_description(CANDIDACY, stays, incumbent)
    assert text.endswith(
        "- **challenger; v2 stays champion**: test RMSE 6.2871 does not beat ...; champion stays\n"
    )
    became = registry_notes.version_description(
        CANDIDACY, champion.Decision(True, "no champion yet")
    )
    assert became.endswith("- **became champion**: no champion yet\n")


ROWS = champion.ScoredRows("d1g3st", pd.DataFrame({"duration": [1.0] * 2885}))


def test_register_run_description_tabulates_both_rmses_the_rows_and_the_rule():
    incumbent = champion.Incumbent("2", 6.1, "re-scored on the candidate's rows", 0.42)
    decision = champion.Decision(False, "test RMSE 6.2871 does not beat ...", "failed")
    gate = champion.Gate(0.5, 0.95)
    text = registry_notes.run_description(
        "nyc-taxi-duration", "3", CANDIDACY, decision, incumbent, gate, ROWS
    )
    assert text.startswith("Registered `nyc-taxi-duration` **v3** from [train_best run `r7`]")
    assert table_rows(text)[1:] == [
        ["candidate", "v3", "6.2871", "its own test rows"],
        ["champion", "v2", "6.1000", "re-scored on the candidate's rows"],
    ]
    assert "Both are measured on the same 2,885 test rows (digest `d1g3st`)" in text
    assert "Confidence that the candidate's error is lower: **42.0%**" in text
    assert "lower than the champion's by at least **0.5 minutes**" in text
    assert "at least **95%** confident" in text
    first = registry_notes.run_description(
        "nyc-taxi-duration",
        "1",
        CANDIDACY,
        champion.Decision(True, "no champion yet"),
        None,
        champion.Gate(),
        ROWS,
    )
    assert table_rows(first)[1:] == [["candidate", "v1", "6.2871", "its own test rows"]]
    assert "when its test RMSE is lower than the champion's (" in first
    assert "confident" not in first


def test_registration_comparison_records_thresholds_rows_confidence_and_both_rmses():
    incumbent = champion.Incumbent("2", 6.1, "its recorded test RMSE on the same 2885 rows")
    decision = champion.Decision(False, "...", "Metric root_mean_squared_error ... failed")
    record = registry_notes.comparison(
        CANDIDACY, "3", incumbent, champion.Gate(0.5, 0.0), ROWS, decision
    )
    assert record == {
        "metric": "root_mean_squared_error",
        "test_month": "2021-03",
        "taxi": "green",
        "rows": {"count": 2885, "digest": "d1g3st"},
        "min_improvement": 0.5,
        "min_confidence": 0.0,
        "confidence": None,
        "candidate": {"version": "3", "test_rmse": 6.2871},
        "champion": {
            "version": "2",
            "test_rmse": 6.1,
            "how": "its recorded test RMSE on the same 2885 rows",
            "not_compared_because": None,
        },
        "validation": "Metric root_mean_squared_error ... failed",
    }


def test_make_ui_prints_the_runs_table_link_or_says_the_store_is_empty():
    assert ui_lines("sqlite:///mlflow.db", "7", "http://127.0.0.1:5000", "x").endswith(LINK)
    empty = ui_lines("sqlite:///mlflow.db", None, "http://127.0.0.1:5000", "x")
    assert "`make run` fills it" in empty
