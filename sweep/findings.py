"""Which meta-parameters lost, which won: one permutation test per searched parameter, small enough to have
power at 8-30 trials, honest about the search having looked at several splits.

Method (why, in short; the report says it too). Trials are ordered two ways: learned or not, and every
trial that failed (flat or diverged) below every trial that learned, then by score. For each parameter
the candidate groups are windows of its tried values (numeric: "x <= a", "x >= b", and "a <= x <= b"
as the winner) or its values (categorical). Each group is compared with the rest by a standardized
rank sum; the parameter's statistic is the most extreme over its groups, both orderings and the
allowed directions, and its p-value is that maximum's tail under random permutations of the outcomes
over the trials (Monte Carlo, NUM_PERMUTATIONS draws, +1-corrected: a valid p, not an exact one; the
selection over groups is inside it, as in Westfall-Young's max-T). Holm's step-down then controls the
family-wise error over the parameters (a Bonferroni over parameters x sides x windows would ask, at
8 trials, for a p no 8 trials can give).

A step effect with perfect separation, 5 failed below 3 learned, gives p = 1/C(8,3) ~ 0.018 before
the adjustments: short of significance at 8 trials. What is suggestive but not significant becomes a
*suspect*, which the verdict's confirmation trials test causally (``sweep.confirm``).

Caveat: TPE's later trials are not exchangeable (it samples where trials did well), which makes a
bystander parameter look related to the outcome (Moosbauer et al., 2021). Observed findings are
labelled as such; confirmed ones rest on a controlled ablation instead.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.special import betaln
from scipy.stats import rankdata

from sweep.evidence import Evidence, TrialHistory
from sweep.outcomes import TrialLabel, fmt

ALPHA = 0.05
"""Family-wise error rate over the searched parameters (Holm)."""

SUSPECT_P = 0.3
"""Unadjusted p below which a parameter not yet blamed is worth a confirmation trial."""

NUM_PERMUTATIONS = 2000

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


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Range(_Model):
    values: list[Any] = Field(description="The values (categorical) or [lowest, highest] (numeric) of the group.")
    numeric: bool
    intervals: list[tuple[float, float]] = Field(
        default_factory=list, description="Numeric: the group's contiguous stretches of tried values, low to high."
    )
    mean: float = Field(0.0, description="Mean objective of the group's trials.")
    count: int
    num_learned: int = 0

    def label(self) -> str:
        if self.numeric:
            return ", ".join(f"{fmt(lo)}..{fmt(hi)}" if lo != hi else fmt(lo) for lo, hi in self.intervals)
        return ", ".join(fmt(v) for v in self.values)


class ConfirmationResult(_Model):
    """A confirmation trial's answer (``sweep.confirm``)."""

    trial: int
    value: Any
    incumbent: int
    incumbent_score: float
    score: float | None
    outcome: str
    confirmed: bool | None = Field(description="None: the trial left no result.")
    text: str


class ParamFinding(_Model):
    param: str
    component: str
    status: Literal["blamed", "suspect", "no_evidence"] = "no_evidence"
    importance: float | None = None
    keep: Range | None = None
    blame: Range | None = None
    effect: float | None = Field(None, description="Mean objective of the losing group minus the rest.")
    p_value: float | None = Field(None, description="Exact permutation p of the parameter's best split.")
    p_adjusted: float | None = Field(None, description="Holm-adjusted over the searched parameters.")
    posterior: float | None = Field(
        None, description="P(the winning side learns more often than the losing side), uniform Beta priors."
    )
    num_trials: int = 0
    sentence: str = ""
    evidence_kind: Literal["observed", "confirmed", "none"] = "none"
    confirmation: ConfirmationResult | None = None
    note: str = ""


def component_of(param: str) -> str:
    for prefix, component in COMPONENTS.items():
        if param == prefix or (prefix.endswith(".") and param.startswith(prefix)):
            return component
    return "other"


def searched_params(evidence: Evidence) -> list[str]:
    return [p for p, s in evidence.space.items() if s.get("type") not in ("fixed", "tied")]


# --- candidate groups -----------------------------------------------------------------------------


