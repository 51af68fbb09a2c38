"""`sweep submit|status|logs|stop`: a sweep as a Ray job on a cluster, through Ray's Job Submission SDK.

The spec, its data and the upload are checked here before anything is sent. The job runs ``python -m
sweep run`` on the cluster with a copy of the project as its working dir (``sweep.ray.upload``: without
credentials, results, caches or links out of it; ``--dry-run`` lists it), and connects to the cluster it
runs on (``execution.address=auto``). Ray's auth token is read where Ray
keeps it and sent as a request header only: never printed, logged, put in the job or recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import secrets
import shutil
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from sweep.credentials import has_literal_password, mask
from sweep.errors import SpecError, SweepError
from sweep.ray.cluster import Cluster
from sweep.ray.upload import EXCLUDES, MAX_UPLOAD_MIB, Upload, check_size, select
from sweep.spec import SweepSpec

JOB_SPECS = ".sweep-jobs"  # in the upload: the resolved spec the job runs (never the spec file given)
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
STOP_WAIT_S = 60  # after `sweep stop`, the sweep has this long to close its record before Ray kills it


CLUSTER_RUNS = "runs"  # where `sweep cluster up` (make cluster-up) keeps the local cluster's state


def dashboard_address(address: str | None, runs_dir: str = CLUSTER_RUNS) -> str:
    """``--address``, else $RAY_API_SERVER_ADDRESS / $RAY_ADDRESS, else the cluster `make cluster-up`
    started; as the dashboard's http URL (where the Job Submission API lives)."""
    address = address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if not address:
        local = Cluster.load(runs_dir)
        if local is None:
            raise SpecError(
                [
                    "--address: no cluster given and none started here; pass --address http://HEAD:8265 "
                    "(the head's dashboard) or start one: make cluster-up"
                ]
            )
        return local.dashboard
    if not address.startswith(("http://", "https://")):
        if address.startswith("ray://") or address in ("auto", "local"):
            raise SpecError(
                [f"--address: {address!r} is not the dashboard's address; pass http://HEAD:8265 (the Job API's port)"]
            )
        address = f"http://{address}"
    return address.rstrip("/")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return mask(text.splitlines()[0] if text else type(exc).__name__)[:300]


@contextlib.contextmanager
def _talking_to(address: str, what: str) -> Iterator[None]:
    """Whatever the Job API, the network or the token say goes back as one line naming the address."""
    try:
        yield
    except SweepError:
        raise
    except Exception as exc:  # RuntimeError (HTTP status), AuthenticationError, requests/aiohttp errors
        hint = ""
        if "auth" in type(exc).__name__.lower() or "401" in str(exc) or "403" in str(exc):
            hint = "; set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the cluster's token"
        raise SweepError(f"--address: {what} at {address} failed ({_first_line(exc)}){hint}") from None


def in_clear_text(address: str) -> bool:
    """True when requests to ``address`` cross a network unencrypted: plain http to a host other than
    this machine's loopback (a tunnel's local end, such as ssh -L or kubectl port-forward, is safe)."""
    url = urllib.parse.urlsplit(address)
    if url.scheme != "http":
        return False
    host = url.hostname or ""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return True


def _client(address: str) -> Any:
    from ray.job_submission import JobSubmissionClient

    from sweep.ray.session import auth_token

    for name in list(logging.root.manager.loggerDict):  # Ray's notes on packaging and websockets
        if name.startswith("ray"):
            logging.getLogger(name).setLevel(logging.ERROR)
    token = auth_token()
    if token and in_clear_text(address):
        print(
            f"warning: --address: {address} is plain http to another machine: Ray's token crosses the network "
            "unencrypted; use https:// (a TLS proxy before the dashboard) or a tunnel "
            "(ssh -L 8265:localhost:8265 HEAD, kubectl port-forward) and --address http://127.0.0.1:8265",
            file=sys.stderr,
        )
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        return JobSubmissionClient(address, headers=headers)
    except Exception as exc:
        raise SweepError(f"--address: cannot reach Ray's Job API at {address} ({_first_line(exc)})") from None


