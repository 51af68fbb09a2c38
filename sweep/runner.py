"""`sweep run`: check everything, open the study and the record, run the trials on Ray, summarize."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from sweep.space import candidate_values
from sweep.spec import SpecError, SweepSpec

Echo = Callable[[str], None]


@dataclass
class TrialRecord:
    ray_id: str
    number: int | None
    params: dict[str, Any]
    started: float = field(default_factory=time.time)
    first_report_s: float | None = None
    status: str = "running"
    step: int | None = None
    value: float | None = None
    outcome: dict[str, Any] | None = None
    ended: float | None = None
    error: str | None = None


@dataclass
class SweepResult:
    run_dir: Path
    tracking_uri: str
    experiment: str
    parent_run_id: str
    trials: list[TrialRecord]
    best: TrialRecord | None
    wall_s: float
    interrupted: bool
    counts: dict[str, int]
    time_split: dict[str, float] = field(default_factory=dict)


def preflight(spec: SweepSpec) -> dict[str, str]:
    """Load the data and check the model against every value the space can give to data/model/split
    fields, in the driver, before Ray starts: a data mistake is exit code 2, not N failed trials."""
    from trainers.config import ConfigError
    from trainers.loop import preflight as trial_preflight

    try:
        fingerprints = trial_preflight(spec.trial_config({}))
    except ConfigError as exc:  # the template itself fails: every space value would repeat it
        raise SpecError([f"trial.{line}" for line in exc.problems]) from None
    problems: list[str] = []
    for path, p in spec.space.items():
        if not path.startswith(("model.", "data.", "split.")):
            continue
        for value in candidate_values(p):
            try:
                trial_preflight(spec.trial_config({path: value}))
            except ConfigError as exc:
                problems.append(f"space.{path}: value {value!r} fails: {exc.problems[0]}")
    if problems:
        raise SpecError(problems)
    return fingerprints


def _code_version() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
        if sha.returncode == 0:
            return sha.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import version

    return f"finetune-sweep {version('finetune-sweep')}"


class SweepObserver:
    """Trial events from Ray -> MLflow record, best-model bookkeeping and the live progress line."""

    def __init__(self, spec: SweepSpec, recorder: Any, bridge: Any, models_dir: Path | None, echo: Echo) -> None:
        self.spec, self.recorder, self.bridge, self.models_dir, self.echo = spec, recorder, bridge, models_dir, echo
        self.trials: dict[str, TrialRecord] = {}
        self.best: TrialRecord | None = None
        self.sign = 1.0 if spec.objective.direction == "minimize" else -1.0

    def trial_started(self, ray_id: str, params: Mapping[str, Any]) -> None:
        number = self.bridge.number(ray_id)
        self.trials.setdefault(ray_id, TrialRecord(ray_id, number, dict(params)))
        self.recorder.start_trial(ray_id, number, params)
        shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
        self.echo(f"trial {number} started: {shown}")

    def trial_reported(self, ray_id: str, step: int, metrics: Mapping[str, float]) -> None:
        rec = self.trials.get(ray_id)
        if rec is not None:
            rec.step = step
            rec.value = metrics.get(self.spec.objective.metric)
            if rec.first_report_s is None:
                rec.first_report_s = time.time() - rec.started
        if "fold" in metrics:
            self.recorder.log_fold(ray_id, step, {k: v for k, v in metrics.items() if k != "fold"})
        self.recorder.log_report(ray_id, step, metrics)

    def trial_finished(self, ray_id: str, outcome_json: str | None, error: bool) -> None:
        rec = self.trials.setdefault(ray_id, TrialRecord(ray_id, self.bridge.number(ray_id), {}))
        rec.ended = time.time()
        payload = json.loads(outcome_json) if outcome_json is not None else None
        tags: dict[str, str] = {}
        metrics: dict[str, float] = {}
        if payload is None:  # stopped by the scheduler, or Ray lost it
            rec.status = "pruned" if not error and ray_id in self.bridge.pruned else "failed"
        elif payload["status"] == "failed":
            rec.status, rec.error = "failed", payload["error"]
            tags["trial.error"] = payload["error"][:5000]
        else:
            tags, metrics = self._absorb_outcome(rec, payload)
        tags["trial.step_reached"] = str(rec.step)
        self.recorder.end_trial(ray_id, rec.status, tags, metrics)
        self._keep_best_model(rec)
        self._progress(rec)

    def _absorb_outcome(self, rec: TrialRecord, outcome: dict[str, Any]) -> tuple[dict[str, str], dict[str, float]]:
        """A finished trial's TrialOutcome (as JSON) -> its record, run tags and run metrics."""
        rec.outcome = outcome
        rec.status = outcome["status"]
        rec.step = outcome["final_step"] if rec.status != "diverged" else outcome["diverged_step"]
        rec.value = outcome["final_metrics"].get(self.spec.objective.metric)
        metrics = {
            "num_steps": outcome["num_steps"],
            "num_examples": outcome["num_examples"],
            "peak_rss_mb": outcome["peak_rss_mb"],
            **{f"time_{k}": v for k, v in outcome["timings"].items()},
            **{f"best_{k}": v for k, v in outcome["best_metrics"].items()},
            **outcome["test_metrics"],
        }
        tags = {"data.fingerprint": outcome["data_fingerprint"], "split.fingerprint": outcome["split_fingerprint"]}
        if rec.status == "diverged":
            tags["trial.diverged_learning_rate"] = str(outcome["diverged_learning_rate"])
        return tags, metrics

    def end_unfinished(self, status: str) -> None:
        """Close trials Ray stopped without a result ('stopped': out of time; 'killed': Ctrl-C)."""
        for rec in self.trials.values():
            if rec.status != "running":
                continue
            rec.status, rec.ended = status, time.time()
            self.bridge.tell(rec.ray_id, status, None)
            self.recorder.end_trial(rec.ray_id, status, {"trial.step_reached": str(rec.step)}, {})
            self._drop_model(rec.ray_id)
            self._progress(rec)

    def add_finished(self, rec: TrialRecord) -> None:
        """A trial an earlier run of this sweep finished (resume)."""
        self.trials[rec.ray_id] = rec
        if self._beats_best(rec):
            self.best = rec

    def _beats_best(self, rec: TrialRecord) -> bool:
        if rec.status != "completed" or rec.value is None:
            return False
        return self.best is None or self.sign * rec.value < self.sign * (self.best.value or 0.0)

    def _keep_best_model(self, rec: TrialRecord) -> None:
        """At most the best model stays on disk (plus those of running trials)."""
        if not self._beats_best(rec):
            self._drop_model(rec.ray_id)
            return
        if self.best is not None:
            self._drop_model(self.best.ray_id)
        self.best = rec

    def _drop_model(self, ray_id: str) -> None:
        if self.models_dir is not None:
            shutil.rmtree(self.models_dir / ray_id, ignore_errors=True)

    def time_split(self) -> dict[str, float]:
        """Where trial wall time went: seconds to the first report, and the share spent in steps/evals."""
        ended = [t for t in self.trials.values() if t.ended is not None]
        firsts = [t.first_report_s for t in ended if t.first_report_s is not None]
        done = [t for t in ended if t.outcome is not None and t.ended is not None]
        wall = sum(t.ended - t.started for t in done if t.ended is not None)
        work = sum(t.outcome["timings"]["train_s"] + t.outcome["timings"]["eval_s"] for t in done if t.outcome)
        out = {"mean_first_report_s": sum(firsts) / len(firsts)} if firsts else {}
        if wall > 0:
            out["train_eval_share"] = work / wall
        return out

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for rec in self.trials.values():
            out[rec.status] = out.get(rec.status, 0) + 1
        return out

    def _progress(self, rec: TrialRecord) -> None:
        metric = self.spec.objective.metric
        value = f"{metric}={rec.value:.4g}" if rec.value is not None else "no value"
        if rec.error:
            value = f"error: {rec.error}"
        done = sum(1 for t in self.trials.values() if t.status != "running")
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self.counts().items()))
        best = f"best {self.best.value:.4g} (trial {self.best.number})" if self.best else "no best yet"
        self.echo(
            f"[{done}/{self.spec.budget.num_trials}] trial {rec.number} {rec.status} at step {rec.step}, {value}"
            f" | {counts} | {best}"
        )


