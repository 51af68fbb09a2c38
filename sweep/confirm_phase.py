"""The sweep's confirmation phase: once the search has ended, its evidence is read back from the record
(as the verdict reads it), the confirmations its findings ask for are planned (``sweep.confirm``) and
queued in the study, and the runner runs them on Ray like any trial: recorded in MLflow, told to
Optuna, tagged as confirmations. A resumed sweep runs what is still queued, and plans only what its
budget has left."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sweep.spec import SweepSpec

Echo = Callable[[str], None]


def queue_confirmations(
    spec: SweepSpec,
    bridge: object,
    *,
    storage: str,
    tracking_uri: str,
    parent_id: str,
    split_file: Path | None,
    best_number: int | None,
    num_left: int,
    echo: Echo,
) -> int:
    """Plan and queue up to ``num_left`` confirmations (those queued already count among them);
    returns how many confirmation trials are queued in all."""
    from sweep.blame import analyze
    from sweep.evidence import gather
    from sweep.optuna_study import StudyBridge

    assert isinstance(bridge, StudyBridge)
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
        echo(
            "confirmation: none needed (no parameter is suspected, or the best configuration is in every blamed region)"
        )
    return queued + len(analysis.confirmations_planned)
