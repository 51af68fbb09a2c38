"""Step 3 of a trial: validate on the unseen rows — does it respond correctly, and how often?"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trainers._compat import cpu_has_bf16
from trainers.data.encode import Encoded
from trainers.losses import IGNORE_INDEX

_precision = "auto"


def set_precision(precision: str) -> None:
    """The process's forward-pass precision (a trial's ``precision``): 'auto', 'fp32' or 'bf16'."""
    global _precision
    _precision = precision


def autocast(device: torch.device) -> AbstractContextManager[Any]:
    """bf16 autocast on CUDA and on CPUs with native bf16 (unless the trial says fp32); fp32 elsewhere."""
    if _precision == "fp32" or device.type not in ("cuda", "cpu"):
        return nullcontext()
    if device.type == "cuda" or _precision == "bf16" or cpu_has_bf16():
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def _pad(enc: Encoded, rows: np.ndarray, tokenizer: Any, device: torch.device) -> dict[str, torch.Tensor]:
    padded = tokenizer.pad({"input_ids": [enc.input_ids[i] for i in rows]}, return_tensors="pt")
    return {"input_ids": padded["input_ids"].to(device), "attention_mask": padded["attention_mask"].to(device)}


def batch_row_targets(
    enc: Encoded, rows: np.ndarray, tokenizer: Any, device: torch.device, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """One padded batch with one target per row (a class id, or a number for regression)."""
    out = _pad(enc, rows, tokenizer, device)
    out["labels"] = torch.as_tensor(np.asarray(enc.labels)[rows], dtype=dtype, device=device)
    return out


def batch_token_targets(
    enc: Encoded, rows: np.ndarray, tokenizer: Any, device: torch.device
) -> dict[str, torch.Tensor]:
    """One padded batch with per-token targets (causal LM), padding positions IGNORE_INDEX."""
    out = _pad(enc, rows, tokenizer, device)
    width = out["input_ids"].shape[1]
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    right = tokenizer.padding_side == "right"
    for j, i in enumerate(rows):
        lab = torch.tensor(enc.labels[i])
        if right:
            labels[j, : len(lab)] = lab
        else:
            labels[j, width - len(lab) :] = lab
    out["labels"] = labels.to(device)
    return out


def _chunks(rows: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def normalize_answer(text: str) -> str:
    """Case, surrounding space and inner whitespace runs do not count against an answer."""
    return re.sub(r"\s+", " ", text).strip().lower()


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Fraction of predictions equal to their reference after ``normalize_answer``."""
    if not references:
        return 0.0
    hits = sum(normalize_answer(p) == normalize_answer(r) for p, r in zip(predictions, references, strict=True))
    return hits / len(references)


@torch.inference_mode()
def row_outputs(
    model: torch.nn.Module,
    enc: Encoded,
    rows: np.ndarray,
    tokenizer: Any,
    device: torch.device,
    batch_size: int,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's outputs for ``rows`` (fp32, on the CPU) and each row's target, in batches, in the
    order of ``rows``. Batches are cut from the rows sorted by length, so little of each is padding."""
    model.eval()
    rows = np.asarray(rows)
    order = np.argsort([len(enc.input_ids[i]) for i in rows], kind="stable")
    outputs, targets = [], []
    for chunk in _chunks(rows[order], batch_size):
        batch = batch_row_targets(enc, chunk, tokenizer, device, dtype)
        with autocast(device):
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        outputs.append(out.float().cpu())
        targets.append(batch["labels"].cpu())
    model.train()
    back = torch.as_tensor(np.argsort(order, kind="stable"))
    return torch.cat(outputs)[back], torch.cat(targets)[back]


def evaluate_classification(
    model: torch.nn.Module,
    enc: Encoded,
    rows: np.ndarray,
    tokenizer: Any,
    device: torch.device,
    batch_size: int,
) -> dict[str, float]:
    from sklearn.metrics import f1_score  # imported at the first evaluation, not before the first step

    logits, labels = row_outputs(model, enc, rows, tokenizer, device, batch_size, torch.long)
    y_pred, y_true = logits.argmax(-1).numpy(), labels.numpy()
    recall = {f"val_recall_{c}": float((y_pred[y_true == c] == c).mean()) for c in np.unique(y_true)}
    return {
        "val_loss": float(F.cross_entropy(logits, labels).item()),
        "val_accuracy": float((y_pred == y_true).mean()),
        "val_f1_macro": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        **recall,  # per label id: a class no trial ever predicts shows as 0 here
    }


def evaluate_regression(
    model: torch.nn.Module,
    enc: Encoded,
    rows: np.ndarray,
    tokenizer: Any,
    device: torch.device,
    batch_size: int,
) -> dict[str, float]:
    """Squared and absolute error of the predicted numbers, and their Pearson correlation with the truth."""
    out, target = row_outputs(model, enc, rows, tokenizer, device, batch_size, torch.float32)
    return regression_metrics(out.squeeze(-1).numpy(), target.numpy())


def regression_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """MSE (also ``val_loss``), MAE and Pearson r; r is 0 when either side is constant (undefined)."""
    err = pred.astype(np.float64) - true.astype(np.float64)
    mse = float(np.mean(err**2))
    pearson = 0.0 if np.std(pred) == 0 or np.std(true) == 0 else float(np.corrcoef(pred, true)[0, 1])
    return {"val_loss": mse, "val_mse": mse, "val_mae": float(np.mean(np.abs(err))), "val_pearson": pearson}


@torch.no_grad()
def evaluate_causal_lm(
    model: torch.nn.Module,
    enc: Encoded,
    rows: np.ndarray,
    tokenizer: Any,
    device: torch.device,
    batch_size: int,
    max_generate: int,
    max_new_tokens: int,
) -> dict[str, float]:
    """Response-token loss and perplexity on all rows; greedy exact match on the first ``max_generate``."""
    model.eval()
    loss_sum, tokens = 0.0, 0
    for chunk in _chunks(rows, batch_size):
        batch = batch_token_targets(enc, chunk, tokenizer, device)
        with autocast(device):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        target = batch["labels"][:, 1:]
        loss_sum += F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)).float(),
            target.reshape(-1),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        ).item()
        tokens += int((target != IGNORE_INDEX).sum())
    val_loss = loss_sum / max(tokens, 1)
    answered = rows[:max_generate]
    predictions = generate_answers(model, enc, answered, tokenizer, device, batch_size, max_new_tokens)
    model.train()
    return {
        "val_loss": val_loss,
        "val_perplexity": math.exp(min(val_loss, 50.0)),
        "val_exact_match": exact_match(predictions, [enc.references[i] for i in answered]),
    }


def generate_answers(
    model: torch.nn.Module,
    enc: Encoded,
    rows: np.ndarray,
    tokenizer: Any,
    device: torch.device,
    batch_size: int,
    max_new_tokens: int,
) -> list[str]:
    """Greedy answers to the prompts of ``rows`` (left-padded batches, stopped at eos)."""
    answers: list[str] = []
    for chunk in _chunks(rows, batch_size):
        prompts = [enc.prompt_ids[i] for i in chunk]
        padded = tokenizer.pad({"input_ids": prompts}, return_tensors="pt", padding_side="left")
        with autocast(device):
            out = model.generate(
                input_ids=padded["input_ids"].to(device),
                attention_mask=padded["attention_mask"].to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        new_tokens = out[:, padded["input_ids"].shape[1] :].tolist()
        for seq in new_tokens:
            if tokenizer.eos_token_id in seq:
                seq = seq[: seq.index(tokenizer.eos_token_id)]
            answers.append(tokenizer.decode(seq, skip_special_tokens=True))
    return answers
