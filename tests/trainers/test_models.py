import pytest
import torch

from tests.trainers.helpers import tiny_config
from trainers import models
from trainers.errors import ConfigError


@pytest.mark.parametrize(
    ("family", "task", "blocks_path"),
    [
        ("tiny-bert", "classification", "bert.encoder.layer"),
        ("tiny-gpt2", "causal_lm", "transformer.h"),
        ("tiny-llama", "causal_lm", "model.layers"),
        ("tiny-gpt2", "classification", "transformer.h"),
        ("tiny-llama", "classification", "model.layers"),
    ],
)
def test_keep_first_layers_on_each_family(family, task, blocks_path):
    cfg = tiny_config(task, f"model.name_or_path={family}", "model.num_layers=2")
    model = models.build_model(cfg, 2, ["a", "b"])
    name, blocks = models.find_blocks(model)
    assert name == blocks_path and len(blocks) == 2
    assert model.config.num_hidden_layers == 2
    full = models.build_model(tiny_config(task, f"model.name_or_path={family}"), 2, ["a", "b"])
    assert len(models.find_blocks(full)[1]) == 4
    # the kept blocks are the pretrained first two, weight for weight
    assert torch.equal(next(blocks[1].parameters()), next(models.find_blocks(full)[1][1].parameters()))
    ids = torch.randint(5, 100, (2, 7))
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    assert out.shape[0] == 2 and torch.isfinite(out).all()


def test_more_layers_than_the_model_has_is_an_error():
    cfg = tiny_config("classification", "model.num_layers=9")
    with pytest.raises(ConfigError, match=r"model.num_layers: 9 > the 4 layers of 'tiny-bert'; use 1..4"):
        models.build_model(cfg, 2, ["a", "b"])


