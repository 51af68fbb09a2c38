"""Confirmation trials: after the search, the best configuration is run again with one suspected
parameter moved into the region its finding blames, everything else (the seed included) unchanged.
The pair answers causally what the search's trials could only suggest: "the best configuration with
learning rate 1e-4 instead of 3e-3: 0.56 vs 0.85".

Pure planning and judging (no Ray, no Optuna): the runner enqueues the planned configurations as real
trials, and the verdict reads them back from the study.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from sweep.evidence import Confirmation, Evidence, TrialHistory
from sweep.findings import ConfirmationResult, ParamFinding, searched_params
from sweep.outcomes import TrialLabel, fmt
from sweep.status import TrialStatus


class PlannedTrial(BaseModel):
    """One confirmation to run: the parameters to enqueue and what it tests."""

    model_config = ConfigDict(extra="forbid")
    params: dict[str, Any]
    confirmation: Confirmation
    reason: str


def _in_blamed(finding: ParamFinding, value: Any) -> bool:
    blame = finding.blame
    if blame is None:
        return True  # nothing to move into
    if blame.numeric:
        return any(lo <= float(value) <= hi for lo, hi in blame.intervals)
    return value in blame.values


def _typical_loser(
    finding: ParamFinding, trials: Sequence[TrialHistory], labels: Mapping[int, TrialLabel]
) -> Any | None:
    """A value the losing group actually tried: the median of its failed trials' values (of its largest
    stretch, for a number), so the confirmation repeats a typical failure, not a borderline one."""
    losing = [
        t.params[finding.param]
        for t in trials
        if finding.param in t.params
        and t.number in labels
        and labels[t.number].outcome != "censored"
        and _in_blamed(finding, t.params[finding.param])
    ]
    if not losing:
        return None
    failed = [
        t.params[finding.param]
        for t in trials
        if t.number in labels
        and labels[t.number].outcome in ("flat", "diverged")
        and finding.param in t.params
        and t.params[finding.param] in losing
    ]
    pool = failed or losing
    assert finding.blame is not None
    if finding.blame.numeric:
        stretches = [[v for v in pool if lo <= float(v) <= hi] for lo, hi in finding.blame.intervals]
        largest = max(stretches, key=len)  # (the lower one on a tie: intervals run low to high)
        ordered = sorted(largest)
        return ordered[(len(ordered) - 1) // 2]
    counts = {v: pool.count(v) for v in pool}
    return max(counts, key=lambda v: (counts[v], str(v)))


def plan(
    evidence: Evidence,
    findings: Sequence[ParamFinding],
    labels: Mapping[int, TrialLabel],
    best: TrialHistory | None,
    budget: int,
    done: Sequence[Confirmation] = (),
) -> list[PlannedTrial]:
    """Up to ``budget`` confirmations from the best completed trial: blamed and suspected parameters by
    p-value, then the others whose losing side failed somewhere; parameters ``done`` already are not
    planned again."""
    if best is None or budget <= 0 or labels.get(best.number) is None or labels[best.number].outcome != "learned":
        return []
    searched = set(searched_params(evidence))
    search_trials = [t for t in evidence.trials if t.confirmation is None]
    tried = {c.param for c in done}
    out: list[PlannedTrial] = []
    suspected = sorted(
        (f for f in findings if f.status in ("blamed", "suspect") and f.blame is not None),
        key=lambda f: f.p_value if f.p_value is not None else 1.0,
    )
    # a slot no suspect needs goes to the most suggestive of the rest whose losing side holds a failed
    # trial: an ablation is evidence of its own, where the search's few trials could not say
    spare = sorted(
        (
            f
            for f in findings
            if f.status == "no_evidence" and f.blame is not None and f.blame.num_learned < f.blame.count
        ),
        key=lambda f: f.p_value if f.p_value is not None else 1.0,
    )
    for finding in [*suspected, *spare]:
        if len(out) >= budget:
            break
        if (
            finding.param in tried
            or finding.param not in best.params
            or _in_blamed(finding, best.params[finding.param])
        ):
            continue
        value = _typical_loser(finding, search_trials, labels)
        if value is None:
            continue
        params = {p: v for p, v in best.params.items() if p in searched}
        params[finding.param] = value
        out.append(
            PlannedTrial(
                params=params,
                confirmation=Confirmation(param=finding.param, value=value, of=best.number),
                reason=f"trial {best.number} with {finding.param} = {fmt(value)} instead of "
                f"{fmt(best.params[finding.param])}",
            )
        )
    return out


def judge(
    trial: TrialHistory,
    label: TrialLabel | None,
    incumbent: TrialHistory,
    incumbent_label: TrialLabel | None,
    sign: float,
    noise: float,
    floor: float | None,
) -> ConfirmationResult:
    """Did moving the parameter make the best configuration fail? Confirmed when the incumbent learned
    and the moved one did not (flat, diverged), or when it scored below ``floor`` (the worst learned
    trial of the search, ``learned_floor``) by more than twice the validation noise. Not a drop from
    the incumbent's own score: the incumbent is the best of many, so a re-run of it, or of anything
    near it, scores lower by selection alone."""
    c = trial.confirmation
    assert c is not None
    inc_score = incumbent_label.score if incumbent_label is not None else sign * (incumbent.value or 0.0)
    moved = f"the best configuration (trial {incumbent.number}) with {c.param} = {fmt(c.value)}"
    ended = trial.status in (TrialStatus.COMPLETED, TrialStatus.DIVERGED)  # ran its steps, or blew up
    if label is None or label.outcome == "censored" or not ended:
        return ConfirmationResult(
            trial=trial.number,
            value=c.value,
            incumbent=incumbent.number,
            incumbent_score=sign * inc_score,
            score=None,
            outcome="no result" if label is None else label.outcome,
            confirmed=None,
            text=f"{moved}: no result ({trial.status}), nothing confirmed",
        )
    failed = label.outcome in ("flat", "diverged")
    learned = incumbent_label is not None and incumbent_label.outcome == "learned"
    below = floor is not None and label.score < floor - 2 * noise
    confirmed = learned and (failed or below)
    shown = "diverged" if label.outcome == "diverged" else fmt(sign * label.score)
    if failed:
        how = "it did not learn"
    elif floor is None:
        how = "it learned"
    else:
        how = f"{'below' if below else 'not below'} every learned trial of the search ({fmt(sign * floor)}) by 2 sigma"
    verdict = "confirmed" if confirmed else "not confirmed"
    return ConfirmationResult(
        trial=trial.number,
        value=c.value,
        incumbent=incumbent.number,
        incumbent_score=sign * inc_score,
        score=None if label.outcome == "diverged" else sign * label.score,
        outcome=label.outcome,
        confirmed=confirmed,
        text=f"{moved} instead of {fmt(incumbent.params.get(c.param))}: {shown} vs {fmt(sign * inc_score)}, "
        f"{how}: {verdict} (trial {trial.number})",
    )


def learned_floor(trials: Sequence[TrialHistory], labels: Mapping[int, TrialLabel]) -> float | None:
    """The lowest score of any learned trial of the search: a moved configuration that learned must
    score below all of them to show an effect (the winning side alone can be one or two lucky trials)."""
    scores = [
        labels[t.number].score
        for t in trials
        if t.confirmation is None and t.number in labels and labels[t.number].outcome == "learned"
    ]
    return min(scores) if scores else None
