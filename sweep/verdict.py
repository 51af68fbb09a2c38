"""The end of the classic loop: accept the best model (registered in MLflow) or redesign, with what to
blame, what to keep and a ready-to-run next sweep. Recorded on the sweep's parent run, regenerated
idempotently by `sweep report`."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweep.blame import Analysis, analyze
from sweep.direction import Direction
from sweep.errors import SpecError
from sweep.evidence import Evidence, TrialHistory
from sweep.run.record import RunState, has_state, read_state
from sweep.run_dir import SPEC_FILE, SPLIT_FILE, STATE_FILE
from sweep.spec import SweepSpec, load_spec
from sweep.status import TrialStatus

REPORT_DIR = "report"  # run_dir/report: report.html, report.md, blame.json, next_sweep.yaml
Echo = Callable[[str], None]


@dataclass
class Verdict:
    decision: str  # accept | redesign
    reasons: list[str]
    best: TrialHistory | None
    registered: tuple[str, str] | None = None  # (model name, version)
    next_sweep: dict[str, Any] = field(default_factory=dict)
    changes: list[str] = field(default_factory=list)  # what next_sweep changed, and why


def _reaches(value: float | None, threshold: float, direction: Direction) -> bool:
    return value is not None and direction.reaches(value, threshold)


def judge(spec: SweepSpec, evidence: Evidence, best_number: int | None = None) -> Verdict:
    """Accept when the best completed trial reaches every acceptance rule on a validation split that
    shares no rows with training; else redesign, saying why. ``best_number`` is the trial the sweep
    kept the model of (ties go to the trial that finished first)."""
    sign = spec.objective.direction.sign
    done = [t for t in evidence.trials if t.status == TrialStatus.COMPLETED and t.value is not None]
    kept = [t for t in done if t.number == best_number]
    best = kept[0] if kept else max(done, key=lambda t: sign * (t.value or 0.0)) if done else None
    accept = spec.acceptance
    metric, relation = spec.objective.metric, spec.objective.direction.relation()
    if accept.threshold is None:
        return Verdict("redesign", ["no acceptance.threshold: set one to let a sweep accept its model"], best)
    if best is None:
        return Verdict("redesign", ["no trial completed: nothing to accept"], None)
    reasons = []
    ok = _reaches(best.value, accept.threshold, spec.objective.direction)
    reasons.append(
        f"best {metric} {best.value:.4g} {'' if ok else 'not '}{relation} {accept.threshold} (trial {best.number})"
    )
    if accept.secondary is not None:
        s = accept.secondary
        reached = _reaches(best.secondary_value, s.threshold, s.direction)
        shown = "missing" if best.secondary_value is None else f"{best.secondary_value:.4g}"
        reasons.append(f"{s.metric} {shown} {'' if reached else 'not '}{s.direction.relation()} {s.threshold}")
        ok = ok and reached
    if accept.confirm_on_test:
        reached = _reaches(best.test_value, accept.threshold, spec.objective.direction)
        shown = "missing" if best.test_value is None else f"{best.test_value:.4g}"
        test_metric = metric.replace("val_", "test_", 1)
        reasons.append(f"held-out {test_metric} {shown} {'' if reached else 'not '}{relation} {accept.threshold}")
        ok = ok and reached
    if best.confirmation is not None:
        c = best.confirmation
        reasons.append(
            f"the best is confirmation trial {best.number} (trial {c.of} with {c.param} = {c.value}): "
            "it beat every trial of the search"
        )
    leaked = evidence.data.num_val_duplicates
    if leaked:
        reasons.append(f"{leaked} validation rows also are training rows: the validation score is not evidence")
        ok = False
    return Verdict("accept" if ok else "redesign", reasons, best)


def next_sweep(
    spec: SweepSpec, evidence: Evidence, analysis: Analysis, verdict: Verdict, run_dir: Path | None = None
) -> dict[str, Any]:
    """The next spec, acting on the findings: a blamed parameter's numeric range cut to where trials
    learned, its blamed categorical values removed (the rest kept), parameters that did not matter
    fixed at the best trial's value, twice the steps where the best trials were still improving, and
    a longer pruner warm-up where trials were pruned while rising. ``verdict.changes`` says each. With
    ``run_dir`` it warm-starts from this sweep's trials inside its space."""
    out = copy.deepcopy(spec.stored(exclude_none=True))  # the same name: one experiment, `sweep history NAME`
    if run_dir is not None:
        out["warm_start"] = {"from_run": str(run_dir.resolve())}
    out["description"] = f"Written by the verdict on sweep '{spec.name}' ({verdict.decision})."
    space = out.get("space", {})
    best = verdict.best.params if verdict.best else {}
    changes = verdict.changes
    for finding in analysis.params:
        entry = space.get(finding.param)
        if entry is None:
            continue
        if finding.status == "blamed" and finding.blame is not None and finding.keep is not None:
            finding = _supported(finding, evidence, analysis, changes)
            if entry["type"] == "categorical":
                kept = [c for c in entry["choices"] if not _blamed(finding, c)]
                if kept and kept != entry["choices"]:
                    changes.append(
                        f"{finding.param}: dropped {finding.blame.label()} (kept {', '.join(map(str, kept))})"
                    )
                    entry["choices"] = kept
            elif entry["type"] in ("float", "int"):
                _cut_range(finding, entry, changes)
                if entry["low"] >= entry["high"]:
                    space[finding.param] = {"type": "fixed", "value": entry["low"]}
            continue
        unimportant = finding.importance is not None and finding.importance < 0.05
        if finding.status == "no_evidence" and unimportant and finding.param in best and not entry.get("when"):
            space[finding.param] = {"type": "fixed", "value": best[finding.param]}
            changes.append(f"{finding.param}: fixed at {best[finding.param]} (no effect, importance < 0.05)")
    _drop_unreachable(space, changes)
    late = [d.number for d in analysis.trials if d.diagnosis == "late_bloomer"]
    pruner = out.get("pruner", {})
    last = max((max(t.curve) for t in evidence.trials if t.status == TrialStatus.COMPLETED and t.curve), default=0)
    if len(late) >= 2 and last:  # pruned while rising: wait longer before judging, never past the last report
        pruned_at = max(max(t.curve) for t in evidence.trials if t.number in late)
        for key, cap in (("warmup_steps", last - 1), ("min_resource", last)):
            if key in pruner:
                pruner[key] = min(max(int(pruner[key]), pruned_at) * 2, cap)
                changes.append(f"pruner.{key}: {pruner[key]} ({len(late)} trials were pruned while rising)")
    diagnosis = {d.number: d.diagnosis for d in analysis.trials}
    sign = spec.objective.direction.sign
    top = sorted(
        (
            t
            for t in evidence.trials
            if t.status == TrialStatus.COMPLETED and t.value is not None and not t.confirmation
        ),
        key=lambda t: -sign * (t.value or 0.0),
    )[:3]
    improving = [t.number for t in top if diagnosis.get(t.number) == "still_improving"]
    max_steps = spec.trial_config({}).optim.max_steps
    if top and len(improving) * 2 >= len(top) and max_steps and "optim.max_steps" not in space:
        out.setdefault("trial", {}).setdefault("optim", {})["max_steps"] = max_steps * 2
        changes.append(f"trial.optim.max_steps: {max_steps * 2} (the best trials {improving} were still improving)")
    return out


