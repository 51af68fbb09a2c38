"""`sweep cluster up|down`: a real Ray cluster on this machine, a head and worker nodes on 127.0.0.1,
each started the way a user starts one (``ray start --block``), its files under the run area
(``runs/cluster/``), and stopped by the PIDs it wrote there, never by name (``ray stop`` would stop
every Ray on the machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sweep.errors import SweepError
from sweep.ray.session import alive, auth_token, keep_logs, short_temp_dir
from sweep.run_dir import write_atomic

CLUSTER_DIR = "cluster"
STATE = "cluster.json"


@dataclass
class Node:
    name: str
    pid: int  # the `ray start --block` process: its process group holds the node's Ray processes
    log: str
    temp_dir: str  # each node its own: two nodes unpacking a job's working dir into one folder collide
    start_ticks: int = 0  # the process's start time (/proc): a PID reused after a reboot is not this node


@dataclass
class Cluster:
    address: str  # HOST:GCS_PORT, for `ray start --address` and ray.init
    dashboard: str  # http://HOST:PORT: the dashboard and the Job Submission API
    nodes: list[Node] = field(default_factory=list)

    @staticmethod
    def load(runs_dir: str | Path) -> Cluster | None:
        path = Path(runs_dir) / CLUSTER_DIR / STATE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            nodes = [Node(**{"temp_dir": "", **n}) for n in data["nodes"]]
            return Cluster(data["address"], data["dashboard"], nodes)
        except (OSError, ValueError, TypeError, KeyError):
            raise SweepError(
                f"cluster: '{path}' is unreadable; the nodes' PIDs are in {path.parent}/*.pid (each the leader "
                "of its node's process group): stop them by those PIDs, then remove the file"
            ) from None

    def save(self, runs_dir: str | Path) -> None:
        # whole or not at all: `cluster down` finds the nodes only through this file
        write_atomic(Path(runs_dir) / CLUSTER_DIR / STATE, json.dumps(asdict(self), indent=1))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_ticks(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _is_node(node: Node) -> bool:
    """Still the node `up` started: its process, or (once that ended) its process group; Linux does not
    hand out a PID again while a group holds that number."""
    start = _start_ticks(node.pid)
    if start is None:
        return bool(group_members(node.pid))
    return not node.start_ticks or start == node.start_ticks


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(") ", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(stat.parent.name))
    return members


def _node_env() -> dict[str, str]:
    """The environment nodes (and so the jobs they run) inherit: this venv first on PATH, so a job's
    entrypoint finds `sweep` and `python` with Ray installed; telemetry off; the hub offline."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    for key, value in {
        "RAY_USAGE_STATS_ENABLED": "0",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        # token auth (Ray's default for a head it starts): every node must present the token too
        "RAY_AUTH_MODE": "token",
    }.items():
        env.setdefault(key, value)
    return env


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _ray_start(args: list[str], name: str, home: Path) -> Node:
    ray_bin = Path(sys.executable).parent / "ray"
    log = home / f"{name}.log"
    temp_dir, _ = short_temp_dir(home / f"ray-{name}")
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(ray_bin), "start", "--block", "--disable-usage-stats", f"--temp-dir={temp_dir}", *args],
            env=_node_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: `down` ends exactly this node
            # a shell's background job (`make cluster-up &`) ignores SIGINT, and that would be inherited
            # by every job driver on the node: `sweep stop` (SIGINT) could then only kill the sweep
            preexec_fn=_default_sigint,
        )
    write_atomic(home / f"{name}.pid", str(proc.pid))
    return Node(name, proc.pid, str(log), temp_dir, _start_ticks(proc.pid) or 0)


def _node_args(cpus: float, gpus: float, memory_gb: float) -> list[str]:
    args = [
        "--node-ip-address=127.0.0.1",
        f"--num-cpus={cpus:g}",
        f"--memory={int(memory_gb * 2**30)}",  # nodes on one machine would each count all of its RAM
        f"--object-store-memory={200 * 2**20}",
        f"--node-manager-port={_free_port()}",
        f"--object-manager-port={_free_port()}",
        f"--dashboard-agent-listen-port={_free_port()}",
        f"--dashboard-agent-grpc-port={_free_port()}",
        f"--runtime-env-agent-port={_free_port()}",
        f"--metrics-export-port={_free_port()}",
    ]
    if gpus:  # declared, not detected: how a CPU machine tests GPU packing
        args.append(f"--num-gpus={gpus:g}")
    return args


