"""hpo on Spark (hyperopt SparkTrials on local[2]): trials still nested runs under the hpo run."""

import pytest
from mlflow.tracking import MlflowClient

from taxi_duration.core.contracts import MODEL_TAG, PARENT_RUN_TAG
from tests.conftest import DATA_DIR, run_step

pytest.importorskip("pyspark")


def test_hpo_on_spark_logs_every_trial_as_a_nested_run(tmp_path):
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}

    def ok(module, *args):
        result = run_step(module, *args, cwd=tmp_path, **env)
        assert result.returncode == 0, result.stderr[-3000:]
        return next(x for x in result.stdout.splitlines() if x.startswith(f"{module}: "))

    ingest = ok("ingest", "--source", str(DATA_DIR)).split()[1]
    features = ok("featurize", "--ingest-run", ingest).split()[1]
    line = ok(
        "hpo",
        "--features-run",
        features,
        "--max-evals",
        "4",
        "--num-boost-round",
        "40",
        "--early-stopping-rounds",
        "10",
        "--backend",
        "spark",
        "--spark-master",
        "local[2]",
        "--parallelism",
        "2",
    )
    assert "(spark)" in line
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    hpo = client.get_run(line.split()[1].removeprefix("runs:/"))
    trials = client.search_runs(
        [hpo.info.experiment_id], f"tags.`{PARENT_RUN_TAG}` = '{hpo.info.run_id}'"
    )
    assert len(trials) == 4
    assert {t.info.status for t in trials} == {"FINISHED"}
    assert {t.data.tags[MODEL_TAG] for t in trials} == {"xgboost"}
    assert sorted(t.info.run_name for t in trials) == [f"trial-00{i}" for i in range(4)]
    assert hpo.data.metrics["best_rmse"] == min(t.data.metrics["rmse"] for t in trials)
    assert hpo.data.params["backend"] == "spark"