def test_freezing_trains_only_top_blocks_and_head():
    cfg = tiny_config("classification", "model.num_trainable_layers=1")
    model = models.build_model(cfg, 2, ["a", "b"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, "something must train"
    assert all(n.startswith(("bert.encoder.layer.3.", "bert.pooler.", "classifier.")) for n in trainable)
    assert any(n.startswith("bert.encoder.layer.3.") for n in trainable)
    assert any(n.startswith("classifier.") for n in trainable)
    assert not any("embeddings" in n for n in trainable)


def test_lora_trains_far_fewer_parameters_than_full():
    full = models.build_model(tiny_config("classification"), 2, ["a", "b"])
    lora = models.build_model(tiny_config("classification", "adaptation.method=lora", "adaptation.r=4"), 2, ["a", "b"])
    full_trainable, full_total = models.count_parameters(full)
    lora_trainable, _ = models.count_parameters(lora)
    assert full_trainable == full_total
    # bert: query+value of 4 layers, each r*(in+out) = 4*(64+64); plus the new head (64*2+2)
    assert lora_trainable == 4 * 2 * 4 * (64 + 64) + (64 * 2 + 2)
    assert lora_trainable < full_trainable / 100
    names = {n for n, p in lora.named_parameters() if p.requires_grad}
    assert any("lora_A" in n and "query" in n for n in names)


def test_lora_on_top_layers_only():
    cfg = tiny_config(
        "causal_lm", "adaptation.method=lora", "model.num_trainable_layers=1", "model.name_or_path=tiny-llama"
    )
    model = models.build_model(cfg, 0, [])
    lora_names = [n for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]
    assert lora_names and all(".layers.3." in n for n in lora_names)


def test_mlp_head_replaces_the_linear_head():
    cfg = tiny_config("classification", "model.head_hidden_sizes=[32, 16]")
    model = models.build_model(cfg, 3, ["a", "b", "c"])
    linears = [m for m in model.classifier.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 32), (32, 16), (16, 3)]
    assert model.config.id2label == {0: "a", 1: "b", 2: "c"}


def test_head_depends_on_the_trial_seed_and_base_is_cached():
    a = models.build_model(tiny_config("classification", "seed=1"), 2, ["a", "b"])
    b = models.build_model(tiny_config("classification", "seed=2"), 2, ["a", "b"])
    assert not torch.equal(a.classifier.weight, b.classifier.weight)
    assert torch.equal(a.bert.embeddings.word_embeddings.weight, b.bert.embeddings.word_embeddings.weight)
    a.bert.embeddings.word_embeddings.weight.data.zero_()  # a trial's copy never leaks into the cache
    c = models.build_model(tiny_config("classification", "seed=1"), 2, ["a", "b"])
    assert c.bert.embeddings.word_embeddings.weight.abs().sum() > 0


def test_unknown_model_path_is_a_clear_error(tmp_path):
    cfg = tiny_config("classification", f"model.name_or_path={tmp_path}/no-model")
    with pytest.raises(ConfigError, match=r"^model.name_or_path: '.*no-model' is not a local model directory"):
        models.build_model(cfg, 2, ["a", "b"])


def test_the_depth_check_reads_config_json_and_asks_autoconfig_where_it_names_layers_otherwise(tmp_path):
    """stated_depth reads num_hidden_layers without transformers (the sweep's data check stays torch-free);
    a config that names its depth otherwise (GPT-2's n_layer) or is missing falls back to AutoConfig."""
    import json

    from transformers import BertConfig, GPT2Config

    from trainers.model_files import stated_depth
    from trainers.plan import check_layers
    from trainers.settings import DEFAULT_MODEL

    assert stated_depth("tiny-gpt2") == 4
    assert stated_depth(DEFAULT_MODEL) == 6  # the shipped MiniLM
    bert = tmp_path / "bert"
    BertConfig(num_hidden_layers=3).save_pretrained(bert)
    gpt2 = tmp_path / "gpt2"
    GPT2Config(n_layer=5).save_pretrained(gpt2)
    assert "num_hidden_layers" not in json.loads((gpt2 / "config.json").read_text())
    assert stated_depth(str(bert)) == 3
    assert stated_depth(str(gpt2)) is None
    assert stated_depth(str(tmp_path / "none")) is None  # not a directory: AutoConfig's error
    assert stated_depth("org/bert") is None  # a hub id: AutoConfig (the hub's latest revision, offline mode)
    unknown = tmp_path / "unknown"
    unknown.mkdir()
    (unknown / "config.json").write_text(json.dumps({"model_type": "no-such-type", "num_hidden_layers": 3}))
    assert stated_depth(str(unknown)) is None  # AutoConfig rejects it, as loading would
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "config.json").write_text(json.dumps({**json.loads((bert / "config.json").read_text()), "auto_map": {}}))
    assert stated_depth(str(remote)) is None  # remote code: AutoConfig decides
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    assert stated_depth(str(tmp_path / "broken")) is None

    assert check_layers(tiny_config("classification", f"model.name_or_path={bert}")) == 3
    assert check_layers(tiny_config("classification", f"model.name_or_path={gpt2}")) == 5  # AutoConfig's answer
    with pytest.raises(ConfigError, match=rf"model.num_layers: 6 > the 5 layers of '{gpt2}'; use 1..5"):
        check_layers(tiny_config("classification", f"model.name_or_path={gpt2}", "model.num_layers=6"))
    with pytest.raises(ConfigError, match=r"model.num_layers: 4 > the 3 layers"):
        check_layers(tiny_config("classification", f"model.name_or_path={bert}", "model.num_layers=4"))
    with pytest.raises(ConfigError, match=r"model.name_or_path: '.*unknown' .*no-such-type"):
        check_layers(tiny_config("classification", f"model.name_or_path={unknown}"))
    with pytest.raises(ConfigError, match=r"model.name_or_path: '.*none' is not a local model directory"):
        check_layers(tiny_config("classification", f"model.name_or_path={tmp_path / 'none'}"))
