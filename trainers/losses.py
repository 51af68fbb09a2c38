"""Training losses, chosen by name among the task's (``trainers.tasks``). Validation loss is always the
plain loss (cross-entropy, or squared error for regression) so that trials with different training
losses stay comparable."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from trainers.errors import ConfigError
from trainers.settings import LossConfig

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
IGNORE_INDEX = -100


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, gamma: float) -> torch.Tensor:
    """Multi-class focal loss (Lin et al. 2017): mean of -(1 - p_t)^gamma * log p_t."""
    log_p = F.log_softmax(logits.float(), dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return (-((1.0 - log_p.exp()) ** gamma) * log_p).mean()


def balanced_class_weights(label_counts: list[int]) -> list[float]:
    """n / (k * count_c): scikit-learn's 'balanced' weighting."""
    n, k = sum(label_counts), len(label_counts)
    return [n / (k * c) if c > 0 else 0.0 for c in label_counts]


def classification_loss(cfg: LossConfig, label_counts: list[int]) -> LossFn:
    """The training loss for a classifier; ``label_counts`` (of the training fold) feed balanced weights."""
    if cfg.name == "class_weighted":
        weights = cfg.class_weights or balanced_class_weights(label_counts)
        if len(weights) != len(label_counts):
            raise ConfigError(
                [f"loss.class_weights: {len(weights)} weights for {len(label_counts)} classes; give one per class"]
            )
        w = torch.tensor(weights, dtype=torch.float32)
        return lambda logits, labels: F.cross_entropy(logits.float(), labels, weight=w.to(logits.device))
    if cfg.name == "focal":
        return lambda logits, labels: focal_loss(logits, labels, cfg.gamma)
    smoothing = cfg.epsilon if cfg.name == "label_smoothing" else 0.0
    return lambda logits, labels: F.cross_entropy(logits.float(), labels, label_smoothing=smoothing)


def regression_loss(cfg: LossConfig) -> LossFn:
    """Squared error, or Huber (quadratic within ``delta`` of the target, linear beyond: robust to outliers)."""
    if cfg.name == "huber":
        return lambda out, target: F.huber_loss(out.float().squeeze(-1), target, delta=cfg.delta)
    return lambda out, target: F.mse_loss(out.float().squeeze(-1), target)


def causal_lm_loss(cfg: LossConfig) -> LossFn:
    """Next-token loss on response tokens only (prompt and padding carry IGNORE_INDEX)."""
    smoothing = cfg.epsilon if cfg.name == "label_smoothing" else 0.0

    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        shifted = logits[:, :-1].reshape(-1, logits.size(-1)).float()
        return F.cross_entropy(shifted, labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX, label_smoothing=smoothing)

    return loss
