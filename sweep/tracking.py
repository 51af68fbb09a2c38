"""The only ``import mlflow``: one parent run per sweep, one nested child run per trial (and per fold).

Everything is written from the driver through one MlflowClient, metrics in batches, so the trial
processes never wait on MLflow. Every run this class opens is closed by ``close`` — FINISHED, or
KILLED when the sweep was interrupted.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from sweep.status import TrialStatus

ROLE_TAG = "sweep.role"
STATUS_TAG = "trial.status"
PREVIOUS_TAG = "sweep.previous_run_id"  # a warm-started sweep's parent run: the sweep it started from
PREVIOUS_DIR_TAG = "sweep.previous_run_dir"
NEXT_TAG = "sweep.next_run_id"  # and that sweep's: the one started from it (in the same store)
_MAX_PARAM_CHARS = 6000

log = logging.getLogger(__name__)
# MLflow prints "View run ... at: URL" for every run a server ends: one line per trial, with the
# tracking URI's credentials in it; the sweep's summary links the compare page instead
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
logging.getLogger("alembic").setLevel(logging.WARNING)  # sqlite schema migrations on first open
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)


def default_tracking_uri(runs_dir: str) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{runs_dir}/mlflow.db"


def _sqlite_path(uri: str) -> Path | None:
    """The file of a SQLite store's URI (None for any other store, or an in-memory one)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return None if path == ":memory:" else Path(path)


@contextlib.contextmanager
def _first_open(uri: str) -> Iterator[None]:
    """Hold a SQLite store's creation lock (``<file>.lock`` beside it). Opening a store creates or
    migrates its tables; sweeps that start together on one new file would all do so at once and fail
    (MLflow's migrations race: "duplicate column name"). Under the lock the first creates them and the
    others find them. A tracking server or database serializes this itself."""
    path = _sqlite_path(uri)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def client_of(uri: str) -> MlflowClient:
    """An MlflowClient of ``uri`` (opening it makes a new SQLite store's tables, under its lock)."""
    with _first_open(uri):
        return MlflowClient(tracking_uri=uri)


def store_exists(uri: str) -> bool:
    """False for a SQLite store whose file is not there: a read would create an empty one (and take
    seconds migrating its schema) to find nothing."""
    path = _sqlite_path(uri)
    return path is None or path.is_file()


