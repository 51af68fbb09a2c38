"""Planted causes in real tiny sweeps (Ray + Optuna + MLflow + the registry): the verdict names them,
never blames a parameter without effect, registers exactly one model when it accepts, none when it does
not, and `sweep report` run again changes nothing."""

import csv
import json
import random
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from sweep.run import run_sweep
from sweep.spec import validate_spec
from sweep.tracking import registered_versions

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("shared_ray")]

NO_EFFECT = {"eval.batch_size": {"type": "categorical", "choices": [16, 64]}}  # evaluation batching changes nothing


def _keyword_data(path, copies=1):
    """One word decides the label, among random filler: tiny-bert learns it in ~40 steps at lr 1e-3."""
    rng = random.Random(0)
    filler = [
        "the",
        "a",
        "movie",
        "film",
        "plot",
        "actor",
        "scene",
        "story",
        "music",
        "show",
        "book",
        "night",
        "day",
        "time",
        "way",
        "city",
    ]
    rows = []
    for _ in range(400 // copies):
        positive = rng.random() < 0.5
        words = rng.sample(filler, 5)
        words.insert(rng.randrange(6), "great" if positive else "awful")
        rows.append((" ".join(words), "pos" if positive else "neg"))
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows * copies)
    return path


def _spec(tmp_path, data, space, steps=40, **parts):
    base = {
        "name": "planted",
        "trial": {
            "model": {"name_or_path": "tiny-bert"},
            "adaptation": {"method": "full"},
            "data": {"path": str(data), "max_length": 16},
            "optim": {"max_steps": steps, "batch_size": 16, "schedule": "constant", "max_grad_norm": None},
            "eval": {"eval_every_steps": 20},
        },
        "space": space,
        "objective": {"metric": "val_accuracy", "direction": "maximize"},
        "pruner": {"kind": "none"},
        "budget": {"num_trials": 16, "max_concurrent_trials": 2},
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
        "execution": {"runs_dir": str(tmp_path / "runs"), "dashboard": False},
    }
    return validate_spec({**base, **parts})


def _finding(report, param):
    return next(f for f in report.analysis.params if f.param == param)


