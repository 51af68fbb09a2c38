"""The run dir's and the cluster's state files are written whole or not at all (issue 33, finding 5): a
driver killed, or a disk full, at any of their write points leaves the previous file, which resume and
`cluster down` read; and a new sweep's parent run id is on disk before anything else is recorded."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sweep.errors import SpecError
from sweep.ray.cluster import Cluster, Node
from sweep.run import record
from sweep.run.record import RunState, read_state, write_spec, write_state
from sweep.run_dir import SPEC_FILE, STATE_FILE, write_atomic
from sweep.spec import load_spec, validate_spec


class Killed(BaseException):
    """The driver dies here (no ``except Exception`` runs)."""


def small_spec(name: str, **parts):
    trial = {"model": {"name_or_path": "tiny-bert"}}
    space = {"optim.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}
    return validate_spec({"name": name, "trial": trial, "space": space, **parts})


OLD_STATE = RunState("old-parent", "sqlite:///runs/mlflow.db", "old", "sqlite:///runs/old/optuna.db")
NEW_STATE = RunState("new-parent-" + "x" * 200, "sqlite:///elsewhere/mlflow.db", "new", "sqlite:///new/optuna.db")
OLD_CLUSTER = Cluster("127.0.0.1:6379", "http://127.0.0.1:8265", [Node("head", 11, "head.log", "/tmp/h")])
NEW_CLUSTER = Cluster(
    "127.0.0.1:6380", "http://127.0.0.1:8266", [Node(f"worker-{i}", i, "w.log", "t") for i in range(9)]
)

# each write point: what is there before, the write that is killed, and how its reader sees the file
POINTS = {
    STATE_FILE: (
        lambda d: write_state(d, OLD_STATE),
        lambda d: write_state(d, NEW_STATE),
        lambda d: read_state(d),
        OLD_STATE,
    ),
    SPEC_FILE: (
        lambda d: write_spec(d, small_spec("old")),
        lambda d: write_spec(d, small_spec("new-" + "n" * 300)),
        lambda d: load_spec(d / SPEC_FILE).name,
        "old",
    ),
    "cluster/cluster.json": (
        lambda d: OLD_CLUSTER.save(d),
        lambda d: NEW_CLUSTER.save(d),
        lambda d: Cluster.load(d),
        OLD_CLUSTER,
    ),
}


@pytest.fixture
def run_dir(tmp_path):
    (tmp_path / "cluster").mkdir()
    for before, _, _, _ in POINTS.values():
        before(tmp_path)
    return tmp_path


def _kill(monkeypatch, when: str) -> None:
    """``rename``: the kill comes as the new file is about to replace the old one; ``torn``: mid-write,
    half of the new bytes on disk."""
    if when == "rename":

        def replace(src, dst):
            raise Killed

        monkeypatch.setattr(os, "replace", replace)
    else:

        def fsync(fd):
            os.ftruncate(fd, os.fstat(fd).st_size // 2)
            raise Killed

        monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("kill", ["rename", "torn"])
@pytest.mark.parametrize("name", list(POINTS))
def test_a_kill_at_any_write_point_leaves_the_previous_file(run_dir, monkeypatch, name, kill):
    _, write, read, before = POINTS[name]
    with monkeypatch.context() as patched:
        _kill(patched, kill)
        with pytest.raises(Killed):
            write(run_dir)
    assert read(run_dir) == before
    assert not list(run_dir.rglob("*.part"))  # the half-written temp file went with the failure


_FULL_DISK = """
import json, resource, signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from tests.sweep.test_state_files import POINTS
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), as on a full disk
run_dir, failed = Path(sys.argv[1]), []
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
for name, (_, write, _, _) in POINTS.items():
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, hard))  # the new file is longer than this
    try:
        write(run_dir)
    except OSError:
        failed.append(name)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
