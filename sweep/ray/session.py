"""The Ray a sweep runs on: a local one it starts (or a cluster it connects to), Ray's environment
settings, Ray's files in short temp dirs under /tmp and their logs kept in the run dir, and the token of
Ray's authentication.

``ray`` is imported where Ray starts, so the file helpers serve ``sweep cluster`` and ``sweep dashboard``
without loading Ray.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sweep.ray import _compat

RAY_DIR = "ray"  # a link to Ray's session files (in /tmp: unix socket paths must be short) while the sweep runs
RAY_LOGS_DIR = "ray-logs"  # Ray's logs (the trials' tracebacks), kept when the /tmp stand-in is removed
STAND_IN = "fsweep-ray-"  # + the driver's PID: Ray's temp dirs under /tmp

CONNECT_RETRY = {
    "RAY_raylet_client_connect_timeout_milliseconds": "50",  # between two attempts (Ray's default: 1000)
    "RAY_raylet_client_num_connect_attempts": "200",  # 10 s in all, as Ray's 10 x 1 s
}
"""How often Ray's socket clients try to connect (``_set_env``)."""


def _set_env() -> None:
    """Ray's and Tune's settings for a sweep, through their environment variables; a value the user set
    is kept. Set before Ray starts: a local Ray's processes, its workers among them, inherit them."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")  # Ctrl-C reaches us: runs end KILLED
    # the final outcome report carries no objective (a diverged trial has none); we check the
    # objective ourselves at the first report instead
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    # relative data paths mean what they meant to the user
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    # Tune's automatic loggers include TensorBoardX's, whose import loads torch into the driver while the
    # first trials start; run_tuner adds the CSV and JSON ones itself
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # the workers of a Ray this session starts allocate with the jemalloc Ray ships (and runs its own
    # processes on), not glibc's malloc: a CPU trial's per-shape bf16 temporaries fragment glibc's heap,
    # and a worker's memory grows with every trial. RAY_LD_PRELOAD_ON_WORKERS=0 takes it back.
    os.environ.setdefault("RAY_LD_PRELOAD_ON_WORKERS", "1")
    # a local Ray starts one idle worker per CPU for the driver, which no trial can use: Tune's trial
    # actors carry a runtime env, so Ray starts them new workers. Not prestarting leaves the CPU to the
    # sweep's own start
    os.environ.setdefault("RAY_prestart_worker_first_driver", "0")
    # a starting raylet connects to its object store, which its own thread is often still opening: Ray's
    # socket client then sleeps its retry interval, a whole second by default, before trying again; with
    # short retries the raylet is up as soon as the store is. A value the user set for either is kept,
    # with Ray's default for the other.
    if not CONNECT_RETRY.keys() & os.environ.keys():
        os.environ.update(CONNECT_RETRY)


class RaySession:
    """A Ray this sweep connected to (or started): ``start_ray`` returns it, ``close`` ends it.

    A Ray that is already running in this process (a notebook, a test) is used as it is and left
    running; one this session started is shut down, and its temp files leave /tmp."""

    def __init__(self, dashboard: str = "", temp_dir: Path | None = None, owned: bool = False) -> None:
        self.dashboard = dashboard  # the dashboard's URL, or ""
        self.temp_dir = temp_dir  # Ray's session files, when this session started Ray
        self.owned = owned
        self.run_dir: Path | None = None

    def attach(self, run_dir: Path) -> None:
        """Show Ray's files in the run dir (``ray``, a link while Ray runs); its logs stay there at close.

        A link left by a sweep that was killed (resume) points to that sweep's temp dir: its Ray logs join
        the run dir's too, and the temp dir goes (unless the sweep that made it still runs)."""
        self.run_dir = run_dir.resolve()
        link = self.run_dir / RAY_DIR
        if link.is_symlink() and Path(os.readlink(link)) != self.temp_dir:
            left, owner = Path(os.readlink(link)), _stand_in_owner(Path(os.readlink(link)))
            if alive(owner):
                return  # that sweep still runs: its Ray files stay where they are
            link.unlink()
            if owner is not None and left.is_dir():
                keep_logs(left, self.run_dir / RAY_LOGS_DIR, link)
        if self.temp_dir is not None and not link.exists():  # (a run dir of an older version has a real one)
            link.symlink_to(self.temp_dir, target_is_directory=True)

    def close(self) -> None:
        if self.owned:
            import ray

            ray.shutdown()  # also a node whose start was cut short (ray.is_initialized() is False then)
        if self.temp_dir is not None:
            run_dir = self.run_dir
            keep_logs(
                self.temp_dir,
                run_dir / RAY_LOGS_DIR if run_dir else None,
                run_dir / RAY_DIR if run_dir else None,
            )
            self.temp_dir = None


