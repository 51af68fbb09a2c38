"""One bare local `ray.init` (as the sweep starts Ray, dashboard on), timed from Ray's own logs: when the
raylet started, the gap between its object store (`create_and_mmap_buffer`) and its servers
(`ObjectManager server started`), when it registered, and when `ray.init` returned. Run with and without
RAY_raylet_client_connect_timeout_milliseconds=50 RAY_raylet_client_num_connect_attempts=200 (run.sh)."""

import datetime
import glob
import logging
import re
import shutil
import tempfile
import time

import ray

session = tempfile.mkdtemp(prefix="rp-", dir="/tmp")
t0 = time.time()
ray.init(
    address="local",
    include_dashboard=True,
    dashboard_host="127.0.0.1",
    _temp_dir=session,
    logging_level=logging.WARNING,
    log_to_driver=False,
)
returned = time.time() - t0
raylet = glob.glob(f"{session}/session_*/logs/raylet.out")[0]


def at(pattern: str) -> float:
    with open(raylet, errors="replace") as log:
        for line in log:
            if re.search(pattern, line):
                found = re.search(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})", line)
                assert found is not None
                stamp = found[1]
                when = datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=datetime.UTC)
                return when.timestamp() - t0
    return float("nan")


start, store, servers = at("Setting cluster ID"), at("create_and_mmap_buffer"), at("ObjectManager server started")
agents, registered = at("Monitor agent process"), at("Raylet of id")
print(
    f"init {returned:.2f}  raylet {start:.2f}  store->servers gap {servers - store:.2f}  "
    f"registered {registered:.2f} ({registered - agents:.2f} after its agents started)",
    flush=True,
)
ray.shutdown()
shutil.rmtree(session, ignore_errors=True)
