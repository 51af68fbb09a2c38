"""What a trial will do, known before it runs: its fingerprints, its split sizes and the step of its last
report. The trial owns what a step is, so everyone who needs a trial's last step (the sweep's pruning
guard, ASHA's max_t, Hyperband's max_resource) asks here. Torch-free at import, and in planning a model
whose config.json states its depth (the sweep's data check).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainers.config import TrialConfig
from trainers.errors import ConfigError
from trainers.model_files import load_model_config, stated_depth
from trainers.settings import DataConfig, OptimConfig, SplitConfig
from trainers.tasks import get_task

if TYPE_CHECKING:
    from trainers.data.split import Splits


@dataclass(frozen=True)
class TrialPlan:
    data_fingerprint: str
    split_fingerprint: str
    num_train: int  # rows in the (first) training fold
    num_val: int
    num_test: int
    total_steps: int  # optimizer steps per training run (per fold)
    last_step: int  # the step of the final report: total_steps, or num_folds - 1 for k-fold trials
    balance: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = ()  # per part: (label, rows) (classification)
    given: tuple[str, ...] = ()  # the parts read from their own files (data.val_path / data.test_path)

    def describe(self) -> list[str]:
        """What the data is, for `sweep validate`: rows per part, the class balance, and warnings."""
        parts = f"train {self.num_train}, validation {self.num_val}, test {self.num_test}"
        given = f" (given: {', '.join(self.given)})" if self.given else ""
        lines = [f"rows: {parts}{given}"]
        for part, counts in self.balance:
            total = sum(n for _, n in counts) or 1
            name, fewest = min(counts, key=lambda c: c[1])
            shown = ", ".join(f"{label} {n}" for label, n in counts)
            lines.append(f"  {part}: {shown}; minority {name!r} {100 * fewest / total:.0f}%")
            if fewest < FEW_ROWS_PER_CLASS:
                lines.append(f"  warning: {part} has {fewest} row(s) of {name!r}; its metrics for that class are noise")
        return lines

    @property
    def fingerprints(self) -> dict[str, str]:
        return {"data": self.data_fingerprint, "split": self.split_fingerprint}


def total_steps(optim: OptimConfig, num_train: int) -> int:
    """Optimizer steps of one training run: ``max_steps``, or ``num_epochs`` of batches (after accumulation)."""
    if optim.max_steps is not None:
        return optim.max_steps
    per_epoch = math.ceil(num_train / optim.batch_size) / optim.grad_accum_steps
    return max(1, math.ceil((optim.num_epochs or 1.0) * per_epoch))


def last_step(cfg: TrialConfig, num_train: int) -> int:
    """The step of a trial's final report: k-fold trials report once per fold (step = fold index)."""
    if cfg.split.num_folds is not None:
        return cfg.split.num_folds - 1
    return total_steps(cfg.optim, num_train)


FEW_ROWS_PER_CLASS = 5


_made: tuple[tuple[Any, ...], str, Splits] | None = None
"""The last split ``_split`` made, with the rows' fingerprint (one, not one per cached entry: a k-fold
split of a large file is k times its rows' indices)."""


def _file_stamp(data: DataConfig, task: str) -> tuple[str, int, int] | None:
    """Which file, and which version of it, ``data`` names: the cache below is keyed on it, so a file
    rewritten in place (or another file under the same relative path) is read again."""
    from trainers.data.read import resolve_data_path

    path = resolve_data_path(data, task)
    try:
        stat = path.stat()
    except OSError:  # missing: load_rows says so
        return None
    return str(path.resolve()), stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=32)
def _split(
    data: DataConfig, split: SplitConfig, task: str, stamp: tuple[str, int, int] | None
) -> tuple[str, str, int, int, int, tuple, tuple]:  # type: ignore[type-arg]
    import numpy as np

    from trainers.data.read import load_rows
    from trainers.data.split import make_splits

    global _made
    rows = load_rows(data, task)
    splits = make_splits(rows, split)
    _made = ((data, split, task, stamp), rows.fingerprint, splits)
    first = splits.folds[0]
    balance = []
    if rows.label_names:
        for part, idx in (("train", first.train), ("validation", first.val), ("test", splits.test)):
            if len(idx):
                counts = np.bincount(rows.targets[idx], minlength=len(rows.label_names))
                balance.append((part, tuple((n, int(c)) for n, c in zip(rows.label_names, counts, strict=True))))
    return (
        rows.fingerprint,
        splits.fingerprint,
        len(first.train),
        len(first.val),
        len(splits.test),
        tuple(balance),
        tuple(rows.given),
    )


def save_split(cfg: TrialConfig, path: Path) -> None:
    """Write the split of ``cfg``'s data and split config to ``path``, for trials of that config to load
    (``trainers.data.split.load_splits``): the one ``plan_trial`` made last if it is that config's, else made
    again."""
    from trainers.data.read import load_rows
    from trainers.data.split import make_splits, save_splits, split_key

    if _made is not None and _made[0] == (cfg.data, cfg.split, cfg.task, _file_stamp(cfg.data, cfg.task)):
        _, data_fp, splits = _made
    else:
        rows = load_rows(cfg.data, cfg.task)
        data_fp, splits = rows.fingerprint, make_splits(rows, cfg.split)
    save_splits(splits, split_key(data_fp, cfg.task, cfg.split), path)


def check_layers(cfg: TrialConfig) -> int:
    """Check the layer counts against the model's depth (no weights; torch only where config.json does not
    state ``num_hidden_layers``); returns the depth."""
    depth = stated_depth(cfg.model.name_or_path)
    if depth is None:
        depth = int(load_model_config(cfg.model.name_or_path).num_hidden_layers)
    if cfg.model.num_layers is not None and cfg.model.num_layers > depth:
        raise ConfigError(
            [
                f"model.num_layers: {cfg.model.num_layers} > the {depth} layers of '{cfg.model.name_or_path}'; "
                f"use 1..{depth}"
            ]
        )
    kept = cfg.model.num_layers or depth
    if cfg.model.num_trainable_layers is not None and cfg.model.num_trainable_layers > kept:
        raise ConfigError(
            [f"model.num_trainable_layers: {cfg.model.num_trainable_layers} > the {kept} kept layers; use 0..{kept}"]
        )
    if not get_task(cfg.task).has_head and cfg.model.num_trainable_layers == 0:
        raise ConfigError([f"model.num_trainable_layers: 0 leaves nothing to train for {cfg.task}; use >= 1"])
    return depth


def plan_trial(cfg: TrialConfig) -> TrialPlan:
    """Every input check of a trial without training it (data, split, model depth); raises ConfigError.

    The data is read once per (data, split) config in this process, so planning every trial of a sweep
    costs one read.
    """
    data_fp, split_fp, num_train, num_val, num_test, balance, given = _split(
        cfg.data, cfg.split, cfg.task, _file_stamp(cfg.data, cfg.task)
    )
    check_layers(cfg)
    return TrialPlan(
        data_fp,
        split_fp,
        num_train,
        num_val,
        num_test,
        total_steps(cfg.optim, num_train),
        last_step(cfg, num_train),
        balance,
        given,
    )