def start_ray(address: str | None, dashboard: bool) -> RaySession:
    """Start a local Ray (or connect to ``address``), its session files in a short temp dir (Ray puts unix
    sockets ~62 characters below it; a socket path may not exceed 107 bytes)."""
    import ray

    from sweep.ray.worker import WARM_HOOK

    _set_env()
    if ray.is_initialized():
        return RaySession()
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    _compat.quiet_token_note()
    temp_dir: Path | None = None
    try:
        if address in (None, "local"):
            # the dashboard comes with ray[default]; without it Ray runs headless
            has_dashboard = dashboard and importlib.util.find_spec("aiohttp") is not None
            temp_dir = Path(tempfile.mkdtemp(prefix=f"{STAND_IN}{os.getpid()}-"))
            info = ray.init(
                address="local",
                include_dashboard=has_dashboard,
                dashboard_host="127.0.0.1",
                _temp_dir=str(temp_dir),  # (ray.init's documented, underscored parameter)
                runtime_env={"worker_process_setup_hook": WARM_HOOK},
                **kwargs,
            )
        else:  # a cluster's (or a job's) own runtime env stays as it is
            info = ray.init(address=address, **kwargs)
    except BaseException:
        RaySession(temp_dir=temp_dir, owned=True).close()
        raise
    url = getattr(info, "dashboard_url", "") or ""
    return RaySession(f"http://{url}" if url and not url.startswith("http") else url, temp_dir, owned=True)


@contextlib.contextmanager
def ray_session(address: str | None, run_dir: Path, dashboard: bool) -> Iterator[RaySession]:
    """``start_ray`` as a context: Ray's files shown in ``run_dir``; yields the session."""
    session = start_ray(address, dashboard)
    try:
        session.attach(run_dir)
        yield session
    finally:
        session.close()


def auth_token() -> str | None:
    """The token of Ray's token authentication, where Ray looks for it: ``RAY_AUTH_TOKEN``, the file
    ``RAY_AUTH_TOKEN_PATH`` names, or ``~/.ray/auth_token`` (which a local Ray writes). Read when asked;
    never stored by the sweep."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    return path.read_text().strip() if path.is_file() else None


# --- Ray's files: short temp dirs under /tmp, their logs kept ----------------------------------------


def _stand_in_owner(path: Path) -> int | None:
    """The PID of the sweep whose Ray temp dir ``path`` is; None if it is not one."""
    if path.parent != Path(tempfile.gettempdir()) or not path.name.startswith(STAND_IN):
        return None
    pid = path.name.removeprefix(STAND_IN).split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def alive(pid: int | None) -> bool:
    """A process ``pid`` runs: not this one, not one that ended (a zombie, a child not yet reaped)."""
    if pid is None or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    with contextlib.suppress(OSError, IndexError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    return True


def keep_logs(temp_dir: Path, logs_dir: Path | None, link: Path | None) -> None:
    """Remove a Ray temp dir that stood in under /tmp, and ``link`` to it, keeping a copy of each of its
    sessions' logs under ``logs_dir`` (if given)."""
    if logs_dir is not None:
        for found in temp_dir.glob("session_*/logs"):
            if found.is_dir() and not found.parent.is_symlink():
                shutil.copytree(found, logs_dir / found.parent.name, symlinks=True, dirs_exist_ok=True)
    if link is not None and link.is_symlink() and Path(os.readlink(link)) == temp_dir:
        link.unlink()
    shutil.rmtree(temp_dir, ignore_errors=True)


def short_temp_dir(link: Path) -> tuple[str, bool]:
    """A Ray temp dir reachable as ``link``; True when it is a short stand-in under /tmp. Ray puts unix
    sockets ~62 characters below it and a socket path may not exceed 107 bytes, so a long path gets a
    short real one in /tmp and ``link`` points to it until Ray is done (``keep_logs``). The stand-in is
    made by ``mkdtemp``: a new name, this user's alone (0700), so no other user of /tmp can make it first
    or read the session's sockets and logs; a link to anything else is replaced."""
    link = link.parent.resolve() / link.name
    if len(str(link)) <= 40:
        link.mkdir(parents=True, exist_ok=True)
        return str(link), False
    if link.is_symlink():
        short = Path(os.readlink(link))
        if _private_dir(short):
            return str(short), True
        link.unlink()
    short = Path(tempfile.mkdtemp(prefix="fsweep-"))
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(short, target_is_directory=True)
    return str(short), True


def _private_dir(path: Path) -> bool:
    """``path`` is a directory (not a link) of this user's that no one else may enter."""
    try:
        st = path.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077