def load_store(uri: str) -> None:
    """Import the MLflow store ``uri`` needs without opening it (nothing is written), so that part of the
    first record's opening happens while the sweep waits for its data check."""
    import importlib

    scheme = uri.split(":", 1)[0].split("+", 1)[0]
    if scheme in ("sqlite", "postgresql", "mysql", "mssql"):
        names = ["mlflow.store.tracking.sqlalchemy_store", "mlflow.store.db.utils", "alembic.command"]
    elif scheme in ("http", "https"):
        names = ["mlflow.store.tracking.rest_store"]
    else:
        names = ["mlflow.store.tracking.file_store"]
    for name in names:  # MLflow's module layout, not its API: a layout that moved only loses the head start
        try:
            importlib.import_module(name)
        except ImportError:
            logging.getLogger(__name__).debug("%s not found: the store loads when it opens", name)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> ``{"a.b": "value"}`` for MLflow params."""
    out: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value) if not isinstance(value, str) else value
    return out


class MlflowRecorder:
    """The ``Recorder`` on MLflow. Keys are Ray trial ids; MLflow run ids stay inside."""

    def __init__(self, uri: str, experiment: str, artifact_root: Path) -> None:
        self.uri = uri
        self.experiment = experiment
        self.client = client_of(uri)
        self.experiment_id = self._experiment(experiment, artifact_root)
        self.parent_id: str | None = None
        self.trial_runs: dict[str, str] = {}
        self._started: dict[str, float] = {}
        self._open: set[str] = set()
        self._prior_runs: dict[str, tuple[str, str | None]] = {}  # resume: (run status, trial.status) per key
        self._names: dict[str, str] = {}  # "trial 5": run names read "trial 5 · pruned@20" once it ends
        self.compare_path = ""  # the MLflow UI's page comparing this sweep's trials (set when it ends)

    def _experiment(self, name: str, artifact_root: Path) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        # a tracking server keeps artifacts where it was told to (--artifacts-destination); a local
        # store keeps them beside the run dirs
        local = not self.uri.startswith(("http://", "https://", "databricks"))
        try:
            return str(
                self.client.create_experiment(
                    name,
                    artifact_location=artifact_root.resolve().as_uri() if local else None,
                    # MLflow 3 opens experiments without this tag in its GenAI (traces) view
                    tags={"mlflow.experimentKind": "custom_model_development"},
                )
            )
        except MlflowException:  # another sweep on the same server created it a moment ago
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return str(found.experiment_id)

    # --- the sweep -------------------------------------------------------------------------------
    def start_sweep(
        self,
        name: str,
        params: Mapping[str, Any],
        tags: Mapping[str, str],
        spec: dict[str, Any],
        on_created: Callable[[str], None] | None = None,
    ) -> str:
        """The sweep's parent run. ``on_created`` gets its id as soon as the run exists, before anything
        else is logged: a driver killed after that has the id on disk (``sweep.json``) and resumes."""
        run = self.client.create_run(self.experiment_id, run_name=name, tags={ROLE_TAG: "sweep", **tags})
        self.parent_id = run.info.run_id
        self._open.add(self.parent_id)
        if on_created is not None:
            on_created(self.parent_id)
        self._log_params(self.parent_id, flatten(params))
        self.client.log_dict(self.parent_id, spec, "spec.yaml")
        return self.parent_id

    def link_next(self, previous_id: str) -> None:
        """Tag the sweep this one warm-starts from with ``sweep.next_run_id``, where it is in this store (a
        sweep recorded elsewhere keeps no link; best effort: the sweep goes on either way)."""
        assert self.parent_id is not None
        try:
            self.client.get_run(previous_id)
            self.client.set_tag(previous_id, NEXT_TAG, self.parent_id)
        except MlflowException:
            log.debug("previous sweep %s not linked: not in %s", previous_id, self.uri, exc_info=True)

    def resume_sweep(self, parent_id: str) -> None:
        """Re-open the parent run of an interrupted sweep."""
        self.parent_id = parent_id
        self.client.update_run(parent_id, status="RUNNING")
        self._open.add(parent_id)
        self._prior_runs = {}
        for run in self.client.search_runs(
            [self.experiment_id],
            f"tags.`mlflow.parentRunId` = '{parent_id}' and tags.`{ROLE_TAG}` = 'trial'",
            max_results=10000,
        ):
            key = run.data.tags.get("ray.trial_id", run.info.run_id)
            self.trial_runs[key] = run.info.run_id
            self._prior_runs[key] = (run.info.status, run.data.tags.get(STATUS_TAG))

    def settle_trial(
        self, key: str, number: int | None, params: Mapping[str, Any], status: TrialStatus, step: int | None
    ) -> None:
        """Resume: the run of a trial an earlier run ended says how the study says it ended. A driver
        killed mid-trial left its run RUNNING; one killed between the study's tell and ours, a stale
        status; one killed before the run existed, no run."""
        found = self._prior_runs.get(key)
        if found == (status.run_status, status.value):
            return
        run_id = self.trial_runs.get(key) or self.start_trial(key, number, params)
        self._open.add(run_id)
        self._set_tags(run_id, {STATUS_TAG: status.value, "trial.step_reached": str(step)})
        self._rename(key, run_id, status, str(step))
        self._end(run_id, status.run_status)

    def finish_sweep(self, summary: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        assert self.parent_id is not None
        metrics = {k: float(v) for k, v in summary.items() if isinstance(v, int | float)}
        self._log_metrics(self.parent_id, metrics, step=0)
        self.client.log_dict(self.parent_id, dict(summary), "summary.json")
        self.compare_path = compare_path(self.experiment_id, list(self.trial_runs.values()))
        note = _sweep_note(summary, self.compare_path)
        self._set_tags(self.parent_id, {**tags, "sweep.compare_trials": self.compare_path, "mlflow.note.content": note})
        self._end(self.parent_id, "FINISHED")

    # --- trials ----------------------------------------------------------------------------------
    def start_trial(self, key: str, number: int | None, params: Mapping[str, Any]) -> str:
        if key in self.trial_runs:  # Ray restarted it: same run, no duplicate
            return self.trial_runs[key]
        assert self.parent_id is not None
        self._names[key] = f"trial {number}" if number is not None else f"trial {key}"
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"{self._names[key]} · running",
            tags={
                ROLE_TAG: "trial",
                "mlflow.parentRunId": self.parent_id,
                "ray.trial_id": key,
                "optuna.trial_number": str(number),
                STATUS_TAG: TrialStatus.RUNNING.value,
            },
        )
        run_id = run.info.run_id
        self.trial_runs[key] = run_id
        self._started[key] = time.time()
        self._open.add(run_id)
        self._log_params(run_id, {k: json.dumps(v) if not isinstance(v, str) else v for k, v in params.items()})
        return run_id

    def log_report(self, key: str, step: int, metrics: Mapping[str, float]) -> None:
        if key not in self.trial_runs:
            log.debug("report for unknown trial %s ignored", key)
            return
        self._log_metrics(self.trial_runs[key], metrics, step)

    def log_fold(self, key: str, fold: int, metrics: Mapping[str, float]) -> None:
        """A k-fold trial's finished fold, as a run nested under the trial's run."""
        parent = self.trial_runs.get(key)
        if parent is None:
            log.debug("fold of unknown trial %s ignored", key)
            return
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"{self._names.get(key, 'trial')} · fold {fold}",
            tags={ROLE_TAG: "fold", "mlflow.parentRunId": parent, "fold": str(fold)},
        )
        self._log_metrics(run.info.run_id, metrics, step=fold)
        self.client.set_terminated(run.info.run_id, "FINISHED")

    def end_trial(self, key: str, status: TrialStatus, tags: Mapping[str, str], metrics: Mapping[str, float]) -> None:
        """Close a trial's run: tag ``trial.status``, run status as the status maps it."""
        run_id = self.trial_runs.get(key)
        if run_id is None or run_id not in self._open:
            log.debug("end of trial %s without an open run ignored", key)
            return
        duration = time.time() - self._started.get(key, time.time())
        self._log_metrics(run_id, {**metrics, "duration_s": duration}, step=0)
        self._set_tags(run_id, {STATUS_TAG: status.value, **tags})
        self._rename(key, run_id, status, tags.get("trial.step_reached"))
        self._end(run_id, status.run_status)

    def _rename(self, key: str, run_id: str, status: TrialStatus, step: str | None) -> None:
        """``trial 5 · pruned@20``: a person tells the trials apart in the MLflow UI's run list."""
        name = self._names.get(key) or self.client.get_run(run_id).info.run_name.split(" · ")[0]
        at = f"@{step}" if step not in (None, "None") and status != TrialStatus.COMPLETED else ""
        self.client.update_run(run_id, name=f"{name} · {status.value}{at}")

    def log_trial_metrics(self, key: str, metrics: Mapping[str, float]) -> None:
        """Metrics measured after a trial ended (the chosen model's held-out test), on its run."""
        run_id = self.trial_runs.get(key)
        if run_id is not None:
            self._log_metrics(run_id, metrics, step=0)

    def tag_trial(self, key: str, tags: Mapping[str, str]) -> None:
        run_id = self.trial_runs.get(key)
        if run_id is not None:
            self._set_tags(run_id, tags)

    def log_artifacts(self, key: str, local_dir: Path, artifact_path: str | None) -> None:
        run_id = self.trial_runs.get(key)
        if run_id is not None:
            self.client.log_artifacts(run_id, str(local_dir), artifact_path)

    def close(self, interrupted: bool, crashed: bool = False) -> None:
        """Leave no run RUNNING: open ones end KILLED when interrupted, FAILED when the sweep
        crashed, else FINISHED (a trial Ray stopped without a result, e.g. out of time)."""
        status = TrialStatus.FAILED if crashed else TrialStatus.KILLED if interrupted else TrialStatus.STOPPED
        keys = {run_id: key for key, run_id in self.trial_runs.items()}
        for run_id in list(self._open):
            if run_id != self.parent_id:
                self._set_tags(run_id, {STATUS_TAG: status.value})
                self._rename(keys.get(run_id, ""), run_id, status, None)
            self._end(run_id, status.run_status)

    # --- helpers ---------------------------------------------------------------------------------
    def _end(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status)
        self._open.discard(run_id)

    def _log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for start in range(0, len(batch), 1000):
            self.client.log_batch(run_id, metrics=batch[start : start + 1000])

    def _log_params(self, run_id: str, params: Mapping[str, str]) -> None:
        batch = [Param(k, str(v)[:_MAX_PARAM_CHARS]) for k, v in params.items()]
        for start in range(0, len(batch), 100):
            self.client.log_batch(run_id, params=batch[start : start + 100])

    def _set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        if tags:
            self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def compare_path(experiment_id: str, run_ids: list[str]) -> str:
    """The MLflow UI's compare page for these runs (after the server's address): the trials of one
    sweep side by side, names, statuses, parameters, metrics and curves."""
    from urllib.parse import quote

    return f"/#/compare-runs?runs={quote(json.dumps(run_ids))}&experiments={quote(json.dumps([experiment_id]))}"


