"""The worker's start: the trial code imported without the cyclic collector, and frozen at the first
trial (each case in a fresh interpreter, as a Ray worker is; no Ray starts)."""

import pytest

WORKER_START = """
import gc, json, sys, weakref
from sweep.ray import worker

class Cycle:
    pass

def garbage():
    a, b = Cycle(), Cycle()
    a.other, b.other = b, a
    return weakref.ref(a)

if sys.argv[1] == "frozen-before":
    gc.freeze()  # something froze objects before the hook ran
if sys.argv[1] != "no-hook":
    worker.warm_worker()  # as Ray runs it when the worker starts
imported = {"enabled": gc.isenabled(), "trial_code": "trainers.loop" in sys.modules}
before = garbage()  # made before the first trial
worker._settle_worker()  # the worker's first trial starts
first = {"enabled": gc.isenabled(), "frozen": gc.get_freeze_count(), "kept": before() is not None}
during = garbage()  # a trial's cycle
gc.disable()  # (even were the collector off again by then)
worker._settle_worker()  # the next trial starts: nothing more is frozen, the collector is on
gc.collect()
later = {"enabled": gc.isenabled(), "frozen": gc.get_freeze_count(), "kept": during() is not None}
print(json.dumps([imported, first, later]))
"""


def _start(hook, env=None):
    import json
    import os
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", WORKER_START, hook],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    ).stdout
    return json.loads(out.splitlines()[-1])


@pytest.mark.parametrize("hook", ["hook", "no-hook", "frozen-before"])
def test_a_workers_imports_run_without_the_collector_and_stay_frozen_from_its_first_trial(hook):
    """warm_worker imports the trial code with the cyclic collector off; the first trial's start freezes
    what exists then (so release_memory's collections skip it) and turns the collector on; later trials
    freeze nothing more, and their cycles are collected. Without the hook (a cluster's own runtime env),
    the first trial collects before it freezes, so no garbage is kept."""
    imported, first, later = _start(hook)
    assert imported == {"enabled": hook == "no-hook", "trial_code": hook != "no-hook"}
    assert first["enabled"] and first["frozen"] > 10_000  # Ray's and pydantic's objects at least
    assert first["kept"] == (hook != "no-hook")  # the hook's few unreachable cycles stay with the worker
    assert later["enabled"] and not later["kept"]
    assert first["frozen"] - 100 < later["frozen"] <= first["frozen"]  # nothing more frozen (refcounts free a few)


def test_a_worker_told_not_to_freeze_leaves_the_collector_as_python_sets_it():
    """SWEEP_WORKER_GC_FREEZE=0 (the worker inherits it from the driver): the imports run with the
    collector on, and nothing is frozen."""
    from sweep.ray.worker import GC_FREEZE_ENV

    imported, first, later = _start("hook", {GC_FREEZE_ENV: "0"})
    assert imported == {"enabled": True, "trial_code": True}
    assert first["enabled"] and first["frozen"] == 0
    assert later["enabled"] and later["frozen"] == 0 and not later["kept"]
