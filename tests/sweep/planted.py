"""Planted sweeps without training: the sweep's own sampler (TPE, seeded) and pruner (median) choose
and stop trials as in a real sweep, and a planted rule says what each configuration's curve is. The
verdict's analysis must name the planted cause and never blame a parameter without effect.

A learner's curve rises from chance towards its top (0.85-0.95) with validation noise; a failing
configuration stays at chance (``flat``) or diverges. Confirmation trials the analysis plans are run
through the same rule (with fresh noise), as the sweep would run them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna

from sweep.blame import Analysis, analyze
from sweep.evidence import DataFacts, Evidence, TrialHistory
from sweep.space import sample
from sweep.spec import validate_spec

optuna.logging.set_verbosity(optuna.logging.WARNING)

STEPS = (20, 40, 60)
NUM_VAL = 400

Rule = Callable[[dict[str, Any]], str]  # params -> "learn" | "flat" | "diverge"


@dataclass(frozen=True)
class Scenario:
    name: str
    space: dict[str, dict[str, Any]]
    rule: Rule
    cause: str  # the parameter the rule depends on
    chance: float = 0.5
    objective: str = "val_accuracy"
    class_counts: dict[str, int] | None = None
    flake: float = 0.0  # chance that a configuration that learns stays flat anyway (a bad seed), re-runs too


NO_EFFECT = {
    "optim.weight_decay": {"type": "categorical", "choices": [0.0, 0.01]},
    "adaptation.r": {"type": "categorical", "choices": [4, 8, 16]},
}

LR = {"type": "float", "low": 1e-5, "high": 1e-2, "log": True}

SCENARIOS = {
    "lr_too_low": Scenario(
        "lr_too_low",
        {"optim.learning_rate": LR, **NO_EFFECT},
        lambda p: "learn" if p["optim.learning_rate"] >= 3e-4 else "flat",
        "optim.learning_rate",
    ),
    "too_few_layers": Scenario(
        "too_few_layers",
        {"model.num_layers": {"type": "int", "low": 1, "high": 6}, **NO_EFFECT},
        lambda p: "learn" if p["model.num_layers"] >= 3 else "flat",
        "model.num_layers",
    ),
    "wrong_loss": Scenario(
        "wrong_loss",
        {"loss.name": {"type": "categorical", "choices": ["cross_entropy", "class_weighted", "focal"]}, **NO_EFFECT},
        lambda p: "flat" if p["loss.name"] == "cross_entropy" else "learn",
        "loss.name",
        chance=0.47,
        objective="val_f1_macro",
        class_counts={"neg": 1440, "pos": 160},
    ),
    "divergence": Scenario(
        "divergence",
        {"optim.learning_rate": {"type": "float", "low": 1e-5, "high": 1.0, "log": True}, **NO_EFFECT},
        lambda p: "diverge" if p["optim.learning_rate"] > 1e-2 else "learn",
        "optim.learning_rate",
    ),
    "lr_too_low_flaky": Scenario(
        "lr_too_low_flaky",
        {"optim.learning_rate": LR, **NO_EFFECT},
        lambda p: "learn" if p["optim.learning_rate"] >= 3e-4 else "flat",
        "optim.learning_rate",
        flake=0.15,
    ),
    "no_effect": Scenario(
        "no_effect",
        {"optim.learning_rate": {"type": "float", "low": 3e-4, "high": 1e-2, "log": True}, **NO_EFFECT},
        lambda p: "learn",
        "",
    ),
}


def _kind(scenario: Scenario, params: dict[str, Any], rng: np.random.Generator) -> str:
    kind = scenario.rule(params)
    return "flat" if kind == "learn" and rng.random() < scenario.flake else kind


def _curve(kind: str, rng: np.random.Generator, chance: float, top: float) -> dict[int, float]:
    out = {}
    for step in STEPS:
        mean = chance + (top - chance) * (1 - math.exp(-step / 15)) if kind == "learn" else chance
        out[step] = float(rng.binomial(NUM_VAL, mean) / NUM_VAL)  # the validation set's own noise
    return out


def _history(number: int, params: dict[str, Any], kind: str, curve: dict[int, float], **kw: Any) -> TrialHistory:
    status = kw.pop("status", "diverged" if kind == "diverge" else "completed")
    if kind == "diverge":
        return TrialHistory(number=number, status=status, params=params, diverged_step=7, **kw)
    train = {s: 0.7 - 0.5 * (v - 0.5) for s, v in curve.items()}
    return TrialHistory(
        number=number,
        status=status,
        params=params,
        curve=curve,
        train_loss=train,
        val_loss=dict(train),
        value=curve[max(curve)] if status == "completed" else None,
        last_step=STEPS[-1],
        **kw,
    )


def _spec(scenario: Scenario, seed: int) -> Any:
    return validate_spec(
        {
            "name": "planted",
            "trial": {"model": {"name_or_path": "tiny-bert"}},
            "space": scenario.space,
            "objective": {"metric": scenario.objective, "direction": "maximize"},
            "sampler": {"kind": "tpe", "seed": seed, "num_startup_trials": 4},
            "pruner": {"kind": "median", "num_startup_trials": 2, "warmup_steps": 20},
        }
    )


def run(scenario: Scenario, num_trials: int, seed: int, confirm_trials: int = 2) -> Analysis:
    """A sweep of ``num_trials`` search trials and up to ``confirm_trials`` confirmations, analysed."""
    return analyze(evidence_of(scenario, num_trials, seed, confirm_trials))


def evidence_of(scenario: Scenario, num_trials: int, seed: int, confirm_trials: int = 2) -> Evidence:
    """The evidence of such a sweep: its search trials, then the confirmations their analysis planned."""
    from sweep.optuna_samplers import build_sampler

    spec = _spec(scenario, seed)
    rng = np.random.default_rng(seed)
    study = optuna.create_study(
        direction="maximize", sampler=build_sampler(spec.sampler, spec.space), pruner=spec.pruner.build(STEPS[-1])
    )
    trials: list[TrialHistory] = []
    tops: dict[int, float] = {}
    for number in range(num_trials):
        trial = study.ask()
        params = sample(spec.space, trial)
        kind = _kind(scenario, params, rng)
        tops[number] = float(rng.uniform(0.85, 0.95))
        if kind == "diverge":
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            trials.append(_history(number, params, kind, {}))
            continue
        curve = _curve(kind, rng, scenario.chance, tops[number])
        reached: dict[int, float] = {}
        pruned = False
        for step, value in curve.items():
            reached[step] = value
            trial.report(value, step)
            if step < STEPS[-1] and trial.should_prune():
                pruned = True
                break
        if pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            trials.append(_history(number, params, kind, reached, status="pruned"))
        else:
            study.tell(trial, reached[STEPS[-1]])
            trials.append(_history(number, params, kind, reached))
    analysis = analyze(_evidence(scenario, trials), confirm_budget=confirm_trials)
    for planned in analysis.confirmations_planned:
        number = len(trials)
        kind = _kind(scenario, planned.params, rng)
        top = tops[planned.confirmation.of]  # the same configuration and seed: the same ceiling
        trials.append(
            _history(
                number, planned.params, kind, _curve(kind, rng, scenario.chance, top), confirmation=planned.confirmation
            )
        )
    return _evidence(scenario, trials)


def _evidence(scenario: Scenario, trials: list[TrialHistory]) -> Evidence:
    data = DataFacts(
        task="classification",
        num_train=1600,
        num_val=NUM_VAL,
        class_counts=scenario.class_counts or {},
        chance={scenario.objective: scenario.chance},
    )
    return Evidence(
        sweep="planted",
        objective=scenario.objective,
        direction="maximize",
        trials=trials,
        data=data,
        space=scenario.space,
    )


def named(analysis: Analysis, param: str) -> bool:
    return any(f.param == param and f.status == "blamed" for f in analysis.params)
