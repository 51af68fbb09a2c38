"""A finished sweep's evidence, read back from where it was recorded: the Optuna study (parameters,
statuses, the objective at every reported step), MLflow (training/validation loss curves, test and
secondary metrics) and the data itself (split sizes, class balance, rows shared across the split)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sweep.direction import Direction
from sweep.space import FixedParam
from sweep.spec import SweepSpec
from sweep.status import TrialStatus


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Confirmation(_Model):
    """What a confirmation trial is: the best configuration with one parameter moved."""

    param: str
    value: Any = Field(description="The value it was moved to (into the suspected losing group).")
    of: int = Field(description="The trial number of the configuration it perturbs (the best of the search).")


class TrialHistory(_Model):
    """One trial as the record has it."""

    number: int
    status: TrialStatus
    params: dict[str, Any]
    curve: dict[int, float] = Field(default_factory=dict, description="The objective at each reported step.")
    train_loss: dict[int, float] = Field(default_factory=dict)
    val_loss: dict[int, float] = Field(default_factory=dict)
    value: float | None = Field(None, description="Final objective of a completed trial.")
    test_value: float | None = None
    secondary_value: float | None = None
    class_recall: dict[str, float] = Field(default_factory=dict, description="Final recall per label id.")
    last_step: int | None = Field(None, description="The step of the final report when the trial runs to its end.")
    diverged_step: int | None = None
    confirmation: Confirmation | None = Field(None, description="Set on the verdict's confirmation trials.")


class DataFacts(_Model):
    task: str
    num_train: int
    num_val: int
    num_test: int = 0
    class_counts: dict[str, int] = Field(default_factory=dict, description="Training rows per class.")
    label_names: list[str] = Field(default_factory=list, description="Class names by label id.")
    num_val_duplicates: int = Field(0, description="Validation rows whose text also is a training row.")
    num_scored: int | None = Field(None, description="Validation rows the objective scores (exact match: fewer).")
    num_folds: int = Field(1, description="k-fold trials report once per fold (step = fold index).")
    chance: dict[str, float] = Field(
        default_factory=dict, description="Each metric of a model that learned nothing (the best constant guess)."
    )


class Evidence(_Model):
    sweep: str
    objective: str
    direction: Direction
    trials: list[TrialHistory]
    data: DataFacts
    space: dict[str, dict[str, Any]] = Field(default_factory=dict, description="The spec's space section.")


def fixed_params(spec: SweepSpec) -> dict[str, Any]:
    """The space's fixed values (the study records only what it sampled)."""
    return {p: v.value for p, v in spec.space.items() if isinstance(v, FixedParam) and not v.when}


def data_facts(spec: SweepSpec, split_file: Path | None = None) -> DataFacts:
    """Split sizes, training class counts and validation rows that also are training rows (the split the
    sweep saved in its run dir, ``split_file``, where it is this config's)."""
    from trainers.data.read import load_rows
    from trainers.data.split import splits_for
    from trainers.tasks import get_task

    cfg = spec.trial_config(fixed_params(spec))
    rows = load_rows(cfg.data, cfg.task)
    splits = splits_for(rows, cfg.split, split_file)
    fold = splits.folds[0]
    counts: dict[str, int] = {}
    if rows.label_names:
        for index in fold.train:
            name = rows.label_names[int(rows.targets[index])]
            counts[name] = counts.get(name, 0) + 1

    def key(i: int) -> str:
        return " ".join(rows.texts[i].lower().split())

    train_texts = {key(int(i)) for i in fold.train}
    duplicates = sum(1 for i in fold.val if key(int(i)) in train_texts)
    scored = len(fold.val)
    if "exact_match" in spec.objective.metric:  # greedy answers are generated for the first rows only
        scored = min(scored, cfg.eval.max_generate_examples)
    return DataFacts(
        task=cfg.task,
        num_train=len(fold.train),
        num_val=len(fold.val),
        num_scored=scored,
        num_folds=cfg.split.num_folds or 1,
        num_test=len(splits.test),
        class_counts=counts,
        label_names=list(rows.label_names),
        num_val_duplicates=duplicates,
        chance=get_task(cfg.task).chance_levels(rows, fold.train, fold.val),
    )


def gather(
    spec: SweepSpec, storage: str, uri: str, parent_id: str, split_file: Path | None = None
) -> tuple[Evidence, dict[int, str]]:
    """The sweep's evidence, and each trial number's MLflow run id (``split_file``: see ``data_facts``)."""
    from sweep.optuna_study import is_shared, study_trials
    from sweep.tracking import trial_curves

    metric = spec.objective.metric
    test_metric = metric.replace("val_", "test_", 1)
    secondary = spec.acceptance.secondary.metric if spec.acceptance.secondary else None
    curves = trial_curves(uri, parent_id, ["train_loss", "val_loss"])
    fixed = fixed_params(spec)
    trials = []
    for t in study_trials(storage, spec.name, owner=parent_id, shared=is_shared(spec.execution.storage)):
        recorded: dict[str, Any] = curves.get(t["number"], {})
        finals = recorded.get("metrics", {})
        histories = recorded.get("histories", {})
        trials.append(
            TrialHistory(
                number=t["number"],
                status=t["status"],
                params={**fixed, **t["params"]},
                curve=t["curve"],
                train_loss=histories.get("train_loss", {}),
                val_loss=histories.get("val_loss", {}),
                value=t["value"],
                test_value=finals.get(test_metric),
                secondary_value=finals.get(secondary) if secondary else None,
                class_recall={
                    k.removeprefix("val_recall_"): v for k, v in finals.items() if k.startswith("val_recall_")
                },
                diverged_step=t["diverged_step"],
                confirmation=t.get("confirmation"),
            )
        )
    evidence = Evidence(
        sweep=spec.name,
        objective=metric,
        direction=spec.objective.direction,
        trials=trials,
        data=data_facts(spec, split_file),
        space={k: v.model_dump(exclude_none=True) for k, v in spec.space.items()},
    )
    return evidence, {n: c["run_id"] for n, c in curves.items()}