def _new_run_dir(spec: SweepSpec) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = Path(spec.execution.runs_dir) / spec.name / stamp
    run_dir.mkdir(parents=True, exist_ok=False)
    return run_dir


def run_sweep(spec: SweepSpec, *, resume_dir: Path | None = None, echo: Echo = print) -> SweepResult:
    """The whole sweep. Spec and data are checked before Ray starts (SpecError)."""
    fingerprints = preflight(spec)
    from sweep import optuna_study, ray_backend

    started = time.time()
    run_dir = resume_dir or _new_run_dir(spec)
    if not resume_dir:
        (run_dir / "spec.yaml").write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    max_steps = int(spec.trial_config({}).optim.max_steps or 1)
    storage = spec.execution.storage or f"sqlite:///{run_dir.resolve()}/optuna.db"
    bridge = optuna_study.StudyBridge(optuna_study.open_study(spec, storage, spec.name, max_steps), spec.space)
    recorder = _open_record(spec, run_dir, resume_dir is not None, storage, fingerprints)
    models_dir = run_dir / "models" if spec.execution.save_best_model else None
    observer = SweepObserver(spec, recorder, bridge, models_dir, echo)
    for prior in bridge.finished_trials():  # resume: what the interrupted run already did
        observer.add_finished(
            TrialRecord(
                prior["ray_id"],
                prior["number"],
                prior["params"],
                status=prior["status"],
                step=prior["step"],
                value=prior["value"],
                ended=time.time(),
            )
        )
    num_trials = spec.budget.num_trials - sum(1 for t in observer.trials.values() if t.status != "killed")

    echo(f"sweep '{spec.name}': {num_trials} trials, run dir {run_dir}")
    echo(f"MLflow: {recorder.uri} (experiment '{recorder.experiment}'); Optuna: {storage}")
    interrupted = crashed = False
    try:
        dashboard = ray_backend.start_ray(spec.execution.address, run_dir, spec.execution.dashboard)
        if dashboard:
            (run_dir / "ray.json").write_text(json.dumps({"dashboard": dashboard}))
            echo(f"Ray dashboard: {dashboard}  (token auth: `make dashboard` prints the token)")
        if num_trials > 0:
            ray_backend.run_tuner(
                spec,
                bridge,
                observer,
                num_trials=num_trials,
                max_steps=max_steps,
                run_dir=run_dir,
                models_dir=models_dir,
            )
        observer.end_unfinished("stopped")  # Ray ended them without a result: the time budget ran out
    except KeyboardInterrupt:
        interrupted = True
        observer.end_unfinished("killed")
    except BaseException:
        crashed = True  # our bug or Ray's: the record says FAILED, the traceback goes to the user
        raise
    finally:
        ray_backend.stop_ray()
        wall = time.time() - started
        _close_record(spec, observer, recorder, run_dir, models_dir, wall, interrupted, crashed)
        if interrupted:
            echo(f"interrupted: runs ended as KILLED. Resume with: sweep resume {run_dir}")
    assert recorder.parent_id is not None
    return SweepResult(
        run_dir,
        recorder.uri,
        recorder.experiment,
        recorder.parent_id,
        list(observer.trials.values()),
        observer.best,
        wall,
        interrupted,
        observer.counts(),
        observer.time_split(),
    )


