"""register: register the trained model, alias it `challenger`, and move `champion` only if it wins.

Input: train_run (runs:/<id> of a train_best run). Parameters: model_name; min_improvement
(minutes, >= 0, default 0: how much lower than the champion's the candidate's test RMSE must be).
The new version is tagged with its metrics, data months, encoding and source run, and always
gets alias `challenger`. `champion` moves to it when there is no champion, or when its test RMSE
is lower than the champion's on the same test month by at least min_improvement (re-scoring the
champion on this test month when it was tested on another), as MLflow's
validate_evaluation_results judges root_mean_squared_error. Never uses stages. Every move of
`champion` is appended to the champion's history in the registry (see promote).
Descriptions (markdown, in the MLflow UI): the registered model's, when it has none (what it
predicts, its inputs, how to load and serve it); the version's (its train_best run, data,
RMSEs, why it became champion or not); the register run's (the comparison).
Artifact: registration.json (what was registered, what was compared, with the threshold and
both RMSEs, and why the champion moved or stayed).
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
    FEATURIZE,
    MODEL_NAME,
    MODEL_URI_TAG,
    REGISTER,
    REGISTRATION_FILE,
    trips_split_path,
)
from taxi_duration.core.params import check_min_improvement, check_model_name
from taxi_duration.pipeline.champion import Mover, incumbent_version, publish
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
@exits_cleanly(REGISTER)
def main(train_run: str, model_name: str, min_improvement: float) -> None:
    check_model_name(model_name)
    with runs.step_run(REGISTER) as run:
        runs.log_params(
            {"train_run": train_run, "model_name": model_name, "min_improvement": min_improvement}
        )
        check_min_improvement(min_improvement)
        trained = runs.read_upstream(REGISTER, train_run)
        featurize = runs.lineage(trained)[FEATURIZE]
        test_path = runs.download(featurize.info.run_id, trips_split_path("test"))
        test_trips = pd.read_parquet(test_path)
        data_tags = runs.data_tags(trained)
        test_rmse = trained.data.metrics["test_rmse"]

        version_tags = {
            **data_tags,
            "encoding": trained.data.tags.get("encoding", ""),
            "features": trained.data.tags.get("features", COURSE_FEATURES),
            "test_rmse": f"{test_rmse:.6f}",
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
            version_tags,
            version_description(candidacy),
            test_trips,
            Mover(runs.user(), run.info.run_id),
            min_improvement,
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
            "comparison": comparison(candidacy, number, incumbent, min_improvement, decision),
        }
        runs.log_json(record, REGISTRATION_FILE)
        runs.log_metrics({"model_version": int(number), "promoted": int(decision.promote)})
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
            run_description(model_name, number, candidacy, decision, incumbent, min_improvement)
        )
        print(
            f"register: runs:/{run.info.run_id} {model_name} v{number} "
            f"aliases {', '.join(aliases)}: {decision.reason}"
        )


if __name__ == "__main__":
    main()
