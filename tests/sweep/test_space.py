"""The search-space grammar: distributions, conditionals, and composing one trial's config."""

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from sweep.space import as_overrides, compose, is_conditional, sample
from sweep.spec import validate_spec

SPACE = {
    "optim.learning_rate": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
    "model.num_layers": {"type": "int", "low": 2, "high": 6, "step": 2},
    "loss.name": {"type": "categorical", "choices": ["cross_entropy", "focal"]},
    "loss.gamma": {"type": "float", "low": 1.0, "high": 3.0, "when": {"loss.name": "focal"}},
    "adaptation.method": {"type": "fixed", "value": "lora"},
}


def test_space_becomes_optuna_distributions_with_conditionals():
    space = validate_spec({"name": "t", "trial": {"model": {"name_or_path": "tiny-bert"}}, "space": SPACE}).space
    assert is_conditional(space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        params = sample(space, trial)
        assert trial.distributions["optim.learning_rate"] == FloatDistribution(1e-5, 1e-1, log=True)
        assert trial.distributions["model.num_layers"] == IntDistribution(2, 6, step=2)
        assert trial.distributions["loss.name"] == CategoricalDistribution(["cross_entropy", "focal"])
        assert params["adaptation.method"] == "lora" and "adaptation.method" not in trial.distributions
        if params["loss.name"] == "focal":
            assert 1.0 <= params["loss.gamma"] <= 3.0
        else:
            assert "loss.gamma" not in params and "loss.gamma" not in trial.distributions
        seen.add(params["loss.name"])
    assert seen == {"cross_entropy", "focal"}


def test_compose_nests_params_over_the_template_and_sets_the_output_dir():
    template = {"optim": {"learning_rate": 1.0, "batch_size": 8}, "model": {"name_or_path": "tiny-bert"}}
    config = compose(template, {"optim.learning_rate": 0.01, "loss.name": "focal"}, "/m/t1")
    assert config == {
        "optim": {"learning_rate": 0.01, "batch_size": 8},
        "model": {"name_or_path": "tiny-bert"},
        "loss": {"name": "focal"},
        "output_dir": "/m/t1",
    }
    assert template["optim"]["learning_rate"] == 1.0  # the template is not changed
    assert "output_dir" not in compose(template, {})
    assert as_overrides({"a.b.c": 1, "a.d": 2}) == {"a": {"b": {"c": 1}, "d": 2}}
