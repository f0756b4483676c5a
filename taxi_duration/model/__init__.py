"""The ML, pure (no disk, no MLflow): features, XGBoost training, the search, the choice of
trial, monitoring and the pictures. Imports only core."""
