"""Scheduler decisions, driven by fake results: our pruning scheduler against Optuna's own pruner,
Ray's ASHA recorded as prunes, and the guard that never prunes a trial's final report."""

from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState

from sweep.errors import SweepError
from sweep.optuna_study import StudyBridge
from sweep.ray_backend import OptunaPruningScheduler, OptunaSearcher, RecordingASHA
from sweep.run.plan import last_step_of
from sweep.spec import validate_spec
from sweep.status import TrialStatus

# the values each fake trial reports at steps 10, 20, 30 (minimize val_loss)
CURVES = {
    "t0": [0.9, 0.7, 0.5],
    "t1": [0.8, 0.6, 0.4],
    "t2": [1.2, 1.1, 1.0],
    "t3": [0.85, 0.65, 0.45],
    "t4": [1.0, 0.95, 0.3],
    "t5": [0.7, 0.72, 0.74],
}


def _spec(**parts):
    space = {"optim.learning_rate": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True}}
    return validate_spec({"name": "t", "trial": {"model": {"name_or_path": "tiny-bert"}}, "space": space, **parts})


def _bridge(spec, last_step=30):
    study = optuna.create_study(sampler=spec.sampler.build(spec.space), pruner=spec.pruner.build(last_step))
    return StudyBridge(study, spec.space)


def _trial(key, last_step=30):
    return SimpleNamespace(trial_id=key, config={"params": {}, "last_step": last_step})


@pytest.mark.parametrize(
    ("pruner", "reference"),
    [
        ({"kind": "median", "num_startup_trials": 2}, lambda: optuna.pruners.MedianPruner(n_startup_trials=2)),
        (
            {"kind": "percentile", "percentile": 40.0, "num_startup_trials": 1},
            lambda: optuna.pruners.PercentilePruner(40.0, n_startup_trials=1),
        ),
        (
            {"kind": "successive_halving", "min_resource": 10, "reduction_factor": 2},
            lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=10, reduction_factor=2),
        ),
    ],
    ids=lambda p: p["kind"] if isinstance(p, dict) else "",
)
def test_scheduler_decisions_equal_optunas_own_pruner(pruner, reference):
    bridge = _bridge(_spec(pruner=pruner))
    scheduler = OptunaPruningScheduler(bridge, "val_loss")
    ref = optuna.create_study(sampler=optuna.samplers.RandomSampler(0), pruner=reference())
    for key, curve in CURVES.items():
        bridge.ask(key)
        ref_trial = ref.ask()
        ours, theirs = [], []
        for step, value in zip((10, 20, 30), curve, strict=True):
            ours.append(scheduler.on_trial_result(None, _trial(key), {"val_loss": value, "step": step}) == "STOP")
            ref_trial.report(value, step)
            theirs.append(ref_trial.should_prune() and step < 30)  # the last report ends the trial anyway
            if theirs[-1]:
                break
        assert ours == theirs, key
        assert bridge.was_pruned(key) == ours[-1]
        bridge.tell(key, TrialStatus.PRUNED if ours[-1] else TrialStatus.COMPLETED, curve[-1])
        if theirs[-1]:
            ref.tell(ref_trial, state=TrialState.PRUNED)
        else:
            ref.tell(ref_trial, curve[-1])
    assert [t.state for t in bridge.study.trials] == [t.state for t in ref.trials]
    assert TrialState.PRUNED in [t.state for t in ref.trials]  # the case is not trivial


def test_final_report_is_never_pruned_even_when_the_pruner_says_so():
    bridge = _bridge(_spec(pruner={"kind": "median", "num_startup_trials": 1}))
    scheduler = OptunaPruningScheduler(bridge, "val_loss")
    bridge.ask("good")
    scheduler.on_trial_result(None, _trial("good", 60), {"val_loss": 0.1, "step": 60})
    bridge.tell("good", TrialStatus.COMPLETED, 0.1)
    bridge.ask("bad")
    # only one report, at the last step: Optuna's pruner says prune, the guard says the trial is done
    assert scheduler.on_trial_result(None, _trial("bad", 60), {"val_loss": 0.9, "step": 60}) == "CONTINUE"
    assert not bridge.was_pruned("bad")
    bridge.ask("bad-early")
    assert scheduler.on_trial_result(None, _trial("bad-early", 120), {"val_loss": 0.9, "step": 60}) == "STOP"
    assert bridge.was_pruned("bad-early")