def _is_ours(address: str) -> bool:
    """The cluster `sweep cluster up` started on this machine (it shares this filesystem)."""
    local = Cluster.load(CLUSTER_RUNS)
    return local is not None and local.dashboard == address


def _address_for_dry_run(address: str | None) -> str | None:
    """The cluster the job would go to, where one is named or started here (nothing is contacted)."""
    try:
        return dashboard_address(address)
    except SpecError:
        return None


def _literal_passwords(spec: SweepSpec) -> list[str]:
    """A password written into a URL would travel with the job (its spec is in the upload)."""
    found = []
    for field, url in (("execution.storage", spec.execution.storage), ("tracking.uri", spec.tracking.uri)):
        if url and has_literal_password(url):
            found.append(
                f"{field}: the URL holds a password, which would travel with the job; write it as ${{ENV_VAR}} "
                "(e.g. postgresql+psycopg://sweep:${PGPASSWORD}@db/optuna) and set that variable on the cluster's nodes"
            )
    return found


def _data_paths(spec: SweepSpec) -> list[tuple[str, str]]:
    data = spec.trial_template().get("data", {})
    return [(f"trial.data.{k}", str(data[k])) for k in ("path", "val_path", "test_path") if data.get(k)]


def _check_uploadable(spec: SweepSpec, working_dir: Path | None) -> list[str]:
    """Relative data paths must be inside the working dir sent (whether the upload holds them: _check_sent)."""
    problems = []
    for field, value in _data_paths(spec):
        path = Path(value)
        if path.is_absolute():
            continue  # the user's promise that every node can read it (shared storage, the image)
        if working_dir is not None and working_dir.resolve() != Path.cwd().resolve():
            problems.append(
                f"{field}: '{value}' is relative: read from here ({Path.cwd()}) now, but from the working dir "
                f"({working_dir}) on the cluster; run sweep submit from {working_dir}"
            )
            continue
        if working_dir is None:
            problems.append(
                f"{field}: '{value}' is relative, and --installed sends no files; "
                "give an absolute path the cluster's nodes can read, or submit without --installed"
            )
            continue
        root = working_dir.resolve()
        full = (Path.cwd() / path).resolve()
        if not full.is_relative_to(root):
            problems.append(
                f"{field}: '{value}' is outside the working dir sent to the cluster ({root}); "
                "copy it into the project, or give an absolute path every node can read"
            )
    return problems


def _check_sent(spec: SweepSpec, upload: Upload) -> list[str]:
    """A relative data path must be in the upload: no exclusion, at any depth, may leave it out."""
    problems = []
    for field, value in _data_paths(spec):
        if Path(value).is_absolute():
            continue
        lexical = Path(os.path.normpath(Path.cwd() / value))  # as Ray walks it: through links, not past them
        inside = lexical if lexical.is_relative_to(upload.root) else lexical.resolve()
        why = upload.why_not(PurePosixPath(inside.relative_to(upload.root).as_posix()))
        if why:
            problems.append(
                f"{field}: '{value}' is not sent to the cluster: {why}; move it, "
                "or give an absolute path every node can read"
            )
    return problems


def _left_out_whole(spec: SweepSpec, spec_path: str, root: Path) -> dict[Path, str]:
    """Paths never sent, whatever the patterns say: results, databases, and the spec file given (it may
    hold a password an override hid; the job runs its resolved copy in JOB_SPECS)."""
    out = {Path(spec_path): "the spec given: the job runs its resolved copy", root / JOB_SPECS: "earlier jobs' specs"}
    runs_dir = Path(spec.execution.runs_dir)
    out[runs_dir] = out[root / runs_dir] = "execution.runs_dir"  # here, and where the job would write it
    for field, url in (("execution.storage", spec.execution.storage), ("tracking.uri", spec.tracking.uri)):
        if url and url.startswith("sqlite:///"):
            out[Path(url.removeprefix("sqlite:///").split("?")[0])] = f"{field} (a database)"
    return out


