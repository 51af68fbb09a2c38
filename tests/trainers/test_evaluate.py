import numpy as np
import torch

from trainers import models
from trainers.data import Encoded
from trainers.evaluate import evaluate_causal_lm, exact_match, normalize_answer


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
    tok = models.load_tokenizer("tiny-gpt2")
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
