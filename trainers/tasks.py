"""One object per task: the columns it reads, how it tokenizes and batches, its model class and PEFT
task type, its training losses, how it validates and what it reports.

Adding a task is one class here (plus its demo data). Importing this module is torch-free: the config
and the sweep read names and metrics; the methods that need torch import their module when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from trainers.config import DataConfig, EvalConfig, LossConfig
    from trainers.data import Encoded, Rows
    from trainers.losses import LossFn

DEMO_DIR = Path(__file__).parent / "demo_data"


class Task:
    """What differs between tasks; everything else in a trial is shared."""

    name: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]]
    """Reported at every evaluation. ``val_loss`` is the plain loss, whatever the training loss."""
    losses: ClassVar[tuple[str, ...]]
    """Training losses by name (``loss.name``); the first is the default."""
    columns: ClassVar[tuple[str, ...]]
    """The DataConfig fields that name this task's input and target columns."""
    demo_file: ClassVar[str]
    auto_model: ClassVar[str]
    """The transformers Auto class that loads the model with this task's head."""
    peft_task_type: ClassVar[str]
    has_head: ClassVar[bool] = True
    """A new prediction head on top of the base model (``model.head_hidden_sizes`` applies)."""
    stratify: ClassVar[bool] = False
    """Splits keep the class mix of the whole dataset."""

    @property
    def demo_path(self) -> Path:
        return DEMO_DIR / self.demo_file

    def read(self, frame: pd.DataFrame, cfg: DataConfig, path: Path, label_names: list[str] | None = None) -> Rows:
        """Checked rows from a loaded table; ``label_names``: the ids a model already uses (classification)."""
        raise NotImplementedError

    def num_outputs(self, rows: Rows) -> int:
        """Width of the prediction head (0: the language-model head)."""
        return 0

    def model_kwargs(self, num_outputs: int) -> dict[str, Any]:
        """Config fields that shape the head for this task."""
        return {}

    def tokenize(self, rows: Rows, tokenizer: Any, max_length: int) -> Encoded:
        from trainers.data import encode_texts

        return encode_texts(rows, tokenizer, max_length)

    def batch(self, enc: Encoded, rows: np.ndarray, tokenizer: Any, device: torch.device) -> dict[str, torch.Tensor]:
        """One padded batch on the device, with the targets the loss expects."""
        raise NotImplementedError

    def loss(self, cfg: LossConfig, rows: Rows, train: np.ndarray) -> LossFn:
        """The training loss; ``train`` indexes the training fold (balanced class weights come from it)."""
        raise NotImplementedError

    def evaluate(
        self,
        model: torch.nn.Module,
        enc: Encoded,
        rows: np.ndarray,
        tokenizer: Any,
        device: torch.device,
        cfg: EvalConfig,
    ) -> dict[str, float]:
        raise NotImplementedError

    def chance_levels(self, rows: Rows, train: np.ndarray, val: np.ndarray) -> dict[str, float]:
        """The validation metrics of a model that learned nothing: the best constant prediction fitted
        on the training rows ``train``, scored on the validation rows ``val`` (a trial that never leaves
        these has not learned). Metrics without such a floor are left out."""
        return {}


class _OneTargetPerRow(Task):
    """Text in, one target per row out (a class id, or a number): the batching they share."""

    target_dtype: ClassVar[str]

    def batch(self, enc: Encoded, rows: np.ndarray, tokenizer: Any, device: torch.device) -> dict[str, torch.Tensor]:
        import torch

        from trainers.evaluate import batch_row_targets

        return batch_row_targets(enc, rows, tokenizer, device, getattr(torch, self.target_dtype))


class Classification(_OneTargetPerRow):
    name = "classification"
    metrics = ("train_loss", "val_loss", "val_accuracy", "val_f1_macro")
    """Also ``val_recall_<label id>`` per class present in the validation rows (not an objective)."""
    losses = ("cross_entropy", "label_smoothing", "focal", "class_weighted")
    columns = ("text_column", "label_column")
    demo_file = "sentiment.csv"
    target_dtype = "long"
    auto_model = "AutoModelForSequenceClassification"
    peft_task_type = "SEQ_CLS"
    stratify = True

    def read(self, frame: pd.DataFrame, cfg: DataConfig, path: Path, label_names: list[str] | None = None) -> Rows:
        from trainers.data import read_labels

        return read_labels(self.name, frame, cfg, path, label_names)

    def num_outputs(self, rows: Rows) -> int:
        return len(rows.label_names)

    def model_kwargs(self, num_outputs: int) -> dict[str, Any]:
        return {"num_labels": num_outputs}

    def chance_levels(self, rows: Rows, train: np.ndarray, val: np.ndarray) -> dict[str, float]:
        """Always the training majority class (accuracy, macro-F1), or its class frequencies (loss)."""
        k = len(rows.label_names)
        y_train, y_val = rows.targets[train].astype(int), rows.targets[val].astype(int)
        if not len(y_train) or not len(y_val) or not k:
            return {}
        prior = np.bincount(y_train, minlength=k) / len(y_train)
        majority = int(np.argmax(prior))
        share = float(np.mean(y_val == majority))
        present = len(np.unique(y_val))  # sklearn's macro average runs over the labels present
        f1_majority = 2 * share / (1 + share) if share else 0.0
        entropy = -float(np.mean(np.log(np.clip(prior[y_val], 1e-12, None))))
        return {"val_accuracy": share, "val_f1_macro": f1_majority / max(1, present), "val_loss": entropy}

    def loss(self, cfg: LossConfig, rows: Rows, train: np.ndarray) -> LossFn:
        from trainers.losses import classification_loss

        return classification_loss(cfg, np.bincount(rows.targets[train], minlength=len(rows.label_names)).tolist())

    def evaluate(
        self,
        model: torch.nn.Module,
        enc: Encoded,
        rows: np.ndarray,
        tokenizer: Any,
        device: torch.device,
        cfg: EvalConfig,
    ) -> dict[str, float]:
        from trainers.evaluate import evaluate_classification

        return evaluate_classification(model, enc, rows, tokenizer, device, cfg.batch_size)