def test_searcher_gives_each_trial_its_last_step_from_the_validated_config():
    # no optim.max_steps in the template: TrialConfig's default (60) applies, and the trial knows it
    spec = validate_spec(
        {
            "name": "t",
            "trial": {"model": {"name_or_path": "tiny-bert"}, "data": {"max_rows": 200}},
            "space": {"optim.batch_size": {"type": "categorical", "choices": [8]}},
        }
    )
    searcher = OptunaSearcher(_bridge(spec), "min", lambda params: last_step_of(spec, params))
    assert searcher.suggest("a") == {"params": {"optim.batch_size": 8}, "last_step": 60}
    # epoch-based: 1 epoch of 160 training rows in batches of 8 = 20 steps; k folds report per fold
    epochs = validate_spec(
        {
            "name": "t",
            "trial": {
                "model": {"name_or_path": "tiny-bert"},
                "data": {"max_rows": 200},
                "optim": {"max_steps": None, "num_epochs": 1.0, "batch_size": 8},
            },
        }
    )
    assert last_step_of(epochs, {}) == 20
    assert last_step_of(epochs, {"optim.grad_accum_steps": 2}) == 10
    assert last_step_of(epochs, {"split.num_folds": 4}) == 3
    assert last_step_of(epochs, {"model.num_layers": 9}) is None  # the trial will reject it


def test_misspelt_objective_is_an_error_at_the_first_report():
    bridge = _bridge(_spec())
    bridge.ask("a")
    scheduler = OptunaPruningScheduler(bridge, "val_acuracy")
    with pytest.raises(SweepError, match=r"objective.metric: 'val_acuracy' is not in the trial's report"):
        scheduler.on_trial_result(None, _trial("a"), {"val_accuracy": 0.5, "step": 10})


def test_outcome_report_is_not_a_pruning_value():
    bridge = _bridge(_spec())
    bridge.ask("a")
    scheduler = OptunaPruningScheduler(bridge, "val_loss")
    assert scheduler.on_trial_result(None, _trial("a"), {"outcome": "{}"}) == "CONTINUE"
    assert not bridge.study.trials[0].intermediate_values


def test_asha_stops_are_recorded_as_prunes_and_values_kept():
    bridge = _bridge(_spec(pruner={"kind": "asha", "min_resource": 10, "reduction_factor": 2}))
    asha = RecordingASHA(bridge, "val_loss", "min", max_t=30, grace=10, factor=2)
    decisions = {}
    for key, curve in CURVES.items():
        bridge.ask(key)
        trial = _trial(key)
        asha.on_trial_add(None, trial)
        for step, value in zip((10, 20, 30), curve, strict=True):
            decisions[key] = (step, asha.on_trial_result(None, trial, {"val_loss": value, "step": step}))
            if decisions[key][1] == "STOP":
                break
    stopped = {k for k, (_, d) in decisions.items() if d == "STOP"}
    assert stopped == {k for k in CURVES if bridge.was_pruned(k)}
    assert "t2" in stopped and decisions["t2"][0] in (10, 20)  # the worst curve stops at a rung
    assert {k for k, (step, d) in decisions.items() if d == "CONTINUE" and step == 30} == set(CURVES) - stopped
    assert bridge.study.trials[2].intermediate_values[10] == 1.2


class _Events:
    def __init__(self):
        self.finished = {}

    def trial_finished(self, ray_id, final, error):
        self.finished[ray_id] = (final, error)


def test_a_trial_whose_final_report_arrived_as_the_time_budget_hit_ends_as_that_report_says():
    from sweep.ray_backend import OUTCOME_KEY, _EventCallback
    from trainers.api import TrialOutcome

    events = _Events()
    callback = _EventCallback(events)
    outcome = TrialOutcome(status="completed", task="classification", final_step=30, final_metrics={"val_loss": 0.4})
    callback.on_trial_result(0, [], _trial("t0"), {OUTCOME_KEY: outcome.model_dump_json()})
    callback.on_experiment_end([])  # Ray stopped it before on_trial_complete
    final, error = events.finished["t0"]
    assert final == outcome and not error
    callback.on_experiment_end([])
    assert len(events.finished) == 1  # told once


