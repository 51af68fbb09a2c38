"""Small trial configs on tiny random models: a few ms per step."""

from __future__ import annotations

from typing import Any

from trainers.config import TrialConfig, apply_overrides, trial_config_from_dict


def tiny_config(task: str = "classification", *overrides: str, **sections: Any) -> TrialConfig:
    base: dict[str, Any] = {
        "task": task,
        "model": {"name_or_path": "tiny-bert" if task == "classification" else "tiny-gpt2"},
        "data": {"max_length": 24, "max_rows": 200},
        "optim": {"learning_rate": 3e-3, "batch_size": 8, "max_steps": 6, "warmup_ratio": 0.0},
        "eval": {"eval_every_steps": 3, "max_generate_examples": 4, "max_new_tokens": 3, "batch_size": 32},
        "adaptation": {"method": "full"},
        "num_threads": 2,
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value}
    return trial_config_from_dict(apply_overrides(base, overrides))
