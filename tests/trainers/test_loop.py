import json
import math
import random
import sys

import numpy as np
import pytest
import torch

from tests.trainers.helpers import tiny_config
from trainers.api import RecordingReporter
from trainers.data import encode, split
from trainers.errors import ConfigError
from trainers.loop import run_trial


def test_classification_trial_reports_every_eval_and_at_the_end():
    cfg = tiny_config("classification", "optim.max_steps=7")
    rep = RecordingReporter()
    out = run_trial(cfg, rep)
    assert out.status == "completed"
    assert [s for s, _ in rep.reports] == [3, 6, 7]
    assert set(rep.reports[0][1]) == {
        "train_loss",
        "val_loss",
        "val_accuracy",
        "val_f1_macro",
        "val_recall_0",
        "val_recall_1",
    }
    assert out.num_steps == 7 and out.num_examples == 7 * 8
    assert out.final_step == 7 and out.final_metrics == rep.reports[-1][1]
    best = min(rep.reports, key=lambda r: r[1]["val_loss"])
    assert (out.best_step, out.best_metrics) == best
    assert (out.num_train, out.num_val) == (160, 40)
    assert out.timings.train_s > 0 and out.timings.eval_s > 0 and out.peak_rss_mb > 100
    assert out.label_names == ["negative", "positive"]


def test_same_data_and_seed_give_the_same_split_fingerprint_in_every_trial():
    a = run_trial(tiny_config("classification", "optim.learning_rate=1e-3"), RecordingReporter())
    b = run_trial(tiny_config("classification", "optim.learning_rate=1e-2", "seed=5"), RecordingReporter())
    c = run_trial(tiny_config("classification", "split.seed=9"), RecordingReporter())
    assert a.data_fingerprint == b.data_fingerprint == c.data_fingerprint
    assert a.split_fingerprint == b.split_fingerprint != c.split_fingerprint


def test_a_trial_uses_the_sweeps_saved_split_and_splits_itself_where_it_is_another(tmp_path, monkeypatch):
    from trainers.plan import plan_trial, save_split

    cfg = tiny_config("classification")
    plan_trial(cfg)  # (as the sweep's data check does)
    save_split(cfg, tmp_path / "split.npz")
    splitting = []
    make_splits = split.make_splits
    monkeypatch.setattr(split, "make_splits", lambda rows, split: splitting.append(split) or make_splits(rows, split))
    saved = run_trial(cfg, RecordingReporter(), tmp_path / "split.npz")
    assert splitting == []  # loaded, not split again (no sklearn import on the way to the first step)
    assert saved.split_fingerprint == run_trial(cfg, RecordingReporter()).split_fingerprint
    assert len(splitting) == 1  # without the file it splits
    other = tiny_config("classification", "split.seed=9")
    assert run_trial(other, RecordingReporter(), tmp_path / "split.npz").split_fingerprint != saved.split_fingerprint
    assert splitting[-1] == other.split  # the saved split is another config's: split again


def test_same_config_is_reproducible_with_cold_and_warm_caches():
    from trainers import models

    models.clear_caches()
    encode.clear_caches()
    a = run_trial(tiny_config("classification"), RecordingReporter())
    b = run_trial(tiny_config("classification"), RecordingReporter())
    assert a.final_metrics == pytest.approx(b.final_metrics)


def test_too_high_learning_rate_diverges_instead_of_crashing():
    cfg = tiny_config(
        "classification",
        "optim.learning_rate=1e12",
        "optim.max_grad_norm=null",
        "optim.max_steps=20",
        "optim.schedule=constant",
        "eval.eval_every_steps=20",
    )
    out = run_trial(cfg, RecordingReporter())
    assert out.status == "diverged"
    assert 1 < out.diverged_step <= 20
    assert out.diverged_learning_rate == pytest.approx(1e12)
    assert out.best_step is None


def test_a_reporter_that_prunes_ends_the_trial_cleanly():
    rep = RecordingReporter(prune_at_step=3)
    out = run_trial(tiny_config("classification", "optim.max_steps=12"), rep)
    assert out.status == "pruned"
    assert out.num_steps == 3 and [s for s, _ in rep.reports] == [3]
    assert out.final_step == 3


