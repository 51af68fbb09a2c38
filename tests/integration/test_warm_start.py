"""The loop closed on real tiny sweeps: a sweep's verdict writes the next sweep, `sweep next` runs it
starting from the first sweep's trials inside its space, and `sweep history` shows the chain."""

import json
import re
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from sweep import cli
from sweep.run import run_sweep
from sweep.spec import validate_spec
from sweep.tracking import runs_of

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("shared_ray")]


def _study(run_dir):
    return optuna.load_study(study_name="chain", storage=json.loads((run_dir / "sweep.json").read_text())["storage"])


def test_sweep_next_starts_from_the_first_sweeps_trials_and_history_shows_the_chain(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    spec = validate_spec(
        {
            "name": "chain",
            "trial": {
                "model": {"name_or_path": "tiny-bert"},
                "adaptation": {"method": "full"},
                "data": {"max_rows": 120, "max_length": 16},
                "optim": {"max_steps": 4, "batch_size": 8, "schedule": "constant"},
                "eval": {"eval_every_steps": 2},
            },
            "space": {
                "optim.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                "optim.weight_decay": {"type": "categorical", "choices": [0.0, 0.01]},
            },
            "objective": {"metric": "val_loss", "direction": "minimize"},
            "sampler": {"kind": "random", "seed": 0},
            "pruner": {"kind": "none"},
            "budget": {"num_trials": 2, "max_concurrent_trials": 2},
            "tracking": {"uri": uri},
            "execution": {"runs_dir": str(tmp_path / "runs"), "dashboard": False, "save_best_model": False},
        }
    )
    first = run_sweep(spec, echo=lambda line: None)
    assert (first.run_dir / "report" / "next_sweep.yaml").is_file()
    old = {t.number: t for t in _study(first.run_dir).trials}

    capsys.readouterr()
    assert cli.main(["next", str(first.run_dir), "budget.num_trials=1", "execution.verdict=false"]) == 0
    out = capsys.readouterr().out
    said = re.search(r"^warm start: (\d+) trials of (\S+) inside the new space \((\d+) outside\)$", out, re.M)
    assert said is not None, out
    assert said.group(2) == str(first.run_dir.resolve()) and int(said.group(1)) + int(said.group(3)) == 2

    client = MlflowClient(uri)
    parents = sorted(
        (r for r in runs_of(uri, "chain") if r.data.tags.get("sweep.role") == "sweep"), key=lambda r: r.info.start_time
    )
    assert [p.info.run_id for p in parents][:1] == [first.parent_run_id] and len(parents) == 2
    second = parents[1]
    assert second.data.tags["sweep.previous_run_id"] == first.parent_run_id
    assert client.get_run(first.parent_run_id).data.tags["sweep.next_run_id"] == second.info.run_id

    # the new study: the copies (marked, as they ended) and its own trial, which alone it counts
    trials = _study(Path(second.data.tags["sweep.run_dir"])).trials
    copies = [t for t in trials if "warm_start_from" in t.user_attrs]
    assert len(copies) == int(said.group(1)) >= 1
    for t in copies:
        was = old[t.user_attrs["warm_start_number"]]
        assert t.user_attrs["sweep_run"] == t.user_attrs["warm_start_from"] == first.parent_run_id
        assert (t.state, t.value, t.intermediate_values) == (was.state, was.value, was.intermediate_values)
    own = [t for t in trials if t.user_attrs.get("sweep_run") == second.info.run_id]
    assert len(own) == 1 and len(trials) == len(copies) + 1
    assert sum(json.loads(second.data.tags["sweep.counts"]).values()) == 1
    nested = [r for r in runs_of(uri, "chain") if r.data.tags.get("mlflow.parentRunId") == second.info.run_id]
    assert len(nested) == 1

    assert cli.main(["history", "chain", "--tracking-uri", uri]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert [r.split()[2] for r in rows] == [first.parent_run_id[:8], second.info.run_id[:8]]
    assert rows[1].split()[-1] == first.parent_run_id[:8]
