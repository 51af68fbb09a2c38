"""Offline, quiet, reproducible: every test runs with the hub off, Ray/MLflow telemetry off, and never
writes to a tracking server the environment names (each test passes its own sqlite URI)."""

import os
import signal

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.pop("MLFLOW_TRACKING_URI", None)

# Ctrl-C tests send SIGINT to the sweeps they start. A pytest launched in the background by a shell
# (`make test &`) has SIGINT ignored, and children inherit an ignored signal: restore the default here.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_configure(config):
    """The fast tier (``-m "not integration"``) starts no Ray and no server, in this process or any it
    starts: tests/fast_tier/sitecustomize.py refuses them (an audit hook on subprocess starts)."""
    if config.option.markexpr.replace(" ", "") != "notintegration":
        return
    import tempfile

    guard = os.path.join(os.path.dirname(__file__), "fast_tier")
    fd, log = tempfile.mkstemp(prefix="fsweep-fast-tier-", suffix=".log")
    os.close(fd)
    os.environ["FSWEEP_FAST_TIER_LOG"] = config._fast_tier_log = log
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (guard, os.environ.get("PYTHONPATH")) if p)
    import runpy

    runpy.run_path(os.path.join(guard, "sitecustomize.py"))  # this process: the same guard


def pytest_sessionfinish(session, exitstatus):
    """The fast tier fails when any of its tests (or a process one started) tried to start Ray or a server."""
    log = getattr(session.config, "_fast_tier_log", None)
    if log is None:
        return
    with open(log) as f:
        refused = sorted(set(f.read().splitlines()))
    os.unlink(log)
    if refused:
        print("\nthe fast tier must start no Ray and no server; mark these integration:\n  " + "\n  ".join(refused))
        session.exitstatus = 1


def pytest_runtest_setup(item):
    """``@pytest.mark.needs(problem)``: a test that needs a tool this machine may lack (Chromium,
    PostgreSQL). ``problem`` is None when the tool is there; else the test is skipped, saying why — except
    under CI=true, where a missing tool fails the run (CI installs them all)."""
    import pytest

    for mark in item.iter_markers("needs"):
        problem = mark.args[0] if mark.args else None
        if problem:
            if os.environ.get("CI") == "true":
                pytest.fail(f"CI=true and this test cannot run: {problem}", pytrace=False)
            pytest.skip(problem)
