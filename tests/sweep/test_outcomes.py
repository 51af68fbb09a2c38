"""Each trial's outcome against the chance level, and the diagnoses read from its curves: planted curves,
including the two mislabels seen on real sweeps (a trial pruned at chance at the first evaluation called
a late bloomer; a trial that ran to its end at chance called ok because its training loss moved)."""

from sweep.blame import analyze
from sweep.evidence import DataFacts, Evidence, TrialHistory
from sweep.outcomes import chance_margin, label_trials, scores_at


def _evidence(trials, chance=0.5, num_val=400, objective="val_accuracy"):
    return Evidence(
        sweep="s",
        objective=objective,
        direction="maximize",
        trials=trials,
        data=DataFacts(task="classification", num_train=1600, num_val=num_val, chance={objective: chance}),
        space={},
    )


def _trial(number, curve, status="completed", **kw):
    train = kw.pop("train_loss", {s: 0.7 - 0.4 * (v - 0.5) for s, v in curve.items()})
    value = curve[max(curve)] if status == "completed" and curve else None
    return TrialHistory(
        number=number, status=status, params={}, curve=curve, train_loss=train, val_loss=dict(train), value=value, **kw
    )


WINNER = {20: 0.52, 40: 0.78, 60: 0.9}  # at chance at the first evaluation, like every trial


def _diagnoses(trials, **kw):
    return {d.number: d for d in analyze(_evidence(trials, **kw)).trials}


def test_the_margin_is_three_validation_standard_errors_at_chance():
    assert chance_margin(_evidence([], chance=0.5, num_val=400)) == 3 * (0.25 / 400) ** 0.5  # 0.075


def test_a_trial_pruned_at_chance_at_the_first_evaluation_is_not_a_late_bloomer():
    # at step 20 the winners were at chance too: nothing is known about the pruned trial
    pruned = _trial(3, {20: 0.51}, status="pruned")
    d = _diagnoses([_trial(0, WINNER), _trial(1, WINNER), _trial(2, WINNER), pruned])[3]
    assert d.diagnosis == "censored"
    assert "before any trial that learned had left it" in d.reason


def test_a_trial_pruned_at_chance_after_the_winners_left_it_is_flat():
    pruned = _trial(3, {20: 0.51, 40: 0.5}, status="pruned")
    d = _diagnoses([_trial(0, WINNER), _trial(1, WINNER), pruned])[3]
    assert d.diagnosis == "flat" and "never left the chance level 0.5" in d.reason


def test_a_trial_that_ran_to_its_end_at_chance_is_flat_whatever_its_training_loss_did():
    moving_loss = {20: 0.69, 40: 0.6, 60: 0.45}  # > 2% of movement: the old rule called this ok
    at_chance = _trial(1, {20: 0.5, 40: 0.53, 60: 0.52}, train_loss=moving_loss)
    d = _diagnoses([_trial(0, WINNER), at_chance])[1]
    assert d.diagnosis == "flat"


def test_a_pruned_trial_above_chance_rising_and_level_with_the_winners_is_a_late_bloomer():
    late = _trial(3, {20: 0.52, 40: 0.77}, status="pruned")
    falling = _trial(4, {20: 0.65, 40: 0.6}, status="pruned")  # above chance, but falling
    behind = _trial(5, {20: 0.52, 40: 0.6}, status="pruned")  # above chance, rising, well behind
    kinds = {
        n: d.diagnosis for n, d in _diagnoses([_trial(n, WINNER) for n in range(3)] + [late, falling, behind]).items()
    }
    assert kinds[3] == "late_bloomer"
    assert kinds[4] != "late_bloomer" and kinds[5] != "late_bloomer"


def test_labels_learned_flat_diverged_censored():
    trials = [
        _trial(0, WINNER),
        _trial(1, {20: 0.5, 40: 0.5, 60: 0.51}),
        TrialHistory(number=2, status="diverged", params={}, diverged_step=5),
        _trial(3, {20: 0.5}, status="pruned"),
        TrialHistory(number=4, status="failed", params={}),  # no result: no label
    ]
    evidence = _evidence(trials)
    labels = label_trials(evidence, scores_at(trials, 60, 1.0), 1.0)
    assert {n: lab.outcome for n, lab in labels.items()} == {0: "learned", 1: "flat", 2: "diverged", 3: "censored"}
    assert labels[0].left_at == 40  # 0.78 > 0.5 + 0.075; 0.52 was not


def test_a_minimized_objective_learns_below_its_chance_level():
    # val_loss of the constant predictor: the entropy of the class prior (ln 2 for two balanced classes)
    trials = [
        _trial(0, {20: 0.69, 40: 0.4, 60: 0.3}),
        _trial(1, {20: 0.7, 40: 0.69, 60: 0.69}),
        _trial(2, {20: 0.69, 40: 0.6, 60: 0.31}),
    ]
    evidence = Evidence(
        sweep="s",
        objective="val_loss",
        direction="minimize",
        trials=trials,
        data=DataFacts(task="classification", num_train=1600, num_val=400, chance={"val_loss": 0.693}),
        space={},
    )
    labels = label_trials(evidence, scores_at(trials, 60, -1.0), -1.0)
    assert [labels[n].outcome for n in range(3)] == ["learned", "flat", "learned"]
