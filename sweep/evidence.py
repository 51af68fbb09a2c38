"""A finished sweep's evidence, read back from where it was recorded: the Optuna study (parameters,
statuses, the objective at every reported step), MLflow (training/validation loss curves, test and
secondary metrics) and the data itself (split sizes, class balance, rows shared across the split)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sweep.blame import DataFacts, Evidence, TrialHistory
from sweep.space import FixedParam
from sweep.spec import SweepSpec


def fixed_params(spec: SweepSpec) -> dict[str, Any]:
    """The space's fixed values (the study records only what it sampled)."""
    return {p: v.value for p, v in spec.space.items() if isinstance(v, FixedParam) and not v.when}


def data_facts(spec: SweepSpec, split_file: Path | None = None) -> DataFacts:
    """Split sizes, training class counts and validation rows that also are training rows (the split the
    sweep saved in its run dir, ``split_file``, where it is this config's)."""
    from trainers.data import load_rows, splits_for

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
