"""One object per task: the columns it reads, how it tokenizes and batches, its model class and PEFT
task type, its training losses, how it validates and what it reports.

Adding a task is one class here (plus its demo data). Importing this module is torch-free: the config
and the sweep read names and metrics; the methods that need torch import their module when called. The
data machinery (``trainers.data``) reads, splits and tokenizes through a task; a task never calls back
into it, only into the row and token building blocks below it (``trainers.data.rows`` / ``.encode``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from trainers.data.encode import Encoded, encode_prompt_response, encode_texts
from trainers.data.rows import Rows, clean_texts, fingerprint
from trainers.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from trainers.losses import LossFn
    from trainers.settings import DataConfig, EvalConfig, LossConfig

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
        """Checked rows from a loaded table (``trainers.data.read`` checked the ``columns``);
        ``label_names``: given, the file is not a training file (a validation or test file, a file a
        trained model is evaluated on), and a classifier's labels take these ids."""
        raise NotImplementedError

    def num_outputs(self, rows: Rows) -> int:
        """Width of the prediction head (0: the language-model head)."""
        return 0

    def model_kwargs(self, num_outputs: int) -> dict[str, Any]:
        """Config fields that shape the head for this task."""
        return {}

    def tokenize(self, rows: Rows, tokenizer: Any, max_length: int) -> Encoded:
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
        """Text + class label (str or int); labels become ids in a stable order (numbers numerically), or
        the ids of ``label_names``."""
        texts = clean_texts(frame, cfg.text_column, "text_column", path)
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
            fp = fingerprint(self.name, texts, labels.tolist())
            return Rows(self.name, texts, [], labels, list(label_names), fp, str(path))
        names = sorted({str(v) for v in raw}, key=lambda s: (not s.lstrip("-").isdigit(), _number_or_zero(s), s))
        if len(names) < 2:
            raise ConfigError(
                [f"data.label_column: '{cfg.label_column}' has a single class {names}; classification needs >= 2"]
            )
        index = {n: i for i, n in enumerate(names)}
        labels = np.array([index[str(v)] for v in raw], dtype=np.int64)
        fp = fingerprint(self.name, texts, labels.tolist(), names)
        return Rows(self.name, texts, [], labels, names, fp, str(path))

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
        """Text + a finite number per row. ``label_names`` given (``[]``): not a training file, so its
        targets may be constant."""
        import pandas as pd  # loaded already: the frame is one

        texts = clean_texts(frame, cfg.text_column, "text_column", path)
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
            raise ConfigError(
                [f"data.label_column: '{cfg.label_column}' is constant; regression needs varying targets"]
            )
        fp = fingerprint(self.name, texts, values.tolist())
        return Rows(self.name, texts, [], values.astype(np.float32), [], fp, str(path))

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
        """Prompt + expected response."""
        prompts = clean_texts(frame, cfg.prompt_column, "prompt_column", path)
        responses = clean_texts(frame, cfg.response_column, "response_column", path)
        fp = fingerprint(self.name, prompts, responses)
        return Rows(self.name, prompts, responses, np.zeros(0, dtype=np.int64), [], fp, str(path))

    def tokenize(self, rows: Rows, tokenizer: Any, max_length: int) -> Encoded:
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


def _number_or_zero(text: str) -> float:
    """A label's value for ordering numeric labels numerically (0 for text labels, ordered after them)."""
    try:
        return float(text)
    except ValueError:
        return 0.0
