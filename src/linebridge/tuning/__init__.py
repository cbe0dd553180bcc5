"""The Optuna study of the edge-loss weight and TPS strength of the declared method (params.yaml study.method)."""