def _drop_unreachable(space: dict[str, Any], changes: list[str]) -> None:
    """A conditional parameter whose condition its parent can no longer meet (the parent fixed, or its
    blamed choices dropped) leaves the space: it would never be sampled, and the spec would say so."""

    def can_take(entry: dict[str, Any], value: Any) -> bool:
        if entry["type"] == "fixed":
            return bool(entry["value"] == value)
        if entry["type"] == "categorical":
            return value in entry["choices"]
        if entry["type"] in ("float", "int"):
            return isinstance(value, int | float) and entry["low"] <= value <= entry["high"]
        return True

    for path, entry in list(space.items()):
        for cond, wanted in (entry.get("when") or {}).items():
            options = wanted if isinstance(wanted, list) else [wanted]
            if cond not in space or not any(can_take(space[cond], w) for w in options):
                del space[path]
                changes.append(f"{path}: dropped ({cond} no longer takes {wanted!r})")
                break


def _supported(finding: Any, evidence: Evidence, analysis: Analysis, changes: list[str]) -> Any:
    """The finding with only the blamed stretches of a number the next sweep may cut: one its
    confirmation moved into, or one where at least two of the search's trials failed (a single failed
    trial there may be another parameter's doing)."""
    if not finding.blame.numeric or len(finding.blame.intervals) < 2:
        return finding
    failed = {lab.number for lab in analysis.labels if lab.outcome in ("flat", "diverged")}
    confirmed = finding.confirmation.value if finding.confirmation and finding.confirmation.confirmed else None

    def holds(lo: float, hi: float) -> bool:
        inside = [
            t
            for t in evidence.trials
            if t.number in failed and t.confirmation is None and lo <= float(t.params.get(finding.param, "nan")) <= hi
        ]
        return len(inside) >= 2 or (confirmed is not None and lo <= float(confirmed) <= hi)

    kept = [iv for iv in finding.blame.intervals if holds(*iv)]
    if kept == finding.blame.intervals or not kept:
        return finding
    left = [iv for iv in finding.blame.intervals if iv not in kept]
    changes.append(
        f"{finding.param}: not cut at {', '.join(f'{lo:.3g}..{hi:.3g}' for lo, hi in left)} (one failed trial)"
    )
    return finding.model_copy(update={"blame": finding.blame.model_copy(update={"intervals": kept})})


