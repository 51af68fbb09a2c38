"""One driver per run dir (issue 33, finding 4): the run dir's lock is exclusive, names its holder, is
freed by the OS when the holder dies (SIGKILL too), and no child process keeps it alive."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sweep.errors import SpecError
from sweep.run.lock import RunDirLock

HOLD = (
    "import sys; from sweep.run.lock import RunDirLock; RunDirLock(sys.argv[1]).acquire(); "
    "print('held', flush=True); sys.stdin.read()"
)


def hold_in_child(run_dir: Path) -> subprocess.Popen[str]:
    """A process (not a sweep) holding ``run_dir``'s lock until its stdin closes."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    return holder


def in_use(run_dir: Path, pid: int) -> str:
    return f"run_dir: '{run_dir}' is in use by another sweep (pid {pid}); wait for it to end, or stop it first"


def test_a_second_lock_on_a_run_dir_is_refused_naming_the_holder(tmp_path):
    with RunDirLock(tmp_path):
        with pytest.raises(SpecError) as refused:
            RunDirLock(tmp_path).acquire()  # not re-entrant: even this process's second driver is refused
        assert refused.value.problems == [in_use(tmp_path, os.getpid())]
    with RunDirLock(tmp_path) as again:  # freed when the first ended
        assert again.held


def test_the_lock_of_a_killed_holder_is_free_again(tmp_path):
    holder = hold_in_child(tmp_path)
    try:
        with pytest.raises(SpecError) as refused:
            RunDirLock(tmp_path).acquire()
        assert refused.value.problems == [in_use(tmp_path, holder.pid)]
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # no handler runs: the OS frees the lock with the process
        holder.wait()
    with RunDirLock(tmp_path):
        pass


def test_a_child_process_does_not_keep_the_lock(tmp_path):
    """Ray's and the data check's processes start while the driver holds the lock: they must not hold
    it too, or a killed driver's run dir would stay locked while they linger."""
    lock = RunDirLock(tmp_path).acquire()
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        lock.release()
        with RunDirLock(tmp_path):  # the child still runs
            assert child.poll() is None
    finally:
        child.communicate()


def test_a_run_dir_that_cannot_hold_a_lock_is_one_line(tmp_path):
    with pytest.raises(SpecError) as refused:
        RunDirLock(tmp_path / "gone").acquire()
    assert refused.value.problems == [f"run_dir: cannot lock '{tmp_path / 'gone'}' (No such file or directory)"]


def test_a_report_never_waits_for_the_lock_and_writes_nothing_while_a_sweep_runs(tmp_path, monkeypatch):
    """`sweep report` writes where the driver does (report/, the parent run, the registry): it takes the
    run dir's lock for that; while another process holds it, the verdict is printed and nothing written.
    The sweep's own driver (``locked=True``) writes its report under its own lock."""
    from sweep import evidence, tracking, verdict
    from sweep.blame import analyze
    from sweep.run.record import RunState, write_spec, write_state
    from sweep.spec import validate_spec
    from tests.sweep.planted import SCENARIOS, evidence_of

    scenario = SCENARIOS["lr_too_low"]
    spec = {"name": "planted", "trial": {"model": {"name_or_path": "tiny-bert"}}, "space": scenario.space}
    write_spec(tmp_path, validate_spec(spec))
    write_state(tmp_path, RunState("parent", f"sqlite:///{tmp_path}/m.db", "planted", "sqlite:///x"))
    recorded = []
    monkeypatch.setattr(evidence, "gather", lambda *args: (evidence_of(scenario, 12, 0), {}))
    monkeypatch.setattr(tracking, "sweep_state", lambda uri, parent: {})
    # (the real analysis, without fANOVA's ranking)
    monkeypatch.setattr(verdict, "analyze", lambda found, importances, **kw: analyze(found, **kw))

    def record(uri, parent, tags, metrics, files):
        recorded.append(RunDirLock(tmp_path).try_acquire())  # who holds the run dir while it records

    monkeypatch.setattr(tracking, "record_verdict", record)
    holder = hold_in_child(tmp_path)
    try:
        lines = []
        report = verdict.make_report(tmp_path, echo=lines.append)
        assert lines[-1] == (
            f"provisional: '{tmp_path}' is in use by a running sweep (pid {holder.pid}); nothing was written or "
            f"registered: run `sweep report {tmp_path}` again once it has ended"
        )
        assert lines[0].startswith("verdict: ") and report.files == []
        assert not (tmp_path / "report").exists() and recorded == []
    finally:
        holder.communicate()
    verdict.make_report(tmp_path, echo=lambda line: None)  # the sweep ended: written, under the lock
    assert recorded == [os.getpid()] and (tmp_path / "report" / "report.html").is_file()
    with RunDirLock(tmp_path):  # ... which it gave back; the driver's own report writes under the driver's
        verdict.make_report(tmp_path, echo=lambda line: None, locked=True)
    assert recorded == [os.getpid(), os.getpid()]
