"""The trial: split, train, validate. Knows nothing of Ray, Optuna or MLflow.

Import ``trainers.loop.run_trial`` for the torch side; ``trainers.config`` and ``trainers.api`` are torch-free.
"""

from trainers.api import Reporter, TrialOutcome, TrialPruned
from trainers.config import TrialConfig, load_trial_config
from trainers.errors import ConfigError

__all__ = ["ConfigError", "Reporter", "TrialConfig", "TrialOutcome", "TrialPruned", "load_trial_config"]
