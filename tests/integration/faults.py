"""Faults on demand, installed in every Ray worker by ``worker_process_setup_hook`` (test_faults.py):
the trial's ``seed`` picks the fault. ``FAULT_DIR`` (an env var) holds markers so a fault can strike
only the first attempt. Never used by the product."""

import os
import time
from pathlib import Path

FAULTS = {
    0: "none",
    1: "exception",  # deterministic: failed, never retried
    2: "nan",  # the loss diverges: diverged, never retried
    3: "worker_lost_once",  # the process dies on the first attempt: retried, then completes
    4: "cuda_oom_once",  # CUDA OOM while sharing the device: retried, then completes
    5: "memory_monitor",  # Ray's memory monitor kills it every time: oom after the retries
    6: "hang",  # never reports: stopped by budget.trial_timeout_s
    7: "config",  # a configuration the trial rejects: failed, never retried
}


def _first_attempt(name: str, seed: int) -> bool:
    marker = Path(os.environ["FAULT_DIR"]) / f"{name}-{seed}"
    attempts = Path(os.environ["FAULT_DIR"]) / f"attempts-{seed}"
    with attempts.open("a") as f:
        f.write("x")
    if marker.exists():
        return False
    marker.touch()
    return True


def install() -> None:
    import trainers.loop
    from trainers.errors import ConfigError

    original = trainers.loop.run_trial

    def run_trial(cfg, reporter, split_file=None):
        fault = FAULTS[cfg.seed]
        first = _first_attempt(fault, cfg.seed)
        if fault == "exception":
            raise ValueError("boom at step 0")
        if fault == "config":
            raise ConfigError(["model.num_layers: 9 > 4 layers of the base model; choose at most 4"])
        if fault == "nan":
            optim = cfg.optim.model_copy(update={"learning_rate": 1e12})
            return original(cfg.model_copy(update={"optim": optim}), reporter, split_file)
        if fault == "worker_lost_once" and first:
            os._exit(1)
        if fault == "cuda_oom_once" and first:
            import torch

            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if fault == "memory_monitor":
            import ray.exceptions

            raise ray.exceptions.OutOfMemoryError("Task was killed due to the node running low on memory.")
        if fault == "hang":
            time.sleep(3600)
        return original(cfg, reporter, split_file)

    trainers.loop.run_trial = run_trial
