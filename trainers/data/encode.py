"""Tokenizing the rows: each task's way of turning its rows into token ids (``trainers.tasks`` picks
one), and the per-process cache that lets a later trial of the same data and tokenizer reuse them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trainers.data.rows import Rows


@dataclass
class Encoded:
    """Token ids per row. Causal LM also keeps prompt ids (for generation) and the decoded reference."""

    input_ids: list[list[int]]
    labels: list[list[int]] | np.ndarray
    prompt_ids: list[list[int]] = field(default_factory=list)
    references: list[str] = field(default_factory=list)


Tokenize = Callable[[Rows, Any, int], Encoded]
"""A task's tokenizer: (rows, tokenizer, max_length) -> ids (``Task.tokenize``)."""

_ENCODED_CACHE: dict[tuple[Any, ...], Encoded] = {}


def encode(rows: Rows, tokenize: Tokenize, tokenizer: Any, tokenizer_key: str, max_length: int) -> Encoded:
    """Tokenize every row once per (data, tokenizer, max_length) in this process, with the rows' task's
    ``tokenize``."""
    key = (rows.fingerprint, tokenizer_key, max_length)
    if key not in _ENCODED_CACHE:
        _ENCODED_CACHE[key] = tokenize(rows, tokenizer, max_length)
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
    """Forget every tokenized dataset of this process."""
    _ENCODED_CACHE.clear()
