"""Blame and keep: which meta-parameters won, which lost, and what each trial's curves say.

Pure analysis over trial histories (no Ray, no MLflow): the evidence comes in as plain data, the
parameter importance through a function the Optuna adapter provides. Every claim carries its evidence
(trials, step, interval); a parameter is blamed only when its effect is outside both the between-trial
spread (a bootstrap interval) and the validation set's own noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sweep.status import TrialStatus

PROPORTION_METRICS = ("accuracy", "f1", "exact_match", "recall", "precision")
"""Objectives that are proportions of validation rows: their noise is binomial in the validation size."""

COMPONENTS = {
    "optim.learning_rate": "learning_rate",
    "optim.schedule": "learning_rate",
    "optim.warmup_ratio": "learning_rate",
    "optim.max_steps": "learning_rate",
    "optim.num_epochs": "learning_rate",
    "model.": "structure",
    "adaptation.": "structure",
    "loss.": "loss",
    "data.": "data",
    "split.": "data",
}
"""Which part of the classic loop a parameter belongs to (what gets the blame)."""

MIN_IMPORTANCE = 0.05
"""Below this share of the objective's variance (fANOVA), a parameter is neither kept nor blamed: a
difference between its groups is the other parameters' doing, seen through a small sample."""

ImportanceFn = Callable[[Sequence[tuple[dict[str, Any], float]], Sequence[str]], dict[str, float]]
"""(params, value) points and the parameter names -> importance per parameter (summing to 1)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrialHistory(_Model):
    """One trial as the record has it."""

    number: int
    status: TrialStatus
    params: dict[str, Any]
    curve: dict[int, float] = Field(default_factory=dict, description="The objective at each reported step.")
    train_loss: dict[int, float] = Field(default_factory=dict)
    val_loss: dict[int, float] = Field(default_factory=dict)
    value: float | None = Field(None, description="Final objective of a completed trial.")
    test_value: float | None = None
    secondary_value: float | None = None
    class_recall: dict[str, float] = Field(default_factory=dict, description="Final recall per label id.")
    last_step: int | None = Field(None, description="The step of the final report when the trial runs to its end.")
    diverged_step: int | None = None


class DataFacts(_Model):
    task: str
    num_train: int
    num_val: int
    num_test: int = 0
    class_counts: dict[str, int] = Field(default_factory=dict, description="Training rows per class.")
    label_names: list[str] = Field(default_factory=list, description="Class names by label id.")
    num_val_duplicates: int = Field(0, description="Validation rows whose text also is a training row.")
    num_scored: int | None = Field(None, description="Validation rows the objective scores (exact match: fewer).")
    num_folds: int = Field(1, description="k-fold trials report once per fold (step = fold index).")


class Evidence(_Model):
    sweep: str
    objective: str
    direction: Literal["minimize", "maximize"]
    trials: list[TrialHistory]
    data: DataFacts
    space: dict[str, dict[str, Any]] = Field(default_factory=dict, description="The spec's space section.")


class Range(_Model):
    values: list[Any] = Field(description="The values (categorical) or [low, high] (numeric) of the group.")
    numeric: bool
    mean: float
    count: int

    def label(self) -> str:
        if self.numeric:
            low, high = self.values
            return f"{_fmt(low)}..{_fmt(high)}" if low != high else _fmt(low)
        return ", ".join(_fmt(v) for v in self.values)


class ParamFinding(_Model):
    param: str
    component: str
    importance: float | None
    keep: Range | None = None
    blame: Range | None = None
    effect: float | None = Field(
        None, description="Blamed (or else kept) group minus the rest, other parameters' effects taken out."
    )
    interval: tuple[float, float] | None = Field(
        None, description="Where 95% of that difference falls when the parameter has no effect (permutations)."
    )
    p_value: float | None = None
    num_trials: int = 0
    note: str = ""


class TrialDiagnosis(_Model):
    number: int
    status: str
    diagnosis: Literal["diverged", "still_improving", "overfit", "flat", "late_bloomer", "ok"]
    reason: str


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
    data: list[DataCheck]
    comparison: Comparison | None
    blame_top: str
    blame_reason: str
    noise: float = Field(description="One validation measurement's standard error, in the objective.")


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def component_of(param: str) -> str:
    for prefix, component in COMPONENTS.items():
        if param == prefix or (prefix.endswith(".") and param.startswith(prefix)):
            return component
    return "other"


def is_proportion(metric: str) -> bool:
    return any(word in metric for word in PROPORTION_METRICS)


# --- values at a common step --------------------------------------------------------------------


def _value_at(curve: Mapping[int, float], step: int) -> float | None:
    reached = [s for s in curve if s <= step]
    return curve[max(reached)] if reached else None


def common_step(trials: Sequence[TrialHistory]) -> int | None:
    """The step trials are compared at: the last step of the trials that ran to their end. A trial
    stopped earlier (pruned, out of time) counts with its value at the last step it reached, as the
    pruner judged it; ``late_bloomer`` diagnoses say where that judgement looks premature."""
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
        value = float(np.mean(list(t.curve.values()))) if folds and t.curve else _value_at(t.curve, step)
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


def _scored_rows(data: DataFacts) -> int:
    """Rows behind one value of the objective: a k-fold value is a mean over every fold's rows."""
    return (data.num_scored or data.num_val) * data.num_folds


