"""A real two-node Ray cluster on this machine (`sweep cluster up`: `ray start` head + worker), the demo
sweep submitted to it as a Ray job (`sweep submit`), followed to the end (`sweep logs --follow`),
checked (`sweep status`) and a second one stopped (`sweep stop`); the record shows trials on both
nodes; Ray's token is sent but never printed or recorded."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from sweep.ray.cluster import group_members
from sweep.ray.session import auth_token

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]


def sweep(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sweep", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    runs = tmp_path_factory.mktemp("cluster-runs")
    up = sweep("cluster", "up", "--runs-dir", str(runs), timeout=180)
    assert up.returncode == 0, up.stdout + up.stderr
    state = json.loads((runs / "cluster" / "cluster.json").read_text())
    try:
        yield runs, state["dashboard"]
    finally:
        down = sweep("cluster", "down", "--runs-dir", str(runs), timeout=120)
        assert down.returncode == 0, down.stderr
        assert "worker-1, head" in down.stdout
        for node in state["nodes"]:  # stopped by the PIDs they wrote: nothing of them is left
            assert group_members(node["pid"]) == []


def _job_id(out: str) -> str:
    line = next(ln for ln in out.splitlines() if " as Ray job " in ln)
    return line.rsplit(" ", 1)[1]


def test_demo_sweep_as_a_job_runs_on_both_nodes_and_is_recorded(cluster, tmp_path):
    _, dashboard = cluster
    started = time.time()
    submitted = sweep(
        "submit",
        "search_spaces/demo.yaml",
        "budget.num_trials=4",
        "trial.optim.max_steps=20",
        f"execution.runs_dir={tmp_path}",
        "--address",
        dashboard,
    )
    assert submitted.returncode == 0, submitted.stderr
    job = _job_id(submitted.stdout)
    assert f"sweep logs {job} --follow" in submitted.stdout and f"sweep stop {job}" in submitted.stdout
    assert not (ROOT / ".sweep-jobs").exists()  # the job's spec went with the upload, not into the project

    # follow to the end; note when the first trial started (submit -> first trial)
    follow = subprocess.Popen(
        [sys.executable, "-m", "sweep", "logs", job, "--follow", "--address", dashboard],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    first_trial_s = None
    lines = []
    for line in follow.stdout:
        lines.append(line)
        if first_trial_s is None and "trial 0 started" in line:
            first_trial_s = time.time() - started
    follow.wait(timeout=600)
    output = "".join(lines)
    assert follow.returncode == 0
    assert f"[job {job} ended: SUCCEEDED]" in output
    assert first_trial_s is not None, output[-3000:]
    print(f"\nsubmit -> first trial started: {first_trial_s:.1f}s; whole job {time.time() - started:.1f}s")

    status = sweep("status", job, "--address", dashboard)
    assert status.returncode == 0 and status.stdout.startswith(f"{job}: SUCCEEDED")

    # the record, where the job put it (an absolute runs_dir on this machine's cluster)
    (run_dir,) = (tmp_path / "demo").iterdir()
    state = json.loads((run_dir / "sweep.json").read_text())
    client = MlflowClient(tracking_uri=state["tracking_uri"])
    parent = client.get_run(state["parent_run_id"])
    assert parent.info.status == "FINISHED"
    trials = client.search_runs(
        [parent.info.experiment_id],
        f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and tags.`sweep.role` = 'trial'",
    )
    assert len(trials) == 4
    assert all(t.info.status == "FINISHED" for t in trials)
    nodes = {t.data.tags["ray.node_id"] for t in trials}
    assert len(nodes) == 2, nodes  # one CPU per node, two trials at a time: both nodes ran trials
    assert (run_dir / "best" / "model").is_dir()

    # Ray's token authenticated every request and appears nowhere
    token = auth_token()
    assert token, "Ray 2.60 starts clusters with token auth: the token file should exist"
    assert token not in submitted.stdout + submitted.stderr + output + status.stdout
    for path in run_dir.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert token.encode() not in path.read_bytes(), path
    recorded = json.dumps([[t.data.tags, t.data.params] for t in [parent, *trials]])
    assert token not in recorded


def test_a_stopped_job_ends_its_runs_killed_and_says_how_to_resume(cluster, tmp_path):
    _, dashboard = cluster
    submitted = sweep(
        "submit",
        "search_spaces/demo.yaml",
        "budget.num_trials=6",
        f"execution.runs_dir={tmp_path}",
        "--address",
        dashboard,
    )
    assert submitted.returncode == 0, submitted.stderr
    job = _job_id(submitted.stdout)
    deadline = time.time() + 180
    while "started:" not in sweep("logs", job, "--address", dashboard).stdout:
        assert time.time() < deadline, "no trial started"
        time.sleep(2)
    stopped = sweep("stop", job, "--address", dashboard)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert stopped.stdout.strip().endswith(f"{job}: STOPPED")
    status = sweep("status", job, "--address", dashboard)
    assert status.stdout.startswith(f"{job}: STOPPED")
    logs = sweep("logs", job, "--address", dashboard).stdout
    (run_dir,) = (tmp_path / "demo").iterdir()
    assert f"Resume with: sweep resume {run_dir}" in logs  # Ctrl-C for the sweep, not a kill
    state = json.loads((run_dir / "sweep.json").read_text())
    client = MlflowClient(tracking_uri=state["tracking_uri"])
    parent = client.get_run(state["parent_run_id"])
    assert parent.info.status == "KILLED"
    trials = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert trials and all(t.info.status in ("KILLED", "FINISHED") for t in trials)
    assert any(t.info.status == "KILLED" for t in trials)


def test_bad_submissions_are_one_line_errors_before_anything_is_sent(cluster, tmp_path):
    _, dashboard = cluster
    outside = tmp_path / "data.csv"
    outside.write_text(
        "text,label\n" + "".join(f"row {i} is {'good' if i % 2 else 'bad'},{i % 2}\n" for i in range(60))
    )
    bad = sweep("submit", "search_spaces/demo.yaml", "budget.num_trials=0", "--address", dashboard)
    assert bad.returncode == 2 and bad.stderr.startswith("error: budget.num_trials") and bad.stderr.count("\n") == 1
    # a relative data path outside the project would not reach the cluster
    not_sent = sweep(
        "submit", "search_spaces/demo.yaml", f"trial.data.path={os.path.relpath(outside, ROOT)}", "--address", dashboard
    )
    assert not_sent.returncode == 2, not_sent.stdout
    assert not_sent.stderr.startswith("error: trial.data.path: ") and "is outside the working dir" in not_sent.stderr
    no_cluster = sweep("submit", "search_spaces/demo.yaml", "--address", "http://127.0.0.1:9")
    assert no_cluster.returncode == 2
    assert no_cluster.stderr.startswith("error: --address: cannot reach Ray's Job API at http://127.0.0.1:9")
    unknown = sweep("status", "no-such-job", "--address", dashboard)
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: job: no job 'no-such-job'")
    jobs = sweep("logs", "no-such-job", "--address", dashboard)
    assert jobs.returncode == 2


def test_installed_mode_sends_only_the_spec_and_runs_the_clusters_package(cluster, tmp_path):
    _, dashboard = cluster
    submitted = sweep(
        "submit",
        "search_spaces/demo.yaml",
        "budget.num_trials=2",
        "trial.optim.max_steps=10",
        "trial.eval.eval_every_steps=5",
        f"execution.runs_dir={tmp_path}",
        "--installed",
        "--address",
        dashboard,
    )
    assert submitted.returncode == 0, submitted.stderr
    job = _job_id(submitted.stdout)
    follow = sweep("logs", job, "--follow", "--address", dashboard)
    assert f"[job {job} ended: SUCCEEDED]" in follow.stdout, follow.stdout[-3000:]
    (run_dir,) = (tmp_path / "demo").iterdir()
    assert json.loads((run_dir / "sweep.json").read_text())["parent_run_id"]
    data = ROOT / "fsweep-test-data.csv"  # exists here, relative: --installed would not send it
    data.write_text("text,label\n" + "".join(f"row {i} {'good' if i % 2 else 'bad'},{i % 2}\n" for i in range(40)))
    try:
        relative = sweep(
            "submit", "search_spaces/demo.yaml", f"trial.data.path={data.name}", "--installed", "--address", dashboard
        )
    finally:
        data.unlink()
    assert relative.returncode == 2
    assert relative.stderr.startswith(
        f"error: trial.data.path: '{data.name}' is relative, and --installed sends no files"
    )
