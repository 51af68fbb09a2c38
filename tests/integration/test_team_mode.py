"""Team mode on real servers: two sweeps at once share one MLflow tracking server (PostgreSQL backend,
served artifacts) and one Optuna study in the same PostgreSQL, which starts empty (the schema race).
No trial is lost or recorded twice, each sweep judges only its own trials, and the database and MLflow
passwords appear nowhere: not in the record, the run dirs, the artifacts or the output."""

import contextlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import quote

import optuna
import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient

from sweep.evidence import gather
from sweep.spec import validate_spec
from tests.integration.servers import can_run_postgres, mlflow_server, postgres

pytestmark = [
    pytest.mark.integration,
    pytest.mark.needs(can_run_postgres() or None),
]

PG_PASSWORD = "pg/Se:cr%et 4711"  # every character a URL must encode and a pattern could stop at
MLFLOW_PASSWORD = "ml-Secret-0815"
TRIALS = 4


def _spec(storage: str, tracking: str) -> dict:
    return {
        "name": "team",
        "trial": {
            "model": {"name_or_path": "tiny-bert"},
            "adaptation": {"method": "full"},
            "data": {"max_rows": 120, "max_length": 16},
            "optim": {"max_steps": 8, "batch_size": 8},
            "eval": {"eval_every_steps": 4},
        },
        "space": {
            "optim.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
            "seed": {"type": "int", "low": 0, "high": 1000},
        },
        "sampler": {"kind": "random", "seed": 0},
        "pruner": {"kind": "none"},
        "budget": {"num_trials": TRIALS, "max_concurrent_trials": 1},
        "execution": {"storage": storage, "dashboard": False},
        "tracking": {"uri": tracking},
    }


