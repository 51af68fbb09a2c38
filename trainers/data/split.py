"""Splitting the rows: a seeded (stratified, for classification) train / validation / test split or
k folds, the same for every trial of the same rows and split config; given validation and test files
are their parts as they are. A split is saved once for a sweep's trials to load."""

from __future__ import annotations

import json
import logging
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainers.data.rows import Rows, fingerprint
from trainers.errors import ConfigError
from trainers.settings import SplitConfig
from trainers.tasks import get_task


@dataclass(frozen=True)
class Fold:
    train: np.ndarray
    val: np.ndarray


@dataclass(frozen=True)
class Splits:
    folds: list[Fold]  # one entry for a plain train/validation split
    test: np.ndarray
    fingerprint: str


def make_splits(rows: Rows, cfg: SplitConfig) -> Splits:
    """Seeded, stratified (classification) split; the same rows + seed give the same split. Rows from a
    given validation or test file (``data.val_path`` / ``data.test_path``) are that part as they are."""
    if rows.given:
        return _given_splits(rows, cfg)
    from sklearn.model_selection import train_test_split

    n = len(rows)
    idx = np.arange(n)
    stratify = rows.targets if get_task(rows.task).stratify else None
    min_rows = 2 if cfg.num_folds is None else cfg.num_folds
    if cfg.test_fraction > 0:
        min_rows += 1
    if n < min_rows:
        raise ConfigError([f"data: {n} row(s) are too few for this split (need >= {min_rows}); add data"])
    if stratify is not None:
        _check_stratified(rows, cfg)
    test = np.zeros(0, dtype=np.int64)
    rest = idx
    try:
        if cfg.test_fraction > 0:
            rest, test = train_test_split(idx, test_size=cfg.test_fraction, random_state=cfg.seed, stratify=stratify)
        rest_y = stratify[rest] if stratify is not None else None
        if cfg.num_folds is not None:
            folds = _kfold(rest, rest_y, cfg.num_folds, cfg.seed)
        else:
            val_size = cfg.val_fraction / (1.0 - cfg.test_fraction)
            train, val = train_test_split(rest, test_size=val_size, random_state=cfg.seed, stratify=rest_y)
            folds = [Fold(np.sort(train), np.sort(val))]
    except ConfigError:
        raise
    except ValueError:  # a case _check_stratified does not foresee; sklearn's wording stays in the debug log
        logging.getLogger(__name__).debug("split failed", exc_info=True)
        raise ConfigError(
            [
                f"split: {n} rows cannot be split with val_fraction={cfg.val_fraction}, "
                f"test_fraction={cfg.test_fraction}; add rows or change the fractions"
            ]
        ) from None
    test = np.sort(test)
    fp = fingerprint(rows.fingerprint, test.tolist(), [(f.train.tolist(), f.val.tolist()) for f in folds])
    return Splits(folds, test, fp)


SPLIT_FORMAT = 1  # of the saved split's key and arrays (``save_splits``)


def split_key(rows_fingerprint: str, task: str, cfg: SplitConfig) -> str:
    """What a split is of: the rows (their fingerprint), the task (stratified or not) and the split config."""
    parts = {"rows": rows_fingerprint, "task": task, "split": cfg.model_dump(mode="json"), "format": SPLIT_FORMAT}
    return json.dumps(parts, sort_keys=True)


def save_splits(splits: Splits, key: str, path: Path) -> None:
    """Write ``splits`` (of what ``key`` names: ``split_key``) for other processes of the same sweep, which
    then load it (``load_splits``) instead of splitting again: no trial worker imports sklearn for it
    before its first step, and every trial's split is the one the data check made and described.
    Written whole or not at all (renamed into place)."""
    arrays: dict[str, Any] = {"test": splits.test}
    for i, fold in enumerate(splits.folds):
        arrays[f"train_{i}"], arrays[f"val_{i}"] = fold.train, fold.val
    part = path.with_name(f".{path.name}.part")
    with part.open("wb") as f:
        np.savez(f, key=np.array(key), fingerprint=np.array(splits.fingerprint), **arrays)
    part.replace(path)


def load_splits(path: Path, rows: Rows, cfg: SplitConfig) -> Splits | None:
    """The split ``save_splits`` wrote at ``path``, if it is one of these rows by this config; None if it is
    not (another data or split config), missing or unreadable: the caller splits (``make_splits``)."""
    try:
        with np.load(path, allow_pickle=False) as saved:
            if str(saved["key"]) != split_key(rows.fingerprint, rows.task, cfg):
                return None
            num_folds = sum(name.startswith("train_") for name in saved.files)
            folds = [Fold(saved[f"train_{i}"], saved[f"val_{i}"]) for i in range(num_folds)]
            splits = Splits(folds, saved["test"], str(saved["fingerprint"]))
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        logging.getLogger(__name__).debug("saved split %s not used", path, exc_info=True)
        return None
    parts = [splits.test, *(a for f in folds for a in (f.train, f.val))]
    if not folds or any(
        a.dtype.kind not in "iu" or (a.size and not 0 <= a.min() <= a.max() < len(rows)) for a in parts
    ):
        return None
    return splits


