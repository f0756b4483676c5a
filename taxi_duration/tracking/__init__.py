"""MLflow at the edge, the only layer that imports mlflow: runs, trials, the registry and the
champion's history, the pyfunc model, Spark scoring, the server preflight, the plugins."""
