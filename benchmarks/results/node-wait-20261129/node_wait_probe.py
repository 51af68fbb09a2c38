"""One local Ray started as the sweep starts it (`sweep.ray_backend.start_ray`, dashboard on), timed from
Ray's own logs: when the raylet started, when it registered with the GCS, and when `ray.init` returned
(the driver went on). With the argument `ray`, `ray.init` waits for the raylet Ray's way alone (its
GetNode asks once a second); without, the sweep's way (it asks every 50 ms first). run.sh alternates."""

import datetime
import glob
import re
import sys
import time

from sweep import ray_backend

if sys.argv[1:] == ["ray"]:

    def rays_own_wait(asked):
        import contextlib

        return contextlib.nullcontext()

    ray_backend._prompt_node_wait = rays_own_wait

t0 = time.time()
session = ray_backend.start_ray(None, dashboard=True)
returned = time.time() - t0
raylet = glob.glob(f"{session.temp_dir}/session_*/logs/raylet.out")[0]


def at(pattern: str) -> float:
    with open(raylet, errors="replace") as log:
        for line in log:
            if re.search(pattern, line):
                found = re.search(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})", line)
                assert found is not None
                when = datetime.datetime.strptime(found[1], "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=datetime.UTC)
                return when.timestamp() - t0
    return float("nan")


start, registered = at("Setting cluster ID"), at("Raylet of id")
print(
    f"init {returned:.2f}  raylet {start:.2f}  registered {registered:.2f} ({registered - start:.2f} after the "
    f"raylet started)  returned {returned - registered:.2f} after that  asks {session.node_asks}",
    flush=True,
)
session.close()
