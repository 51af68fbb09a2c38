"""A sweep's result is a usable model: the chosen model alone is evaluated on the held-out test part
(summary, parent run, best/), `sweep evaluate` on the validation rows reproduces what the sweep recorded
for that trial, and `sweep predict` labels an unlabelled file."""

import contextlib
import csv
import io
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from sweep import cli
from sweep.run import run_sweep
from sweep.spec import validate_spec
from sweep.tracking import runs_of
from trainers.data.read import load_rows
from trainers.data.split import make_splits

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("shared_ray")]


def test_held_out_test_evaluate_and_predict_on_the_chosen_model(tmp_path):
    from trainers.demo import DEMO_DIR

    train = tmp_path / "train.csv"
    pd.read_csv(DEMO_DIR / "sentiment.csv").iloc[:240].to_csv(train, index=False)
    spec = validate_spec(
        {
            "name": "use",
            "trial": {
                "model": {"name_or_path": "tiny-bert"},
                "adaptation": {"method": "lora"},
                "data": {"path": str(train), "max_length": 24},
                "split": {"val_fraction": 0.25, "test_fraction": 0.2},
                "optim": {"max_steps": 12, "batch_size": 8},
                "eval": {"eval_every_steps": 4, "metric": "val_accuracy", "direction": "maximize"},
            },
            "space": {
                "optim.learning_rate": {"type": "categorical", "choices": [3e-3, 1e-2]},
                "adaptation.r": {"type": "categorical", "choices": [4]},
                "adaptation.alpha": {"type": "tied", "to": "adaptation.r", "times": 2},
            },
            "objective": {"metric": "val_accuracy", "direction": "maximize"},
            "sampler": {"kind": "grid"},
            "pruner": {"kind": "none"},
            "budget": {"num_trials": 2, "max_concurrent_trials": 2},
            "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
            "execution": {"runs_dir": str(tmp_path / "runs"), "dashboard": False, "verdict": False},
        }
    )
    result = run_sweep(spec, echo=lambda line: None)
    best = result.best
    assert best is not None and best.params["adaptation.alpha"] == 8
    # the chosen model alone met the test part: in the result, best/, its run and the sweep's run
    assert set(result.test_metrics) >= {"test_accuracy", "test_loss"}
    stored = json.loads((result.run_dir / "best" / "test_metrics.json").read_text())
    assert stored["num_rows"] == 48 and stored["test_accuracy"] == result.test_metrics["test_accuracy"]
    runs = runs_of(result.tracking_uri, "use")
    parent = next(r for r in runs if r.data.tags.get("sweep.role") == "sweep")
    assert parent.data.metrics["test_accuracy"] == result.test_metrics["test_accuracy"]
    with_test = [r for r in runs if r.data.tags.get("sweep.role") == "trial" and "test_accuracy" in r.data.metrics]
    assert [r.data.tags["optuna.trial_number"] for r in with_test] == [str(best.number)]

    # `sweep evaluate` on the validation rows gives what the sweep recorded for the trial
    cfg = spec.trial_config(best.params)
    rows = load_rows(cfg.data, cfg.task)
    val = make_splits(rows, cfg.split).folds[0].val
    val_file = tmp_path / "val.csv"
    pd.DataFrame(
        {"text": [rows.texts[i] for i in val], "label": [rows.label_names[rows.targets[i]] for i in val]}
    ).to_csv(val_file, index=False)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["evaluate", str(result.run_dir), str(val_file)]) == 0
    evaluated = json.loads((result.run_dir / "best" / "eval_val.json").read_text())
    assert evaluated["num_rows"] == len(val) == 60
    assert evaluated["accuracy"] == pytest.approx(best.value, abs=1e-9), out.getvalue()
    recorded = MlflowClient(result.tracking_uri).get_run(parent.info.run_id).data.metrics
    assert recorded["eval_val_accuracy"] == evaluated["accuracy"]

    # a registered version evaluates the same (what an accept verdict registers)
    from sweep.tracking import register_candidate

    best_run = with_test[0]
    register_candidate(result.tracking_uri, "use", best_run.info.run_id, parent.info.run_id, {}, "test")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["evaluate", "models:/use@candidate", str(val_file), "--tracking-uri", result.tracking_uri])
    assert code == 0 and f"accuracy         {evaluated['accuracy']:.4f}" in out.getvalue()
    assert not list(Path(tempfile.gettempdir()).glob("fsweep-model-*"))  # the download is not left behind

    # `sweep predict`: a label and its probability for each row of a file without labels
    texts = tmp_path / "texts.csv"
    pd.DataFrame({"text": [rows.texts[i] for i in val[:7]]}).to_csv(texts, index=False)
    preds = tmp_path / "preds.csv"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert cli.main(["predict", str(result.run_dir), str(texts), "--out", str(preds)]) == 0
    with preds.open() as f:
        got = list(csv.DictReader(f))
    assert [g["text"] for g in got] == [rows.texts[i] for i in val[:7]]
    assert all(g["label"] in rows.label_names and 0.5 <= float(g["probability"]) <= 1.0 for g in got)
    # the same model's predictions agree with its evaluation of the same rows
    truth = [rows.label_names[rows.targets[i]] for i in val[:7]]
    labelled = tmp_path / "seven.csv"
    pd.DataFrame({"text": [g["text"] for g in got], "label": truth}).to_csv(labelled, index=False)
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(["evaluate", str(result.run_dir), str(labelled)]) == 0
    seven = json.loads((result.run_dir / "best" / "eval_seven.json").read_text())
    assert seven["accuracy"] == pytest.approx(np.mean([g["label"] == t for g, t in zip(got, truth, strict=True)]))