def test_ray_errors_are_classified():
    import ray.exceptions

    from sweep.ray_backend import _failure

    oom = ray.exceptions.OutOfMemoryError("Task was killed due to the node running low on memory.")
    assert _failure(oom, timed_out=False).status == "oom"
    wrapped = ray.exceptions.RayTaskError("train", "trace", RuntimeError("CUDA out of memory. Tried to allocate"))
    failure = _failure(wrapped, timed_out=False)
    assert (failure.status, failure.kind) == ("oom", "oom") and failure.error.startswith("RuntimeError: CUDA out")
    lost = _failure(ray.exceptions.ActorDiedError(), timed_out=False)
    assert (lost.status, lost.kind) == ("failed", "worker_lost") and lost.error.startswith("worker lost: ")
    assert _failure(None, timed_out=True).status == "timeout"
    assert _failure(ValueError("x"), timed_out=False).kind == "exception"


def test_asha_can_judge_another_metric_than_the_objective():
    """ASHA on val_loss (lower is better) in a sweep that maximizes accuracy: the trials tie on accuracy,
    and the one whose loss is worse stops at the first rung; the study keeps the accuracies."""
    spec = _spec(
        objective={"metric": "val_accuracy", "direction": "maximize"},
        pruner={"kind": "asha", "min_resource": 10, "reduction_factor": 2, "metric": "val_loss"},
    )
    bridge = _bridge(spec)
    asha = RecordingASHA(bridge, "val_accuracy", "min", max_t=30, grace=10, factor=2, judged="val_loss")
    decisions = {}
    for key, loss in (("a", 0.60), ("b", 0.69)):
        bridge.ask(key)
        asha.on_trial_add(None, _trial(key))
        decisions[key] = asha.on_trial_result(None, _trial(key), {"val_accuracy": 0.56, "val_loss": loss, "step": 10})
    assert decisions == {"a": "CONTINUE", "b": "STOP"}
    assert bridge.was_pruned("b") and bridge.study.trials[1].intermediate_values == {10: 0.56}
    with pytest.raises(SweepError, match=r"pruner.metric: 'val_loss' is not in the trial's report"):
        asha.on_trial_result(None, _trial("a"), {"val_accuracy": 0.6, "step": 20})


def test_the_median_scheduler_passes_the_judged_metric():
    from sweep.optuna_study import StudyBridge, pruning_judge

    spec = _spec(
        objective={"metric": "val_accuracy", "direction": "maximize"},
        pruner={"kind": "median", "num_startup_trials": 1, "metric": "val_loss"},
    )
    study = optuna.create_study(direction="maximize", pruner=spec.pruner.build(30))
    bridge = StudyBridge(study, spec.space, judge=pruning_judge(spec, 30))
    scheduler = OptunaPruningScheduler(bridge, "val_accuracy", "val_loss")
    bridge.ask("a")
    scheduler.on_trial_result(None, _trial("a"), {"val_accuracy": 0.56, "val_loss": 0.6, "step": 10})
    bridge.tell("a", TrialStatus.COMPLETED, 0.56)
    bridge.ask("b")
    assert scheduler.on_trial_result(None, _trial("b"), {"val_accuracy": 0.56, "val_loss": 0.7, "step": 10}) == "STOP"


WORKER_START = """
import gc, json, sys, weakref
from sweep import ray_backend

class Cycle:
    pass

def garbage():
    a, b = Cycle(), Cycle()
    a.other, b.other = b, a
    return weakref.ref(a)

if sys.argv[1] == "frozen-before":
    gc.freeze()  # something froze objects before the hook ran
if sys.argv[1] != "no-hook":
    ray_backend.warm_worker()  # as Ray runs it when the worker starts
imported = {"enabled": gc.isenabled(), "trial_code": "trainers.loop" in sys.modules}
before = garbage()  # made before the first trial
ray_backend._settle_worker()  # the worker's first trial starts
first = {"enabled": gc.isenabled(), "frozen": gc.get_freeze_count(), "kept": before() is not None}
during = garbage()  # a trial's cycle
gc.disable()  # (even were the collector off again by then)
ray_backend._settle_worker()  # the next trial starts: nothing more is frozen, the collector is on
gc.collect()
later = {"enabled": gc.isenabled(), "frozen": gc.get_freeze_count(), "kept": during() is not None}
print(json.dumps([imported, first, later]))
"""


