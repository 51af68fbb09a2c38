"""Blame and keep: which meta-parameters won, which lost, what each trial's curves say, and what the
data itself says. The sweep's verdict is built on this analysis.

The pieces: each trial's outcome against the chance level (``sweep.outcomes``), one permutation test per
parameter (``sweep.findings``), the confirmation trials' causal answers (``sweep.confirm``), and here
the data checks and the part of the loop to blame first. Pure analysis over plain data (no Ray, no
MLflow); parameter importance (fANOVA) comes in through a function the Optuna adapter provides.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sweep import confirm
from sweep.evidence import Evidence, TrialHistory
from sweep.findings import (
    ALPHA,
    SUSPECT_P,
    ParamFinding,
    apply_confirmation,
    param_findings,
    publish,
    searched_params,
)
from sweep.outcomes import (
    TrialDiagnosis,
    TrialLabel,
    chance_level,
    common_step,
    diagnose,
    fmt,
    is_proportion,
    label_trials,
    measurement_noise,
    scored_rows,
    scores_at,
)
from sweep.status import TrialStatus

ImportanceFn = Callable[[Sequence[tuple[dict[str, Any], float]], Sequence[str]], dict[str, float]]
"""(params, value) points and the parameter names -> importance per parameter (summing to 1)."""

METHOD = (
    "Each trial is labelled by whether it left the chance level (the best constant guess fitted on the training "
    "rows, scored on the validation rows) by more than 3 validation standard errors: learned, flat, diverged, "
    "or censored (pruned at chance before any winner had left it; left out). Per parameter, every window of "
    "its tried values (or each categorical value) is compared with the rest by a rank-sum statistic, on "
    "learned-vs-not and on the scores with failed trials below learned ones; the most extreme window's p-value "
    "is that maximum's tail under random permutations of the outcomes over the trials (Monte Carlo, +1 "
    "corrected), so the choice of window is paid for, and Holm's step-down controls the family-wise error "
    f"over the parameters at {ALPHA}. A parameter that fades among another's winners while the other holds "
    f"among its own is that one's doing. Unadjusted p < {SUSPECT_P} makes a suspect. Suspects (and, in spare "
    "slots, the most suggestive of the rest) are tested by confirmation trials: the best configuration with "
    "only that parameter moved to a value that failed in the search, same seed; a moved configuration that "
    "does not learn confirms the blame, for that seed (one ablation, no p-value of its own). Why not fANOVA or "
    "PED-ANOVA alone: at 8-30 trials they rank parameters but give no error rate, and a learning rate that "
    "either learns or does not is a step, which a test on learned-vs-not catches with the fewest trials. The "
    "posterior P(win > lose) is Beta(1+k, 1+n-k) on each side of the split the test chose (after the fact). "
    "Caveat: TPE samples where trials did well, so later trials are not exchangeable and a bystander can look "
    "related (Moosbauer et al. 2021): observed findings say so, confirmed ones rest on the ablation."
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataCheck(_Model):
    name: str
    ok: bool
    detail: str


class Comparison(_Model):
    best: int
    runner_up: int
    difference: float
    half_width: float | None
    distinguishable: bool | None
    text: str


class Analysis(_Model):
    objective: str
    direction: str
    common_step: int | None
    method: str
    evidence: str
    num_trials: dict[str, int]
    params: list[ParamFinding]
    trials: list[TrialDiagnosis]
    labels: list[TrialLabel] = Field(default_factory=list)
    data: list[DataCheck]
    comparison: Comparison | None
    blame_top: str
    blame_reason: str
    chance: float | None = Field(None, description="The objective of a model that learned nothing.")
    noise: float = Field(description="One validation measurement's standard error, in the objective.")
    confirmations_planned: list[confirm.PlannedTrial] = Field(
        default_factory=list, description="Confirmations the search's findings ask for and no trial ran yet."
    )


def data_checks(evidence: Evidence) -> list[DataCheck]:
    data = evidence.data
    checks = []
    if data.class_counts:
        total = sum(data.class_counts.values())
        name, most = max(data.class_counts.items(), key=lambda kv: kv[1])
        share = most / total if total else 0.0
        balanced = share <= 0.75
        shown = ", ".join(f"{k}: {v}" for k, v in data.class_counts.items())
        detail = f"training rows per class {shown}; '{name}' is {share:.0%}"
        if not balanced:
            detail += "; accuracy rewards always answering it: compare on val_f1_macro, try loss class_weighted/focal"
        checks.append(DataCheck(name="class_balance", ok=balanced, detail=detail))
    learned = [t.class_recall for t in evidence.trials if t.status == TrialStatus.COMPLETED and t.class_recall]
    if learned and data.label_names:
        never = []
        for label_id, name in enumerate(data.label_names):
            seen = [r[str(label_id)] for r in learned if str(label_id) in r]
            if seen and max(seen) <= 0.1:  # a label absent from validation says nothing
                never.append(f"'{name}' (best recall {max(seen):.2f})")
        checks.append(
            DataCheck(
                name="unlearned_labels",
                ok=not never,
                detail=(
                    f"no completed trial learns {', '.join(never)}: check those rows' labels, or weigh the class "
                    "(loss class_weighted / focal)"
                    if never
                    else f"every label is recalled above 0.1 by some completed trial ({len(learned)} trials)"
                ),
            )
        )
    dup = data.num_val_duplicates
    share = dup / data.num_val if data.num_val else 0.0
    checks.append(
        DataCheck(
            name="duplicates_across_split",
            ok=dup == 0,
            detail=(
                f"{dup} of {data.num_val} validation rows ({share:.0%}) also appear in training: validation "
                "overstates what the model learned; deduplicate the data"
                if dup
                else f"no validation row appears in training ({data.num_val} checked)"
            ),
        )
    )
    return checks


def compare_best(evidence: Evidence, sign: float) -> Comparison | None:
    """Best vs runner-up among completed trials, with the validation set's interval on the difference."""
    done = sorted(
        (t for t in evidence.trials if t.status == TrialStatus.COMPLETED and t.value is not None),
        key=lambda t: -sign * (t.value or 0.0),
    )
    if len(done) < 2:
        return None
    best, second = done[0], done[1]
    assert best.value is not None and second.value is not None
    diff = best.value - second.value
    half = None
    if is_proportion(evidence.objective) and evidence.data.num_val:
        n = scored_rows(evidence)
        p1, p2 = (float(np.clip(v, 0, 1)) for v in (best.value, second.value))
        half = 1.96 * math.sqrt(p1 * (1 - p1) / n + p2 * (1 - p2) / n)
    distinguishable = None if half is None else abs(diff) > half
    if half is None:
        text = f"trial {best.number} beats trial {second.number} by {abs(diff):.3g} (no interval for this metric)"
    else:
        judged = "distinguishable" if distinguishable else "not distinguishable"
        text = (
            f"trial {best.number} beats trial {second.number} by {abs(diff):.3g} ± {half:.3g} "
            f"on {scored_rows(evidence)} validation rows: {judged}"
        )
    return Comparison(
        best=best.number,
        runner_up=second.number,
        difference=diff,
        half_width=half,
        distinguishable=distinguishable,
        text=text,
    )