@contextlib.contextmanager
def _command_lines_watched():
    """Every process's command line (as `ps` shows it to any user of the machine), read every 0.2 s."""
    seen: set[str] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for proc in psutil.process_iter(["cmdline"]):
                seen.add(" ".join(proc.info["cmdline"] or []))
            done.wait(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield seen
    finally:
        done.set()
        watcher.join()


def _files_holding(root: Path, secrets: list[str]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            found += [f"{path}: {s}" for s in secrets if s.encode() in data]
    return found


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    with postgres(PG_PASSWORD) as pg:
        pg.create_database("mlflow")
        pg.create_database("optuna")  # empty: the two sweeps create Optuna's schema (and race doing it)
        artifacts = tmp_path_factory.mktemp("mlflow") / "artifacts"
        with mlflow_server(pg.url_without_password("mlflow"), artifacts, PG_PASSWORD) as server:
            yield pg, server


def test_two_sweeps_share_one_server_and_one_study_without_lost_duplicated_or_leaked(tmp_path, servers):
    pg, server = servers
    host = server.url.removeprefix("http://")
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).parents[2]),
        "FSWEEP_PG_PASSWORD": PG_PASSWORD,
        "FSWEEP_ML_PASSWORD": MLFLOW_PASSWORD,
    }
    # sweep A writes its passwords literally, sweep B as ${ENV_VAR} references
    specs = {
        "a": _spec(pg.url("optuna"), f"http://alice:{MLFLOW_PASSWORD}@{host}"),
        "b": _spec(pg.url("optuna", "${FSWEEP_PG_PASSWORD}"), f"http://bob:${{FSWEEP_ML_PASSWORD}}@{host}"),
    }
    procs = {}
    for who, spec in specs.items():
        (tmp_path / f"{who}.yaml").write_text(yaml.safe_dump(spec))
        procs[who] = subprocess.Popen(
            [sys.executable, "-m", "sweep", "run", str(tmp_path / f"{who}.yaml")],
            cwd=tmp_path,  # both in one runs/ dir, started in the same second
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    with _command_lines_watched() as command_lines:
        outputs = {who: p.communicate(timeout=600)[0] for who, p in procs.items()}
    for who, p in procs.items():
        assert p.returncode == 0, outputs[who][-3000:]
    run_dirs = sorted((tmp_path / "runs" / "team").iterdir())
    assert len(run_dirs) == 2, run_dirs  # the same second: two run dirs, not one

    # the study: every trial of both sweeps, once, finished, each owned by the sweep that asked it
    study = optuna.load_study(study_name="team", storage=pg.url("optuna"))
    trials = study.get_trials()
    assert len(trials) == 2 * TRIALS
    assert sorted(t.number for t in trials) == list(range(2 * TRIALS))
    assert all(t.state.is_finished() for t in trials)
    parents = {json.loads((d / "sweep.json").read_text())["parent_run_id"] for d in run_dirs}
    owners = [t.user_attrs["sweep_run"] for t in trials]
    assert {o: owners.count(o) for o in owners} == dict.fromkeys(parents, TRIALS)

    # the record: one parent per sweep, one run per trial under the parent that asked it
    client = MlflowClient(tracking_uri=server.url)
    experiment = client.get_experiment_by_name("team")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    sweeps = [r for r in runs if r.data.tags.get("sweep.role") == "sweep"]
    trial_runs = [r for r in runs if r.data.tags.get("sweep.role") == "trial"]
    assert {r.info.run_id for r in sweeps} == parents
    assert all(r.info.status == "FINISHED" for r in sweeps)
    recorded = sorted((r.data.tags["mlflow.parentRunId"], int(r.data.tags["optuna.trial_number"])) for r in trial_runs)
    assert recorded == sorted((t.user_attrs["sweep_run"], t.number) for t in trials)
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # the server's store, not a local path
    dir_of = {
        who: next(d for d in run_dirs if f"{user}:" in (d / "sweep.json").read_text())
        for who, user in (("a", "alice"), ("b", "bob"))
    }
    stored = {
        who: client.get_run(json.loads((d / "sweep.json").read_text())["parent_run_id"]) for who, d in dir_of.items()
    }
    assert stored["a"].data.tags["sweep.storage"] == pg.url("optuna", "***")
    assert stored["b"].data.tags["sweep.storage"] == pg.url("optuna", "${FSWEEP_PG_PASSWORD}")
    for r in sweeps:  # each sweep judged its own trials only: the verdict's evidence holds exactly them
        assert r.data.metrics["num_trials"] == TRIALS, r.data.metrics
    for who, d in dir_of.items():
        parent = stored[who].info.run_id
        spec = validate_spec({**specs[who], "execution": {**specs[who]["execution"], "storage": pg.url("optuna")}})
        evidence, _ = gather(spec, pg.url("optuna"), server.url, parent)
        assert sorted(t.number for t in evidence.trials) == sorted(
            t.number for t in trials if t.user_attrs["sweep_run"] == parent
        )
        best = json.loads((d / "report" / "blame.json").read_text())["best_trial"]
        assert best in {t.number for t in trials if t.user_attrs["sweep_run"] == parent}

    # sweep B's record names its passwords by reference, so another process can report it again;
    # sweep A's were never stored, so a later report asks for them in one line
    again = subprocess.run(
        [sys.executable, "-m", "sweep", "report", str(dir_of["b"])], env=env, capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr[-2000:]
    refused = subprocess.run(
        [sys.executable, "-m", "sweep", "report", str(dir_of["a"])], env=env, capture_output=True, text=True
    )
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: --tracking-uri: the password of") and "Traceback" not in refused.stderr
    assert "${ENV_VAR}" in refused.stderr
    given = subprocess.run(  # ...and works when given the URLs again
        [
            sys.executable,
            "-m",
            "sweep",
            "report",
            str(dir_of["a"]),
            "--tracking-uri",
            specs["a"]["tracking"]["uri"],
            "--storage",
            specs["a"]["execution"]["storage"],
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert given.returncode == 0, given.stderr[-2000:]

    # the secrets: nowhere in the record, the artifacts, the run dirs, the output or a command line
    secrets = [PG_PASSWORD, quote(PG_PASSWORD, safe=""), MLFLOW_PASSWORD]
    assert len(command_lines) > 10  # the sweeps', their Rays', the server's...
    assert not [c for c in command_lines if any(s in c for s in secrets)]
    text = json.dumps(
        [[r.data.params, r.data.tags, r.data.metrics, r.info.artifact_uri] for r in runs]
        + [[t.params, t.user_attrs, t.system_attrs] for t in trials]
    )
    assert not [s for s in secrets if s in text]
    assert not _files_holding(server.artifacts, secrets)
    for d in run_dirs:
        assert not _files_holding(d, secrets)
    for out in [*outputs.values(), again.stdout, again.stderr, refused.stderr, given.stdout, given.stderr]:
        assert not [line for line in out.splitlines() if any(s in line for s in secrets)]
    assert "***" in outputs["a"] and "${FSWEEP_PG_PASSWORD}" in outputs["b"]