print(json.dumps(failed))
"""


def test_a_full_disk_at_any_write_point_leaves_the_previous_file(run_dir):
    """The real failure, not a stand-in: files may grow to 64 bytes only (RLIMIT_FSIZE, in a child)."""
    repo = Path(__file__).parents[2]
    child = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, str(run_dir), str(repo)], capture_output=True, text=True, timeout=120
    )
    assert child.returncode == 0, child.stderr
    assert json.loads(child.stdout) == list(POINTS)  # every write failed...
    for name, (_, _, read, before) in POINTS.items():
        assert read(run_dir) == before, name  # ...and left the previous file whole


def test_write_atomic_keeps_the_files_mode_as_written_in_place(tmp_path):
    write_atomic(tmp_path / "a", "x")
    (tmp_path / "b").write_text("x")
    assert os.stat(tmp_path / "a").st_mode == os.stat(tmp_path / "b").st_mode


def test_a_new_sweeps_parent_run_id_is_on_disk_before_anything_else_is_recorded(tmp_path, monkeypatch):
    """Killed right after MLflow made the parent run (before its params): the run dir resumes that run."""
    from sweep.tracking import MlflowRecorder

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    spec = small_spec("s", tracking={"uri": uri}, execution={"runs_dir": str(tmp_path / "runs")})
    run_dir = tmp_path / "run"
    run_dir.mkdir()

    def killed(*args):
        raise Killed

    with monkeypatch.context() as patched:
        patched.setattr(MlflowRecorder, "_log_params", killed)
        with pytest.raises(Killed):
            record.open_record(spec, run_dir, False, "sqlite:///x", {})
    made = read_state(run_dir).parent_run_id
    resumed = record.open_record(spec, run_dir, True, "sqlite:///x", {})
    assert resumed.parent_id == made
    resumed.close(interrupted=False)
    from mlflow.tracking import MlflowClient

    runs = MlflowClient(uri).search_runs([resumed.experiment_id])
    assert [(r.info.run_id, r.info.status) for r in runs] == [(made, "FINISHED")]  # no RUNNING orphan


def test_a_driver_killed_between_the_parent_run_and_its_state_file_leaves_a_resumable_run(tmp_path, monkeypatch):
    """Killed after MLflow made the parent run and before sweep.json was written: `sweep resume` finds
    the run by its sweep.run_dir tag (set as it was made), writes the state and ends that run."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    spec = small_spec("s", tracking={"uri": uri}, execution={"runs_dir": str(tmp_path / "runs")})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_spec(run_dir, spec)

    def killed(*args):
        raise Killed

    with monkeypatch.context() as patched:
        patched.setattr(record, "write_state", killed)
        with pytest.raises(Killed):
            record.open_record(spec, run_dir, False, record.stored_storage_of(spec, run_dir), {})
    assert not (run_dir / STATE_FILE).exists()
    (made,) = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("s").experiment_id])
    assert made.info.status == "RUNNING"

    assert record.adopt_parent_run(spec, run_dir)
    state = read_state(run_dir)
    assert state == RunState(made.info.run_id, uri, "s", f"sqlite:///{run_dir.resolve()}/optuna.db")
    resumed = record.open_record(spec, run_dir, True, state.storage, {})
    assert resumed.parent_id == made.info.run_id
    resumed.close(interrupted=False)
    assert MlflowClient(uri).get_run(made.info.run_id).info.status == "FINISHED"  # no RUNNING orphan
    other = tmp_path / "other"  # a run dir the record knows nothing of: nothing adopted
    other.mkdir()
    assert not record.adopt_parent_run(spec, other) and not (other / STATE_FILE).exists()


def test_resume_of_a_run_dir_without_a_readable_state_is_one_line(tmp_path, capsys):
    from sweep import cli

    write_spec(tmp_path, small_spec("s"))  # a sweep killed as it started: its spec, no record
    assert cli.main(["resume", str(tmp_path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: run_dir: '{tmp_path}' holds no sweep.json: its sweep stopped before it recorded anything; "
        f"start it again: sweep run {tmp_path / SPEC_FILE}"
    ]
    (tmp_path / STATE_FILE).write_text('{"parent_run_id": "abc", "tracking_u')  # written in place, cut short
    assert cli.main(["resume", str(tmp_path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: run_dir: '{tmp_path}/{STATE_FILE}' is unreadable; it is written by `sweep run`, restore or rerun it"
    ]
    with pytest.raises(SpecError):
        read_state(tmp_path)