@pytest.mark.parametrize("hook", ["hook", "no-hook", "frozen-before"])
def test_a_workers_imports_run_without_the_collector_and_stay_frozen_from_its_first_trial(hook):
    """warm_worker imports the trial code with the cyclic collector off; the first trial's start freezes
    what exists then (so release_memory's collections skip it) and turns the collector on; later trials
    freeze nothing more, and their cycles are collected. Without the hook (a cluster's own runtime env),
    the first trial collects before it freezes, so no garbage is kept."""
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", WORKER_START, hook], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    imported, first, later = json.loads(out.splitlines()[-1])
    assert imported == {"enabled": hook == "no-hook", "trial_code": hook != "no-hook"}
    assert first["enabled"] and first["frozen"] > 10_000  # Ray's and pydantic's objects at least
    assert first["kept"] == (hook != "no-hook")  # the hook's few unreachable cycles stay with the worker
    assert later["enabled"] and not later["kept"]
    assert first["frozen"] - 100 < later["frozen"] <= first["frozen"]  # nothing more frozen (refcounts free a few)


RETRY_KEYS = ("RAY_raylet_client_connect_timeout_milliseconds", "RAY_raylet_client_num_connect_attempts")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({}, {RETRY_KEYS[0]: "50", RETRY_KEYS[1]: "200"}),  # 50 ms apart, Ray's 10 s in all
        ({RETRY_KEYS[0]: "2000"}, {RETRY_KEYS[0]: "2000", RETRY_KEYS[1]: None}),  # the user's, Ray's default
        ({RETRY_KEYS[1]: "30"}, {RETRY_KEYS[0]: None, RETRY_KEYS[1]: "30"}),
    ],
)
def test_rays_socket_clients_retry_every_50_ms_unless_the_user_said(given, expected):
    """A raylet that starts waits Ray's retry interval for its own object store about every other time
    (1 s by default): the sweep's Ray retries every 50 ms within the same 10 s, and leaves a user's
    setting of either value alone."""
    import os
    from unittest import mock

    from sweep import ray_backend

    assert tuple(ray_backend.CONNECT_RETRY) == RETRY_KEYS
    kept = {k: v for k, v in os.environ.items() if k not in RETRY_KEYS}
    with mock.patch.dict(os.environ, {**kept, **given}, clear=True):  # (everything _set_env sets goes after)
        ray_backend._set_env()
        assert {key: os.environ.get(key) for key in RETRY_KEYS} == expected


class _Gcs:
    """A stand-in for Ray's GcsClient: the node shows from its ``shows_at``-th ask on."""

    def __init__(self, node, shows_at):
        self.node, self.shows_at, self.asks = node, shows_at, 0

    def get_all_node_info(self, timeout=None):
        self.asks += 1
        return {self.node: "info"} if self.asks >= self.shows_at else {}


class _Clock:
    def __init__(self):
        self.now, self.slept = 100.0, []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


def test_the_new_node_is_asked_for_every_50_ms_until_it_shows():
    from sweep.ray_backend import NODE_POLL_S, _node_registered

    clock = _Clock()
    gcs = _Gcs("n1", shows_at=4)
    assert NODE_POLL_S == 0.05
    assert _node_registered(gcs, "n1", 10.0, clock=clock, sleep=clock.sleep) == 4
    assert clock.slept == [NODE_POLL_S] * 3  # none after the ask that found it
    assert gcs.asks == 4


def test_a_node_that_never_shows_leaves_the_wait_to_ray_at_the_deadline():
    from sweep.ray_backend import _node_registered

    clock = _Clock()
    gcs = _Gcs("n1", shows_at=10**9)
    assert _node_registered(gcs, "n1", 1.0, every_s=0.25, clock=clock, sleep=clock.sleep) is None
    assert gcs.asks == 5  # at 0, 0.25, 0.5, 0.75 and 1.0 s
    assert clock.now == 101.0


def test_ray_init_asks_for_its_node_before_rays_own_lookup_and_only_once(monkeypatch):
    """The first lookup in ray.init waits for the node by asking every 50 ms, then calls Ray's own (which
    finds it at once); a later lookup is Ray's own alone; Ray's function is back afterwards."""
    import ray._raylet
    from ray._private import services

    from sweep import ray_backend

    node = ray._raylet.NodeID.from_random()
    made = []

    def client(address):
        made.append(address)
        return _Gcs(node, shows_at=3)

    calls = []
    monkeypatch.setattr(services, "get_node", lambda address, node_id: calls.append((address, node_id)) or "info")
    monkeypatch.setattr(ray._raylet, "GcsClient", client)
    original = services.get_node
    asked: list = []
    with ray_backend._prompt_node_wait(asked):
        assert services.get_node is not original
        assert services.get_node("127.0.0.1:6379", node.hex()) == "info"
        assert services.get_node("127.0.0.1:6379", node.hex()) == "info"
    assert services.get_node is original
    assert asked == [3]  # the third ask saw it
    assert made == ["127.0.0.1:6379"]  # one client, for the first lookup only
    assert calls == [("127.0.0.1:6379", node.hex())] * 2


