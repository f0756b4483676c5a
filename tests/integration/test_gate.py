"""register's gate on a real registry (a SQLite store in a temp folder) with real models (the
legacy store's champion as every version's model): it compares two RMSEs only on the same
rows, never on a month the champion learnt from, never undoes a person's rollback, and asks for
confidence, not just a lower number. Each of these used to answer wrong without a word."""

from __future__ import annotations

import shutil

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from taxi_duration.core.contracts import CHAMPION, TARGET, TEST_ROWS_DIGEST_TAG, TEST_ROWS_TAG
from taxi_duration.data.tlc import read_trips
from taxi_duration.model.features import filter_trips, rmse
from taxi_duration.model.gate import rows_digest
from taxi_duration.pipeline.champion import Gate, Mover, ScoredRows, move_champion, publish
from taxi_duration.tracking import history, registry
from tests.conftest import DATA_DIR

MODEL_DIR = next((DATA_DIR / "legacy-store" / "mlruns").rglob("MLmodel")).parent
NAME = "gate"
WINDOW = {"taxi": "green", "train_month": "2021-01", "val_month": "2021-02"}


@pytest.fixture
def store(tmp_path, monkeypatch) -> MlflowClient:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    shutil.copytree(MODEL_DIR, tmp_path / "model")
    return MlflowClient(uri)


def trips(max_duration: float = 60) -> pd.DataFrame:
    kept, _ = filter_trips(read_trips(DATA_DIR / "green_tripdata_2021-03.parquet"), 1, max_duration)
    return kept


def champion_predictions(rows: pd.DataFrame, folder) -> np.ndarray:
    return np.asarray(mlflow.pyfunc.load_model(str(folder / "model")).predict(rows), "float64")


def add_version(client: MlflowClient, folder, tags: dict[str, str]) -> str:
    """A version of NAME whose model is the legacy champion, with these tags."""
    if registry.find_model(NAME) is None:
        client.create_registered_model(NAME)
    run = client.create_run("0").info.run_id
    version = client.create_model_version(NAME, str(folder / "model"), run, tags=tags)
    return str(version.version)


def make_champion(client, folder, **tags: str) -> str:
    version = add_version(client, folder, {**WINDOW, "test_month": "2021-03", **tags})
    registry.move_champion(NAME, version, None, "test", "register", "", "set up")
    return version


def candidate(client, folder, rows: pd.DataFrame, predictions: np.ndarray, gate: Gate, **tags: str):
    """publish() a new run with these test rows and predictions, as register does."""
    run = client.create_run("0").info.run_id
    data = {**WINDOW, "test_month": "2021-03", **tags}
    return publish(
        NAME,
        str(folder / "model"),
        run,
        rmse(rows[TARGET].to_numpy(), predictions),
        data,
        ScoredRows(rows_digest(rows), rows, predictions),
        mover=Mover("test"),
        gate=gate,
    )


def test_a_recorded_rmse_serves_only_for_rows_with_the_same_digest(store, tmp_path):
    """A candidate trained with max_duration=30 drops the long trips from its test rows: the
    champion's RMSE recorded on 1..60 minutes must not be set against it."""
    every = trips(60)
    recorded = {TEST_ROWS_DIGEST_TAG: rows_digest(every), TEST_ROWS_TAG: str(len(every))}
    champion = make_champion(store, tmp_path, test_rmse="6.682792", **recorded)
    short = trips(30)
    assert len(short) < len(every)
    expected = rmse(short[TARGET].to_numpy(), champion_predictions(short, tmp_path))
    worse = champion_predictions(short, tmp_path) + 0.5  # a clearly worse candidate
    published = candidate(store, tmp_path, short, worse, Gate())
    incumbent = published.incumbent
    assert incumbent is not None and incumbent.version == champion
    assert incumbent.how.startswith("re-scored on the candidate's")
    assert incumbent.test_rmse == pytest.approx(expected)
    assert incumbent.test_rmse < 6.0  # its RMSE on the short trips, not the recorded 6.68
    assert not published.decision.promote

    same_rows = candidate(store, tmp_path, every, champion_predictions(every, tmp_path), Gate())
    assert same_rows.incumbent.how == f"its recorded test RMSE on the same {len(every)} rows"
    assert same_rows.incumbent.test_rmse == pytest.approx(6.682792)


