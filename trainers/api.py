"""The trial contract, torch-free: the Reporter a caller passes in and the TrialOutcome it gets back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from trainers.config import TrialConfig
from trainers.errors import ConfigError

__all__ = [
    "ConfigError",
    "EvalRecord",
    "FoldOutcome",
    "RecordingReporter",
    "Reporter",
    "TrialConfig",
    "TrialOutcome",
    "TrialPruned",
    "is_out_of_memory",
]


class TrialPruned(Exception):
    """Raised by a Reporter to stop a trial; the trial ends cleanly with status 'pruned'."""


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's OutOfMemoryError (CUDA, MPS, XPU), a RuntimeError that says so, or Ray's memory monitor
    (``ray.exceptions.OutOfMemoryError``), also when wrapped as another exception's cause."""
    seen: BaseException | None = exc
    for _ in range(8):  # a short chain: __cause__, or Ray's RayTaskError.cause
        if seen is None:
            return False
        if "OutOfMemoryError" in type(seen).__name__ or "out of memory" in str(seen).lower():
            return True
        seen = getattr(seen, "cause", None) or seen.__cause__
    return False


class Reporter(Protocol):
    """Receives the trial's metrics.

    A single-split trial reports every ``eval_every_steps`` optimizer steps and at the end, with
    ``step`` = optimizer steps done. A k-fold trial reports once per finished fold with
    ``step`` = fold index (0..k-1): the per-fold values a Wilcoxon pruner compares.
    """

    def report(self, step: int, metrics: Mapping[str, float]) -> None: ...  # may raise TrialPruned


class RecordingReporter:
    """Keeps every report; prunes when ``prune_at_step`` is reached. Useful for tests and the CLI."""

    def __init__(self, prune_at_step: int | None = None, echo: bool = False) -> None:
        self.reports: list[tuple[int, dict[str, float]]] = []
        self.prune_at_step = prune_at_step
        self.echo = echo

    def report(self, step: int, metrics: Mapping[str, float]) -> None:
        self.reports.append((step, dict(metrics)))
        if self.echo:
            shown = "  ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            print(f"step {step:>5}  {shown}", flush=True)
        if self.prune_at_step is not None and step >= self.prune_at_step:
            raise TrialPruned(f"pruned at step {step}")


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EvalRecord(_Record):
    step: int
    metrics: dict[str, float]


class Timings(_Record):
    load_s: float = 0.0
    tokenize_s: float = 0.0
    train_s: float = 0.0
    eval_s: float = 0.0
    started_at: float = 0.0  # epoch seconds: the trial began
    first_step_at: float = 0.0  # epoch seconds: its first optimizer step was done


class FoldOutcome(_Record):
    fold: int
    status: Literal["completed", "pruned", "diverged"]
    best_step: int | None = None
    best_metrics: dict[str, float] = Field(default_factory=dict)
    final_step: int | None = None
    final_metrics: dict[str, float] = Field(default_factory=dict)
    kept_step: int | None = None
    kept_metrics: dict[str, float] = Field(default_factory=dict)
    history: list[EvalRecord] = Field(default_factory=list)
    num_steps: int = 0
    num_examples: int = 0
    diverged_step: int | None = None
    diverged_learning_rate: float | None = None


class TrialOutcome(_Record):
    """What one trial did. For k-fold trials the top-level metrics are means over folds."""

    status: Literal["completed", "pruned", "diverged"]
    task: str
    best_step: int | None = None
    best_metrics: dict[str, float] = Field(default_factory=dict)
    final_step: int | None = None
    final_metrics: dict[str, float] = Field(default_factory=dict)
    kept_step: int | None = Field(None, description="The evaluation whose weights were kept (eval.keep).")
    kept_metrics: dict[str, float] = Field(
        default_factory=dict, description="The trial's result: the metrics of the weights it kept and saved."
    )
    history: list[EvalRecord] = Field(default_factory=list)
    num_steps: int = 0
    num_examples: int = 0
    timings: Timings = Field(default_factory=Timings)
    peak_rss_mb: float = 0.0
    peak_device_mb: float | None = None
    device: str = "cpu"
    data_fingerprint: str = ""
    split_fingerprint: str = ""
    num_train: int = 0
    num_val: int = 0
    num_test: int = 0
    num_trainable_params: int = 0
    num_total_params: int = 0
    folds: list[FoldOutcome] = Field(default_factory=list)
    test_metrics: dict[str, float] = Field(default_factory=dict)
    diverged_step: int | None = None
    diverged_learning_rate: float | None = None
    model_dir: str | None = None
    label_names: list[str] = Field(default_factory=list)

    @property
    def result_metrics(self) -> dict[str, float]:
        """What the trial reports as its result: the kept weights' metrics (the last ones if none kept)."""
        return self.kept_metrics or self.final_metrics
