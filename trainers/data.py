"""Step 1 of a trial: load the rows, check them, split them (seeded), tokenize them (cached per process)."""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import logging
import math
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trainers.config import ConfigError, DataConfig, SplitConfig
from trainers.tasks import get_task


@dataclass(frozen=True)
class Rows:
    """The checked rows of a dataset, read by the task (``trainers.tasks``)."""

    task: str
    texts: list[str]  # the input text, or the causal-LM prompt
    responses: list[str]  # causal LM only
    targets: np.ndarray  # classification: int64 ids into label_names; regression: float32; causal LM: empty
    label_names: list[str]  # classification only
    fingerprint: str
    source: str
    given: dict[str, tuple[int, int]] = field(default_factory=dict)  # "val"/"test": rows from their own files

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class Fold:
    train: np.ndarray
    val: np.ndarray


@dataclass(frozen=True)
class Splits:
    folds: list[Fold]  # one entry for a plain train/validation split
    test: np.ndarray
    fingerprint: str


def resolve_data_path(cfg: DataConfig, task: str) -> Path:
    return Path(cfg.path) if cfg.path is not None else get_task(task).demo_path


TEXT_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl")


def _check_text(path: Path) -> None:
    """A text format must be UTF-8 text: say which row is not, before a parser says it in its words."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, rows = 0, 1
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            if b"\x00" in chunk:
                at = offset + chunk.index(b"\x00")
                raise UnicodeDecodeError("utf-8", chunk, at - offset, at - offset + 1, "binary: NUL byte")
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                raise UnicodeDecodeError("utf-8", chunk, offset + exc.start, offset + exc.end, exc.reason) from None
            offset += len(chunk)
            rows += chunk.count(b"\n")


def _read_frame(path: Path, header: bool = True) -> pd.DataFrame:
    try:
        if path.suffix.lower() in TEXT_SUFFIXES and path.is_file():
            _check_text(path)
        frame = _parse(path, header)
        frame.columns = [str(c) for c in frame.columns]  # a headerless file's columns: "0", "1", ...
        return frame
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, OSError) as exc:
        raise ConfigError([f"data.path: '{path}' cannot be read: {_read_problem(path, exc)}"]) from None


def _read_problem(path: Path, exc: Exception) -> str:
    """Why a data file does not parse, in our words and with the row where it helps."""
    if isinstance(exc, UnicodeDecodeError):
        with path.open("rb") as f:
            row = f.read(exc.start).count(b"\n") + 1
        if exc.reason.startswith("binary"):
            return f"it is binary, not text (a NUL byte in row {row}); pass a UTF-8 text or .parquet file"
        return (
            f"row {row} (byte {exc.start}) is not UTF-8 text: the file is in another encoding "
            f"(e.g. latin-1); save it as UTF-8"
        )
    if isinstance(exc, pd.errors.EmptyDataError):
        return "the file is empty; it needs a header row and one row per example"
    found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
    if found:
        expected, line, saw = found.groups()
        return (
            f"row {line} has {saw} fields where the header has {expected}; quote fields that contain the "
            f"separator, or fix the row"
        )
    reason = " ".join(str(exc).split())[:160] or type(exc).__name__
    kind = path.suffix or "a dataset"
    return f"it is not a valid {kind} file ({reason}); check its format"


def _parse(path: Path, header: bool = True) -> pd.DataFrame:
    if path.is_dir():
        import datasets  # only for saved HF dataset directories

        try:
            ds = datasets.load_from_disk(str(path))
        except FileNotFoundError:
            raise ConfigError(
                [f"data.path: directory '{path}' is not a saved HF dataset; pass a file or a save_to_disk dir"]
            ) from None
        if isinstance(ds, datasets.DatasetDict):
            if "train" not in ds:
                raise ConfigError([f"data.path: '{path}' holds splits {list(ds)} and no 'train'; save the one to use"])
            ds = ds["train"]
        return ds.to_pandas()
    suffix = path.suffix.lower()
    first_row = 0 if header else None
    if suffix == ".csv":
        return pd.read_csv(path, keep_default_na=False, header=first_row)
    if suffix == ".tsv":
        # GLUE-style TSV: no quoting, split on tabs only
        return pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, keep_default_na=False, header=first_row)
    if suffix in (".jsonl", ".json"):
        return pd.read_json(path, lines=suffix == ".jsonl", dtype=False)
    if suffix == ".parquet":
        return pd.read_parquet(path)
    raise ConfigError(
        [f"data.path: '{path}' has unknown format '{suffix}'; use .csv, .tsv, .jsonl, .parquet or a HF dataset dir"]
    )


def _require_columns(frame: pd.DataFrame, wanted: dict[str, str], path: Path, header: bool = True) -> None:
    missing = {f: col for f, col in wanted.items() if col not in frame.columns}
    if not missing:
        return
    names = [str(c) for c in frame.columns]
    if header and path.suffix.lower() in (".csv", ".tsv") and _looks_like_data(names):
        # the file has no header row: its first example was read as column names
        longest = max(range(len(names)), key=lambda i: len(names[i]))
        fix = ", ".join(
            f"data.{f}: {longest if f in ('text_column', 'prompt_column') else min(set(range(len(names))) - {longest}, default=0)}"
            for f in wanted
        )
        raise ConfigError(
            [
                f"data.header: the first row of '{path}' looks like data, not column names ({names[:3]}); "
                f"for a file without a header row set data.header: false and name columns by position ({fix})"
            ]
        )
    raise ConfigError(
        [
            f"data.{f}: column '{col}' is not in '{path}'; columns are {names}; set data.{f}"
            for f, col in missing.items()
        ]
    )


def _looks_like_data(names: list[str]) -> bool:
    """Column names that read like an example: a number, or a sentence."""
    return any(n.strip().lstrip("-").replace(".", "", 1).isdigit() or len(n.split()) >= 3 for n in names)


def _clean_texts(frame: pd.DataFrame, column: str, field_: str, path: Path) -> list[str]:
    values = frame[column].tolist()
    empty = [i for i, v in enumerate(values) if not isinstance(v, str) or not v.strip()]
    if empty:
        shown = ", ".join(str(i + 1) for i in empty[:5])
        raise ConfigError(
            [
                f"data.{field_}: {len(empty)} row(s) of '{path}' have empty '{column}' (rows {shown}"
                f"{', ...' if len(empty) > 5 else ''}); remove or fill them"
            ]
        )
    return [str(v) for v in values]


def _fingerprint(*parts: Any) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()[:16]


def load_rows(cfg: DataConfig, task: str, label_names: list[str] | None = None) -> Rows:
    """Read and check the data (and the given validation/test files after it); every problem is a
    ConfigError naming the field, the file and the fix."""
    path = resolve_data_path(cfg, task)
    rows = _load_one(cfg, task, path, "path", label_names, cfg.max_rows)
    given: dict[str, tuple[int, int]] = {}
    parts = [rows]
    for part, field_ in (("val", "val_path"), ("test", "test_path")):
        extra = getattr(cfg, field_)
        if extra is None:
            continue
        # a given part takes the training labels' ids ([] for tasks without labels: no training-only checks)
        more = _load_one(cfg, task, Path(extra), field_, rows.label_names, None)
        start = sum(len(p) for p in parts)
        given[part] = (start, start + len(more))
        parts.append(more)
    if not given:
        return rows
    return Rows(
        task,
        [t for p in parts for t in p.texts],
        [r for p in parts for r in p.responses],
        np.concatenate([p.targets for p in parts]),
        rows.label_names,
        _fingerprint(*(p.fingerprint for p in parts), given),
        rows.source,
        given,
    )


def _load_one(
    cfg: DataConfig, task: str, path: Path, field_: str, label_names: list[str] | None, max_rows: int | None
) -> Rows:
    if not path.exists():
        raise ConfigError([f"data.{field_}: '{path}' does not exist; pass an existing file or directory"])
    frame = _read_frame(path, cfg.header)
    if max_rows is not None:
        frame = frame.iloc[:max_rows]
    if frame.empty:
        raise ConfigError([f"data.{field_}: '{path}' holds no rows; add one row per example after the header"])
    reader = get_task(task)
    _require_columns(frame, {f: getattr(cfg, f) for f in reader.columns}, path, cfg.header)
    return reader.read(frame, cfg, path, label_names)


def read_labels(
    task: str, frame: pd.DataFrame, cfg: DataConfig, path: Path, label_names: list[str] | None = None
) -> Rows:
    """Text + class label (str or int); labels become ids in a stable order (numbers numerically), or
    the ids of ``label_names`` (a validation/test file, a file a trained model is evaluated on)."""
    texts = _clean_texts(frame, cfg.text_column, "text_column", path)
    raw = frame[cfg.label_column].tolist()
    if any(v is None or (isinstance(v, float) and np.isnan(v)) or v == "" for v in raw):
        raise ConfigError([f"data.label_column: '{cfg.label_column}' has empty labels in '{path}'; fill them"])
    if label_names:
        unknown = sorted({str(v) for v in raw} - set(label_names))
        if unknown:
            raise ConfigError(
                [
                    f"data.label_column: labels {unknown[:5]} of '{path}' are not among the training labels "
                    f"{label_names}; fix them or add them to the training data"
                ]
            )
        index = {n: i for i, n in enumerate(label_names)}
        labels = np.array([index[str(v)] for v in raw], dtype=np.int64)
        return Rows(task, texts, [], labels, list(label_names), _fingerprint(task, texts, labels.tolist()), str(path))
    names = sorted({str(v) for v in raw}, key=lambda s: (not s.lstrip("-").isdigit(), _num_or(s), s))
    if len(names) < 2:
        raise ConfigError(
            [f"data.label_column: '{cfg.label_column}' has a single class {names}; classification needs >= 2"]
        )
    index = {n: i for i, n in enumerate(names)}
    labels = np.array([index[str(v)] for v in raw], dtype=np.int64)
    fp = _fingerprint(task, texts, labels.tolist(), names)
    return Rows(task, texts, [], labels, names, fp, str(path))


def read_values(
    task: str, frame: pd.DataFrame, cfg: DataConfig, path: Path, label_names: list[str] | None = None
) -> Rows:
    """Text + a finite number per row (regression). ``label_names`` given (``[]``): not a training file, so
    its targets may be constant (a validation file, a file a model is evaluated on)."""
    texts = _clean_texts(frame, cfg.text_column, "text_column", path)
    values = pd.to_numeric(frame[cfg.label_column], errors="coerce").to_numpy(dtype=np.float64)
    bad = [i for i, v in enumerate(values) if not np.isfinite(v)]
    if bad:
        shown = ", ".join(str(i + 1) for i in bad[:5])
        raise ConfigError(
            [
                f"data.label_column: {len(bad)} row(s) of '{path}' have no number in '{cfg.label_column}' "
                f"(rows {shown}{', ...' if len(bad) > 5 else ''}); regression needs a number in every row"
            ]
        )
    if label_names is None and np.ptp(values) == 0:
        raise ConfigError([f"data.label_column: '{cfg.label_column}' is constant; regression needs varying targets"])
    fp = _fingerprint(task, texts, values.tolist())
    return Rows(task, texts, [], values.astype(np.float32), [], fp, str(path))


def read_pairs(task: str, frame: pd.DataFrame, cfg: DataConfig, path: Path) -> Rows:
    """Prompt + expected response (causal LM)."""
    prompts = _clean_texts(frame, cfg.prompt_column, "prompt_column", path)
    responses = _clean_texts(frame, cfg.response_column, "response_column", path)
    fp = _fingerprint(task, prompts, responses)
    return Rows(task, prompts, responses, np.zeros(0, dtype=np.int64), [], fp, str(path))


def _num_or(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        return 0.0


def make_splits(rows: Rows, cfg: SplitConfig) -> Splits:
    """Seeded, stratified (classification) split; the same rows + seed give the same split. Rows from a
    given validation or test file (``data.val_path`` / ``data.test_path``) are that part as they are."""
    if rows.given:
        return _given_splits(rows, cfg)
    # 1.3 CPU-s of imports by itself, 0.4-0.65 in a trial worker (which has scipy and pandas already)
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
    fp = _fingerprint(rows.fingerprint, test.tolist(), [(f.train.tolist(), f.val.tolist()) for f in folds])
    return Splits(folds, test, fp)


SPLIT_FORMAT = 1  # of the saved split's key and arrays (``save_splits``)


def split_key(rows_fingerprint: str, task: str, cfg: SplitConfig) -> str:
    """What a split is of: the rows (their fingerprint), the task (stratified or not) and the split config."""
    parts = {"rows": rows_fingerprint, "task": task, "split": cfg.model_dump(mode="json"), "format": SPLIT_FORMAT}
    return json.dumps(parts, sort_keys=True)


def save_splits(splits: Splits, key: str, path: Path) -> None:
    """Write ``splits`` (of what ``key`` names: ``split_key``) for other processes of the same sweep, which
    then load it (``load_splits``) instead of splitting again: each trial worker would import sklearn for it
    (0.4-0.65 CPU-s) before its first step, and every trial's split is the one the data check made and
    described. Written whole or not at all (renamed into place)."""
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
    fp = _fingerprint(rows.fingerprint, test.tolist(), [(f.train.tolist(), f.val.tolist()) for f in folds])
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


# --- tokenization (cached per process: the second trial re-uses it) --------------------------------


@dataclass
class Encoded:
    """Token ids per row. Causal LM also keeps prompt ids (for generation) and the decoded reference."""

    input_ids: list[list[int]]
    labels: list[list[int]] | np.ndarray
    prompt_ids: list[list[int]] = field(default_factory=list)
    references: list[str] = field(default_factory=list)


_ENCODED_CACHE: dict[tuple[Any, ...], Encoded] = {}


def encode(rows: Rows, tokenizer: Any, tokenizer_key: str, max_length: int) -> Encoded:
    """Tokenize every row once per (data, tokenizer, max_length) in this process."""
    key = (rows.fingerprint, tokenizer_key, max_length)
    if key not in _ENCODED_CACHE:
        _ENCODED_CACHE[key] = get_task(rows.task).tokenize(rows, tokenizer, max_length)
    return _ENCODED_CACHE[key]


def cached_encodings() -> int:
    """How many tokenized datasets this process holds (reused by later trials)."""
    return len(_ENCODED_CACHE)


def encode_texts(rows: Rows, tokenizer: Any, max_length: int) -> Encoded:
    """One text per row -> ids; the row's target rides along."""
    ids = tokenizer(rows.texts, truncation=True, max_length=max_length)["input_ids"]
    return Encoded(ids, rows.targets)


def encode_prompt_response(rows: Rows, tokenizer: Any, max_length: int) -> Encoded:
    """prompt + response + eos; the loss sees response tokens only (prompt labels are -100)."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    eos = tokenizer.eos_token_id
    prompts = tokenizer(rows.texts, add_special_tokens=False)["input_ids"]
    answers = tokenizer(rows.responses, add_special_tokens=False)["input_ids"]
    input_ids, labels, prompt_ids, refs = [], [], [], []
    for p, a in zip(prompts, answers, strict=True):
        prefix = bos + p
        ids = (prefix + a + [eos])[:max_length]
        lab = ([-100] * len(prefix) + a + [eos])[:max_length]
        input_ids.append(ids)
        labels.append(lab)
        prompt_ids.append(prefix[: max_length - 1])
        refs.append(tokenizer.decode(a, skip_special_tokens=True))
    return Encoded(input_ids, labels, prompt_ids, refs)


def clear_caches() -> None:
    _ENCODED_CACHE.clear()