def splits_for(rows: Rows, cfg: SplitConfig, saved: Path | None = None) -> Splits:
    """The split saved at ``saved`` (``save_splits``) where it is these rows' by this config; else made
    (``make_splits``), the same way."""
    loaded = load_splits(saved, rows, cfg) if saved is not None else None
    return loaded if loaded is not None else make_splits(rows, cfg)


def _given_splits(rows: Rows, cfg: SplitConfig) -> Splits:
    """The training file is the training part (less a test fraction, if asked, when no test file is
    given); a given file is its part."""
    if "val" in rows.given and cfg.num_folds is not None:
        raise ConfigError(
            [
                "split.num_folds: k-fold cross-validation makes its own validation folds from data.path; "
                "drop data.val_path or split.num_folds"
            ]
        )
    if "test" in rows.given and cfg.num_folds is not None:
        raise ConfigError(
            [
                "split.num_folds: k-fold trials are not evaluated on a test part, so data.test_path would be "
                "ignored; drop one of them"
            ]
        )
    if "test" in rows.given and cfg.test_fraction > 0:
        raise ConfigError(
            [
                f"split.test_fraction: {cfg.test_fraction} and data.test_path both name a test part; "
                f"set split.test_fraction: 0 to use the file"
            ]
        )
    end = min(start for start, _ in rows.given.values())
    main = Rows(
        rows.task, rows.texts[:end], rows.responses[:end], rows.targets[:end], rows.label_names, "", rows.source
    )
    parts = {k: np.arange(a, b) for k, (a, b) in rows.given.items()}
    if "val" in parts:
        # the training file: the test fraction (if any) is held out of it, the rest trains
        inner = (
            make_splits(main, cfg.model_copy(update={"val_fraction": cfg.test_fraction, "test_fraction": 0.0}))
            if cfg.test_fraction
            else None
        )
        train = inner.folds[0].train if inner else np.arange(end)
        test = inner.folds[0].val if inner else parts.get("test", np.zeros(0, dtype=np.int64))
        folds = [Fold(train, parts["val"])]
    else:  # only a test file: the validation part (or folds) comes from the training file as usual
        inner = make_splits(main, cfg)
        folds, test = inner.folds, parts["test"]
    fp = fingerprint(rows.fingerprint, test.tolist(), [(f.train.tolist(), f.val.tolist()) for f in folds])
    return Splits(folds, np.sort(test), fp)


def _check_stratified(rows: Rows, cfg: SplitConfig) -> None:
    """What a stratified split needs, said before sklearn says it in its words: every class twice, and
    every held-out part at least one row per class."""
    counts = np.bincount(rows.targets, minlength=len(rows.label_names))
    present = [(name, int(c)) for name, c in zip(rows.label_names, counts, strict=False) if c > 0]
    name, fewest = min(present, key=lambda nc: nc[1])
    if fewest < 2:
        raise ConfigError(
            [
                f"data: label {name!r} has {fewest} row in {rows.source}; a stratified split needs >= 2 rows "
                f"of every label; add rows of it or remove it"
            ]
        )
    n, k = len(rows), len(present)
    parts = [("test_fraction", cfg.test_fraction)] if cfg.test_fraction > 0 else []
    if cfg.num_folds is None:
        parts.append(("val_fraction", cfg.val_fraction))
    for field_name, fraction in parts:
        held = math.ceil(fraction * n)
        if held < k or n - held < k:
            raise ConfigError(
                [
                    f"split.{field_name}: {fraction} of {n} rows holds out {held} rows for {k} labels; each part "
                    f"needs >= 1 row per label: add rows or set split.{field_name} nearer 0.5"
                ]
            )


def _kfold(rest: np.ndarray, y: np.ndarray | None, k: int, seed: int) -> list[Fold]:
    from sklearn.model_selection import KFold, StratifiedKFold

    if y is not None:
        counts = np.bincount(y)
        smallest = int(counts[counts > 0].min())
        if smallest < k:
            raise ConfigError(
                [
                    f"split.num_folds: {k} folds need >= {k} rows of every class, the smallest has {smallest}; "
                    f"lower split.num_folds or add rows"
                ]
            )
        splitter: StratifiedKFold | KFold = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        parts = splitter.split(rest, y)
    else:
        if len(rest) < k:
            raise ConfigError([f"split.num_folds: {k} folds need >= {k} rows, there are {len(rest)}"])
        parts = KFold(n_splits=k, shuffle=True, random_state=seed).split(rest)
    return [Fold(np.sort(rest[tr]), np.sort(rest[va])) for tr, va in parts]
