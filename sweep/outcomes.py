"""What each trial's curve says: did it learn at all, and what went wrong with it.

A trial *learned* when its objective left the chance level (the score of the best constant guess,
computed from the data) by more than the validation set's noise. The rest failed in one of a few ways:
``flat`` (never left chance while other trials did, by the same step), ``diverged`` (NaN/inf loss), or
``censored`` (pruned at chance before any winner had left it: nothing is known). These labels, not the
raw scores, carry most of the evidence at the sizes people sweep (8-30 trials), where a learning rate
or a structure either lets a trial learn or does not.

Pure analysis: plain data in (``sweep.evidence``), labels and diagnoses out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from sweep.evidence import Evidence, TrialHistory
from sweep.status import TrialStatus

PROPORTION_METRICS = ("accuracy", "f1", "exact_match", "recall", "precision")
"""Objectives that are proportions of validation rows: their noise is binomial in the validation size."""

LEFT_CHANCE_SIGMAS = 3.0
"""How far (in validation standard errors) a trial must rise above chance to count as learned. A
curve is looked at several times, so one look's 2 sigma would call a flat trial learned too often."""

Outcome = Literal["learned", "flat", "diverged", "censored"]
Diagnosis = Literal["diverged", "still_improving", "overfit", "flat", "late_bloomer", "censored", "ok"]


class TrialLabel(BaseModel):
    """One trial's outcome, as the blame tests use it."""

    model_config = ConfigDict(extra="forbid")
    number: int
    outcome: Outcome
    score: float  # signed (higher is better) objective at the compared step; diverged: below all
    best: float | None  # signed best value it reported
    left_at: int | None  # the first step it was above chance by the margin


class TrialDiagnosis(BaseModel):
    model_config = ConfigDict(extra="forbid")
    number: int
    status: str
    diagnosis: Diagnosis
    reason: str