def test_k_fold_trial_reports_once_per_fold_and_means():
    rep = RecordingReporter()
    out = run_trial(tiny_config("classification", "split.num_folds=3", "optim.max_steps=3"), rep)
    assert out.status == "completed"
    assert [s for s, _ in rep.reports] == [0, 1, 2]
    assert [f.fold for f in out.folds] == [0, 1, 2]
    mean_acc = np.mean([f.final_metrics["val_accuracy"] for f in out.folds])
    assert out.final_metrics["val_accuracy"] == pytest.approx(mean_acc)
    assert out.num_steps == 9


def test_k_fold_trial_pruned_after_second_fold():
    rep = RecordingReporter(prune_at_step=1)
    out = run_trial(tiny_config("classification", "split.num_folds=4", "optim.max_steps=3"), rep)
    assert out.status == "pruned" and len(out.folds) == 2 and out.folds[-1].status == "pruned"


def test_epochs_and_gradient_accumulation():
    cfg = tiny_config(
        "classification",
        "optim.max_steps=null",
        "optim.num_epochs=1.0",
        "optim.grad_accum_steps=2",
        "eval.eval_every_steps=100",
    )
    out = run_trial(cfg, RecordingReporter())
    assert out.num_steps == math.ceil(math.ceil(160 / 8) / 2)  # 10 optimizer steps
    assert out.num_examples == 10 * 2 * 8


@pytest.mark.parametrize("loss", ["label_smoothing", "focal", "class_weighted"])
def test_every_classification_loss_trains(loss):
    out = run_trial(tiny_config("classification", f"loss.name={loss}"), RecordingReporter())
    assert out.status == "completed" and math.isfinite(out.final_metrics["val_loss"])


def test_causal_lm_trial_reports_perplexity_and_exact_match():
    rep = RecordingReporter()
    out = run_trial(tiny_config("causal_lm"), rep)
    assert out.status == "completed"
    metrics = rep.reports[-1][1]
    assert set(metrics) == {"train_loss", "val_loss", "val_perplexity", "val_exact_match"}
    assert metrics["val_perplexity"] == pytest.approx(math.exp(metrics["val_loss"]))
    assert 0.0 <= metrics["val_exact_match"] <= 1.0


def _sounds(path):
    """Prompt -> one-word answer, asked in six phrasings: validation asks known animals in known phrasings."""
    animals = {"cat": "meow", "dog": "woof", "cow": "moo", "duck": "quack", "owl": "hoot"}
    templates = [
        "what does the {a} say?",
        "the {a} says what?",
        "tell me the sound of a {a}.",
        "a {a} makes which sound?",
        "which noise does a {a} make?",
        "{a} sound?",
    ]
    rows = [
        {"prompt": f"{t.format(a=a)} {i}", "response": s}
        for i in range(8)
        for a, s in animals.items()
        for t in templates
    ]
    random.Random(0).shuffle(rows)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_causal_lm_learns_to_answer_exactly_on_tiny_llama(tmp_path):
    data = _sounds(tmp_path / "sounds.jsonl")
    # fp32: the thresholds are for this trajectory; bf16 autocast (the default on CPUs with native bf16)
    # takes another one on a tiny random model
    common = [
        "model.name_or_path=tiny-llama",
        f"data.path={data}",
        "data.max_rows=null",
        "optim.batch_size=16",
        "precision=fp32",
    ]
    untrained = run_trial(
        tiny_config("causal_lm", *common, "optim.max_steps=1", "optim.learning_rate=1e-6"), RecordingReporter()
    )
    trained = run_trial(
        tiny_config(
            "causal_lm", *common, "optim.max_steps=160", "optim.learning_rate=1e-2", "eval.eval_every_steps=80"
        ),
        RecordingReporter(),
    )
    assert untrained.final_metrics["val_exact_match"] == 0.0
    assert trained.final_metrics["val_exact_match"] >= 0.8  # 48 validation prompts, greedy answers
    assert trained.final_metrics["val_loss"] < 0.5