def _top_component(
    findings: Sequence[ParamFinding], diagnoses: Sequence[TrialDiagnosis], checks: Sequence[DataCheck], num_scored: int
) -> tuple[str, str]:
    """The part of the loop most likely to blame, with its evidence."""
    votes: dict[str, float] = {}
    why: dict[str, list[str]] = {}

    def vote(component: str, weight: float, reason: str) -> None:
        votes[component] = votes.get(component, 0.0) + weight
        why.setdefault(component, []).append(reason)

    blamed = [f for f in findings if f.status == "blamed"]
    for f in blamed:
        weight = 2.0 if f.evidence_kind == "confirmed" else 1.5
        said = f.confirmation.text if f.confirmation is not None and f.confirmation.confirmed else f.sentence
        vote(f.component, weight + (f.importance or 0.0), f"{f.param}: {said}")
    kinds = [d.diagnosis for d in diagnoses]
    total = max(1, num_scored)
    if kinds.count("diverged"):
        vote("learning_rate", kinds.count("diverged") / total, f"{kinds.count('diverged')} trial(s) diverged")
    if kinds.count("still_improving"):
        vote(
            "learning_rate",
            kinds.count("still_improving") / total,
            f"{kinds.count('still_improving')} trial(s) still improving at their last step",
        )
    late = kinds.count("late_bloomer")
    if late >= 2:
        vote("pruning", late / total, f"{late} pruned trial(s) were above chance, rising and level with the winners")
    if not blamed and kinds.count("flat") > total / 2:
        vote("data", kinds.count("flat") / total, f"{kinds.count('flat')} of {total} trials learned nothing")
    weights = {"duplicates_across_split": 1.5, "unlearned_labels": 1.0, "class_balance": 0.5}
    for check in checks:  # validation_size says how sure the ranking is, not what is wrong
        if not check.ok and check.name in weights:
            vote("data", weights[check.name], check.detail)
    if not votes:
        return "none", "no parameter loses beyond chance and no curve or data check points anywhere"
    top = max(votes, key=lambda c: votes[c])
    return top, "; ".join(why[top])


