"""taxi_duration: the library behind the pipeline's entry points (steps/), in layers that import
only downward:

    tools      make data, make ui
    pipeline   what the entry points share: the one-line-error shell, main's orchestration,
               the champion decision, predict's scoring, the runs' descriptions
    tracking   MLflow at the edge: runs, trials, the registry and the champion's history, the
               pyfunc model, Spark scoring, the tracking-server preflight, the plugins
    model      the ML, pure: features, XGBoost training, the search, monitoring, pictures
    data       files: TLC months (download, cache, read), the splits, predict's outputs,
               parquet read a batch at a time
    core       contracts (names, columns, artifact paths), errors, parameters, processes,
               code fingerprints and digests

docs/development.md draws the import picture; tests/unit/test_structure.py keeps it so.
"""
