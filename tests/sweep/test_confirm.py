"""Confirmation trials, planned and judged: the best configuration with one suspected parameter moved
into its losing region (a value a failed trial actually tried), and the answer read against the
search's worst learned trial, not against the incumbent's own (selected, optimistic) score."""

from sweep.confirm import judge, learned_floor, plan
from sweep.evidence import Confirmation, DataFacts, Evidence, TrialHistory
from sweep.findings import ParamFinding, Range
from sweep.outcomes import TrialLabel

SPACE = {
    "optim.learning_rate": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
    "loss.name": {"type": "categorical", "choices": ["cross_entropy", "focal"]},
    "loss.gamma": {"type": "float", "low": 1.0, "high": 3.0, "when": {"loss.name": "focal"}},
    "adaptation.alpha": {"type": "tied", "to": "adaptation.r", "times": 2},
}


def _trial(n, lr, outcome, score, loss="cross_entropy", **kw):
    params = {"optim.learning_rate": lr, "loss.name": loss, "adaptation.alpha": 16}
    return (
        TrialHistory(number=n, status="completed", params=params, curve={60: score}, value=score, **kw),
        TrialLabel(number=n, outcome=outcome, score=score, best=score, left_at=20 if outcome == "learned" else None),
    )


def _setup():
    rows = [
        _trial(0, 1e-5, "flat", 0.5),
        _trial(1, 3e-5, "flat", 0.52),
        _trial(2, 8e-5, "flat", 0.5),
        _trial(3, 1e-3, "learned", 0.86),
        _trial(4, 3e-3, "learned", 0.9),
        _trial(5, 6e-3, "learned", 0.84),
    ]
    trials = [t for t, _ in rows]
    labels = {lab.number: lab for _, lab in rows}
    evidence = Evidence(
        sweep="s",
        objective="val_accuracy",
        direction="maximize",
        trials=trials,
        data=DataFacts(task="classification", num_train=1600, num_val=400, chance={"val_accuracy": 0.5}),
        space=SPACE,
    )
    lr = ParamFinding(
        param="optim.learning_rate",
        component="learning_rate",
        status="suspect",
        p_value=0.1,
        blame=Range(values=[1e-5, 8e-5], numeric=True, intervals=[(1e-5, 8e-5)], count=3),
        keep=Range(values=[1e-3, 6e-3], numeric=True, intervals=[(1e-3, 6e-3)], count=3, num_learned=3),
    )
    return evidence, labels, lr


def test_a_suspect_is_moved_to_a_typical_failed_value_from_the_best_configuration():
    evidence, labels, lr = _setup()
    best = evidence.trials[4]
    [planned] = plan(evidence, [lr], labels, best, budget=2)
    assert planned.confirmation == Confirmation(param="optim.learning_rate", value=3e-5, of=4)  # the median failure
    # the searched parameters of the best trial, the moved one changed; tied values are the space's to set
    assert planned.params == {"optim.learning_rate": 3e-5, "loss.name": "cross_entropy"}
    assert planned.reason == "trial 4 with optim.learning_rate = 3e-05 instead of 0.003"


def test_nothing_is_planned_without_budget_when_done_or_when_the_best_sits_in_the_blamed_region():
    evidence, labels, lr = _setup()
    best = evidence.trials[4]
    assert plan(evidence, [lr], labels, best, budget=0) == []
    assert plan(evidence, [lr], labels, best, budget=2, done=[Confirmation(param=lr.param, value=3e-5, of=4)]) == []
    assert plan(evidence, [lr], labels, evidence.trials[1], budget=2) == []  # the "best" did not learn
    # a spare slot goes to a parameter without evidence only where its losing side failed somewhere
    no_evidence = lr.model_copy(update={"status": "no_evidence"})
    assert [p.confirmation.param for p in plan(evidence, [no_evidence], labels, best, budget=2)] == [lr.param]
    never_failed = no_evidence.model_copy(update={"blame": no_evidence.blame.model_copy(update={"num_learned": 3})})
    assert plan(evidence, [never_failed], labels, best, budget=2) == []


def _confirmation(evidence, labels, lr, outcome, score):
    moved, label = _trial(6, 3e-5, outcome, score, confirmation=Confirmation(param=lr.param, value=3e-5, of=4))
    floor = learned_floor(evidence.trials, labels)
    return judge(moved, label, evidence.trials[4], labels[4], 1.0, 0.02, floor)


def test_a_moved_configuration_that_stops_learning_confirms_the_suspect():
    evidence, labels, lr = _setup()
    result = _confirmation(evidence, labels, lr, "flat", 0.51)
    assert result.confirmed is True
    assert result.text == (
        "the best configuration (trial 4) with optim.learning_rate = 3e-05 instead of 0.003: 0.51 vs 0.9, "
        "it did not learn: confirmed (trial 6)"
    )


def test_a_lower_score_is_judged_against_the_searchs_worst_learned_trial_not_the_incumbents():
    evidence, labels, lr = _setup()
    assert learned_floor(evidence.trials, labels) == 0.84
    # 0.82 is 0.08 below the incumbent, but within 2 sigma (0.04) of the worst learner: selection, not cause
    assert _confirmation(evidence, labels, lr, "learned", 0.82).confirmed is False
    assert _confirmation(evidence, labels, lr, "learned", 0.75).confirmed is True


def test_a_confirmation_without_a_result_confirms_nothing():
    evidence, labels, lr = _setup()
    moved = TrialHistory(
        number=6, status="failed", params={}, confirmation=Confirmation(param=lr.param, value=3e-5, of=4)
    )
    result = judge(moved, None, evidence.trials[4], labels[4], 1.0, 0.02, 0.84)
    assert result.confirmed is None and "no result (failed)" in result.text