def _confirm(
    evidence: Evidence, findings: Sequence[ParamFinding], labels: Mapping[int, TrialLabel], sign: float
) -> None:
    """Each confirmation trial's answer onto its parameter's finding."""
    by_number = {t.number: t for t in evidence.trials}
    by_param = {f.param: f for f in findings}
    floor = confirm.learned_floor(evidence.trials, labels)
    for t in evidence.trials:
        c = t.confirmation
        if c is None or c.param not in by_param or c.of not in by_number:
            continue
        incumbent = by_number[c.of]
        at = sign * labels[c.of].score if c.of in labels else None
        finding = by_param[c.param]
        result = confirm.judge(
            t, labels.get(t.number), incumbent, labels.get(c.of), sign, measurement_noise(evidence, at), floor
        )
        if finding.confirmation is None or (finding.confirmation.confirmed is None and result.confirmed is not None):
            apply_confirmation(finding, result)


def best_search_trial(evidence: Evidence, sign: float, best_number: int | None = None) -> TrialHistory | None:
    """The trial the sweep kept (``best_number``) unless that is a confirmation, else the best completed
    search trial."""
    done = [t for t in evidence.trials if t.status == TrialStatus.COMPLETED and t.value is not None]
    search = [t for t in done if t.confirmation is None]  # an ablation is never the one ablated
    kept = [t for t in search if t.number == best_number]
    if kept:
        return kept[0]
    return max(search, key=lambda t: (sign * (t.value or 0.0), -t.number)) if search else None


