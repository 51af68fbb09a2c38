"""The trial, top to bottom: split the data, train with the trial's meta-parameters, validate, return
an outcome. Knows nothing of Ray, Optuna or MLflow: the caller passes a Reporter."""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import get_scheduler, set_seed

from trainers import models
from trainers.api import EvalRecord, FoldOutcome, Reporter, Timings, TrialOutcome, TrialPruned
from trainers.config import TrialConfig
from trainers.data.encode import Encoded, encode
from trainers.data.read import load_rows
from trainers.data.rows import Rows
from trainers.data.split import Fold, Splits, splits_for
from trainers.errors import ConfigError
from trainers.evaluate import autocast, set_precision
from trainers.model_files import load_tokenizer
from trainers.plan import check_layers, total_steps
from trainers.tasks import Task, get_task


def pick_device(choice: str) -> torch.device:
    """'auto' = cuda, else mps, else cpu; an explicit choice that is not available is a ConfigError."""
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if choice == "auto":
        return torch.device(next(d for d in ("cuda", "mps", "cpu") if available[d]))
    if not available[choice]:
        raise ConfigError([f"device: '{choice}' is not available on this machine; use 'auto' or 'cpu'"])
    return torch.device(choice)


@dataclass
class _Prepared:
    """Everything a fold's training needs, built once per trial (and cached across trials)."""

    task: Task
    rows: Rows
    splits: Splits
    enc: Encoded
    tokenizer: Any
    device: torch.device

    @property
    def num_outputs(self) -> int:
        return self.task.num_outputs(self.rows)

    def evaluate(self, cfg: TrialConfig, model: torch.nn.Module, rows: np.ndarray) -> dict[str, float]:
        return self.task.evaluate(model, self.enc, rows, self.tokenizer, self.device, cfg.eval)


# torch's CPU kernels keep a compiled oneDNN primitive per op and input shape in two caches: oneDNN's
# own (ONEDNN_PRIMITIVE_CACHE_CAPACITY) and ideep's, which torch's bf16 matmuls use (LRU_CACHE_CAPACITY),
# 1024 entries each by default. Dynamically padded batches have a new shape almost every step, so under
# bf16 autocast a CPU trial's memory grows with every new shape; a primitive is cheap to build next to
# a step, so small caches cost no speed. Both are read at their first use; a user's own setting wins.
KERNEL_CACHE_CAPACITY = "8"
KERNEL_CACHES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")


def limit_kernel_cache() -> None:
    """Before the process's first CPU op: small kernel caches (see KERNEL_CACHES)."""
    for name in KERNEL_CACHES:
        os.environ.setdefault(name, KERNEL_CACHE_CAPACITY)


def prepare(cfg: TrialConfig, timings: Timings, split_file: str | Path | None = None) -> _Prepared:
    """Every check that can fail on user input runs here, before the first training step. ``split_file``:
    where the sweep saved its data's split (``trainers.data.split.save_splits``); used when it is this trial's."""
    limit_kernel_cache()
    device = pick_device(cfg.device)
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    set_precision(cfg.precision)
    task = get_task(cfg.task)
    t0 = time.perf_counter()
    rows = load_rows(cfg.data, cfg.task)
    splits = splits_for(rows, cfg.split, Path(split_file) if split_file else None)
    tokenizer = load_tokenizer(cfg.model.name_or_path)
    check_layers(cfg)
    # read weights now, before the trial seeds its RNG: a cached and an uncached trial train alike
    models.cached_base_model(cfg.model.name_or_path, task, task.num_outputs(rows))
    timings.load_s += time.perf_counter() - t0
    t0 = time.perf_counter()
    enc = encode(rows, task.tokenize, tokenizer, cfg.model.name_or_path, cfg.data.max_length)
    timings.tokenize_s += time.perf_counter() - t0
    return _Prepared(task, rows, splits, enc, tokenizer, device)


