"""Rows: the checked examples of a dataset, as a task's row reader (``trainers.tasks``) makes them from
a table, and the checks and the fingerprint that every reader shares."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trainers.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd


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


def fingerprint(*parts: Any) -> str:
    """A short content hash: the same rows (or split) give the same fingerprint wherever they are read."""
    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()[:16]


def clean_texts(frame: pd.DataFrame, column: str, field_: str, path: Path) -> list[str]:
    """The texts of ``column``; empty ones are a ConfigError naming the rows (``field_``: the config field)."""
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