def _is_numeric(spec: Mapping[str, Any], values: Sequence[Any]) -> bool:
    if spec.get("type") in ("float", "int"):
        return True
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _groups(spec: Mapping[str, Any], values: list[Any]) -> tuple[bool, list[np.ndarray], np.ndarray]:
    """Masks over the trials, and for each the directions it may take (+1: the group wins, -1: it
    loses, 0: either). Numeric: each lower and upper tail ("x <= a", "x >= b"), either way, and each
    inner window ("a <= x <= b") as the winner only, so a learning rate that fails at both ends is one
    finding (a middle that loses while both ends win is no shape a meta-parameter has). Categorical:
    each value against the rest, either way."""
    numeric = _is_numeric(spec, values) and len(set(values)) >= 2
    # numbers in numeric order (choices mixing 0 and 0.01 included); other values in a stable order
    distinct = sorted(set(values), key=float) if numeric else sorted(set(values), key=lambda v: (str(type(v)), v))
    masks, directions = [], []
    if numeric:
        x = np.array(values, dtype=float)
        for i, lo in enumerate(distinct):
            for j in range(i, len(distinct)):
                tail = i == 0 or j == len(distinct) - 1
                masks.append((x >= lo) & (x <= distinct[j]))
                directions.append(0 if tail else 1)
    else:
        arr = np.array(values, dtype=object)
        masks = [arr == v for v in distinct]
        directions = [0] * len(masks)
    n = len(values)
    keep = [k for k, m in enumerate(masks) if 0 < m.sum() < n]
    return numeric, [masks[k].astype(bool) for k in keep], np.array([directions[k] for k in keep])


