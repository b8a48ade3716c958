"""What runs in a training process: the trainer's context, feeds, checkpoints, ranks
and warm groups. Imports nothing of pydantic, Optuna, MLflow or Tune at module level."""