def test_learning_rate_too_high_diverges_and_is_blamed_then_the_best_is_accepted_once(tmp_path):
    space = {"optim.learning_rate": {"type": "float", "low": 1e-4, "high": 1e12, "log": True}, **NO_EFFECT}
    spec = _spec(
        tmp_path,
        _keyword_data(tmp_path / "kw.csv"),
        space,
        sampler={"kind": "random", "seed": 0},
        budget={"num_trials": 20, "max_concurrent_trials": 2},
        # validation loss, not accuracy: a rate too high for learning but short of NaN shows as a high
        # loss, where accuracy would call it chance like every trial that has not learned yet
        objective={"metric": "val_loss", "direction": "minimize"},
        acceptance={"threshold": 0.3},
    )
    result = run_sweep(spec, echo=lambda line: None)
    report = result.report
    assert result.counts.get("diverged", 0) >= 4
    lr = _finding(report, "optim.learning_rate")
    assert lr.blame is not None and lr.blame.numeric and lr.blame.values[0] > 1e-2  # the top of the range
    assert report.analysis.blame_top == "learning_rate"
    assert all(d.diagnosis == "diverged" for d in report.analysis.trials if d.status == "diverged")
    assert _finding(report, "eval.batch_size").blame is None
    assert next(c for c in report.analysis.data if c.name == "unlearned_labels").ok  # both labels learned
    assert report.verdict.decision == "accept"

    # recorded on the parent run, the model registered once, with alias candidate
    client = MlflowClient(result.tracking_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags["verdict"] == "accept" and parent.data.tags["blame.top"] == "learning_rate"
    assert parent.data.tags["blame.optim.learning_rate"] == lr.blame.label()
    assert "blame.eval.batch_size" not in parent.data.tags
    assert "importance.optim.learning_rate" in parent.data.metrics
    verdict_files = {a.path for a in client.list_artifacts(result.parent_run_id, "verdict")}
    assert verdict_files == {
        "verdict/report.html",
        "verdict/report.md",
        "verdict/blame.json",
        "verdict/next_sweep.yaml",
    }
    versions = registered_versions(result.tracking_uri, "planted")
    assert len(versions) == 1 and versions[0].run_id != result.parent_run_id
    assert client.get_model_version_by_alias("planted", "candidate").version == versions[0].version
    assert versions[0].tags["sweep.parent_run_id"] == result.parent_run_id
    assert (
        json.loads(versions[0].tags["config"])["optim"]["learning_rate"]
        == report.verdict.best.params["optim.learning_rate"]
    )
    next_spec = (result.run_dir / "report" / "next_sweep.yaml").read_text()
    high = validate_spec(__import__("yaml").safe_load(next_spec)).space["optim.learning_rate"].high
    assert high <= lr.blame.values[0]  # the losing top of the range is gone from the next sweep

    # `sweep report` again, from the CLI: the same verdict, no second version, the same tags and metrics
    before = (dict(parent.data.tags), dict(parent.data.metrics), (result.run_dir / "report" / "blame.json").read_text())
    again = subprocess.run(
        [sys.executable, "-m", "sweep", "report", str(result.run_dir)], capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("verdict: ACCEPT")
    parent = client.get_run(result.parent_run_id)
    after = (dict(parent.data.tags), dict(parent.data.metrics), (result.run_dir / "report" / "blame.json").read_text())
    assert after == before
    assert len(registered_versions(result.tracking_uri, "planted")) == 1
    history = client.get_metric_history(result.parent_run_id, "importance.optim.learning_rate")
    assert len(history) == 1


def test_learning_rate_too_low_underfits_and_is_blamed(tmp_path):
    # tiny-bert learns the keyword in 60 steps from lr ~3e-4: most of this range is too low
    space = {"optim.learning_rate": {"type": "float", "low": 1e-5, "high": 1.5e-3, "log": True}, **NO_EFFECT}
    spec = _spec(
        tmp_path,
        _keyword_data(tmp_path / "kw.csv"),
        space,
        steps=60,
        sampler={"kind": "random", "seed": 1},
        budget={"num_trials": 20, "max_concurrent_trials": 2},
        acceptance={"threshold": 0.999},
    )
    lines = []
    result = run_sweep(spec, echo=lines.append)
    report = result.report
    lr = _finding(report, "optim.learning_rate")
    assert lr.blame is not None and lr.blame.values[1] < 3e-4  # the bottom of the range
    assert lr.sentence.startswith("learning rate <= ") and "trials left chance level" in lr.sentence
    assert report.analysis.blame_top == "learning_rate"
    flat = [d for d in report.analysis.trials if d.diagnosis == "flat"]
    assert flat and all(d.reason.startswith("never left the chance level") for d in flat)
    assert _finding(report, "eval.batch_size").blame is None

    # 18 searched, then the verdict's confirmations: real trials, in the study, in MLflow, in the report
    assert len(result.trials) == 20
    planned = [line for line in lines if line.startswith("confirmation: trial ")]
    assert planned and any("optim.learning_rate" in line for line in planned)
    client = MlflowClient(result.tracking_uri)
    runs = client.search_runs(
        [client.get_run(result.parent_run_id).info.experiment_id],
        f"tags.`mlflow.parentRunId` = '{result.parent_run_id}' and tags.`sweep.confirmation` = 'true'",
    )
    confirmations = {r.data.tags["sweep.confirmation.param"] for r in runs}
    assert "optim.learning_rate" in confirmations
    assert lr.confirmation is not None and lr.confirmation.value < 3e-4
    assert lr.confirmation.confirmed and lr.evidence_kind == "confirmed" and lr.confirmation.outcome == "flat"
    text = (result.run_dir / "report" / "report.md").read_text()
    assert "## Confirmed" in text and lr.confirmation.text in text
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags["blame.optim.learning_rate.evidence"] == "confirmed"


def test_duplicated_rows_leaking_across_the_split_block_acceptance(tmp_path):
    space = {"seed": {"type": "categorical", "choices": [0, 1]}, **NO_EFFECT}
    spec = _spec(
        tmp_path,
        _keyword_data(tmp_path / "dup.csv", copies=4),
        space,
        sampler={"kind": "grid", "seed": 0},
        budget={"num_trials": 4, "max_concurrent_trials": 2},
        acceptance={"threshold": 0.5},
        trial={
            "model": {"name_or_path": "tiny-bert"},
            "adaptation": {"method": "full"},
            "data": {"path": str(tmp_path / "dup.csv"), "max_length": 16},
            "optim": {"max_steps": 20, "batch_size": 16, "learning_rate": 1e-3},
            "eval": {"eval_every_steps": 20},
        },
    )
    result = run_sweep(spec, echo=lambda line: None)
    report = result.report
    dup = next(c for c in report.analysis.data if c.name == "duplicates_across_split")
    assert not dup.ok and "also appear in training" in dup.detail
    assert report.analysis.blame_top == "data"
    assert report.verdict.decision == "redesign"
    assert registered_versions(result.tracking_uri, "planted") == []
    assert all(f.blame is None for f in report.analysis.params)
