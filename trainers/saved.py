"""A trial's saved model, loaded back exactly as the trial built it: the base model, its kept layers,
its head, the adapter (LoRA) or all weights (full fine-tuning), and the label mapping."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainers import models
from trainers.config import TrialConfig
from trainers.errors import ConfigError
from trainers.model_files import load_tokenizer
from trainers.tasks import Task, get_task

LABELS_FILE = "labels.json"


@dataclass
class Trained:
    model: torch.nn.Module
    tokenizer: Any
    label_names: list[str]
    task: Task


def load_trained(model_dir: str | Path, cfg: TrialConfig, device: torch.device | None = None) -> Trained:
    """Rebuild the trial's model from ``cfg`` and load the weights it saved in ``model_dir``."""
    from safetensors.torch import load_file

    path = Path(model_dir)
    if not path.is_dir():
        raise ConfigError([f"model: '{path}' is not a saved model directory; pass a run dir whose sweep kept one"])
    task = get_task(cfg.task)
    labels_file = path / LABELS_FILE
    label_names = list(json.loads(labels_file.read_text()).values()) if labels_file.is_file() else []
    num_outputs = len(label_names) if label_names else (1 if task.name == "regression" else 0)
    model = models.build_model(cfg, num_outputs, label_names)
    adapter = path / "adapter_model.safetensors"
    if adapter.is_file():
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(model, load_file(adapter))
        missing = [k for k in getattr(result, "unexpected_keys", [])]
        if missing:
            raise ConfigError(
                [f"model: '{path}' does not fit its config ({missing[:3]}); it was saved by another sweep"]
            )
    else:
        state = load_file(path / "model.safetensors")
        if hasattr(model, "base_model_prefix") and not any(k in model.state_dict() for k in state):
            state = {f"{model.base_model_prefix}.{k}": v for k, v in state.items()}
        result = model.load_state_dict(state, strict=False)
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        lost = sorted(trainable & set(result.missing_keys))
        if lost:
            raise ConfigError([f"model: '{path}' lacks weights {lost[:3]}; it was saved by another sweep"])
    model.to(device or torch.device("cpu")).eval()
    return Trained(model, load_tokenizer(cfg.model.name_or_path), label_names, task)


def evaluate_held_out(
    cfg: TrialConfig, model_dir: str | Path, split_file: str | Path | None = None
) -> tuple[dict[str, float], int]:
    """The chosen model on the held-out test part of the sweep's split (``split.test_fraction`` or
    ``data.test_path``): ``test_*`` metrics and the number of rows; nothing when there is no test part.
    ``split_file``: the sweep's saved split (``trainers.data.split.save_splits``), used where it is this config's."""
    from trainers.api import Timings
    from trainers.loop import prepare

    prep = prepare(cfg, Timings(), split_file)
    if not len(prep.splits.test):
        return {}, 0
    trained = load_trained(model_dir, cfg, prep.device)
    metrics = prep.evaluate(cfg, trained.model, prep.splits.test)
    return {k.replace("val_", "test_", 1): v for k, v in metrics.items()}, len(prep.splits.test)


def evaluate_file(cfg: TrialConfig, model_dir: str | Path, path: str | Path) -> tuple[dict[str, float], int]:
    """The saved model on every row of a labelled file (its labels mapped to the model's)."""
    import numpy as np

    from trainers.data.encode import encode
    from trainers.data.read import load_rows
    from trainers.evaluate import set_precision
    from trainers.loop import pick_device

    device = pick_device(cfg.device)
    set_precision(cfg.precision)
    trained = load_trained(model_dir, cfg, device)
    data = cfg.data.model_copy(update={"path": str(path), "val_path": None, "test_path": None, "max_rows": None})
    rows = load_rows(data, cfg.task, trained.label_names)  # the model's label ids; [] without labels
    enc = encode(rows, trained.task.tokenize, trained.tokenizer, cfg.model.name_or_path, cfg.data.max_length)
    eval_cfg = cfg.eval.model_copy(update={"max_generate_examples": len(rows)})
    metrics = trained.task.evaluate(trained.model, enc, np.arange(len(rows)), trained.tokenizer, device, eval_cfg)
    return {k.removeprefix("val_"): v for k, v in metrics.items()}, len(rows)


def predict_file(
    cfg: TrialConfig, model_dir: str | Path, path: str | Path, on_batch: Any = None
) -> tuple[list[str], list[list[Any]]]:
    """Predictions for every row of a file that needs only the input column: (header, rows) — label and
    probability (classification), the number (regression), the generated answer (causal LM).
    ``on_batch(n)`` is called after each batch (a progress bar)."""
    import numpy as np

    from trainers.data.encode import Encoded, encode
    from trainers.data.read import read_frame
    from trainers.data.rows import Rows
    from trainers.evaluate import generate_answers, row_outputs, set_precision
    from trainers.loop import pick_device

    device = pick_device(cfg.device)
    set_precision(cfg.precision)
    trained = load_trained(model_dir, cfg, device)
    source = Path(path)
    if not source.is_file():
        raise ConfigError([f"predict: '{source}' is not a file; pass a csv / tsv / jsonl / parquet file"])
    frame = read_frame(source, cfg.data.header)
    column = cfg.data.prompt_column if trained.task.name == "causal_lm" else cfg.data.text_column
    if column not in frame.columns:
        raise ConfigError(
            [f"predict: column '{column}' is not in '{source}'; columns are {list(frame.columns)}; rename it"]
        )
    texts = [str(v) for v in frame[column].tolist()]
    tokenizer, model = trained.tokenizer, trained.model
    order = np.arange(len(texts))
    size = cfg.eval.batch_size
    out: list[list[Any]] = []
    if trained.task.name == "causal_lm":
        rows = Rows(cfg.task, texts, [""] * len(texts), np.zeros(0), [], f"predict:{source}:{len(texts)}", str(source))
        enc = encode(rows, trained.task.tokenize, tokenizer, cfg.model.name_or_path, cfg.data.max_length)
        for start in range(0, len(texts), size):
            chunk = order[start : start + size]
            answers = generate_answers(model, enc, chunk, tokenizer, device, size, cfg.eval.max_new_tokens)
            out += [[texts[i], a] for i, a in zip(chunk, answers, strict=True)]
            if on_batch:
                on_batch(len(chunk))
        return [column, "answer"], out
    ids = tokenizer(texts, truncation=True, max_length=cfg.data.max_length)["input_ids"]
    enc = Encoded(ids, np.zeros(len(texts), dtype=np.int64))
    dtype = torch.long if trained.label_names else torch.float32
    for start in range(0, len(texts), size):
        chunk = order[start : start + size]
        logits, _ = row_outputs(model, enc, chunk, tokenizer, device, size, dtype)
        if trained.label_names:
            probs = torch.softmax(logits, dim=-1)
            best = probs.argmax(-1)
            out += [
                [texts[i], trained.label_names[int(b)], round(float(p[b]), 6)]
                for i, b, p in zip(chunk, best, probs, strict=True)
            ]
        else:
            out += [[texts[i], float(v)] for i, v in zip(chunk, logits.squeeze(-1), strict=True)]
        if on_batch:
            on_batch(len(chunk))
    header = [column, "label", "probability"] if trained.label_names else [column, "prediction"]
    return header, out
