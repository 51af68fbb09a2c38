"""The sweep's confirmation phase: once the search has ended, its evidence is read back from the record
(as the verdict reads it), the confirmations its findings ask for are planned (``sweep.confirm``) and
queued in the study, and they run on Ray like any trial: recorded in MLflow, told to Optuna, tagged as
confirmations. Slots no finding needs search on. A resumed sweep runs what is still queued, and plans
only what its budget has left."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sweep import credentials
from sweep.run_dir import SPLIT_FILE
from sweep.spec import SweepSpec

if TYPE_CHECKING:
    from sweep.observer import Progress, SweepObserver, TrialRecord
    from sweep.optuna_study import StudyBridge
    from sweep.run.startup import Opened

Echo = Callable[[str], None]


def run(
    spec: SweepSpec,
    opened: Opened,
    best: TrialRecord | None,
    observer: SweepObserver,
    progress: Progress,
    num_slots: int,
    time_left_s: float | None,
    tuner_args: dict[str, Any],
    echo: Echo,
) -> None:
    """Plan and queue the confirmations, then run ``num_slots`` trials on Ray: the confirmations first,
    the slots they leave searching on (the budget is a number of trials, whatever they do)."""
    from sweep.observer import LiveView
    from sweep.ray import tuner as ray_tuner

    if time_left_s is not None and time_left_s <= 0:
        echo(f"confirmation: none, the time budget ran out in the search ({num_slots} slots unused)")
        return
    recorder = opened.recorder
    assert recorder.parent_id is not None
    if opened.bridge.shared:  # another sweep's ask could take a queued confirmation
        num = 0
        echo("confirmation: none in a study other sweeps share; the slots search on")
    else:
        split = opened.run_dir / SPLIT_FILE
        num = queue(
            spec,
            opened.bridge,
            storage=credentials.resolve(opened.stored_storage, "execution.storage"),
            tracking_uri=recorder.uri,
            parent_id=recorder.parent_id,
            split_file=split if split.is_file() else None,
            best_number=best.number if best else None,
            num_left=num_slots,
            echo=echo,
        )
    if num < num_slots:
        echo(f"confirmation: {num_slots - num} of the {num_slots} slots unneeded: they search on")
    with progress if isinstance(progress, LiveView) else contextlib.nullcontext():
        ray_tuner.run_tuner(
            spec,
            opened.bridge,
            observer,
            num_trials=num_slots,
            name="confirm",
            time_budget_s=time_left_s,
            **tuner_args,
        )


def queue(
    spec: SweepSpec,
    bridge: StudyBridge,
    *,
    storage: str,
    tracking_uri: str,
    parent_id: str,
    split_file: Any,
    best_number: int | None,
    num_left: int,
    echo: Echo,
) -> int:
    """Plan and queue up to ``num_left`` confirmations (those queued already count among them);
    returns how many confirmation trials are queued in all."""
    from sweep.blame import analyze
    from sweep.evidence import gather

    queued = bridge.queued_confirmations()
    if num_left - queued <= 0:
        return queued
    evidence, _ = gather(spec, storage, tracking_uri, parent_id, split_file)
    analysis = analyze(evidence, confirm_budget=num_left - queued, best_number=best_number)
    findings = {f.param: f for f in analysis.params}
    for planned in analysis.confirmations_planned:
        bridge.enqueue_confirmation(planned.params, planned.confirmation.model_dump(mode="json"))
        finding = findings.get(planned.confirmation.param)
        why = f" — {finding.sentence}" if finding is not None and finding.sentence else ""
        echo(f"confirmation: {planned.reason}{why}")
    if not analysis.confirmations_planned and queued == 0:
        echo("confirmation: none needed (no parameter is suspected, or the best sits in every blamed region)")
    return queued + len(analysis.confirmations_planned)