def run_trial(cfg: TrialConfig, reporter: Reporter, split_file: str | Path | None = None) -> TrialOutcome:
    """Split, train, validate. Raises ConfigError on bad input before training starts. ``split_file``: the
    sweep's split of the data (see ``prepare``)."""
    timings = Timings(started_at=time.time())
    prep = prepare(cfg, timings, split_file)
    if prep.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(prep.device)
    folds = prep.splits.folds
    k_fold = len(folds) > 1
    fold_outcomes: list[FoldOutcome] = []
    model: torch.nn.Module | None = None
    for index, fold in enumerate(folds):
        fold_reporter = _FoldReporter() if k_fold else reporter
        outcome, model = _fit_one(cfg, prep, fold, fold_reporter, timings, index)
        fold_outcomes.append(outcome)
        if k_fold and outcome.status == "completed":
            try:
                reporter.report(index, {**outcome.kept_metrics, "fold": float(index)})
            except TrialPruned:
                outcome.status = "pruned"
        if outcome.status != "completed":
            break
    assert model is not None
    # the held-out test part is not touched here: only the chosen model is evaluated on it
    # (trainers.saved.evaluate_held_out, once the sweep has chosen)
    result = _summarize(cfg, prep, fold_outcomes, timings, k_fold)
    if cfg.output_dir and result.status == "completed":  # k folds: the last fold's model
        result.model_dir = _save(model, prep, cfg.output_dir)
    result.num_trainable_params, result.num_total_params = models.count_parameters(model)
    result.peak_rss_mb = _peak_rss_mb()
    if prep.device.type == "cuda":
        result.peak_device_mb = torch.cuda.max_memory_allocated(prep.device) / 2**20
    result.timings = timings
    return result


class _FoldReporter:
    """Inside a k-fold trial the per-eval reports stay in the fold's history; the caller sees folds."""

    def report(self, step: int, metrics: Any) -> None:
        pass


def _batches(train: np.ndarray, batch_size: int, seed: int) -> Any:
    """Endless seeded reshuffled epochs over the training rows."""
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(train)
        for start in range(0, len(order), batch_size):
            yield order[start : start + batch_size]


def _fit_one(
    cfg: TrialConfig, prep: _Prepared, fold: Fold, reporter: Reporter, timings: Timings, index: int
) -> tuple[FoldOutcome, torch.nn.Module]:
    """Train one model on ``fold.train``, validating on ``fold.val`` every eval_every_steps and at the end."""
    set_seed(cfg.seed)
    t0 = time.perf_counter()
    model = models.build_model(cfg, prep.num_outputs, prep.rows.label_names).to(prep.device)
    timings.load_s += time.perf_counter() - t0
    model.train()
    loss_fn = prep.task.loss(cfg.loss, prep.rows, fold.train)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.learning_rate, weight_decay=cfg.optim.weight_decay)
    total = total_steps(cfg.optim, len(fold.train))
    schedule: str = cfg.optim.schedule
    if schedule == "constant" and cfg.optim.warmup_ratio > 0:
        schedule = "constant_with_warmup"
    scheduler = get_scheduler(
        schedule, optimizer, num_warmup_steps=int(cfg.optim.warmup_ratio * total), num_training_steps=total
    )
    batches = _batches(fold.train, cfg.optim.batch_size, cfg.seed)
    out = FoldOutcome(fold=index, status="completed")
    better = (lambda a, b: a < b) if cfg.eval.direction == "minimize" else (lambda a, b: a > b)
    kept = _Snapshot() if cfg.eval.keep == "best" else None
    window: list[float] = []
    step = 0
    while step < total:
        t_train = time.perf_counter()
        step_loss = 0.0
        for _ in range(cfg.optim.grad_accum_steps):
            rows = next(batches)
            batch = prep.task.batch(prep.enc, rows, prep.tokenizer, prep.device)
            with autocast(prep.device):
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            loss = loss_fn(logits, batch["labels"]) / cfg.optim.grad_accum_steps
            if not torch.isfinite(loss):
                out.status = "diverged"
                out.diverged_step = step + 1
                out.diverged_learning_rate = scheduler.get_last_lr()[0]
                timings.train_s += time.perf_counter() - t_train
                return out, model
            loss.backward()
            step_loss += loss.item()
            out.num_examples += len(rows)
        if cfg.optim.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, cfg.optim.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        out.num_steps = step
        window.append(step_loss)
        timings.train_s += time.perf_counter() - t_train
        timings.first_step_at = timings.first_step_at or time.time()
        if step % cfg.eval.eval_every_steps and step != total:
            continue
        t_eval = time.perf_counter()
        metrics = {"train_loss": float(np.mean(window)), **prep.evaluate(cfg, model, fold.val)}
        timings.eval_s += time.perf_counter() - t_eval
        window = []
        out.history.append(EvalRecord(step=step, metrics=metrics))
        out.final_step, out.final_metrics = step, metrics
        value = metrics[cfg.eval.metric]
        if math.isfinite(value) and (out.best_step is None or better(value, out.best_metrics[cfg.eval.metric])):
            out.best_step, out.best_metrics = step, metrics
            if kept is not None and step != total:  # the last step's weights are the model's own
                kept.take(model)
        try:
            reporter.report(step, metrics)
        except TrialPruned:
            out.status = "pruned"
            break
    if kept is not None and out.best_step is not None:
        if out.best_step != out.final_step:
            kept.restore(model)
        out.kept_step, out.kept_metrics = out.best_step, out.best_metrics
    else:
        out.kept_step, out.kept_metrics = out.final_step, out.final_metrics
    return out, model