def analyze(
    evidence: Evidence,
    importance_fn: ImportanceFn | None = None,
    *,
    confirm_budget: int = 0,
    best_number: int | None = None,
) -> Analysis:
    """The whole analysis; with ``confirm_budget``, up to that many new confirmations are planned
    (``Analysis.confirmations_planned``, none for a parameter confirmed already) from the best trial
    (``best_number``, else the best completed)."""
    sign = evidence.direction.sign
    counts: dict[str, int] = {}
    for t in evidence.trials:
        counts[t.status] = counts.get(t.status, 0) + 1
    step = common_step(evidence.trials)
    folds = evidence.data.num_folds > 1
    scores = scores_at(evidence.trials, step, sign, folds) if step is not None else {}
    labels = label_trials(evidence, scores, sign)
    typical = float(np.median([sign * v for v in scores.values()])) if scores else None
    noise = measurement_noise(evidence, typical)
    findings = param_findings(evidence, labels, sign, noise)
    method = METHOD
    searched = searched_params(evidence)
    search_scores = {n: s for n, s in scores.items() if labels.get(n) is None or labels[n].outcome != "censored"}
    search_scores = {n: s for n, s in search_scores.items() if _trial(evidence, n).confirmation is None}
    if importance_fn is not None and len(search_scores) >= 4 and searched:
        importance = _importances(evidence, search_scores, searched, importance_fn)
        for f in findings:
            f.importance = importance.get(f.param)
        method += " Importance (a ranking, no test): Optuna's fANOVA on the compared scores."
    _confirm(evidence, findings, labels, sign)
    best = best_search_trial(evidence, sign, best_number)
    done_confirmations = [t.confirmation for t in evidence.trials if t.confirmation is not None]
    planned = confirm.plan(evidence, findings, labels, best, confirm_budget, done_confirmations)
    for f in findings:
        publish(f)
    outcomes = [lab.outcome for lab in labels.values()]
    chance = chance_level(evidence)
    evidence_text = (
        f"{len(labels)} trials with a result ("
        + ", ".join(f"{outcomes.count(k)} {k}" for k in ("learned", "flat", "diverged", "censored") if k in outcomes)
        + f"), compared at step {step}, pruned ones at the step they reached; "
        + (f"chance level {fmt(chance)}; " if chance is not None else "no chance level for this metric; ")
        + f"one validation measurement's noise ±{noise:.3g}"
    )
    done = [t for t in evidence.trials if t.status == TrialStatus.COMPLETED and t.value is not None]
    winners = sorted((t for t in done if t.confirmation is None), key=lambda t: -sign * (t.value or 0.0))[:3]
    diagnoses = [
        diagnose(t, labels.get(t.number), sign, evidence, winners, "learned" in outcomes)
        for t in evidence.trials
        if not t.status.left_no_result
    ]
    checks = data_checks(evidence)
    comparison = compare_best(evidence, sign)
    if comparison is not None and comparison.distinguishable is not None:
        checks.append(DataCheck(name="validation_size", ok=bool(comparison.distinguishable), detail=comparison.text))
    top, reason = _top_component(findings, diagnoses, checks, len(scores))
    return Analysis(
        objective=evidence.objective,
        direction=evidence.direction,
        common_step=step,
        method=method,
        evidence=evidence_text,
        num_trials=counts,
        params=findings,
        trials=diagnoses,
        labels=sorted(labels.values(), key=lambda lab: lab.number),
        data=checks,
        comparison=comparison,
        blame_top=top,
        blame_reason=reason,
        chance=chance,
        noise=noise,
        confirmations_planned=planned,
    )


def _trial(evidence: Evidence, number: int) -> TrialHistory:
    return next(t for t in evidence.trials if t.number == number)


def _importances(
    evidence: Evidence, scores: Mapping[int, float], searched: Sequence[str], importance_fn: ImportanceFn
) -> dict[str, float]:
    """Importance of every searched parameter: unconditional ones over all compared trials, each
    conditional one over the trials where it applies (beside the unconditional ones)."""
    by_number = {t.number: t for t in evidence.trials}
    unconditional = [p for p in searched if not evidence.space[p].get("when")]

    def points(names: Sequence[str]) -> list[tuple[dict[str, Any], float]]:
        return [
            ({p: by_number[n].params[p] for p in names}, score)
            for n, score in scores.items()
            if all(p in by_number[n].params for p in names)
        ]

    out: dict[str, float] = {}
    if unconditional and len(base := points(unconditional)) >= 4:
        out.update(importance_fn(base, unconditional))
    for p in searched:
        if p not in unconditional and len(sub := points([*unconditional, p])) >= 4:
            out[p] = importance_fn(sub, [*unconditional, p]).get(p, 0.0)
    return out