def _open_record(spec: SweepSpec, run_dir: Path, resume: bool, storage: str, fingerprints: dict[str, str]) -> Any:
    """The sweep's parent run: new, or re-opened from run_dir/sweep.json on resume."""
    from sweep.tracking import Recorder, default_tracking_uri

    state_file = run_dir / "sweep.json"
    uri = spec.tracking.uri or default_tracking_uri(spec.execution.runs_dir)
    recorder = Recorder(uri, spec.tracking.experiment or spec.name, Path(spec.execution.runs_dir) / "mlartifacts")
    if resume:
        recorder.resume_sweep(json.loads(state_file.read_text())["parent_run_id"])
    else:
        params = {
            "trial": spec.trial_template(),
            "space": {k: v.model_dump(exclude_none=True) for k, v in spec.space.items()},
            **spec.model_dump(include={"objective", "sampler", "pruner", "budget", "resources"}),
        }
        tags = {
            "sweep.code_version": _code_version(),
            "sweep.run_dir": str(run_dir.resolve()),
            "sweep.storage": storage,
            **{f"{k}.fingerprint": v for k, v in fingerprints.items()},
        }
        recorder.start_sweep(spec.name, params, tags, spec.model_dump(mode="json"))
    state = {
        "parent_run_id": recorder.parent_id,
        "tracking_uri": uri,
        "experiment": recorder.experiment,
        "storage": storage,
    }
    state_file.write_text(json.dumps(state, indent=1))
    return recorder


def _close_record(
    spec: SweepSpec,
    observer: SweepObserver,
    recorder: Any,
    run_dir: Path,
    models_dir: Path | None,
    wall: float,
    interrupted: bool,
    crashed: bool,
) -> None:
    """Publish the best model, write the sweep's summary, and leave no run RUNNING."""
    best = observer.best
    if best is not None and models_dir is not None:
        _publish_best(spec, best, models_dir, run_dir, recorder)
    summary = {
        "wall_s": wall,
        "num_trials": len(observer.trials),
        **{f"num_{k}": v for k, v in observer.counts().items()},
        "best_value": best.value if best else None,
        "best_trial": best.number if best else None,
        "interrupted": interrupted,
        **observer.time_split(),
    }
    end_tags = {
        "sweep.best_trial": str(best.number if best else None),
        "sweep.counts": json.dumps(observer.counts()),
        "sweep.interrupted": str(interrupted),
    }
    if not interrupted and not crashed:
        recorder.finish_sweep(summary, end_tags)
    recorder.close(interrupted, crashed)


def _publish_best(spec: SweepSpec, best: TrialRecord, models_dir: Path, run_dir: Path, recorder: Any) -> None:
    """Copy the best trial's model/adapter to run_dir/best and log it (and best_config.yaml) to its run."""
    source = models_dir / best.ray_id
    target = run_dir / "best"
    if not source.is_dir() and (target / "best_config.yaml").is_file():
        return  # the best is still the one an earlier (resumed) run published
    target.mkdir(exist_ok=True)
    config = spec.trial_config(best.params).model_dump(mode="json")
    config["output_dir"] = None
    (target / "best_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    recorder.log_artifacts(best.ray_id, target, None)  # best_config.yaml
    if source.is_dir():
        shutil.rmtree(target / "model", ignore_errors=True)
        shutil.copytree(source, target / "model")
        shutil.rmtree(source, ignore_errors=True)
        recorder.log_artifacts(best.ray_id, target / "model", "model")
