"""register: register the trained model, alias it `challenger`, and move `champion` only if it wins.

Input: train_run (runs:/<id> of a train_best run). Parameters: model_name; min_improvement
(minutes, >= 0, default 0: how much lower than the champion's the candidate's test RMSE must be);
min_confidence (in [0, 1), default 0.99: how sure a paired comparison of the two models' errors
on the same rows must be that the candidate's is lower; 0 turns it off).
The new version is tagged with its metrics, data months, features, encoding, duration filter,
source run and the digest and count of its test rows, and always gets alias `challenger`.
`champion` moves to it when there is no champion, or when, measured on the candidate's test rows
(the champion's recorded RMSE when it was measured on rows with the same digest, else the
champion re-scored on them), its test RMSE is lower by at least min_improvement (MLflow's
validate_evaluation_results on root_mean_squared_error) with at least min_confidence. Never on a
test month the champion trained or validated on; never to a version a person took `champion`
away from with promote (that refusal joins the champion's history). Never uses stages. Every
move of `champion` is appended to the champion's history in the registry (see promote).
Descriptions (markdown, in the MLflow UI): the registered model's, when it has none (what it
predicts, its inputs, how to load and serve it); the version's (its train_best run, data,
RMSEs, why it became champion or not); the register run's (the comparison, the rows, the
confidence). Metric confidence (when measured).
Artifact: registration.json (what was registered, what was compared on which rows, with the
thresholds, both RMSEs and the confidence, and why the champion moved or stayed).
"""

from __future__ import annotations

from dataclasses import asdict

import click
import pandas as pd

from taxi_duration.core.contracts import (
    CHALLENGER,
    CHAMPION,
    CHAMPION_AFTER_TAG,
    CHAMPION_MOVE_TAG,
    COURSE_FEATURES,
    DEFAULT_MIN_CONFIDENCE,
    FEATURIZE,
    MODEL_NAME,
    MODEL_URI_TAG,
    PREDICTION,
    REGISTER,
    REGISTRATION_FILE,
    TEST_PREDICTIONS_FILE,
    trips_split_path,
)
from taxi_duration.core.params import (
    check_confidence,
    check_min_improvement,
    check_model_name,
)
from taxi_duration.core.reuse import unquote
from taxi_duration.model.gate import rows_digest
from taxi_duration.pipeline.champion import Gate, Mover, ScoredRows, incumbent_version, publish
from taxi_duration.pipeline.cli import exits_cleanly
from taxi_duration.pipeline.registry_notes import (
    Candidacy,
    comparison,
    model_description,
    run_description,
    version_description,
)
from taxi_duration.tracking import registry, runs


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
@click.option(
    "--min-confidence",
    type=float,
    default=DEFAULT_MIN_CONFIDENCE,
    show_default=True,
    help="How sure a paired comparison on the same rows must be that the candidate's error is "
    "lower (0: not asked).",
)
@exits_cleanly(REGISTER)
def main(train_run: str, model_name: str, min_improvement: float, min_confidence: float) -> None:
    check_model_name(model_name)
    with runs.step_run(REGISTER) as run:
        runs.log_params(
            {
                "train_run": train_run,
                "model_name": model_name,
                "min_improvement": min_improvement,
                "min_confidence": min_confidence,
            }
        )
        gate = Gate(check_min_improvement(min_improvement), check_confidence(min_confidence))
        trained = runs.read_upstream(REGISTER, train_run)
        featurize = runs.lineage(trained)[FEATURIZE]
        test_trips = pd.read_parquet(runs.download(featurize.info.run_id, trips_split_path("test")))
        predicted = pd.read_parquet(runs.download(trained.info.run_id, TEST_PREDICTIONS_FILE))
        rows = ScoredRows(rows_digest(test_trips), test_trips, predicted[PREDICTION].to_numpy())
        data_tags = runs.data_tags(trained)
        test_rmse = trained.data.metrics["test_rmse"]
        filtered = featurize.data.params
        version_tags = {
            **data_tags,
            "encoding": trained.data.tags.get("encoding", ""),
            # what scoring the version needs, on the version itself (predict reads it)
            "features": trained.data.tags.get("features", COURSE_FEATURES),
            "min_duration": unquote(filtered["min_duration"]),
            "max_duration": unquote(filtered["max_duration"]),
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
            rows,
            version_tags,
            version_description(candidacy),
            Mover(runs.user(), run.info.run_id),
            gate,
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
            "comparison": comparison(candidacy, number, incumbent, gate, rows, decision),
        }
        runs.log_json(record, REGISTRATION_FILE)
        metrics: dict[str, float] = {
            "model_version": int(number),
            "promoted": int(decision.promote),
        }
        if incumbent is not None and incumbent.confidence is not None:
            metrics["confidence"] = incumbent.confidence
        runs.log_metrics(metrics)
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
            run_description(model_name, number, candidacy, decision, incumbent, gate, rows)
        )
        print(
            f"register: runs:/{run.info.run_id} {model_name} v{number} "
            f"aliases {', '.join(aliases)}: {decision.reason}"
        )


if __name__ == "__main__":
    main()