def test_a_month_the_champion_validated_on_is_never_used_to_compare(store, tmp_path):
    champion = make_champion(
        store, tmp_path, train_month="2021-02", val_month="2021-03", test_month="2021-04"
    )
    rows = trips()
    perfect = rows[TARGET].to_numpy()  # even a perfect candidate is not compared there
    published = candidate(store, tmp_path, rows, perfect, Gate())
    assert not published.decision.promote
    assert published.decision.reason == (
        f"not compared with champion v{champion} on this test month: it validated on 2021-03 "
        "(training 2021-02, validation 2021-03); champion stays"
    )
    assert registry.alias_target(NAME, CHAMPION) == champion


def test_a_persons_rollback_holds_against_the_next_register(store, tmp_path):
    rows = trips()
    first = make_champion(store, tmp_path)
    better = champion_predictions(rows, tmp_path) * 0.9 + rows[TARGET].to_numpy() * 0.1
    published = candidate(store, tmp_path, rows, better, Gate())
    second = published.version
    assert published.decision.promote  # register made v2 champion
    move_champion(NAME, first, "v2 overestimates airport trips", "ana", "promote-run")
    assert registry.alias_target(NAME, CHAMPION) == first

    again = publish(  # the same train run registered again, as the next `make run` does
        NAME,
        str(tmp_path / "model"),
        store.get_model_version(NAME, second).run_id,
        rmse(rows[TARGET].to_numpy(), better),
        {**WINDOW, "test_month": "2021-03"},
        ScoredRows(rows_digest(rows), rows, better),
        mover=Mover("cron"),
    )
    assert again.version == second and not again.decision.promote
    assert "was taken off champion by ana with promote" in again.decision.reason
    assert registry.alias_target(NAME, CHAMPION) == first
    moves = history.moves(store.get_registered_model(NAME).tags)
    assert [(m.version, m.previous, m.step) for m in moves] == [
        (first, "none", "register"),
        (second, first, "register"),
        (first, second, "promote"),
        (first, first, "register"),  # the refusal, kept beside the person's decision
    ]
    assert moves[-1].reason == again.decision.reason

    move_champion(NAME, second, "airport trips fixed upstream", "ana", "promote-run-2")
    assert registry.alias_target(NAME, CHAMPION) == second  # only promote brings it back


def test_a_gain_within_chance_does_not_move_the_champion(store, tmp_path):
    rows = trips()
    champion = make_champion(store, tmp_path)
    mine = champion_predictions(rows, tmp_path)
    rng = np.random.default_rng(0)
    # Another model as good: the champion's predictions, each nudged by chance; its RMSE on
    # these rows happens to be a hair lower.
    nudged = next(
        p
        for p in (mine + rng.normal(0, 0.3, len(mine)) for _ in range(100))
        if rmse(rows[TARGET].to_numpy(), p) < rmse(rows[TARGET].to_numpy(), mine)
    )
    by_rmse = candidate(store, tmp_path, rows, nudged, Gate(min_confidence=0))
    assert by_rmse.decision.promote  # any lower RMSE wins without the statistical gate
    registry.move_champion(NAME, champion, by_rmse.version, "test", "promote", "", "reset")
    gated = candidate(store, tmp_path, rows, nudged, Gate(min_confidence=0.99))
    assert not gated.decision.promote
    assert gated.incumbent.confidence < 0.99
    assert "below min_confidence 0.99" in gated.decision.reason
    real = candidate(
        store, tmp_path, rows, mine * 0.8 + rows[TARGET].to_numpy() * 0.2, Gate(0, 0.99)
    )
    assert real.decision.promote and real.incumbent.confidence > 0.999
