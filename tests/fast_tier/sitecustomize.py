"""Loaded by every Python process the fast tier starts (its directory is put on PYTHONPATH by
tests/conftest.py): starting Ray or a server there is a mistake in a test, reported where it happens."""

import os
import sys

# executables whose start means a Ray cluster or a server: the fast tier has neither
FORBIDDEN = ("gcs_server", "raylet", "mlflow server", "postgres", "chromium")


def _guard(event: str, args: tuple) -> None:
    if event != "subprocess.Popen":
        return
    argv = args[1] if len(args) > 1 and isinstance(args[1], (list, tuple)) else [args[0]]
    command = " ".join(str(a) for a in argv)
    for name in FORBIDDEN:
        if name in command:
            log = os.environ.get("FSWEEP_FAST_TIER_LOG")
            if log:  # read at the session's end: a refused start fails the run even where a test survived it
                with open(log, "a") as f:
                    f.write(f"{os.environ.get('PYTEST_CURRENT_TEST', '?').split(' ')[0]} started {name}\n")
            raise RuntimeError(
                f"the fast tier (make test-fast) started {name!r}: mark this test integration "
                "(pytestmark = pytest.mark.integration) or move it to tests/integration"
            )


sys.addaudithook(_guard)
