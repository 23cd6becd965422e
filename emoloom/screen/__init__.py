"""The screen: Ray Tune + Optuna over recipes and base models, KV-off evaluation, MLflow."""