def _blamed(finding: Any, value: Any) -> bool:
    """Is a choice in the blamed group? Numeric choices were tested as numbers: in a blamed stretch."""
    if finding.blame.numeric:
        return isinstance(value, int | float) and any(lo <= value <= hi for lo, hi in finding.blame.intervals)
    return value in finding.blame.values


def _cut_range(finding: Any, entry: dict[str, Any], changes: list[str]) -> None:
    """Cut a numeric range's blamed ends off: the new range runs over the values that won."""
    assert finding.blame is not None and finding.keep is not None
    tried_low = min(lo for lo, _ in [*finding.blame.intervals, *finding.keep.intervals])
    tried_high = max(hi for _, hi in [*finding.blame.intervals, *finding.keep.intervals])
    win_low, win_high = finding.keep.values
    before = (entry["low"], entry["high"])
    for lo, hi in finding.blame.intervals:
        if lo == tried_low and win_low > entry["low"]:
            entry["low"] = win_low  # the bottom of the range lost
        if hi == tried_high and win_high < entry["high"]:
            entry["high"] = win_high  # the top of the range lost
    if entry["type"] == "int":
        entry["low"], entry["high"] = int(entry["low"]), int(entry["high"])
    if (entry["low"], entry["high"]) != before:
        changes.append(
            f"{finding.param}: {before[0]:.3g}..{before[1]:.3g} -> {entry['low']:.3g}..{entry['high']:.3g} "
            f"(blamed {finding.blame.label()})"
        )


@dataclass
class Report:
    run_dir: Path
    verdict: Verdict
    analysis: Analysis
    files: list[Path]


def _state(target: str, tracking_uri: str | None) -> tuple[Path, RunState]:
    """RUN_DIR (with sweep.json) or an MLflow parent run id -> the run dir and its state."""
    run_dir = Path(target)
    if has_state(run_dir):
        return run_dir, read_state(run_dir)
    from sweep.credentials import mask, resolve
    from sweep.tracking import default_tracking_uri, sweep_state

    uri = resolve(tracking_uri or default_tracking_uri("runs"), "tracking.uri")
    try:
        tags = sweep_state(uri, target)
    except Exception:  # MLflow's own error for an unknown id is a traceback; ours is one line
        raise SpecError(
            [
                f"report: '{target}' is neither a run dir with {STATE_FILE} nor a sweep's MLflow run id in {mask(uri)}; "
                "pass the directory `sweep run` printed, or the parent run id (with --tracking-uri)"
            ]
        ) from None
    run_dir = Path(tags.get("sweep.run_dir", ""))
    if not has_state(run_dir):
        raise SpecError([f"report: run {target}'s run dir '{run_dir}' is gone; report from the machine that ran it"])
    return run_dir, read_state(run_dir)