class _Snapshot:
    """The trainable weights at the best evaluation so far: in memory (a LoRA adapter and head are
    small), on disk when they are large (full fine-tuning of a big model)."""

    IN_MEMORY_BYTES = 2 * 2**30

    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] | None = None
        self.file: Any = None

    def take(self, model: torch.nn.Module) -> None:
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        size = sum(p.numel() * p.element_size() for p in params.values())
        state = {n: p.detach().to("cpu", copy=True) for n, p in params.items()}
        if size <= self.IN_MEMORY_BYTES:
            self.state = state
            return
        import tempfile

        if self.file is None:
            self.file = tempfile.NamedTemporaryFile(suffix=".pt", prefix="fsweep-best-")  # noqa: SIM115
        torch.save(state, self.file.name)

    def restore(self, model: torch.nn.Module) -> None:
        state = self.state if self.state is not None else torch.load(self.file.name, weights_only=True)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name in state:
                    param.copy_(state[name].to(param.device))
        if self.file is not None:
            self.file.close()


def _summarize(
    cfg: TrialConfig, prep: _Prepared, folds: list[FoldOutcome], timings: Timings, k_fold: bool
) -> TrialOutcome:
    statuses = {f.status for f in folds}
    status = "diverged" if "diverged" in statuses else "pruned" if "pruned" in statuses else "completed"
    first = prep.splits.folds[0]
    result = TrialOutcome(
        status=status,  # type: ignore[arg-type]
        task=cfg.task,
        num_steps=sum(f.num_steps for f in folds),
        num_examples=sum(f.num_examples for f in folds),
        device=str(prep.device),
        data_fingerprint=prep.rows.fingerprint,
        split_fingerprint=prep.splits.fingerprint,
        num_train=len(first.train),
        num_val=len(first.val),
        num_test=len(prep.splits.test),
        label_names=prep.rows.label_names,
        folds=folds if k_fold else [],
    )
    last = folds[-1]
    result.diverged_step, result.diverged_learning_rate = last.diverged_step, last.diverged_learning_rate
    if not k_fold:
        result.history = last.history
        result.best_step, result.best_metrics = last.best_step, last.best_metrics
        result.final_step, result.final_metrics = last.final_step, last.final_metrics
        if status == "completed":
            result.kept_step, result.kept_metrics = last.kept_step, last.kept_metrics
    elif status == "completed":
        result.final_metrics = _mean_metrics([f.final_metrics for f in folds])
        result.best_metrics = _mean_metrics([f.best_metrics for f in folds])
        result.kept_metrics = _mean_metrics([f.kept_metrics for f in folds])
        result.final_step = result.best_step = result.kept_step = len(folds) - 1
    return result


def _mean_metrics(items: list[dict[str, float]]) -> dict[str, float]:
    keys = items[0].keys()
    return {k: float(np.mean([m[k] for m in items])) for k in keys}


def _save(model: torch.nn.Module, prep: _Prepared, output_dir: str) -> str:
    """The adapter (LoRA) or the whole model, the tokenizer and the label mapping."""
    path = Path(output_dir)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    prep.tokenizer.save_pretrained(path)
    if prep.rows.label_names:  # an adapter directory has no config.json to carry id2label
        (path / "labels.json").write_text(json.dumps(dict(enumerate(prep.rows.label_names)), indent=1))
    return str(path)


def release_memory() -> None:
    """Give a finished trial's memory back to the OS, in a process that runs more trials (a reused Ray
    worker): collect the model's reference cycles, then have glibc return its freed pages. Each trial
    runs in a new thread there, whose malloc arena keeps freed pages: without this the worker grows with
    every trial it runs."""
    import contextlib
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # not glibc (musl): nothing to trim
            ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024
