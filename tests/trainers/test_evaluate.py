import math

import numpy as np
import pytest
import torch

from trainers.data.encode import Encoded
from trainers.evaluate import evaluate_causal_lm, exact_match, normalize_answer
from trainers.model_files import load_tokenizer


def test_exact_match_normalizes_case_and_whitespace():
    assert normalize_answer("  Forty\n two ") == "forty two"
    assert exact_match(["42", " 42 ", "41", "Paris"], ["42", "42", "42", "paris"]) == 0.75
    assert exact_match([], []) == 0.0


class AnswerKey(torch.nn.Module):
    """A 'model' that answers rows it knows correctly (then eos) and others with a wrong token."""

    def __init__(self, answers: dict[tuple[int, ...], list[int]], eos: int, vocab: int) -> None:
        super().__init__()
        self.answers, self.eos, self.vocab = answers, eos, vocab
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask):
        return type("Out", (), {"logits": torch.zeros(*input_ids.shape, self.vocab)})()

    def generate(self, input_ids, attention_mask, max_new_tokens, **kw):
        rows = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
            prompt = tuple(i for i, m in zip(ids, mask, strict=True) if m)
            new = [*self.answers.get(prompt, [999]), self.eos, 1000, 1001]
            rows.append(ids + new[:max_new_tokens])
        return torch.tensor(rows)


def test_causal_exact_match_scores_greedy_answers_against_references():
    tok = load_tokenizer("tiny-gpt2")
    prompts = [
        tok("what is one plus one ?", add_special_tokens=False)["input_ids"],
        tok("capital of france ?", add_special_tokens=False)["input_ids"],
    ]
    answers = [
        tok("two", add_special_tokens=False)["input_ids"],
        tok("paris", add_special_tokens=False)["input_ids"],
    ]
    enc = Encoded(
        input_ids=[p + a + [tok.eos_token_id] for p, a in zip(prompts, answers, strict=True)],
        labels=[[-100] * len(p) + a + [tok.eos_token_id] for p, a in zip(prompts, answers, strict=True)],
        prompt_ids=prompts,
        references=["Two", "Paris"],
    )
    # knows the first answer only; prompts have different lengths, so left padding is exercised
    model = AnswerKey({tuple(prompts[0]): answers[0]}, tok.eos_token_id, tok.vocab_size)
    metrics = evaluate_causal_lm(model, enc, np.array([0, 1]), tok, torch.device("cpu"), 8, 2, 4)
    assert metrics["val_exact_match"] == 0.5
    only_first = evaluate_causal_lm(model, enc, np.array([0, 1]), tok, torch.device("cpu"), 8, 1, 4)
    assert only_first["val_exact_match"] == 1.0  # max_generate caps how many are answered


class FixedLogits(torch.nn.Module):
    """A 'classifier' whose logits for each row are given (looked up by the row's first token)."""

    def __init__(self, by_first_token: dict[int, list[float]]) -> None:
        super().__init__()
        self.table = by_first_token
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask):
        logits = torch.tensor([self.table[int(ids[0])] for ids in input_ids])
        return type("Out", (), {"logits": logits})()