def test_tokenized_data_and_base_model_are_cached_across_trials(monkeypatch):
    from trainers import models
    from trainers.tasks import Classification

    models.clear_caches()
    encode.clear_caches()
    calls = []
    original = Classification.tokenize
    monkeypatch.setattr(Classification, "tokenize", lambda self, *a: calls.append(1) or original(self, *a))
    run_trial(tiny_config("classification"), RecordingReporter())
    assert encode.cached_encodings() == 1 and models.cached_models() == 1
    run_trial(tiny_config("classification", "optim.learning_rate=1e-2", "seed=3"), RecordingReporter())
    assert encode.cached_encodings() == 1 and models.cached_models() == 1
    assert len(calls) == 1  # the second trial tokenized nothing


def test_class_weights_come_from_the_training_fold(tmp_path, monkeypatch):
    import pandas as pd

    from trainers import losses

    path = tmp_path / "imbalanced.csv"
    labels = ["a"] * 150 + ["b"] * 50
    pd.DataFrame({"text": [f"row {i}" for i in range(200)], "label": labels}).to_csv(path, index=False)
    seen = []
    original = losses.classification_loss
    monkeypatch.setattr(losses, "classification_loss", lambda cfg, counts: seen.append(counts) or original(cfg, counts))
    common = [f"data.path={path}", "loss.name=class_weighted", "optim.max_steps=1"]
    run_trial(tiny_config("classification", *common), RecordingReporter())
    assert seen == [[120, 40]]  # the 160 training rows, stratified; never the 40 validation rows
    run_trial(tiny_config("classification", *common, "split.num_folds=4"), RecordingReporter())
    assert [sum(c) for c in seen[1:]] == [150] * 4 and all(c[0] == 112 or c[0] == 113 for c in seen[1:])


def test_held_out_test_split_never_reaches_the_trial_only_the_chosen_model(tmp_path):
    from trainers.saved import evaluate_held_out

    rep = RecordingReporter()
    cfg = tiny_config("classification", "split.test_fraction=0.1", f"output_dir={tmp_path}/m")
    out = run_trial(cfg, rep)
    assert out.num_test == 20 and out.test_metrics == {}  # the trial never evaluates it
    assert all(not k.startswith("test_") for _, metrics in rep.reports for k in metrics)
    assert (out.num_train, out.num_val) == (140, 40)  # val_fraction 0.2 of all rows, test 0.1
    test, rows = evaluate_held_out(cfg, out.model_dir)
    assert rows == 20 and set(test) == {"test_loss", "test_accuracy", "test_f1_macro", "test_recall_0", "test_recall_1"}
    assert evaluate_held_out(tiny_config("classification", f"output_dir={tmp_path}/m"), out.model_dir) == ({}, 0)


def test_regression_trial_learns_on_its_demo_data():
    rep = RecordingReporter()
    cfg = tiny_config(
        "regression",
        "data.max_rows=null",
        "optim.max_steps=150",
        "optim.batch_size=32",
        "optim.learning_rate=3e-3",
        "eval.eval_every_steps=50",
    )
    out = run_trial(cfg, rep)
    assert out.status == "completed" and out.label_names == []
    assert [s for s, _ in rep.reports] == [50, 100, 150]
    assert set(rep.reports[0][1]) == {"train_loss", "val_loss", "val_mse", "val_mae", "val_pearson"}
    first, last = rep.reports[0][1], rep.reports[-1][1]
    assert last["val_mse"] < first["val_mse"] and last["val_pearson"] > 0.5


def test_saves_adapter_or_model_with_label_mapping(tmp_path):
    out = run_trial(
        tiny_config("classification", "adaptation.method=lora", f"output_dir={tmp_path}/lora"),
        RecordingReporter(),
    )
    assert out.model_dir == f"{tmp_path}/lora"
    assert (tmp_path / "lora" / "adapter_config.json").is_file()
    assert json.loads((tmp_path / "lora" / "labels.json").read_text()) == {"0": "negative", "1": "positive"}
    full = run_trial(tiny_config("classification", f"output_dir={tmp_path}/full"), RecordingReporter())
    assert (tmp_path / "full" / "config.json").is_file() and full.model_dir
    from transformers import AutoModelForSequenceClassification

    loaded = AutoModelForSequenceClassification.from_pretrained(full.model_dir)
    assert loaded.config.id2label == {0: "negative", 1: "positive"}