def make_report(
    target: str | Path,
    *,
    tracking_uri: str | None = None,
    storage: str | None = None,
    echo: Echo = print,
    locked: bool = False,
) -> Report:
    """Gather the evidence, analyze it, judge, register (accept), write and record the report.

    The report writes where the sweep's driver does (report/, the parent run, the registry), so it
    takes the run dir's lock (``locked``: the caller, the sweep's own driver, holds it). It never waits
    for it: while another process holds it (the sweep still runs), the verdict is only printed."""
    from sweep.run.lock import RunDirLock

    run_dir, state = _state(str(target), tracking_uri)
    if locked:
        return _report(target, run_dir, state, tracking_uri, storage, echo, running=None)
    lock = RunDirLock(run_dir)
    running = lock.try_acquire()
    try:
        return _report(target, run_dir, state, tracking_uri, storage, echo, running)
    finally:
        lock.release()


def _report(
    target: str | Path,
    run_dir: Path,
    state: RunState,
    tracking_uri: str | None,
    storage: str | None,
    echo: Echo,
    running: int | None,
) -> Report:
    """``make_report`` past the lock; ``running``: the PID holding the run dir (0: unknown), None when
    this process holds it (then the report is written, registered and recorded)."""
    from sweep import tracking
    from sweep.credentials import resolve
    from sweep.evidence import gather
    from sweep.optuna_study import param_importances
    from sweep.report import render, short_lines

    spec = load_spec(run_dir / SPEC_FILE)
    uri = resolve(tracking_uri or state.tracking_uri, "--tracking-uri")
    parent_id = state.parent_run_id
    study_storage = resolve(storage or state.storage, "--storage")
    evidence, run_ids = gather(spec, study_storage, uri, parent_id, run_dir / SPLIT_FILE)
    parent_tags = tracking.sweep_state(uri, parent_id)
    kept = parent_tags.get("sweep.best_trial", "None")
    best_number = int(kept) if kept.isdigit() else None
    analysis = analyze(
        evidence, lambda points, names: param_importances(spec.space, points, names), best_number=best_number
    )
    verdict = judge(spec, evidence, best_number)
    verdict.next_sweep = next_sweep(spec, evidence, analysis, verdict, run_dir)
    if running is not None:  # the run dir is a running sweep's: its files and record are not ours to write
        for line in short_lines(analysis, verdict):
            echo(line)
        pid = f" (pid {running})" if running else ""
        echo(
            f"provisional: '{run_dir}' is in use by a running sweep{pid}; nothing was written or registered: "
            f"run `sweep report {target}` again once it has ended"
        )
        return Report(run_dir, verdict, analysis, [])
    best = verdict.best
    if verdict.decision == "accept" and best is not None:
        run_id = run_ids.get(best.number)
        if run_id is None or not tracking.has_model(uri, run_id):
            verdict.reasons.append("no model to register: the sweep kept none (execution.save_best_model)")
        else:
            verdict.registered = tracking.register_candidate(
                uri,
                spec.acceptance.model_name or spec.name,
                run_id,
                parent_id,
                {
                    "config": json.dumps(spec.trial_config(best.params).model_dump(mode="json"))[:5000],
                    spec.objective.metric: str(best.value),
                    "data.fingerprint": parent_tags.get("data.fingerprint", ""),
                    "split.fingerprint": parent_tags.get("split.fingerprint", ""),
                    "sweep.name": spec.name,
                },
                f"Trial {best.number} of sweep '{spec.name}': " + "; ".join(verdict.reasons),
            )
    out = run_dir / REPORT_DIR
    out.mkdir(exist_ok=True)
    files = render(out, spec, evidence, analysis, verdict)
    tags = {"verdict": verdict.decision, "blame.top": analysis.blame_top}
    for f in analysis.params:
        if f.keep is not None:
            tags[f"keep.{f.param}"] = f.keep.label()
        if f.blame is not None:
            tags[f"blame.{f.param}"] = f.blame.label()
            tags[f"blame.{f.param}.evidence"] = f.evidence_kind
        if f.status == "suspect":
            tags[f"suspect.{f.param}"] = f.sentence[:5000]
    if verdict.registered:
        tags["verdict.registered_model"] = f"{verdict.registered[0]}/{verdict.registered[1]}"
    metrics = {f"importance.{f.param}": f.importance for f in analysis.params if f.importance is not None}
    tracking.record_verdict(uri, parent_id, tags, metrics, files)
    for line in short_lines(analysis, verdict):
        echo(line)
    echo(f"report: {out / 'report.html'}")
    return Report(run_dir, verdict, analysis, files)
