"""What every step of the pipeline shares: configuration and its schema, atomic files, checkpoints, MLflow
tracking, torchrun, pretrained-weight lookup and the bookkeeping of a training run."""