def _sweep_note(summary: Mapping[str, Any], compare: str) -> str:
    """The parent run's description (markdown), what a person looks for first."""
    counts = ", ".join(
        f"{v} {k.removeprefix('num_')}" for k, v in summary.items() if k.startswith("num_") and k != "num_trials" and v
    )
    best = (
        f"best **{summary['best_value']:.4g}** (trial {summary.get('best_trial')})"
        if summary.get("best_value") is not None
        else "no completed trial"
    )
    return (
        f"Sweep of {summary.get('num_trials', 0)} trials in {summary.get('wall_s', 0):.0f}s: {best}; {counts}.\n\n"
        "The trials are nested under this run (expand it in the runs list, or search "
        "``tags.`sweep.role` = 'trial'``). "
        f"[Compare the trials]({compare}) side by side. The verdict's report is "
        f"in this run's artifacts (verdict/report.html)."
    )


def _experiment_of(uri: str, experiment: str) -> tuple[MlflowClient, str] | None:
    """A client of the store and the experiment's id, for reading; None when the store or the
    experiment is not there (a missing SQLite file is not made)."""
    if not store_exists(uri):
        return None
    client = client_of(uri)
    found = client.get_experiment_by_name(experiment)
    return None if found is None else (client, found.experiment_id)


def runs_of(uri: str, experiment: str) -> list[Any]:
    """All runs of an experiment (for tests and reports)."""
    found = _experiment_of(uri, experiment)
    if found is None:
        return []
    client, experiment_id = found
    return list(client.search_runs([experiment_id], max_results=10000))


