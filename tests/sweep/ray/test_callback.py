"""The event callback, driven as Tune drives it (no Ray starts): final reports, failure kinds, the
per-trial time limit."""

from types import SimpleNamespace

from sweep.ray.callback import EventCallback, failure_of
from sweep.ray.worker import OUTCOME_KEY


def _trial(key, last_step=30):
    return SimpleNamespace(trial_id=key, config={"params": {}, "last_step": last_step})


class _Events:
    def __init__(self):
        self.finished = {}
        self.retried = []

    def trial_started(self, ray_id, params):
        pass

    def trial_finished(self, ray_id, final, error):
        self.finished[ray_id] = (final, error)

    def trial_retried(self, ray_id, error, attempt):
        self.retried.append((ray_id, error, attempt))


def test_a_trial_whose_final_report_arrived_as_the_time_budget_hit_ends_as_that_report_says():
    from trainers.api import TrialOutcome

    events = _Events()
    callback = EventCallback(events)
    outcome = TrialOutcome(status="completed", task="classification", final_step=30, final_metrics={"val_loss": 0.4})
    callback.on_trial_result(0, [], _trial("t0"), {OUTCOME_KEY: outcome.model_dump_json()})
    callback.on_experiment_end([])  # Ray stopped it before on_trial_complete
    final, error = events.finished["t0"]
    assert final == outcome and not error
    callback.on_experiment_end([])
    assert len(events.finished) == 1  # told once


def test_ray_errors_are_classified():
    import ray.exceptions

    oom = ray.exceptions.OutOfMemoryError("Task was killed due to the node running low on memory.")
    assert failure_of(oom, timed_out=False).status == "oom"
    wrapped = ray.exceptions.RayTaskError("train", "trace", RuntimeError("CUDA out of memory. Tried to allocate"))
    failure = failure_of(wrapped, timed_out=False)
    assert (failure.status, failure.kind) == ("oom", "oom") and failure.error.startswith("RuntimeError: CUDA out")
    lost = failure_of(ray.exceptions.ActorDiedError(), timed_out=False)
    assert (lost.status, lost.kind) == ("failed", "worker_lost") and lost.error.startswith("worker lost: ")
    assert failure_of(None, timed_out=True).status == "timeout"
    assert failure_of(ValueError("x"), timed_out=False).kind == "exception"


def test_a_trial_past_its_time_limit_has_its_actor_killed_once_and_ends_as_timeout(monkeypatch):
    import ray

    killed = []
    monkeypatch.setattr(ray, "kill", lambda actor, no_restart: killed.append((actor, no_restart)))
    events = _Events()
    callback = EventCallback(events, trial_timeout_s=0.0)
    trial = _trial("t0")
    trial.status, trial.max_failures = "RUNNING", 3
    trial.temporary_state = SimpleNamespace(ray_actor="actor-of-t0")  # (Tune's Trial keeps it there)
    callback.on_trial_start(0, [trial], trial)
    callback.on_step_begin(0, [trial])
    callback.on_step_begin(0, [trial])
    assert killed == [("actor-of-t0", True)] and trial.max_failures == 0  # no retry: it would hang again
    callback.on_trial_error(0, [trial], trial)
    final, error = events.finished["t0"]
    assert (final.status, final.kind, error) == ("timeout", "timeout", True)


def test_a_retried_trial_is_told_with_its_attempt():
    events = _Events()
    callback = EventCallback(events)
    trial = _trial("t0")
    trial.run_metadata = SimpleNamespace(num_failures=2)  # (Tune's count)
    callback.on_trial_recover(0, [trial], trial)
    assert events.retried == [("t0", "worker lost: the trial's worker ended without a result", 2)]