def job_spec(spec: SweepSpec, address: str | None) -> tuple[dict[str, Any], list[str]]:
    """The spec the job runs, and notes for the user. On the cluster `sweep cluster up` started the
    results come back to this runs/ dir; elsewhere a relative runs_dir lives in the job's working dir
    and goes with it."""
    data = spec.stored()  # URL passwords masked (a literal one was refused before: this is a second guard)
    data["execution"]["address"] = "auto"  # the cluster the job runs on
    notes = []
    runs_dir = Path(spec.execution.runs_dir)
    if not runs_dir.is_absolute():
        if address is not None and _is_ours(address):
            data["execution"]["runs_dir"] = str(runs_dir.resolve())
        else:
            notes.append(
                f"note: execution.runs_dir '{runs_dir}' is relative: on the cluster it is inside the job's working "
                "dir and is removed with it; set it to shared storage, and tracking.uri to your MLflow server"
            )
    return data, notes


def _checked_upload(spec: SweepSpec, spec_path: str, root: Path, installed: bool, max_mib: float) -> Upload:
    """What the job takes from ``root``, once the spec's URLs and data paths are checked against it."""
    if not root.is_dir():
        raise SpecError([f"--working-dir: '{root}' is not a directory; pass the project's root"])
    problems = _literal_passwords(spec) + _check_uploadable(spec, None if installed else root)
    if problems:
        raise SpecError(problems)
    if installed:  # the upload holds the job's spec only
        return Upload(root.resolve())
    # .gitignore is not applied (it often names the data folder a sweep needs) unless this asks for it
    gitignore = os.environ.setdefault("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "1") != "1"
    upload = select(root, _left_out_whole(spec, spec_path, root), gitignore=gitignore)
    if problems := _check_sent(spec, upload):
        raise SpecError(problems)
    check_size(upload, max_mib)
    return upload


def submit(
    spec_path: str,
    overrides: Sequence[str],
    address: str | None,
    *,
    working_dir: str = ".",
    installed: bool = False,
    dry_run: bool = False,
    max_upload_mib: float | None = None,
    echo: Any = print,
) -> str:
    """Check the spec, its data and the upload here, then submit the sweep; returns the job id (empty
    for ``dry_run``: list the upload, send nothing, connect to nothing). ``installed``: run the
    finetune-sweep installed on the cluster (its image) and send only the spec. ``max_upload_mib``:
    the cap on what is sent (default MAX_UPLOAD_MIB)."""
    from sweep.run.plan import preflight
    from sweep.spec import load_spec

    spec = load_spec(spec_path, overrides)
    preflight(spec)  # the data is read and split here: a bad file fails now, not on the cluster
    max_upload_mib = max_upload_mib or MAX_UPLOAD_MIB
    upload = _checked_upload(spec, spec_path, Path(working_dir), installed, max_upload_mib)
    url = _address_for_dry_run(address) if dry_run else dashboard_address(address)
    data, notes = job_spec(spec, url)
    submission_id = f"sweep-{spec.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    job_file = f"{JOB_SPECS}/{submission_id}.yaml"
    text = yaml.safe_dump(data, sort_keys=False)
    made = {job_file: len(text.encode())}
    if dry_run:
        for line in upload.describe(made, max_upload_mib) + notes:
            echo(line)
        echo("dry run: nothing was submitted")
        return ""
    assert url is not None
    client = _client(url)
    echo(f"uploading {upload.summary(made, max_upload_mib)}; {len(upload.left_out)} left out (--dry-run lists them)")
    stage = Path(tempfile.mkdtemp(prefix="fsweep-job-"))  # Ray uploads this copy: exactly what was listed
    try:
        upload.copy_to(stage)
        (stage / JOB_SPECS).mkdir(exist_ok=True)
        (stage / job_file).write_text(text)
        with _talking_to(url, "submitting the job"):
            job_id = client.submit_job(
                entrypoint=f"python -m sweep run {job_file}",
                submission_id=submission_id,
                runtime_env={
                    "working_dir": str(stage),
                    "excludes": EXCLUDES,
                    # `sweep stop` is Ctrl-C for the sweep: its runs end KILLED and it can be resumed
                    "env_vars": {"RAY_JOB_STOP_SIGNAL": "SIGINT", "RAY_JOB_STOP_WAIT_TIME_S": str(STOP_WAIT_S)},
                },
                metadata={"sweep": spec.name, "spec": Path(spec_path).name},
            )
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    for line in notes:
        echo(line)
    echo(f"submitted sweep '{spec.name}' as Ray job {job_id}")
    echo(f"  dashboard: {url}/#/jobs/{job_id}")
    flag = f" --address {url}" if address else ""
    echo(f"  follow:    sweep logs {job_id} --follow{flag}")
    echo(f"  status:    sweep status {job_id}{flag}")
    echo(f"  stop:      sweep stop {job_id}{flag}")
    return str(job_id)


def _info(client: Any, job_id: str, address: str) -> Any:
    try:
        return client.get_job_info(job_id)
    except RuntimeError as exc:
        if "404" in str(exc) or "does not exist" in str(exc):
            raise SpecError(
                [f"job: no job '{job_id}' on this cluster; list them in the dashboard's Jobs page"]
            ) from None
        raise SweepError(f"--address: asking {address} for job '{job_id}' failed ({_first_line(exc)})") from None
    except Exception as exc:
        raise SweepError(f"--address: asking {address} for job '{job_id}' failed ({_first_line(exc)})") from None


def status(job_id: str, address: str | None, echo: Any = print) -> str:
    url = dashboard_address(address)
    client = _client(url)
    info = _info(client, job_id, url)
    state = str(info.status.value if hasattr(info.status, "value") else info.status)
    echo(f"{job_id}: {state}")
    if info.start_time:
        ended = info.end_time / 1000 if info.end_time else time.time()
        echo(f"  running for {ended - info.start_time / 1000:.0f}s" + (" (ended)" if info.end_time else ""))
    if info.message:
        echo(f"  {mask(info.message)}")
    return state


def logs(job_id: str, address: str | None, follow: bool = False, echo: Any = print) -> None:
    url = dashboard_address(address)
    client = _client(url)
    _info(client, job_id, url)
    with _talking_to(url, "reading the job's output"):
        if not follow:
            echo(mask(client.get_job_logs(job_id)).rstrip("\n"))
            return

        async def tail() -> None:
            async for chunk in client.tail_job_logs(job_id):
                echo(mask(chunk).rstrip("\n"))

        asyncio.run(tail())
    echo(f"[job {job_id} ended: {_info(client, job_id, url).status}]")


def stop(job_id: str, address: str | None, echo: Any = print, timeout: float = STOP_WAIT_S + 30) -> str:
    """Ask Ray to stop the job: its driver gets SIGINT, so the sweep ends its runs KILLED and can be
    resumed; Ray kills it after STOP_WAIT_S if it has not ended by then."""
    url = dashboard_address(address)
    client = _client(url)
    info = _info(client, job_id, url)
    if str(info.status) in TERMINAL:
        echo(f"{job_id}: already {info.status}")
        return str(info.status)
    with _talking_to(url, "stopping the job"):
        client.stop_job(job_id)
        deadline = time.time() + timeout
        state = str(client.get_job_status(job_id))
        while state not in TERMINAL and time.time() < deadline:
            time.sleep(1)
            state = str(client.get_job_status(job_id))
    echo(f"{job_id}: {state}")
    return state