def sweep_runs(uri: str, experiment: str) -> list[dict[str, Any]] | None:
    """The parent runs of an experiment's sweeps, oldest first, as plain data (run id, start time in ms,
    tags, metrics); None when the store has no such experiment."""
    found = _experiment_of(uri, experiment)
    if found is None:
        return None
    client, experiment_id = found
    runs = client.search_runs(
        [experiment_id], f"tags.`{ROLE_TAG}` = 'sweep'", max_results=10000, order_by=["attributes.start_time ASC"]
    )
    return [
        {
            "run_id": r.info.run_id,
            "start_time": r.info.start_time,
            "status": r.info.status,
            "tags": dict(r.data.tags),
            "metrics": dict(r.data.metrics),
        }
        for r in runs
    ]


def experiment_names(uri: str) -> list[str]:
    """Every experiment of a store, by name (for a message about one that is not there)."""
    if not store_exists(uri):
        return []
    return [e.name for e in client_of(uri).search_experiments(max_results=1000)]


# --- the verdict: reading a sweep back, recording its report, registering its model ---------------


def find_sweep_run(uri: str, experiment: str, run_dir: str) -> str | None:
    """The id of the sweep's parent run whose ``sweep.run_dir`` tag is ``run_dir``; None if there is none."""
    found = _experiment_of(uri, experiment)
    if found is None:
        return None
    client, experiment_id = found
    quoted = run_dir.replace("'", "\\'")
    runs = client.search_runs(
        [experiment_id], f"tags.`{ROLE_TAG}` = 'sweep' and tags.`sweep.run_dir` = '{quoted}'", max_results=2
    )
    return runs[0].info.run_id if len(runs) == 1 else None


def sweep_state(uri: str, parent_id: str) -> dict[str, str]:
    """A sweep's parent run tags (``sweep.run_dir`` leads back to its files). LookupError when the
    store is not there."""
    if not store_exists(uri):
        raise LookupError(f"no MLflow store at {uri}")
    return dict(client_of(uri).get_run(parent_id).data.tags)


