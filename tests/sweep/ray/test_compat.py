"""Each private access in ``sweep.ray._compat`` against the pinned Ray: the private path is taken on this
version, and with the private name taken away the public fallback holds. Tune's ``Trial`` is built as a
stub (no Ray starts)."""

import importlib
import logging
from types import SimpleNamespace

import pytest

from sweep.ray import _compat


@pytest.fixture
def trial():
    from ray.tune.experiment.trial import Trial

    return Trial("trainable", stub=True, config={"params": {}}, max_failures=3)


def test_the_actor_of_a_trial_is_read_from_tunes_temporary_state(trial):
    assert _compat.trial_actor(trial) is None  # (none started)
    trial.temporary_state.ray_actor = "handle"
    assert _compat.trial_actor(trial) == "handle"


def test_without_the_temporary_state_a_trial_has_no_actor_to_kill(trial):
    del trial.temporary_state
    assert _compat.trial_actor(trial) is None


def test_a_trial_is_kept_from_retrying_through_its_max_failures(trial):
    _compat.no_more_retries(trial)
    assert trial.max_failures == 0
    trial.max_failures = 3
    del trial.max_failures  # a Ray whose Trial has no such attribute: none is made up
    _compat.no_more_retries(trial)
    assert not hasattr(trial, "max_failures")


def test_a_trials_failures_are_rays_count_else_the_callbacks(trial):
    trial.run_metadata.num_failures = 2
    assert _compat.num_failures(trial, counted=5) == 2
    del trial.run_metadata
    assert _compat.num_failures(trial, counted=5) == 5


def test_the_last_error_is_the_one_ray_pickled_for_the_trial(trial, tmp_path):
    """Ray's own ``handle_error`` pickles the trial's error into its local dir: read back from there, then
    from storage (``get_pickled_error``) once the local copy is gone."""
    import pyarrow.fs
    import ray.exceptions

    trial.storage = SimpleNamespace(
        trial_driver_staging_path=str(tmp_path),
        trial_fs_path=str(tmp_path),
        storage_filesystem=pyarrow.fs.LocalFileSystem(),
    )
    assert _compat.last_error(trial) is None  # no failure yet
    trial.handle_error(ray.exceptions.RayTaskError("train", "trace", ValueError("bad value")))
    error = _compat.last_error(trial)
    assert isinstance(error, ray.exceptions.RayTaskError) and isinstance(error.cause, ValueError)
    trial.storage.trial_driver_staging_path = str(tmp_path / "elsewhere")  # (the driver's copy is gone)
    assert isinstance(_compat.last_error(trial).cause, ValueError)  # read from storage


def test_without_rays_error_files_the_failure_is_a_lost_worker(trial, monkeypatch):
    from ray.tune.experiment.trial import Trial

    from sweep.ray.callback import failure_of

    monkeypatch.delattr(Trial, "pickled_error_file")
    monkeypatch.delattr(Trial, "get_pickled_error")
    assert _compat.last_error(trial) is None
    assert failure_of(_compat.last_error(trial), timed_out=False).kind == "worker_lost"


def test_rays_token_note_comes_from_the_logger_that_is_quieted():
    module = importlib.import_module(_compat.TOKEN_NOTE_LOGGER)
    assert module.logger.name == _compat.TOKEN_NOTE_LOGGER
    _compat.quiet_token_note()
    assert not module.logger.isEnabledFor(logging.WARNING)


def test_a_callback_on_a_ray_without_trial_internals_kills_nothing_and_counts_retries_itself(monkeypatch):
    """The fallbacks together: no actor to find (the trial runs on), no count of Ray's (the callback's)."""
    import ray

    from sweep.ray.callback import EventCallback

    killed = []
    monkeypatch.setattr(ray, "kill", lambda *args, **kwargs: killed.append(args))
    retried = []
    observer = SimpleNamespace(
        trial_started=lambda ray_id, params: None,
        trial_retried=lambda ray_id, error, attempt: retried.append(attempt),
    )
    bare = SimpleNamespace(trial_id="t0", config={"params": {}}, status="RUNNING")  # only Tune's public names
    callback = EventCallback(observer, trial_timeout_s=0.0)
    callback.on_trial_start(0, [bare], bare)
    callback.on_step_begin(0, [bare])
    callback.on_trial_recover(0, [bare], bare)
    callback.on_trial_recover(0, [bare], bare)
    assert killed == [] and "t0" not in callback.timed_out
    assert retried == [1, 2]