def measurement_noise(evidence: Evidence, scores: Mapping[int, float], sign: float) -> float:
    """The standard error of one validation measurement: binomial in the validation size for
    proportions, else the eval-to-eval jitter of completed trials' last evaluations."""
    n = _scored_rows(evidence.data)
    if is_proportion(evidence.objective) and n > 0 and scores:
        p = float(np.clip(np.mean([sign * s for s in scores.values()]), 0.05, 0.95))
        return math.sqrt(p * (1 - p) / n)
    jitter = [
        abs(t.curve[steps[-1]] - t.curve[steps[-2]])
        for t in evidence.trials
        if t.status == TrialStatus.COMPLETED and len(steps := sorted(t.curve)) >= 2
    ]
    return float(np.median(jitter)) / math.sqrt(2) if jitter else 0.0


# --- per-parameter keep / blame -------------------------------------------------------------------


def _groups(param: str, spec: Mapping[str, Any], values: dict[int, Any]) -> list[tuple[Range, list[int]]]:
    """Trials grouped by the parameter's value: each choice, or low / middle / high thirds of a range."""
    kind = spec.get("type")
    distinct = sorted({v for v in values.values()}, key=lambda v: (str(type(v)), v))
    numeric = (kind == "float" and len(distinct) >= 4) or (kind == "int" and len(distinct) > 4)
    out: list[tuple[Range, list[int]]] = []
    if not numeric:
        for value in distinct:
            members = [n for n, v in values.items() if v == value]
            out.append((Range(values=[value], numeric=False, mean=0.0, count=len(members)), members))
        return out
    log = bool(spec.get("log"))
    order = sorted(values, key=lambda n: math.log(values[n]) if log else values[n])
    for part in np.array_split(np.array(order), 3 if len(order) >= 6 else 2):
        members = [int(n) for n in part]
        if members:
            vals = [values[n] for n in members]
            out.append((Range(values=[min(vals), max(vals)], numeric=True, mean=0.0, count=len(members)), members))
    return out


def _fit_additive(y: np.ndarray, labels: np.ndarray, rounds: int = 15) -> np.ndarray:
    """Backfitting of an additive model of group means: ``labels`` is (parameters, trials) of group
    indices; returns each parameter's fitted effect per trial, (parameters, trials)."""
    effects = np.zeros(labels.shape)
    residual = y - y.mean()
    for _ in range(rounds):
        for p in range(labels.shape[0]):
            partial = residual + effects[p]
            sums = np.bincount(labels[p], weights=partial)
            counts = np.bincount(labels[p])
            means = np.divide(sums, counts, out=np.zeros(len(sums)), where=counts > 0)
            fitted = means[labels[p]]
            fitted -= fitted.mean()
            residual = partial - fitted
            effects[p] = fitted
    return effects