def _wait_for(check, what: str, timeout: float, nodes: list[Node]) -> None:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while not check():
        dead = [n for n in nodes if not alive(n.pid)]
        if dead:
            tail = Path(dead[0].log).read_text()[-1500:]
            raise SweepError(f"cluster: node '{dead[0].name}' exited while starting; its log ends:\n{tail}")
        if time.time() > deadline:
            raise SweepError(
                f"cluster: {what} not ready after {timeout:.0f}s; see the logs in {Path(nodes[0].log).parent}"
            )
        time.sleep(0.5)


def _alive_nodes(dashboard: str) -> int:
    """Nodes the head counts as alive (the dashboard's REST API, with the token if auth is on)."""
    request = urllib.request.Request(f"{dashboard}/nodes?view=summary")
    token = auth_token()
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=3) as r:
            data = json.loads(r.read())
    except (OSError, ValueError):
        return 0
    summary = data.get("data", {}).get("summary", [])
    return sum(1 for n in summary if n.get("raylet", {}).get("state") == "ALIVE")


def up(
    runs_dir: str | Path = "runs",
    *,
    workers: int = 1,
    cpus_per_node: float = 1,
    gpus_per_node: float = 0,
    memory_gb_per_node: float = 4,
    timeout: float = 120,
) -> Cluster:
    """Start a head and ``workers`` worker nodes; returns when all of them are alive."""
    home = Path(runs_dir) / CLUSTER_DIR
    running = Cluster.load(runs_dir)
    if running is not None and any(alive(n.pid) and _is_node(n) for n in running.nodes):
        raise SweepError(
            f"cluster: one is already running from {home} (dashboard {running.dashboard}); "
            "stop it first: make cluster-down"
        )
    home.mkdir(parents=True, exist_ok=True)
    port, dashboard_port = _free_port(), _free_port()
    cluster = Cluster(f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard_port}")
    cluster.nodes.append(
        _ray_start(
            [
                "--head",
                f"--port={port}",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dashboard_port}",
                f"--ray-client-server-port={_free_port()}",
                *_node_args(cpus_per_node, gpus_per_node, memory_gb_per_node),
            ],
            "head",
            home,
        )
    )
    cluster.save(runs_dir)
    try:
        _wait_for(lambda: _alive_nodes(cluster.dashboard) >= 1, "the head node", timeout, cluster.nodes)
        for i in range(1, workers + 1):
            cluster.nodes.append(
                _ray_start(
                    [f"--address={cluster.address}", *_node_args(cpus_per_node, gpus_per_node, memory_gb_per_node)],
                    f"worker-{i}",
                    home,
                )
            )
            cluster.save(runs_dir)
        _wait_for(lambda: _alive_nodes(cluster.dashboard) >= 1 + workers, "the worker nodes", timeout, cluster.nodes)
    except BaseException:
        down(runs_dir)
        raise
    return cluster


def _stop(node: Node, grace: float) -> None:
    """SIGTERM to `ray start --block` (it ends its node's processes), then whatever is left of its group."""
    if not _is_node(node):  # gone (and its group too), or the PID is someone else's now: nothing to stop
        return
    if alive(node.pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(node.pid, signal.SIGTERM)
        deadline = time.time() + grace
        while alive(node.pid) and time.time() < deadline:
            time.sleep(0.2)
    for sig in (signal.SIGTERM, signal.SIGKILL):  # what `ray start` left (agents linger up to a minute)
        if not group_members(node.pid):
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(node.pid, sig)
        deadline = time.time() + 5
        while group_members(node.pid) and time.time() < deadline:
            time.sleep(0.2)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(node.pid, os.WNOHANG)  # reap it if this process started it


def down(runs_dir: str | Path = "runs", grace: float = 20) -> list[str]:
    """Stop the cluster `up` started (workers first, then the head); returns the names of the nodes stopped."""
    cluster = Cluster.load(runs_dir)
    if cluster is None:
        return []
    stopped = []
    for node in [n for n in cluster.nodes if n.name != "head"] + [n for n in cluster.nodes if n.name == "head"]:
        if alive(node.pid) and _is_node(node):
            stopped.append(node.name)
        _stop(node, grace)
    home = Path(runs_dir) / CLUSTER_DIR
    (home / STATE).unlink(missing_ok=True)
    for node in cluster.nodes:
        (home / f"{node.name}.pid").unlink(missing_ok=True)
        link = home / f"ray-{node.name}"
        if link.is_symlink():  # a short stand-in under /tmp: keep the logs beside the cluster's, drop the rest
            keep_logs(Path(node.temp_dir), home / "ray-logs" / node.name, link)
    return stopped
