"""The Optuna study of the edge-loss weight and TPS strength of the full method."""