class Regression(_OneTargetPerRow):
    """Text -> a number (STS-B-like scores, ratings): a one-output head trained on squared error."""

    name = "regression"
    metrics = ("train_loss", "val_loss", "val_mse", "val_mae", "val_pearson")
    losses = ("mse", "huber")
    columns = ("text_column", "label_column")
    demo_file = "ratings.csv"
    target_dtype = "float32"
    auto_model = "AutoModelForSequenceClassification"
    peft_task_type = "SEQ_CLS"

    def read(self, frame: pd.DataFrame, cfg: DataConfig, path: Path, label_names: list[str] | None = None) -> Rows:
        from trainers.data import read_values

        return read_values(self.name, frame, cfg, path, label_names)

    def num_outputs(self, rows: Rows) -> int:
        return 1

    def model_kwargs(self, num_outputs: int) -> dict[str, Any]:
        return {"num_labels": 1, "problem_type": "regression"}

    def chance_levels(self, rows: Rows, train: np.ndarray, val: np.ndarray) -> dict[str, float]:
        """Always the training mean (squared error) or median (absolute error); no correlation."""
        y_train, y_val = rows.targets[train].astype(float), rows.targets[val].astype(float)
        if not len(y_train) or not len(y_val):
            return {}
        mse = float(np.mean((y_val - y_train.mean()) ** 2))
        mae = float(np.mean(np.abs(y_val - np.median(y_train))))
        return {"val_loss": mse, "val_mse": mse, "val_mae": mae, "val_pearson": 0.0}

    def loss(self, cfg: LossConfig, rows: Rows, train: np.ndarray) -> LossFn:
        from trainers.losses import regression_loss

        return regression_loss(cfg)

    def evaluate(
        self,
        model: torch.nn.Module,
        enc: Encoded,
        rows: np.ndarray,
        tokenizer: Any,
        device: torch.device,
        cfg: EvalConfig,
    ) -> dict[str, float]:
        from trainers.evaluate import evaluate_regression

        return evaluate_regression(model, enc, rows, tokenizer, device, cfg.batch_size)


class CausalLM(Task):
    """Prompt -> response (SFT): loss on response tokens, greedy answers scored by exact match."""

    name = "causal_lm"
    metrics = ("train_loss", "val_loss", "val_perplexity", "val_exact_match")
    losses = ("cross_entropy", "label_smoothing")
    columns = ("prompt_column", "response_column")
    demo_file = "qa.jsonl"
    auto_model = "AutoModelForCausalLM"
    peft_task_type = "CAUSAL_LM"
    has_head = False

    def chance_levels(self, rows: Rows, train: np.ndarray, val: np.ndarray) -> dict[str, float]:
        """No answer is exactly right by chance (the floor of exact match)."""
        return {"val_exact_match": 0.0}

    def read(self, frame: pd.DataFrame, cfg: DataConfig, path: Path, label_names: list[str] | None = None) -> Rows:
        from trainers.data import read_pairs

        return read_pairs(self.name, frame, cfg, path)

    def tokenize(self, rows: Rows, tokenizer: Any, max_length: int) -> Encoded:
        from trainers.data import encode_prompt_response

        return encode_prompt_response(rows, tokenizer, max_length)

    def batch(self, enc: Encoded, rows: np.ndarray, tokenizer: Any, device: torch.device) -> dict[str, torch.Tensor]:
        from trainers.evaluate import batch_token_targets

        return batch_token_targets(enc, rows, tokenizer, device)

    def loss(self, cfg: LossConfig, rows: Rows, train: np.ndarray) -> LossFn:
        from trainers.losses import causal_lm_loss

        return causal_lm_loss(cfg)

    def evaluate(
        self,
        model: torch.nn.Module,
        enc: Encoded,
        rows: np.ndarray,
        tokenizer: Any,
        device: torch.device,
        cfg: EvalConfig,
    ) -> dict[str, float]:
        from trainers.evaluate import evaluate_causal_lm

        return evaluate_causal_lm(
            model, enc, rows, tokenizer, device, cfg.batch_size, cfg.max_generate_examples, cfg.max_new_tokens
        )


TASKS: dict[str, Task] = {task.name: task for task in (Classification(), Regression(), CausalLM())}
"""Every task by name (``task:`` in a trial config)."""


def get_task(name: str) -> Task:
    return TASKS[name]
