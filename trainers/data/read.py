"""Reading a dataset: its files (csv, tsv, json, jsonl, parquet or a saved HF dataset directory) into a
table, the task's columns checked, and the task's row reader (``trainers.tasks``) making the rows. Every
problem is a ConfigError naming the field, the file and the fix."""

from __future__ import annotations

import codecs
import csv
import re
from pathlib import Path

import numpy as np
import pandas as pd

from trainers.data.rows import Rows, fingerprint
from trainers.errors import ConfigError
from trainers.settings import DataConfig
from trainers.tasks import get_task

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


def read_frame(path: Path, header: bool = True) -> pd.DataFrame:
    """The table in ``path`` (its columns named by position where ``header`` is false); a file that
    does not read is a ConfigError saying why, with the row where it helps."""
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


def resolve_data_path(cfg: DataConfig, task: str) -> Path:
    """``data.path``, or the task's shipped demo data where it is unset."""
    return Path(cfg.path) if cfg.path is not None else get_task(task).demo_path


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
        fingerprint(*(p.fingerprint for p in parts), given),
        rows.source,
        given,
    )


def _load_one(
    cfg: DataConfig, task: str, path: Path, field_: str, label_names: list[str] | None, max_rows: int | None
) -> Rows:
    if not path.exists():
        raise ConfigError([f"data.{field_}: '{path}' does not exist; pass an existing file or directory"])
    frame = read_frame(path, cfg.header)
    if max_rows is not None:
        frame = frame.iloc[:max_rows]
    if frame.empty:
        raise ConfigError([f"data.{field_}: '{path}' holds no rows; add one row per example after the header"])
    reader = get_task(task)
    _require_columns(frame, {f: getattr(cfg, f) for f in reader.columns}, path, cfg.header)
    return reader.read(frame, cfg, path, label_names)