def test_bad_inputs_fail_before_training(tmp_path):
    with pytest.raises(ConfigError, match="model.num_layers: 7 > the 4 layers"):
        run_trial(tiny_config("classification", "model.num_layers=7"), RecordingReporter())
    with pytest.raises(ConfigError, match="data.text_column: column 'sentence'"):
        run_trial(tiny_config("classification", "data.text_column=sentence"), RecordingReporter())


def test_a_device_the_machine_lacks_fails_before_training(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # (so on a GPU machine too)
    with pytest.raises(ConfigError, match="device: 'cuda' is not available"):
        run_trial(tiny_config("classification", "device=cuda"), RecordingReporter())


@pytest.mark.parametrize("method", ["full", "lora"])
def test_the_kept_weights_are_the_best_evaluation_and_what_is_saved(tmp_path, method):
    """eval.keep: best (the default) keeps, reports and saves the weights of the best evaluation, not
    the last step's; eval.keep: last keeps the last."""
    from trainers.api import Timings
    from trainers.loop import prepare
    from trainers.saved import load_trained

    common = (
        "optim.learning_rate=1e-1",
        "optim.max_steps=12",
        "eval.eval_every_steps=2",
        f"adaptation.method={method}",
    )
    cfg = tiny_config("classification", *common, f"output_dir={tmp_path}/best")
    rep = RecordingReporter()
    out = run_trial(cfg, rep)
    losses = {s: m["val_loss"] for s, m in rep.reports}
    best_step = min(losses, key=lambda s: losses[s])
    assert best_step != 12, losses  # the curve this test needs: the best is not the last
    assert [s for s, _ in rep.reports] == [2, 4, 6, 8, 10, 12]  # pruning sees every value
    assert out.kept_step == out.best_step == best_step
    assert out.kept_metrics == dict(rep.reports[best_step // 2 - 1][1]) == out.result_metrics
    assert out.final_step == 12 and out.final_metrics["val_loss"] != out.kept_metrics["val_loss"]

    prep = prepare(cfg, Timings())
    saved = load_trained(out.model_dir, cfg)
    again = prep.evaluate(cfg, saved.model, prep.splits.folds[0].val)
    assert again["val_loss"] == pytest.approx(out.kept_metrics["val_loss"], rel=1e-5)
    assert again["val_accuracy"] == out.kept_metrics["val_accuracy"]

    last = run_trial(tiny_config("classification", *common, "eval.keep=last"), RecordingReporter())
    assert last.kept_step == 12 and last.kept_metrics == last.final_metrics


def test_release_memory_frees_a_finished_trials_cycles_and_pages():
    import threading
    import weakref

    import psutil

    from trainers.loop import release_memory

    class Holder:
        pass

    a, b = Holder(), Holder()
    a.other, b.other = b, a  # a cycle, as HF modules make: only the collector frees it
    a.weights = torch.zeros(1000)
    gone = weakref.ref(a.weights)
    del a, b
    kept: list[list[bytearray]] = []

    def trial() -> None:  # a thread's arena, as each trial of a reused Ray worker has
        chunks = [bytearray(32 * 1024) for _ in range(8000)]  # 250 MB in small (arena, not mmap) blocks
        kept.append(chunks[::1000])  # a few survive, pinning the arena's top
        del chunks

    worker = threading.Thread(target=trial)
    worker.start()
    worker.join()
    before = psutil.Process().memory_info().rss
    release_memory()
    after = psutil.Process().memory_info().rss
    assert gone() is None
    if sys.platform.startswith("linux"):
        assert before - after > 100 * 2**20, (before, after)


@pytest.mark.parametrize(("given", "expected"), [(None, ("8", "8")), ("1024", ("1024", "8"))])
def test_a_trial_caps_the_kernel_caches_unless_the_user_set_them(monkeypatch, given, expected):
    """prepare() sets oneDNN's and ideep's cache sizes (read at their first use, so before the trial's
    first op: a Ray worker's first trial); a user's own ONEDNN_PRIMITIVE_CACHE_CAPACITY wins."""
    import os

    from trainers.api import Timings
    from trainers.loop import prepare

    for name in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):
        monkeypatch.delenv(name, raising=False)
    if given is not None:
        monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", given)
    prepare(tiny_config("classification"), Timings())
    assert (os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"], os.environ["LRU_CACHE_CAPACITY"]) == expected
