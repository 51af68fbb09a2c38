"""The benchmark task (../shared/bench/TASK.md): SST-2, a seeded 4,000-row pool, the exact stratified
80/20 split every method uses, dev.tsv as the held-out test, and the search space and budget.

``quick`` is the same task shrunk to CI size (a few minutes for every method and seed); its numbers
say the harness works, not which method is faster. ``start`` is the full task cut to two short trials:
its one number that counts is sweep start -> first training step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
_CANDIDATES = [os.environ.get("SST2_DIR"), REPO.parent / "shared/data/sst2", "/work/shared/data/sst2"]


def sst2_dir() -> Path | None:
    return next((Path(c) for c in _CANDIDATES if c and (Path(c) / "train.tsv").is_file()), None)


@dataclass(frozen=True)
class Size:
    name: str
    pool: int  # rows drawn from train.tsv
    test_rows: int | None  # rows of dev.tsv (None: all 872)
    num_trials: int
    max_steps: int
    eval_every: int
    warmup_steps: int
    max_length: int
    grace: int  # ASHA's grace period and the median pruner's warm-up, in steps


SIZES = {
    "full": Size("full", 4000, None, 16, 120, 20, 12, 64, 40),
    "quick": Size("quick", 320, 128, 3, 16, 8, 2, 32, 8),
    # the full task's data and model, two trials of one evaluation: sweep start -> first step, cheaply
    # repeated (~45 s a run)
    "start": Size("start", 4000, 64, 2, 20, 20, 2, 64, 20),
}
BATCH, EVAL_BATCH = 16, 64
LR_LOW, LR_HIGH = 1e-5, 5e-3
LAYERS, LOSSES, RANKS = [2, 4, 6], ["cross_entropy", "label_smoothing", "focal"], [4, 8, 16]
TARGET_ACC = 0.83


def _read(path: Path) -> list[tuple[str, int]]:
    rows = []
    with path.open(encoding="utf-8") as f:
        next(f)  # header: sentence<TAB>label
        for line in f:
            text, label = line.rstrip("\n").split("\t")
            rows.append((text, int(label)))
    return rows


@dataclass(frozen=True)
class Data:
    train: list[tuple[str, int]]
    val: list[tuple[str, int]]
    test: list[tuple[str, int]]


def load(size: Size) -> Data:
    """TASK.md's pool and split, exactly (quick: a smaller pool drawn the same way)."""
    root = sst2_dir()
    if root is None:
        raise SystemExit("the benchmark needs SST-2: ../shared/data/sst2/ (or SST2_DIR=...)")
    rows = _read(root / "train.tsv")
    idx = np.random.default_rng(0).choice(len(rows), size=size.pool, replace=False)
    pool = [rows[i] for i in idx]
    rng = np.random.default_rng(0)
    val_pos: set[int] = set()
    for label in (0, 1):
        members = [i for i, (_, y) in enumerate(pool) if y == label]
        order = rng.permutation(members)
        val_pos.update(int(i) for i in order[: round(0.2 * len(members))])
    train = [r for i, r in enumerate(pool) if i not in val_pos]
    val = [r for i, r in enumerate(pool) if i in val_pos]
    test = _read(root / "dev.tsv")[: size.test_rows]
    return Data(train, val, test)


def write_tsv(rows: list[tuple[str, int]], path: Path) -> Path:
    with path.open("w", encoding="utf-8") as f:
        f.write("sentence\tlabel\n")
        for text, label in rows:
            f.write(f"{text}\t{label}\n")
    return path
