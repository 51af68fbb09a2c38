"""Every use of Ray's private names: Tune's ``Trial`` internals and a logger in ``ray._private``.

Written against the pinned Ray (2.60; ``tests/sweep/ray/test_compat.py`` checks that each private path is
taken there). Each access is guarded: where a Ray version lacks the name, or it behaves otherwise, the
sweep falls back to what Ray's public API does, and says so in the debug log. Nothing here patches Ray.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TOKEN_NOTE_LOGGER = "ray._private.authentication.authentication_token_setup"
"""Where a local Ray's start logs "Token authentication is enabled for this Ray cluster"."""


def quiet_token_note() -> None:
    """Ray's token-authentication note is not shown: the sweep says so where it shows the dashboard, and the
    note would precede a data check's one-line error, which arrives as Ray starts. A Ray whose note comes
    from another logger shows it (a logger's level can always be set: nothing to guard)."""
    logging.getLogger(TOKEN_NOTE_LOGGER).setLevel(logging.ERROR)


def trial_actor(trial: Any) -> Any | None:
    """The actor that runs ``trial`` (``Trial.temporary_state.ray_actor``), for ``ray.kill``; None when it
    has none now, or the Ray has no such attribute: then the trial is not killed and runs on to its end or
    the sweep's time budget, as Tune runs trials without a time limit of their own."""
    try:
        return trial.temporary_state.ray_actor
    except AttributeError:
        log.debug("Ray's Trial has no temporary_state.ray_actor: trial %s runs past its time limit", trial.trial_id)
        return None


def no_more_retries(trial: Any) -> None:
    """``trial`` is not run again after its failure (``Trial.max_failures = 0``); where the Ray keeps no
    such attribute it is left alone, and Ray retries it as ``FailureConfig`` says."""
    if hasattr(trial, "max_failures"):
        trial.max_failures = 0
    else:
        log.debug("Ray's Trial has no max_failures: trial %s may be retried", trial.trial_id)


def num_failures(trial: Any, counted: int) -> int:
    """How often ``trial`` has failed (``Trial.run_metadata.num_failures``); ``counted`` (the failures the
    callback saw) where the Ray keeps no such count."""
    try:
        return int(trial.run_metadata.num_failures)
    except (AttributeError, TypeError, ValueError):
        return counted


def last_error(trial: Any) -> BaseException | None:
    """The exception Ray pickled for the trial's latest failure: the driver's local copy
    (``Trial.pickled_error_file``) until Ray syncs it to storage (``Trial.get_pickled_error``). None where
    neither exists, or it does not unpickle: the failure is then classified as a lost worker, the most
    that Tune's public callback arguments tell."""
    import cloudpickle

    try:
        local = trial.pickled_error_file
        if local and Path(local).is_file():
            return cloudpickle.loads(Path(local).read_bytes())
        return trial.get_pickled_error()
    except Exception:  # an exception that does not unpickle, or a Ray without these names
        log.debug("could not read the error of trial %s", trial.trial_id, exc_info=True)
        return None