def _zscores(ranks: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Standardized rank sums of each group (rows of ``masks``) for each row of ``ranks``: positive
    when the group ranks above the rest (0 where every rank ties)."""
    n = ranks.shape[-1]
    m = masks.sum(axis=1)
    expected = m * (n + 1) / 2
    sd = np.sqrt(m * (n - m) * (n + 1) / 12)
    return (ranks @ masks.T - expected) / sd


def _keys(labels: Sequence[TrialLabel]) -> np.ndarray:
    """Two orderings of the trials, tested together: learned or not (ties within each: the step
    effect, where scores among the learned are noise), and the full order (failed below learned, then
    by score: graded effects among trials that all learned)."""
    learned = np.array([1.0 if lab.outcome == "learned" else 0.0 for lab in labels])
    by_score = rankdata([lab.score for lab in labels])  # 1..n: below any learned trial's offset of n + 1
    return np.array([rankdata(learned), rankdata(learned * (len(labels) + 1) + by_score)])


def _statistic(keys: np.ndarray, masks: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``keys`` (orderings x permutations x trials): the largest allowed |z| over groups and
    orderings, and its index (ordering * groups + group), signed z kept where the direction allows."""
    z = _zscores(keys, masks)  # (..., groups)
    allowed = np.where(directions == 0, np.abs(z), np.where(np.sign(z) == directions, np.abs(z), 0.0))
    flat = np.moveaxis(allowed, 0, -2).reshape(*allowed.shape[1:-1], -1)  # orderings folded into groups
    return flat.max(axis=-1), flat.argmax(axis=-1)


def prob_greater(k1: int, n1: int, k2: int, n2: int) -> float:
    """P(p1 > p2) for p_i ~ Beta(1 + k_i, 1 + n_i - k_i): exact (Evan Miller's closed form)."""
    a1, b1, a2, b2 = 1 + k1, 1 + n1 - k1, 1 + k2, 1 + n2 - k2
    total = 0.0
    for i in range(a1):
        total += math.exp(betaln(a2 + i, b1 + b2) - math.log(b1 + i) - betaln(1 + i, b1) - betaln(a2, b2))
    return float(min(1.0, max(0.0, total)))


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm's step-down adjusted p-values."""
    order = sorted(p_values, key=lambda k: p_values[k])
    m, running, out = len(order), 0.0, {}
    for i, key in enumerate(order):
        running = max(running, min(1.0, (m - i) * p_values[key]))
        out[key] = running
    return out


# --- one parameter --------------------------------------------------------------------------------


def _test_param(
    param: str,
    spec: Mapping[str, Any],
    trials: list[TrialHistory],
    labels: list[TrialLabel],
    sign: float,
    strata: np.ndarray | None = None,
) -> ParamFinding:
    """One parameter's test; with ``strata`` (a group per trial) the outcomes are permuted within each
    group only: the parameter's effect with the other parameter that defines the groups held fixed."""
    finding = ParamFinding(param=param, component=component_of(param), num_trials=len(labels))
    values = [t.params[param] for t in trials]
    if len(labels) < 4 or len(set(values)) < 2:
        finding.note = f"too few trials to compare ({len(labels)} with a result, {len(set(values))} values)"
        return finding
    numeric, masks, directions = _groups(spec, values)
    if not masks:
        finding.note = "too few trials per value to compare"
        return finding
    mask_arr = np.array(masks, dtype=float)
    keys = _keys(labels)
    statistic, index = _statistic(keys[:, None, :], mask_arr, directions)
    rng = np.random.default_rng(zlib.crc32(param.encode()))
    orders = np.tile(np.arange(len(labels)), (NUM_PERMUTATIONS, 1))
    for group in [np.arange(len(labels))] if strata is None else [np.flatnonzero(strata == g) for g in set(strata)]:
        orders[:, group] = group[rng.permuted(np.tile(np.arange(len(group)), (NUM_PERMUTATIONS, 1)), axis=1)]
    null, _ = _statistic(keys[:, orders], mask_arr, directions)  # the same permutation for both orderings
    finding.p_value = float((1 + np.sum(null >= statistic[0] - 1e-9)) / (1 + NUM_PERMUTATIONS))
    # the group shown: learned-vs-not's best where that is (nearly) the strongest split (a step effect
    # is stated in counts, not stretched by noisy scores), else the scores' best (a graded effect)
    binary, binary_g = _statistic(keys[:1, None, :], mask_arr, directions)
    near = binary[0] >= 0.8 * statistic[0]
    ordering, g = (0, int(binary_g[0])) if near else divmod(int(index[0]), len(masks))
    z = float(_zscores(keys[ordering][None, :], mask_arr[g][None, :])[0, 0])
    losing = masks[g] if z < 0 else ~masks[g]  # the side that ranks lower
    finding.blame, finding.keep = (
        _range(values, losing, labels, numeric, sign),
        _range(values, ~losing, labels, numeric, sign),
    )
    finding.effect = sign * (finding.blame.mean - finding.keep.mean)
    k_lose, n_lose = finding.blame.num_learned, finding.blame.count
    k_win, n_win = finding.keep.num_learned, finding.keep.count
    finding.posterior = prob_greater(k_win, n_win, k_lose, n_lose)
    finding.sentence = _sentence(param, numeric, values, losing, labels, sign)
    return finding


def _stretches(values: list[Any], mask: np.ndarray) -> list[list[int]]:
    """The group's trials (indices) in runs of consecutive tried values, low to high."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    runs: list[list[int]] = []
    inside = False
    for i in order:
        if mask[i]:
            if not inside:
                runs.append([])
            runs[-1].append(i)
        # equal values share a mask, so a run only breaks at a trial outside the group
        inside = bool(mask[i])
    return runs


def _range(values: list[Any], mask: np.ndarray, labels: list[TrialLabel], numeric: bool, sign: float) -> Range:
    members = [v for v, m in zip(values, mask, strict=True) if m]
    scores = [lab.score for lab, m in zip(labels, mask, strict=True) if m]
    learned = sum(1 for lab, m in zip(labels, mask, strict=True) if m and lab.outcome == "learned")
    shown = [min(members), max(members)] if numeric else sorted(set(members), key=str)
    intervals = (
        [(float(min(values[i] for i in run)), float(max(values[i] for i in run))) for run in _stretches(values, mask)]
        if numeric
        else []
    )
    return Range(
        values=shown,
        numeric=numeric,
        intervals=intervals,
        mean=sign * float(np.mean(scores)),
        count=len(members),
        num_learned=learned,
    )


def _side(labels: list[TrialLabel], mask: np.ndarray, sign: float) -> str:
    """'0 of 5 trials left chance level' or '3 of 3 learned, scores 0.94-0.95'."""
    chosen = [lab for lab, m in zip(labels, mask, strict=True) if m]
    learned = [lab for lab in chosen if lab.outcome == "learned"]
    n = len(chosen)
    trials = "trial" if n == 1 else "trials"
    if not learned:
        diverged = sum(1 for lab in chosen if lab.outcome == "diverged")
        how = f" ({diverged} diverged)" if diverged else ""
        return f"0 of {n} {trials} left chance level{how}"
    scores = sorted(sign * lab.score for lab in learned)
    span = fmt(scores[0]) if len(scores) == 1 else f"{fmt(scores[0])}-{fmt(scores[-1])}"
    return f"{len(learned)} of {n} {trials} learned (scores {span})"


def _sentence(
    param: str, numeric: bool, values: list[Any], losing: np.ndarray, labels: list[TrialLabel], sign: float
) -> str:
    """Each side with its counts, low to high for a number: "learning rate <= 0.0004: 0 of 5 trials
    left chance level; 0.0016..0.0021: 3 of 3 trials learned (scores 0.94-1)"."""
    name = param.split(".")[-1].replace("_", " ")
    if not numeric:
        lose_set = ", ".join(sorted({fmt(v) for v, m in zip(values, losing, strict=True) if m}))
        return f"{name} = {lose_set}: {_side(labels, losing, sign)}; other values: {_side(labels, ~losing, sign)}"
    lowest, highest = min(values), max(values)
    parts = []
    for side in (losing, ~losing):
        for run in _stretches(values, side):
            lo, hi = min(values[i] for i in run), max(values[i] for i in run)
            where = f"<= {fmt(hi)}" if lo == lowest else f">= {fmt(lo)}" if hi == highest else f"{fmt(lo)}..{fmt(hi)}"
            mask = np.zeros(len(values), dtype=bool)
            mask[run] = True
            parts.append((lo, f"{where}: {_side(labels, mask, sign)}"))
    parts.sort(key=lambda p: p[0])
    return f"{name} " + "; ".join(text for _, text in parts)


# --- every parameter ------------------------------------------------------------------------------


def param_findings(
    evidence: Evidence, labels: Mapping[int, TrialLabel], sign: float, noise: float
) -> list[ParamFinding]:
    """Blame / suspect / no evidence for every searched parameter, from the search's trials
    (confirmation trials are not a random sample and are judged apart). Censored trials sit out.

    Parameters sampled together share their trials' outcomes: TPE samples a bystander's values where
    the real cause's good values were, and a bystander then looks related. So each pair of significant
    parameters is tested again, each with the other held fixed (outcomes permuted within the other's
    winning and losing sides): one that fades (p >= ALPHA), and more than the other does, was the
    other's doing (gone: no evidence; weaker: a suspect); where neither can be tested so, both stay.
    The rest are tested with the strongest parameter held fixed too; a suggestive result there makes
    a suspect (masked by that parameter's failures), for a confirmation to decide.
    """
    by_number = {t.number: t for t in evidence.trials}
    searched = searched_params(evidence)
    everyone = sorted(labels)

    def test(param: str, among: Sequence[int], side_of: ParamFinding | None = None) -> ParamFinding:
        chosen = [
            labels[n]
            for n in among
            if labels[n].outcome != "censored" and param in by_number[n].params and by_number[n].confirmation is None
        ]
        strata = (
            None
            if side_of is None
            else np.array([_on_side(side_of, by_number[lab.number].params.get(side_of.param)) for lab in chosen])
        )
        trials = [by_number[lab.number] for lab in chosen]
        return _test_param(param, evidence.space[param], trials, chosen, sign, strata)

    findings = {param: test(param, everyone) for param in searched}
    _judge(findings, noise)
    significant = [f for f in findings.values() if f.status == "blamed"]
    demoted: dict[str, tuple[str, str]] = {}  # param -> (the other, why)
    for f in significant:  # A is B's doing when A fades with B held fixed, and more than B with A fixed
        for other in significant:
            if other is f:
                continue
            held = test(f.param, everyone, side_of=other)
            kept = test(other.param, everyone, side_of=f)
            # A fades with B fixed, and more than B does with A fixed (the dependent one of the two); where
            # neither can be tested with the other fixed, the sample cannot tell them apart: both stay
            if held.p_value is None or held.p_value < ALPHA or held.p_value <= (kept.p_value or 0.0):
                continue
            gone = held.p_value >= SUSPECT_P
            demoted[f.param] = (
                other.param,
                f"{'no' if gone else 'a weaker'} effect with {other.param} held fixed (p = {held.p_value:.2g}), "
                f"less than {other.param}'s with this one fixed (p = {kept.p_value:.2g}): "
                f"{'its' if gone else 'partly its'} doing",
            )
            if gone:
                break
    strongest = [f for f in significant if f.param not in demoted] or [
        f for f in findings.values() if f.status == "suspect" and f.p_value is not None
    ]
    top = min(strongest, key=lambda f: f.p_value or 1.0) if strongest else None
    suspects_only = set(demoted)
    if top is not None and top.keep is not None:
        for param in searched:
            if param == top.param or findings[param].status == "blamed":
                continue
            again = test(param, everyone, side_of=top)
            before = findings[param].p_value
            clearer = before is None or (again.p_value or 1.0) < before
            if again.p_value is None:
                continue
            if top.status == "blamed" and not clearer:
                # beside a significant cause, another must hold both on its own and with the cause
                # held fixed: the weaker of the two looks is its evidence
                again.note = f"tested with {top.param} held fixed"
                findings[param] = again
            elif top.status == "blamed":
                findings[param].note = f"tested with {top.param} held fixed too (p = {again.p_value:.2g})"
            elif clearer:
                # with a suspect held fixed, what its failures masked shows clearer: a suspect, or
                # first in line for a spare confirmation, never a blame on that look alone
                again.note = f"tested with {top.param} held fixed"
                findings[param] = again
                if top.status != "blamed":
                    suspects_only.add(param)
    _judge(findings, noise, suspects_only)
    for param, (_, why) in demoted.items():
        f = findings[param]
        if "no effect" in why:
            f.status, f.evidence_kind = "no_evidence", "none"
        f.note = f"{f.note}; {why}"
    return [findings[p] for p in searched]


def _on_side(finding: ParamFinding, value: Any) -> bool:
    """Is ``value`` in the finding's winning group?"""
    keep = finding.keep
    if keep is None or value is None:
        return False
    if keep.numeric:
        return any(lo <= float(value) <= hi for lo, hi in keep.intervals)
    return value in keep.values


def _judge(findings: Mapping[str, ParamFinding], noise: float, suspects_only: set[str] | None = None) -> None:
    """Holm over the tested parameters; each is blamed, a suspect, or without evidence (at most a
    suspect for those in ``suspects_only``)."""
    adjusted = holm({p: f.p_value for p, f in findings.items() if f.p_value is not None})
    for param, f in findings.items():
        if f.p_value is None:
            f.status = "no_evidence"
            continue
        f.p_adjusted = adjusted[param]
        assert f.blame is not None and f.keep is not None
        learned_split = f.blame.num_learned / f.blame.count < f.keep.num_learned / f.keep.count
        # a difference of scores alone (both sides learned) must also exceed the validation noise
        beyond_noise = learned_split or abs(f.effect or 0.0) > 2 * noise * math.sqrt(
            1 / f.blame.count + 1 / f.keep.count
        )
        said = f"p = {f.p_value:.2g}, Holm-adjusted {f.p_adjusted:.2g}"
        where = f"; {f.note}" if f.note.startswith("tested with") else ""
        if f.p_adjusted < ALPHA and beyond_noise and param not in (suspects_only or set()):
            f.status, f.evidence_kind = "blamed", "observed"
            f.note = f"significant ({said}){where}"
        elif f.p_value < SUSPECT_P and beyond_noise:
            f.status, f.evidence_kind = "suspect", "none"
            capped = param in (suspects_only or set()) and f.p_adjusted < ALPHA
            f.note = (
                f"significant on this look alone ({said}){where}"
                if capped
                else f"suggestive, not significant ({said}){where}"
            )
        else:
            f.status, f.evidence_kind = "no_evidence", "none"
            f.note = f"no effect beyond chance ({said}){where}"


def apply_confirmation(finding: ParamFinding, result: ConfirmationResult) -> None:
    """A confirmation trial's answer. One ablation (same seed) that fails where the best learned makes a
    blamed or suspected parameter a confirmed blame; for a parameter the search showed no evidence on
    (a spare slot) it makes a suspect only. One that does not reproduce withdraws a suspect, and marks
    an observed blame as not reproduced (one trial does not overturn a significant test)."""
    finding.confirmation = result
    if result.confirmed:
        if finding.status == "no_evidence":
            finding.status = "suspect"
            finding.note = f"one ablation agrees, the search's trials did not show it ({finding.note})"
        else:
            finding.status, finding.evidence_kind = "blamed", "confirmed"
    elif result.confirmed is False:
        if finding.status == "blamed":
            finding.note = f"{finding.note}; not reproduced by its confirmation trial"
        else:
            finding.status, finding.evidence_kind = "no_evidence", "none"
            finding.note = f"not reproduced by its confirmation trial ({finding.note})"


def publish(finding: ParamFinding) -> None:
    """Blame and keep are shown only for what was blamed; a suspect's groups stay in its sentence."""
    if finding.status != "blamed":
        finding.blame = finding.keep = None