def test_classification_metrics_match_hand_values():
    from trainers.evaluate import evaluate_classification

    tok = load_tokenizer("tiny-bert")
    logits = {10: [2.0, 0.0, 0.0], 11: [0.0, 1.0, 0.0], 12: [0.0, 1.0, 0.0], 13: [0.0, 0.0, 3.0]}
    enc = Encoded(input_ids=[[10, 5], [11], [12, 7, 8], [13]], labels=np.array([0, 1, 2, 2]))
    metrics = evaluate_classification(FixedLogits(logits), enc, np.arange(4), tok, torch.device("cpu"), batch_size=3)
    # predictions 0, 1, 1, 2 against 0, 1, 2, 2: three right
    assert metrics["val_accuracy"] == 0.75
    # per-class F1: class 0 = 1, class 1 = 2*1*0.5/1.5 = 2/3, class 2 = 2*1*0.5/1.5 = 2/3
    assert metrics["val_f1_macro"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert (metrics["val_recall_0"], metrics["val_recall_1"], metrics["val_recall_2"]) == (1.0, 1.0, 0.5)

    def nll(row, label):
        return -(row[label] - math.log(sum(math.exp(v) for v in row)))

    hand = [nll([2, 0, 0], 0), nll([0, 1, 0], 1), nll([0, 1, 0], 2), nll([0, 0, 3], 2)]
    assert metrics["val_loss"] == pytest.approx(sum(hand) / 4, abs=1e-6)


def test_regression_metrics_match_hand_values():
    from trainers.evaluate import regression_metrics

    got = regression_metrics(np.array([1.0, 2.0, 4.0]), np.array([1.0, 3.0, 3.0]))
    assert got["val_mse"] == pytest.approx(2 / 3) and got["val_loss"] == got["val_mse"]
    assert got["val_mae"] == pytest.approx(2 / 3)
    # pearson by hand: means 7/3 and 7/3; deviations (-4/3, -1/3, 5/3) and (-4/3, 2/3, 2/3)
    cov = (16 / 9 - 2 / 9 + 10 / 9) / 3
    sd_p = math.sqrt((16 / 9 + 1 / 9 + 25 / 9) / 3)
    sd_t = math.sqrt((16 / 9 + 4 / 9 + 4 / 9) / 3)
    assert got["val_pearson"] == pytest.approx(cov / (sd_p * sd_t))
    assert regression_metrics(np.array([2.0, 2.0]), np.array([1.0, 3.0]))["val_pearson"] == 0.0


class FirstTokenAndLength(torch.nn.Module):
    """Logits that identify the row: (first token id, number of unmasked tokens)."""

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.bool()
        first = torch.stack([ids[m][0] for ids, m in zip(input_ids, mask, strict=True)]).float()
        return type("Out", (), {"logits": torch.stack([first, mask.sum(1).float()], 1)})()


def test_eval_batches_are_cut_by_length_but_outputs_keep_the_rows_order():
    from trainers.evaluate import row_outputs

    tok = load_tokenizer("tiny-bert")
    lengths = [7, 2, 9, 3, 3, 12, 1, 5]
    ids = [[100 + i] + [5] * (n - 1) for i, n in enumerate(lengths)]
    enc = Encoded(input_ids=ids, labels=np.arange(len(ids)))
    rows = np.array([5, 0, 7, 2, 1, 6, 3])  # any order, a subset
    out, target = row_outputs(FirstTokenAndLength(), enc, rows, tok, torch.device("cpu"), 3, torch.long)
    assert out[:, 0].tolist() == [100 + r for r in rows]
    assert out[:, 1].tolist() == [lengths[r] for r in rows]
    assert target.tolist() == rows.tolist()


@pytest.mark.parametrize(
    ("precision", "native_bf16", "expected"),
    [("fp32", True, None), ("bf16", False, torch.bfloat16), ("auto", True, torch.bfloat16), ("auto", False, None)],
)
def test_precision_decides_cpu_autocast(monkeypatch, precision, native_bf16, expected):
    from trainers import evaluate

    monkeypatch.setattr(evaluate, "cpu_has_bf16", lambda: native_bf16)
    monkeypatch.setattr(evaluate, "_precision", "auto")
    evaluate.set_precision(precision)
    with evaluate.autocast(torch.device("cpu")):
        assert torch.is_autocast_enabled("cpu") is (expected is not None)
        out = torch.nn.Linear(4, 2)(torch.ones(3, 4))
    assert out.dtype == (expected or torch.float32)


def test_a_trial_runs_in_the_precision_it_is_given():
    from tests.trainers.helpers import tiny_config
    from trainers.api import RecordingReporter
    from trainers.loop import run_trial

    seen: dict[str, torch.dtype] = {}

    def note(mod, args, out):
        if isinstance(mod, torch.nn.Linear):
            seen.setdefault("Linear", out.dtype)

    hook = torch.nn.modules.module.register_module_forward_hook(note)
    try:
        run_trial(tiny_config("classification", "precision=bf16", "optim.max_steps=2"), RecordingReporter())
        assert seen["Linear"] == torch.bfloat16
        seen.clear()
        run_trial(tiny_config("classification", "precision=fp32", "optim.max_steps=2"), RecordingReporter())
        assert seen["Linear"] == torch.float32
    finally:
        hook.remove()
