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


def test_tied_parameter_follows_its_parent_and_is_not_searched():
    spec = validate_spec(
        {
            "name": "t",
            "trial": {"model": {"name_or_path": "tiny-bert"}},
            "space": {
                "adaptation.r": {"type": "categorical", "choices": [4, 8, 16]},
                "adaptation.alpha": {"type": "tied", "to": "adaptation.r", "times": 2},
                "optim.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
            },
        }
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        params = sample(spec.space, trial)
        assert params["adaptation.alpha"] == 2 * params["adaptation.r"] and isinstance(params["adaptation.alpha"], int)
        assert "adaptation.alpha" not in trial.params  # Optuna searches r only
        cfg = spec.trial_config(params)
        assert cfg.adaptation.alpha / cfg.adaptation.r == 2.0
        seen.add(params["adaptation.r"])
        study.tell(trial, 0.5)
    assert seen == {4, 8, 16}


def test_tied_parameter_rules_name_the_field():
    def problems(space):
        from sweep.errors import SpecError

        try:
            validate_spec({"name": "t", "trial": {"model": {"name_or_path": "tiny-bert"}}, "space": space})
        except SpecError as exc:
            return exc.problems
        return []

    lr = {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}
    assert problems({"adaptation.alpha": {"type": "tied", "to": "adaptation.r", "times": 2}}) == [
        "space.adaptation.alpha.to: 'adaptation.r' is not a parameter listed before 'adaptation.alpha'; "
        "list 'adaptation.r' earlier in space, or tie to one that is"
    ]
    loss = {"type": "categorical", "choices": ["focal", "cross_entropy"]}
    assert problems({"loss.name": loss, "adaptation.alpha": {"type": "tied", "to": "loss.name"}}) == [
        "space.adaptation.alpha.to: 'loss.name' takes one of ['focal', 'cross_entropy']; a tied parameter "
        "follows a numeric one (float, int, or numeric choices)"
    ]
    # the values it takes must fit the trial: alpha = -1 x lr is not a positive alpha
    bad = problems(
        {"optim.learning_rate": lr, "adaptation.alpha": {"type": "tied", "to": "optim.learning_rate", "times": -1}}
    )
    assert bad and bad[0].startswith("space.adaptation.alpha: value -0.0001 does not fit the trial")
    assert problems(
        {
            "adaptation.r": {"type": "int", "low": 2, "high": 8},
            "adaptation.alpha": {"type": "tied", "to": "adaptation.r", "bogus": 1},
        }
    ) == [
        "space.adaptation.alpha.bogus: not a setting of space.adaptation.alpha kind 'tied'; remove it or choose a kind that has it"
    ]
