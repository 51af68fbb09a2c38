import math

import pytest
import torch

from trainers.errors import ConfigError
from trainers.losses import balanced_class_weights, causal_lm_loss, classification_loss, regression_loss
from trainers.settings import LossConfig

LOGITS = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
LABELS = torch.tensor([0, 1])


def _nll(row, label):
    """-log softmax(row)[label], by hand."""
    return -(row[label] - math.log(sum(math.exp(v) for v in row)))


ROWS = [[2.0, 0.0], [0.0, 1.0]]
NLL = [_nll(ROWS[0], 0), _nll(ROWS[1], 1)]  # 0.126928, 0.313262


def _loss(name, **kw):
    return classification_loss(LossConfig(name=name, **kw), [1, 1])(LOGITS, LABELS).item()


def test_cross_entropy_matches_hand_value():
    assert _loss("cross_entropy") == pytest.approx((NLL[0] + NLL[1]) / 2, abs=1e-6)
    assert _loss("cross_entropy") == pytest.approx(0.220095, abs=1e-6)


def test_label_smoothing_matches_hand_value():
    eps = 0.1
    per_row = [(1 - eps) * NLL[i] + eps * sum(_nll(ROWS[i], c) for c in range(2)) / 2 for i in range(2)]
    assert _loss("label_smoothing", epsilon=eps) == pytest.approx(sum(per_row) / 2, abs=1e-6)
    assert _loss("label_smoothing", epsilon=eps) == pytest.approx(0.295095, abs=1e-6)


def test_focal_matches_hand_value_and_reduces_to_ce_at_gamma_zero():
    p = [math.exp(-v) for v in NLL]
    hand = sum((1 - p[i]) ** 2 * NLL[i] for i in range(2)) / 2
    assert _loss("focal", gamma=2.0) == pytest.approx(hand, abs=1e-6)
    assert _loss("focal", gamma=2.0) == pytest.approx(0.012231, abs=1e-6)
    assert _loss("focal", gamma=0.0) == pytest.approx(_loss("cross_entropy"), abs=1e-6)


def test_class_weighted_matches_hand_value():
    got = _loss("class_weighted", class_weights=[1.0, 3.0])
    assert got == pytest.approx((1 * NLL[0] + 3 * NLL[1]) / 4, abs=1e-6)


def test_balanced_weights_are_n_over_k_count():
    assert balanced_class_weights([3, 1]) == pytest.approx([4 / 6, 2.0])
    fn = classification_loss(LossConfig(name="class_weighted"), [3, 1])
    assert fn(LOGITS, LABELS).item() == pytest.approx((NLL[0] * 4 / 6 + NLL[1] * 2.0) / (4 / 6 + 2.0), abs=1e-6)


def test_class_weights_of_wrong_length_are_an_error():
    with pytest.raises(ConfigError, match=r"loss.class_weights: 3 weights for 2 classes"):
        classification_loss(LossConfig(name="class_weighted", class_weights=[1.0, 1.0, 1.0]), [5, 5])


def test_causal_lm_loss_scores_response_tokens_only():
    # position t predicts token t+1; labels -100 on the prompt token are ignored
    logits = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [5.0, 5.0, 5.0]]])
    labels = torch.tensor([[-100, 0, 1]])
    hand = (_nll([1.0, 0.0, 0.0], 0) + _nll([0.0, 2.0, 0.0], 1)) / 2
    got = causal_lm_loss(LossConfig(name="cross_entropy"))(logits, labels).item()
    assert got == pytest.approx(hand, abs=1e-6)
    masked = torch.tensor([[-100, -100, 1]])
    got = causal_lm_loss(LossConfig(name="cross_entropy"))(logits, masked).item()
    assert got == pytest.approx(_nll([0.0, 2.0, 0.0], 1), abs=1e-6)


def test_regression_losses_match_hand_values():
    out = torch.tensor([[1.0], [3.0], [0.0]])  # one output per row, as the model's head gives it
    target = torch.tensor([1.5, 1.0, 0.0])
    assert regression_loss(LossConfig(name="mse"))(out, target).item() == pytest.approx((0.25 + 4.0 + 0.0) / 3)
    # huber, delta 1: 0.5 * 0.5**2 inside, 1 * (2 - 0.5) beyond
    assert regression_loss(LossConfig(name="huber", delta=1.0))(out, target).item() == pytest.approx(
        (0.125 + 1.5 + 0.0) / 3
    )
