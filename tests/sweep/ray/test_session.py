"""The sweep's Ray session without a Ray: its environment settings, what it asks ``ray.init`` for (a
stand-in records the call; tests/integration starts real ones), and Ray's files under /tmp."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweep.ray import session as ray_session

RETRY_KEYS = ("RAY_raylet_client_connect_timeout_milliseconds", "RAY_raylet_client_num_connect_attempts")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({}, {RETRY_KEYS[0]: "50", RETRY_KEYS[1]: "200"}),  # 50 ms apart, Ray's 10 s in all
        ({RETRY_KEYS[0]: "2000"}, {RETRY_KEYS[0]: "2000", RETRY_KEYS[1]: None}),  # the user's, Ray's default
        ({RETRY_KEYS[1]: "30"}, {RETRY_KEYS[0]: None, RETRY_KEYS[1]: "30"}),
    ],
)
def test_rays_socket_clients_retry_every_50_ms_unless_the_user_said(given, expected):
    """A raylet that starts waits Ray's retry interval for its own object store about every other time
    (1 s by default): the sweep's Ray retries every 50 ms within the same 10 s, and leaves a user's
    setting of either value alone."""
    from unittest import mock

    assert tuple(ray_session.CONNECT_RETRY) == RETRY_KEYS
    kept = {k: v for k, v in os.environ.items() if k not in RETRY_KEYS}
    with mock.patch.dict(os.environ, {**kept, **given}, clear=True):  # (everything _set_env sets goes after)
        ray_session._set_env()
        assert {key: os.environ.get(key) for key in RETRY_KEYS} == expected


@pytest.mark.parametrize("address", [None, "ray://head:10001"])
def test_start_ray_asks_ray_init_for_a_local_ray_with_the_workers_hook_and_leaves_a_clusters_env_alone(
    address, monkeypatch, tmp_path
):
    """No Ray starts here: ``ray.init`` is a stand-in that records what start_ray gives it. A local Ray
    gets its session files in a short temp dir and the workers' setup hook; connecting to a cluster
    passes the address alone (its runtime env stays the cluster's). Closing removes the temp dir."""
    import ray

    from sweep.ray.worker import WARM_HOOK

    seen = []
    monkeypatch.setattr(ray_session, "_set_env", lambda: None)  # (this process's environment stays as it is)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: seen.append(kwargs))
    monkeypatch.setattr(ray, "shutdown", lambda: seen.append("shutdown"))
    monkeypatch.setattr(ray_session.tempfile, "tempdir", str(tmp_path))
    session = ray_session.start_ray(address, dashboard=False)
    (kwargs,) = seen
    assert (kwargs["log_to_driver"], session.owned, session.dashboard) == (False, True, "")
    if address is None:
        temp_dir = Path(kwargs["_temp_dir"])
        assert temp_dir == session.temp_dir and temp_dir.parent == tmp_path
        assert temp_dir.name.startswith(f"{ray_session.STAND_IN}{os.getpid()}-")
        assert (kwargs["address"], kwargs["runtime_env"]) == ("local", {"worker_process_setup_hook": WARM_HOOK})
    else:
        assert kwargs["address"] == address and "runtime_env" not in kwargs and session.temp_dir is None
    session.close()
    assert seen[-1] == "shutdown" and not list(tmp_path.iterdir())


def test_a_stand_in_dirs_logs_are_kept_and_the_dir_and_its_link_removed(tmp_path):
    temp_dir = tmp_path / "short"
    (temp_dir / "session_1" / "logs").mkdir(parents=True)
    (temp_dir / "session_1" / "logs" / "raylet.out").write_text("log")
    (temp_dir / "session_latest").symlink_to(temp_dir / "session_1")  # (Ray's link to the latest: not copied twice)
    link = tmp_path / "run" / "ray"
    link.parent.mkdir()
    link.symlink_to(temp_dir)
    ray_session.keep_logs(temp_dir, tmp_path / "run" / "ray-logs", link)
    assert (tmp_path / "run" / "ray-logs" / "session_1" / "raylet.out").read_text() == "log"
    assert sorted(p.name for p in (tmp_path / "run" / "ray-logs").iterdir()) == ["session_1"]
    assert not temp_dir.exists() and not link.is_symlink()


def test_a_long_path_gets_a_short_temp_dir_under_tmp_and_a_link(tmp_path, monkeypatch):
    monkeypatch.setattr(ray_session.tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    link = tmp_path / ("a-long-folder-name-" * 3) / "ray-head"
    short, stand_in = ray_session.short_temp_dir(link)
    assert stand_in and Path(short).parent == tmp_path / "tmp" and Path(os.readlink(link)) == Path(short)
    assert Path(short).stat().st_mode & 0o777 == 0o700  # this user's alone
    assert ray_session.short_temp_dir(link) == (short, True)  # the same path, the same stand-in


def test_a_stand_in_someone_else_could_enter_is_not_used(tmp_path, monkeypatch):
    """Issue 33, finding 7: the stand-in had a predictable name (/tmp/fsweep-<hash of the path>) and the
    default permissions; another user could make it first. Now each is a new private mkdtemp, and a
    link to a directory others may enter (or to none) gets a new one."""
    monkeypatch.setattr(ray_session.tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    link = tmp_path / ("a-long-folder-name-" * 3) / "ray-head"
    link.parent.mkdir()
    planted = tmp_path / "tmp" / "fsweep-planted"
    planted.mkdir(mode=0o777)
    planted.chmod(0o777)
    link.symlink_to(planted)
    short, _ = ray_session.short_temp_dir(link)
    assert Path(short) != planted and Path(os.readlink(link)) == Path(short)
    assert Path(short).stat().st_mode & 0o777 == 0o700
    second = tmp_path / ("another-long-folder-" * 3) / "ray-head"
    assert ray_session.short_temp_dir(second)[0] != short  # unpredictable: never derived from the path


def test_alive_is_neither_this_process_nor_an_ended_one():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 60
    while not Path(f"/proc/{child.pid}/stat").read_text().rsplit(") ", 1)[1].startswith("Z"):
        assert time.monotonic() < deadline
        time.sleep(0.01)  # (until it has ended, not yet reaped: a zombie)
    assert not ray_session.alive(child.pid)
    child.wait()
    assert not ray_session.alive(child.pid) and not ray_session.alive(os.getpid()) and not ray_session.alive(None)
    assert ray_session.alive(os.getppid())