def trial_curves(uri: str, parent_id: str, metrics: list[str]) -> dict[int, dict[str, Any]]:
    """Per Optuna trial number: the trial run's id, final metrics and the step histories of ``metrics``."""
    client = client_of(uri)
    parent = client.get_run(parent_id)
    runs = client.search_runs(
        [parent.info.experiment_id],
        f"tags.`mlflow.parentRunId` = '{parent_id}' and tags.`{ROLE_TAG}` = 'trial'",
        max_results=10000,
    )
    out: dict[int, dict[str, Any]] = {}
    for run in runs:
        number = run.data.tags.get("optuna.trial_number")
        if number is None or number == "None":
            continue
        histories = {
            m: {h.step: h.value for h in client.get_metric_history(run.info.run_id, m)}
            for m in metrics
            if m in run.data.metrics
        }
        out[int(number)] = {"run_id": run.info.run_id, "metrics": dict(run.data.metrics), "histories": histories}
    return out


def record_verdict(
    uri: str, parent_id: str, tags: Mapping[str, str], metrics: Mapping[str, float], files: list[Path]
) -> None:
    """Tags, metrics and artifacts of the verdict on the sweep's parent run. Metrics carry the sweep's
    end time and step 0, so recording the same verdict again adds nothing, and a verdict after a
    resume (a later end) is the one MLflow shows."""
    client = client_of(uri)
    run = client.get_run(parent_id)
    ours = ("keep.", "blame.", "verdict.registered_model")
    for key in [k for k in run.data.tags if k.startswith(ours) and k not in tags]:
        client.delete_tag(parent_id, key)  # a regenerated report drops what it no longer claims
    stamp = run.info.end_time or run.info.start_time
    batch = [Metric(k, float(v), stamp, 0) for k, v in metrics.items()]
    client.log_batch(parent_id, metrics=batch, tags=[RunTag(k, str(v)) for k, v in tags.items()])
    for path in files:
        client.log_artifact(parent_id, str(path), "verdict")


def record_evaluation(uri: str, parent_id: str, name: str, metrics: Mapping[str, float]) -> None:
    """`sweep evaluate`: the chosen model's metrics on a file, as ``eval_<name>_<metric>`` on the sweep's run."""
    client = client_of(uri)
    now = int(time.time() * 1000)
    client.log_batch(parent_id, metrics=[Metric(f"eval_{name}_{k}", float(v), now, 0) for k, v in metrics.items()])


def download_registered(uri: str, model_uri: str, into: Path) -> Path:
    """A registered version (``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``): its run's
    ``best_config.yaml`` and ``model/``, downloaded into ``into``."""
    client = client_of(uri)
    ref = model_uri.removeprefix("models:/")
    name, _, rest = ref.partition("@")
    try:
        if rest:
            version = client.get_model_version_by_alias(name, rest)
        else:
            name, _, number = ref.rpartition("/")
            version = client.get_model_version(name, number)
    except Exception as exc:  # MLflow's RestException or a missing model: one line, ours
        raise ValueError(f"'{model_uri}' is not a registered model version here ({type(exc).__name__})") from None
    try:
        for item in ("best_config.yaml", "model"):
            client.download_artifacts(version.run_id, item, str(into))
    except Exception as exc:  # a version registered by hand, without the sweep's files
        raise ValueError(
            f"'{model_uri}' has no best_config.yaml and model/ in its run ({type(exc).__name__})"
        ) from None
    return into


def has_model(uri: str, run_id: str) -> bool:
    """Whether a trial's run holds a ``model`` artifact (the sweep publishes the best one)."""
    return bool(client_of(uri).list_artifacts(run_id, "model"))


def register_candidate(
    uri: str, name: str, trial_run_id: str, parent_id: str, tags: Mapping[str, str], description: str
) -> tuple[str, str]:
    """Register the best trial's model (its run's ``model`` artifact) with alias ``candidate``. One
    version per (sweep, trial): asking again returns it and moves nothing."""
    client = client_of(uri)
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name, description="Models accepted by finetune-sweep verdicts.")
    found = [
        v
        for v in client.search_model_versions(f"name = '{name}' and tags.`sweep.parent_run_id` = '{parent_id}'")
        if v.run_id == trial_run_id
    ]
    if found:
        return name, str(found[0].version)
    version = client.create_model_version(
        name,
        source=f"runs:/{trial_run_id}/model",
        run_id=trial_run_id,
        tags={**tags, "sweep.parent_run_id": parent_id},
        description=description,
    ).version
    client.set_registered_model_alias(name, "candidate", version)
    return name, str(version)


def registered_versions(uri: str, name: str) -> list[Any]:
    """Every version of a registered model (for tests and reports)."""
    client = client_of(uri)
    if not client.search_registered_models(f"name = '{name}'"):
        return []
    return list(client.search_model_versions(f"name = '{name}'"))
