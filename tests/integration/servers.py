"""Real servers for team-mode tests: PostgreSQL 15 (Debian's, run as the ``postgres`` user with a
password) and an MLflow tracking server on it, both on 127.0.0.1, stopped by the PIDs they started with."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PG_USER = "sweep"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def can_run_postgres() -> str:
    """Why PostgreSQL cannot run here ('' when it can)."""
    if pg_bin() is None:
        return "PostgreSQL is not installed (apt-get install postgresql)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: initdb refuses root"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed"
    return ""


@dataclass
class Postgres:
    port: int
    password: str
    root: Path

    def url(self, database: str, password: str | None = None) -> str:
        """The database's URL with ``password`` as given (a ``${VAR}`` reference, ``***``), else the real
        one percent-encoded, as a URL must hold it."""
        secret = password or urllib.parse.quote(self.password, safe="")
        return f"postgresql+psycopg://{PG_USER}:{secret}@127.0.0.1:{self.port}/{database}"

    def url_without_password(self, database: str) -> str:
        """The URL a server gets in its command line: libpq reads the password from PGPASSWORD."""
        return f"postgresql+psycopg://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> None:
        import psycopg

        args = {"host": "127.0.0.1", "port": self.port, "user": PG_USER, "password": self.password}
        with psycopg.connect(dbname="postgres", autocommit=True, **args) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@contextlib.contextmanager
def postgres(password: str) -> Iterator[Postgres]:
    """A fresh cluster in /tmp (the postgres user must reach it), password auth on 127.0.0.1 only."""
    bin_dir = pg_bin()
    assert bin_dir is not None
    root = Path(tempfile.mkdtemp(prefix="fsweep-pg-"))
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    pwfile = root / "pw"
    pwfile.write_text(password)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
        shutil.chown(pwfile, "postgres")
    port = free_port()
    subprocess.run(
        _as_postgres(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                PG_USER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
            ]
        ),
        check=True,
        capture_output=True,
    )
    pwfile.unlink()
    opts = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "start"]),
        check=True,
        capture_output=True,
    )
    try:
        yield Postgres(port, password, root)
    finally:
        subprocess.run(
            _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class MlflowServer:
    url: str
    artifacts: Path


@contextlib.contextmanager
def mlflow_server(backend_uri: str, artifacts: Path, pg_password: str | None = None) -> Iterator[MlflowServer]:
    """``mlflow server`` (light: one worker, no job runner) with the artifacts it serves under ``artifacts``.
    As docker/compose.yaml runs it: the database's password in libpq's PGPASSWORD, not its command line."""
    port = free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    if pg_password is not None:
        env["PGPASSWORD"] = pg_password
    log = (artifacts.parent / "mlflow-server.log").open("w")
    proc = subprocess.Popen(
        [
            str(mlflow),
            "server",
            "--backend-store-uri",
            backend_uri,
            "--artifacts-destination",
            str(artifacts),
            "--serve-artifacts",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its workers are its children: one group to end
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(
                    f"mlflow server did not start: {(artifacts.parent / 'mlflow-server.log').read_text()}"
                )
            time.sleep(0.5)
        yield MlflowServer(url, artifacts)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