def _candidates(
    groups: list[tuple[Range, list[int]]], values: Mapping[int, Any], log: bool
) -> list[tuple[Range, list[int]]]:
    """The groups a parameter is judged by: each value, or for a range its lower and upper third and
    half (a learning rate is blamed as "above x", not as one bin of three)."""
    if not groups or not groups[0][0].numeric:
        return [(r, m) for r, m in groups if len(m) >= 2]
    order = sorted(values, key=lambda n: math.log(values[n]) if log else values[n])
    out = []
    for size in sorted({len(order) // 3, len(order) // 2}):
        for members in (order[:size], order[-size:]):
            if len(members) >= 2:
                vals = [values[n] for n in members]
                out.append((Range(values=[min(vals), max(vals)], numeric=True, mean=0.0, count=len(members)), members))
    return out


def _extremes(adjusted: np.ndarray, masks: list[np.ndarray]) -> tuple[float, float, int, int]:
    """(worst group - rest, best group - rest, worst index, best index) over the candidate groups."""
    diffs = [float(adjusted[m].mean() - adjusted[~m].mean()) for m in masks]
    worst, best = int(np.argmin(diffs)), int(np.argmax(diffs))
    return diffs[worst], diffs[best], worst, best


def param_findings(
    evidence: Evidence,
    scores: Mapping[int, float],
    noise: float,
    importance: Mapping[str, float],
    sign: float,
) -> list[ParamFinding]:
    """Keep / blame / no evidence for every searched parameter (fixed ones have nothing to say).

    Each parameter is judged on scores with the other parameters' effects taken out (an additive model
    of group effects): parameters sampled together are correlated by chance in a small sweep, and by
    design under TPE, and raw scores would blame a bystander for the learning rate's doing. Its best and
    worst groups are tested against the rest by permutation (its values shuffled across trials, the
    model refitted), Bonferroni-corrected over the parameters, and must also exceed the validation
    set's own noise.
    """
    searched = [p for p, s in evidence.space.items() if s.get("type") not in ("fixed", "tied")]
    alpha = 0.05 / max(1, 2 * len(searched))  # Bonferroni over the parameters, and keep vs blame each
    max_permutations = max(400, math.ceil(20 / alpha))  # enough that p < alpha can be seen at all
    rng = np.random.default_rng(0)
    numbers = list(scores)
    y = np.array([scores[n] for n in numbers])
    by_param: dict[str, list[tuple[Range, list[int]]]] = {}
    labels = np.zeros((len(searched), len(numbers)), dtype=int)
    for i, param in enumerate(searched):
        values = {t.number: t.params[param] for t in evidence.trials if param in t.params and t.number in scores}
        groups = [(r, m) for r, m in _groups(param, evidence.space[param], values) if m]
        by_param[param] = groups
        group_of = {n: g for g, (_, members) in enumerate(groups) for n in members}
        labels[i] = [group_of.get(n, len(groups)) for n in numbers]  # absent (conditional): its own group
    effects = _fit_additive(y, labels) if len(numbers) else labels.astype(float)
    findings = []
    for i, param in enumerate(searched):
        groups = by_param[param]
        finding = ParamFinding(
            param=param,
            component=component_of(param),
            importance=importance.get(param),
            num_trials=sum(len(m) for _, m in groups),
        )
        for group, members in groups:
            group.mean = sign * float(np.mean([scores[n] for n in members]))
        spec = evidence.space[param]
        values = {n: t.params[param] for t in evidence.trials if (n := t.number) in scores and param in t.params}
        candidates = _candidates(groups, values, bool(spec.get("log")))
        index = {n: k for k, n in enumerate(numbers)}
        masks = [np.isin(np.arange(len(numbers)), [index[n] for n in members]) for _, members in candidates]
        masks = [m for m in masks if 0 < m.sum() < len(numbers)]
        if len(groups) < 2 or not masks:
            finding.note = "too few trials per value to compare"
            findings.append(finding)
            continue
        adjusted = y - (effects.sum(0) - effects[i])
        worst, best, worst_k, best_k = _extremes(adjusted, masks)
        present = labels[i] < len(groups)  # a conditional parameter's values move only where it applies
        null_worst, null_best = [], []
        for start in range(0, max_permutations, 100):  # stop early once a test is clearly out of reach
            for _ in range(100):
                shuffled = labels.copy()
                order = np.arange(len(numbers))
                order[present] = rng.permutation(order[present])
                shuffled[i] = labels[i][order]
                refit = _fit_additive(y, shuffled)
                w, b, _, _ = _extremes(y - (refit.sum(0) - refit[i]), [m[order] for m in masks])
                null_worst.append(w)
                null_best.append(b)
            n = len(null_worst)
            exceed = (sum(x <= worst for x in null_worst), sum(x >= best for x in null_best))
            # each side decided: clearly not significant (5 exceedances), or clearly significant
            if start >= 100 and all(k >= 5 or (1 + k) / (1 + n) < alpha / 3 for k in exceed):
                break
        count = len(null_worst)
        p_worst = (1 + sum(w <= worst for w in null_worst)) / (1 + count)
        p_best = (1 + sum(b >= best for b in null_best)) / (1 + count)

        def floor(k: int, masks: list[np.ndarray] = masks) -> float:
            inside = int(masks[k].sum())
            return 2 * noise * math.sqrt(1 / inside + 1 / max(1, len(numbers) - inside))

        if worst < 0 and p_worst < alpha and -worst > floor(worst_k):
            finding.blame, finding.effect = candidates[worst_k][0], sign * worst
            finding.interval = (
                sign * float(np.quantile(null_worst, 0.025)),
                sign * float(np.quantile(null_worst, 0.975)),
            )
        if best > 0 and p_best < alpha and best > floor(best_k):
            finding.keep = candidates[best_k][0]
            if finding.blame is None:
                finding.effect = sign * best
                finding.interval = (
                    sign * float(np.quantile(null_best, 0.025)),
                    sign * float(np.quantile(null_best, 0.975)),
                )
        finding.p_value = min(p_worst, p_best)
        if finding.importance is not None and finding.importance < MIN_IMPORTANCE:
            finding.keep = finding.blame = finding.effect = finding.interval = None
            finding.note = f"importance {finding.importance:.2g} < {MIN_IMPORTANCE}: no effect beyond the others'"
        elif finding.keep is None and finding.blame is None:
            finding.note = f"effect within noise (permutation p = {finding.p_value:.2g}, needs < {alpha:.2g})"
        findings.append(finding)
    return findings


# --- per-trial curves -------------------------------------------------------------------------------


def diagnose(
    t: TrialHistory, sign: float, noise: float, winners: Sequence[TrialHistory], folds: bool = False
) -> TrialDiagnosis:
    """What a trial's curves say: diverged, still improving, overfit, flat, a late bloomer, or ok.
    A k-fold trial's "curve" runs over folds, not steps: only divergence is read from it."""
    steps = sorted(t.curve)

    def verdict(kind: Any, reason: str) -> TrialDiagnosis:
        return TrialDiagnosis(number=t.number, status=t.status, diagnosis=kind, reason=reason)

    if t.status == TrialStatus.DIVERGED:
        lr = t.params.get("optim.learning_rate")
        at = f" at step {t.diverged_step}" if t.diverged_step else ""
        return verdict(
            "diverged",
            f"loss became NaN/inf{at}" + (f" with learning rate {lr:.3g}" if lr else "") + ": learning rate too high",
        )
    if folds:
        return verdict("ok", "")
    if len(steps) >= 2:
        values = np.array([sign * t.curve[s] for s in steps])
        tol = max(2 * noise, 1e-9)
        train = [t.train_loss[s] for s in sorted(t.train_loss)]
        train_flat = len(train) < 2 or abs(train[-1] - train[0]) <= 0.02 * max(abs(train[0]), 1e-9)
        ran_to_end = t.status == TrialStatus.COMPLETED or (t.last_step is not None and steps[-1] >= t.last_step)
        if ran_to_end and np.ptp(values) <= tol and train_flat:
            return verdict(
                "flat",
                "neither the objective nor the training loss moved: no learning at all "
                "(suspect the data, the structure, or a learning rate far too low)",
            )
        vl = [t.val_loss[s] for s in sorted(t.val_loss)]
        if len(vl) >= 3 and len(train) >= 3:
            low_at = int(np.argmin(vl))
            if low_at < len(vl) - 1 and vl[-1] > vl[low_at] * 1.05 and train[-1] < train[low_at]:
                return verdict(
                    "overfit",
                    f"validation loss rose from {vl[low_at]:.3g} to {vl[-1]:.3g} while the "
                    "training loss kept falling: the train-validation gap grows",
                )
        if t.status == TrialStatus.COMPLETED and values[-1] - values[-2] > tol:
            return verdict(
                "still_improving",
                f"still improving at its last step {steps[-1]} "
                f"({_fmt(t.curve[steps[-2]])} -> {_fmt(t.curve[steps[-1]])}): "
                "learning rate too low or too few steps",
            )
    if t.status == TrialStatus.PRUNED and steps and winners:
        last = steps[-1]
        theirs = [sign * w.curve[s] for w in winners if (s := last) in w.curve]
        if theirs and sign * t.curve[last] >= float(np.median(theirs)) - 2 * noise:
            return verdict(
                "late_bloomer",
                f"pruned at step {last} with {_fmt(t.curve[last])}, within noise of the "
                "eventual winners at the same step: pruned too early",
            )
    return verdict("ok", "")


# --- data checks ------------------------------------------------------------------------------------


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
        n = _scored_rows(evidence.data)
        p1, p2 = (float(np.clip(v, 0, 1)) for v in (best.value, second.value))
        half = 1.96 * math.sqrt(p1 * (1 - p1) / n + p2 * (1 - p2) / n)
    distinguishable = None if half is None else abs(diff) > half
    if half is None:
        text = f"trial {best.number} beats trial {second.number} by {abs(diff):.3g} (no interval for this metric)"
    else:
        judged = "distinguishable" if distinguishable else "not distinguishable"
        text = (
            f"trial {best.number} beats trial {second.number} by {abs(diff):.3g} ± {half:.3g} "
            f"on {_scored_rows(evidence.data)} validation rows: {judged}"
        )
    return Comparison(
        best=best.number,
        runner_up=second.number,
        difference=diff,
        half_width=half,
        distinguishable=distinguishable,
        text=text,
    )


# --- the whole analysis -----------------------------------------------------------------------------


def _top_component(
    findings: Sequence[ParamFinding], diagnoses: Sequence[TrialDiagnosis], checks: Sequence[DataCheck], num_scored: int
) -> tuple[str, str]:
    """The part of the loop most likely to blame, with its evidence."""
    votes: dict[str, float] = {}
    why: dict[str, list[str]] = {}

    def vote(component: str, weight: float, reason: str) -> None:
        votes[component] = votes.get(component, 0.0) + weight
        why.setdefault(component, []).append(reason)

    for f in findings:
        if f.blame is not None:
            vote(f.component, 1.0 + (f.importance or 0.0), f"{f.param} = {f.blame.label()} loses ({_fmt(f.effect)})")
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
        vote("pruning", late / total, f"{late} pruned trial(s) were level with the eventual winners when pruned")
    if kinds.count("flat") > total / 2:
        vote("data", kinds.count("flat") / total, f"{kinds.count('flat')} of {total} trials learned nothing")
    weights = {"duplicates_across_split": 1.5, "unlearned_labels": 1.0, "class_balance": 0.5}
    for check in checks:  # validation_size says how sure the ranking is, not what is wrong
        if not check.ok and check.name in weights:
            vote("data", weights[check.name], check.detail)
    if not votes:
        return "none", "no parameter loses beyond noise and no curve or data check points anywhere"
    top = max(votes, key=lambda c: votes[c])
    return top, "; ".join(why[top])


def analyze(evidence: Evidence, importance_fn: ImportanceFn | None = None) -> Analysis:
    sign = 1.0 if evidence.direction == "maximize" else -1.0
    counts: dict[str, int] = {}
    for t in evidence.trials:
        counts[t.status] = counts.get(t.status, 0) + 1
    step = common_step(evidence.trials)
    folds = evidence.data.num_folds > 1
    scores = scores_at(evidence.trials, step, sign, folds) if step is not None else {}
    noise = measurement_noise(evidence, scores, sign)
    importance: dict[str, float] = {}
    method = "none (fewer than 4 trials to compare)"
    searched = [p for p, s in evidence.space.items() if s.get("type") not in ("fixed", "tied")]
    if importance_fn is not None and len(scores) >= 4 and searched:
        importance = _importances(evidence, scores, searched, importance_fn)
        method = (
            f"fANOVA (Optuna) on the objective at step {step} (a pruned trial at the last step it reached, "
            "a diverged one below every value seen); "
            "a conditional parameter is weighed among the trials where it applies"
        )
    evidence_text = (
        f"{len(scores)} trials compared at step {step}, pruned ones at the step they reached ("
        + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        + f"); one validation measurement's noise ±{noise:.3g}"
    )
    findings = param_findings(evidence, scores, noise, importance, sign) if scores else []
    done = [t for t in evidence.trials if t.status == TrialStatus.COMPLETED and t.value is not None]
    winners = sorted(done, key=lambda t: -sign * (t.value or 0.0))[:3]
    diagnoses = [diagnose(t, sign, noise, winners, folds) for t in evidence.trials if not t.status.left_no_result]
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
        data=checks,
        comparison=comparison,
        blame_top=top,
        blame_reason=reason,
        noise=noise,
    )


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