def fmt(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def is_proportion(metric: str) -> bool:
    return any(word in metric for word in PROPORTION_METRICS)


def scored_rows(evidence: Evidence) -> int:
    """Rows behind one value of the objective: a k-fold value is a mean over every fold's rows."""
    return (evidence.data.num_scored or evidence.data.num_val) * evidence.data.num_folds


def chance_level(evidence: Evidence) -> float | None:
    """The objective of a model that learned nothing, where the data defines one."""
    return evidence.data.chance.get(evidence.objective)


# --- values at a common step --------------------------------------------------------------------


def value_at(curve: Mapping[int, float], step: int) -> float | None:
    reached = [s for s in curve if s <= step]
    return curve[max(reached)] if reached else None


def common_step(trials: Sequence[TrialHistory]) -> int | None:
    """The step trials are compared at: the last step of the trials that ran to their end. A trial
    stopped earlier (pruned, out of time) counts with its value at the last step it reached, as the
    pruner judged it."""
    reported = [t for t in trials if t.curve and not t.status.left_no_result and t.status != TrialStatus.DIVERGED]
    finished = [max(t.curve) for t in reported if t.status == TrialStatus.COMPLETED]
    ends = finished or [max(t.curve) for t in reported]
    return max(ends) if ends else None


def scores_at(trials: Sequence[TrialHistory], step: int, sign: float, folds: bool = False) -> dict[int, float]:
    """Objective at ``step`` per trial, signed so that higher is better. A diverged trial counts as
    worse than anything any trial ever reported (it left nothing usable). With ``folds`` the curve is
    one value per fold: a trial counts with the mean over the folds it ran."""
    scores = {}
    for t in trials:
        if t.status.left_no_result:
            continue
        value = float(np.mean(list(t.curve.values()))) if folds and t.curve else value_at(t.curve, step)
        if value is not None and math.isfinite(value) and t.status != TrialStatus.DIVERGED:
            scores[t.number] = sign * value
    seen = [sign * v for t in trials if t.status != TrialStatus.DIVERGED for v in t.curve.values() if math.isfinite(v)]
    if seen:
        floor = min(seen) - 0.1 * ((max(seen) - min(seen)) or 1.0)
        for t in trials:
            if t.status == TrialStatus.DIVERGED:
                scores[t.number] = floor
    return scores


# --- noise ----------------------------------------------------------------------------------------


def measurement_noise(evidence: Evidence, at: float | None = None) -> float:
    """The standard error of one validation measurement of the objective near the value ``at``:
    binomial in the validation size for proportions, else the eval-to-eval jitter of completed
    trials' last evaluations."""
    n = scored_rows(evidence)
    if is_proportion(evidence.objective) and n > 0:
        p = float(np.clip(0.5 if at is None else at, 0.05, 0.95))
        return math.sqrt(p * (1 - p) / n)
    jitter = [
        abs(t.curve[steps[-1]] - t.curve[steps[-2]])
        for t in evidence.trials
        if t.status == TrialStatus.COMPLETED and len(steps := sorted(t.curve)) >= 2
    ]
    return float(np.median(jitter)) / math.sqrt(2) if jitter else 0.0


def chance_margin(evidence: Evidence) -> float:
    """How far above chance counts as having left it (in the objective's units)."""
    chance = chance_level(evidence)
    noise = measurement_noise(evidence, chance)
    floor = 0.02 * abs(chance) if chance is not None and not is_proportion(evidence.objective) else 0.0
    return max(LEFT_CHANCE_SIGMAS * noise, floor, 1e-9)


# --- labels ---------------------------------------------------------------------------------------


def _first_left(t: TrialHistory, sign: float, chance: float, margin: float, folds: bool) -> int | None:
    if folds:
        mean = float(np.mean(list(t.curve.values()))) if t.curve else None
        return 0 if mean is not None and sign * (mean - chance) > margin else None
    for step in sorted(t.curve):
        value = t.curve[step]
        if math.isfinite(value) and sign * (value - chance) > margin:
            return step
    return None


def label_trials(evidence: Evidence, scores: Mapping[int, float], sign: float) -> dict[int, TrialLabel]:
    """Every trial with a result, labelled learned / flat / diverged / censored.

    Without a chance level (a metric the data gives no floor for) every trial with a result counts as
    learned: the tests then rank the scores alone. A trial stopped at chance counts as ``flat`` only
    where at least half of the learned trials had left chance by that step; before that, nothing is
    known about it (``censored``, left out of the tests).
    """
    chance = chance_level(evidence)
    margin = chance_margin(evidence)
    folds = evidence.data.num_folds > 1
    left: dict[int, int | None] = {}
    for t in evidence.trials:
        if t.number in scores and t.status != TrialStatus.DIVERGED:
            left[t.number] = 0 if chance is None else _first_left(t, sign, chance, margin, folds)
    learned_at = sorted(s for s in left.values() if s is not None)
    labels = {}
    for t in evidence.trials:
        if t.number not in scores:
            continue
        finite = [sign * v for v in t.curve.values() if math.isfinite(v)]
        best = max(finite) if finite else None
        outcome: Outcome
        if t.status == TrialStatus.DIVERGED:
            outcome = "diverged"
        elif left.get(t.number) is not None:
            outcome = "learned"
        elif t.status == TrialStatus.COMPLETED or folds:
            outcome = "flat"
        else:  # stopped early at chance: flat only if the learned trials had mostly left chance by then
            reached = max(t.curve) if t.curve else 0
            before = sum(1 for s in learned_at if s <= reached)
            outcome = "flat" if learned_at and before * 2 >= len(learned_at) else "censored"
        labels[t.number] = TrialLabel(
            number=t.number, outcome=outcome, score=scores[t.number], best=best, left_at=left.get(t.number)
        )
    return labels


# --- diagnoses ------------------------------------------------------------------------------------


def diagnose(
    t: TrialHistory,
    label: TrialLabel | None,
    sign: float,
    evidence: Evidence,
    winners: Sequence[TrialHistory],
    any_learned: bool = True,
) -> TrialDiagnosis:
    """What a trial's curves say: diverged, flat, a late bloomer, overfit, still improving, censored or
    ok. A k-fold trial's "curve" runs over folds, not steps: only its outcome is read from it.
    ``any_learned``: some trial of the sweep learned."""
    steps = sorted(t.curve)
    chance = chance_level(evidence)
    noise = measurement_noise(evidence, None if label is None or label.best is None else sign * label.best)

    def said(kind: Diagnosis, reason: str) -> TrialDiagnosis:
        return TrialDiagnosis(number=t.number, status=t.status, diagnosis=kind, reason=reason)

    if t.status == TrialStatus.DIVERGED:
        lr = t.params.get("optim.learning_rate")
        at = f" at step {t.diverged_step}" if t.diverged_step else ""
        return said(
            "diverged",
            f"loss became NaN/inf{at}" + (f" with learning rate {lr:.3g}" if lr else "") + ": learning rate too high",
        )
    if label is not None and label.outcome == "flat" and chance is not None:
        where = (
            "ran to its end" if t.status == TrialStatus.COMPLETED else f"stopped at step {steps[-1] if steps else 0}"
        )
        return said(
            "flat",
            f"never left the chance level {fmt(chance)} (best {fmt(sign * (label.best or 0.0))}; {where})"
            + (" while other trials had by then" if any_learned else "")
            + ": it learned nothing (suspect a learning rate too low, the structure, the loss)",
        )
    if label is not None and label.outcome == "censored":
        return said(
            "censored",
            f"pruned at step {steps[-1] if steps else 0} at the chance level {fmt(chance)}, before any trial that "
            "learned had left it: undecided, left out of the blame tests",
        )
    if evidence.data.num_folds > 1:
        return said("ok", "")
    if len(steps) >= 2:
        values = np.array([sign * t.curve[s] for s in steps])
        tol = max(2 * noise, 1e-9)
        train = [t.train_loss[s] for s in sorted(t.train_loss)]
        vl = [t.val_loss[s] for s in sorted(t.val_loss)]
        if len(vl) >= 3 and len(train) >= 3:
            low_at = int(np.argmin(vl))
            if low_at < len(vl) - 1 and vl[-1] > vl[low_at] * 1.05 and train[-1] < train[low_at]:
                return said(
                    "overfit",
                    f"validation loss rose from {vl[low_at]:.3g} to {vl[-1]:.3g} while the "
                    "training loss kept falling: the train-validation gap grows",
                )
        if t.status == TrialStatus.COMPLETED and values[-1] - values[-2] > tol:
            return said(
                "still_improving",
                f"still improving at its last step {steps[-1]} "
                f"({fmt(t.curve[steps[-2]])} -> {fmt(t.curve[steps[-1]])}): "
                "learning rate too low or too few steps",
            )
    if t.status == TrialStatus.PRUNED and steps and winners and label is not None and label.outcome == "learned":
        last = steps[-1]
        rising = len(steps) < 2 or sign * (t.curve[last] - t.curve[steps[-2]]) > 0
        theirs = [sign * w.curve[last] for w in winners if last in w.curve and w.number != t.number]
        level = sign * t.curve[last] >= float(np.median(theirs)) - 2 * noise if theirs else False
        if rising and level:
            return said(
                "late_bloomer",
                f"pruned at step {last} with {fmt(t.curve[last])}, above chance, rising, and level with the "
                "eventual winners at that step: pruned too early",
            )
    return said("ok", "")