def test_a_failing_ask_leaves_ray_init_to_rays_own_lookup(monkeypatch):
    import ray._raylet
    from ray._private import services

    from sweep import ray_backend

    def client(address):
        raise RuntimeError("no such API")

    calls = []
    monkeypatch.setattr(services, "get_node", lambda address, node_id: calls.append(node_id) or "info")
    monkeypatch.setattr(ray._raylet, "GcsClient", client)
    original = services.get_node
    asked: list = []
    with pytest.raises(KeyError), ray_backend._prompt_node_wait(asked):
        assert services.get_node("a", "ff" * 28) == "info"
        raise KeyError("ray.init failed")
    assert services.get_node is original  # put back also when ray.init raised
    assert asked == [None]
    assert calls == ["ff" * 28]


def test_a_ray_without_that_lookup_starts_its_own_way(monkeypatch):
    """Ray's private lookup is not there (another Ray): nothing is patched, nothing asked, and a failing
    ray.init's error is its own (not chained to the missing attribute)."""
    from ray._private import services

    from sweep import ray_backend

    monkeypatch.delattr(services, "get_node")
    asked: list = []
    with pytest.raises(KeyError) as failed, ray_backend._prompt_node_wait(asked):
        assert not hasattr(services, "get_node")
        raise KeyError("ray.init failed")
    assert failed.value.__context__ is None
    assert asked == []


@pytest.mark.parametrize("failure", [KeyError, KeyboardInterrupt])
def test_ray_init_is_asked_for_no_log_monitor_unless_given_and_rays_parameters_are_back_afterwards(failure):
    """While a local Ray starts, its RayParams say include_log_monitor=False (Ray's Node starts one when it
    is not given), a value given explicitly is kept; afterwards, also after a failing or interrupted
    ray.init, Ray's RayParams are as they were."""
    from ray._private import parameter

    from sweep import ray_backend

    original = parameter.RayParams.__init__
    with ray_backend._without_log_monitor():
        assert parameter.RayParams().include_log_monitor is False
        assert parameter.RayParams(include_log_monitor=True).include_log_monitor is True
    assert parameter.RayParams.__init__ is original
    assert parameter.RayParams().include_log_monitor is None
    with pytest.raises(failure), ray_backend._without_log_monitor():
        raise failure("ray.init failed")
    assert parameter.RayParams.__init__ is original


@pytest.mark.parametrize("address", [None, "ray://head:10001"])
def test_start_ray_starts_a_local_ray_without_a_log_monitor_and_leaves_a_clusters_as_it_is(
    address, monkeypatch, tmp_path
):
    """start_ray's ray.init builds its RayParams with include_log_monitor=False for a local Ray (ray.init
    stands in here: what it would give Ray's Node is recorded); connecting to a cluster changes nothing."""
    import ray
    from ray._private import parameter

    from sweep import ray_backend

    seen = []

    def init(**kwargs):
        seen.append(parameter.RayParams().include_log_monitor)
        return None

    monkeypatch.setattr(ray_backend, "_set_env", lambda: None)  # (this process's environment stays as it is)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray_backend.tempfile, "tempdir", str(tmp_path))
    session = ray_backend.start_ray(address, dashboard=False)
    assert seen == [False if address is None else None]
    assert parameter.RayParams().include_log_monitor is None  # Ray's own again
    session.temp_dir = None  # (nothing of Ray's to keep)


def test_a_ray_whose_params_know_no_log_monitor_starts_its_own_way(monkeypatch):
    from ray._private import parameter

    from sweep import ray_backend

    def init(self, node_ip_address=None):  # another Ray's RayParams, without the parameter
        self.node_ip_address = node_ip_address

    monkeypatch.setattr(parameter.RayParams, "__init__", init)
    with ray_backend._without_log_monitor():
        assert parameter.RayParams.__init__ is init
        assert not hasattr(parameter.RayParams(), "include_log_monitor")
