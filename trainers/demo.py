"""Generates the shipped demo datasets (``python -m trainers.demo``): written by this project, seeded.

- ``sentiment.csv``: short product/movie reviews, labels 'positive' / 'negative', with negation
  ("not good" is negative) so that a model has to read more than single words.
- ``qa.jsonl``: question -> expected response pairs about numbers (next / previous / double),
  asked in several phrasings; validation asks about numbers in phrasings the model has seen
  with other numbers.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from trainers.data import DEMO_DIR

POSITIVE = [
    "good",
    "great",
    "excellent",
    "wonderful",
    "delightful",
    "superb",
    "enjoyable",
    "charming",
    "brilliant",
    "pleasant",
    "moving",
    "fantastic",
    "lovely",
    "solid",
    "impressive",
]
NEGATIVE = [
    "bad",
    "awful",
    "terrible",
    "boring",
    "dull",
    "poor",
    "disappointing",
    "horrible",
    "weak",
    "tedious",
    "clumsy",
    "bland",
    "mediocre",
    "painful",
    "forgettable",
]
SUBJECTS = [
    "the movie",
    "this film",
    "the acting",
    "the plot",
    "the soundtrack",
    "the ending",
    "the book",
    "the service",
    "this phone",
    "the dinner",
    "the hotel",
    "the camera",
    "the story",
    "the show",
    "the game",
    "the concert",
    "the sequel",
    "the characters",
    "the dialogue",
    "the design",
]
INTENSIFIERS = ["", "", "really ", "very ", "quite ", "truly ", "rather ", "incredibly "]
TEMPLATES = [
    "{s} was {i}{a}.",
    "{s} is {i}{a}.",
    "i thought {s} was {i}{a}.",
    "honestly, {s} felt {i}{a}.",
    "{s} turned out {i}{a}, as expected.",
    "overall {s} was {i}{a}",
]
NEGATED = ["{s} was not {a}.", "{s} is not {i}{a} at all.", "i would not call {s} {a}.", "{s} was never {a}."]


def sentiment_rows(n: int = 1200, seed: int = 13) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows: list[tuple[str, str]] = []
    seen: set[str] = set()
    while len(rows) < n:
        positive = rng.random() < 0.5
        negate = rng.random() < 0.25
        word_positive = positive != negate
        adjective = rng.choice(POSITIVE if word_positive else NEGATIVE)
        template = rng.choice(NEGATED if negate else TEMPLATES)
        text = template.format(s=rng.choice(SUBJECTS), i=rng.choice(INTENSIFIERS), a=adjective)
        text = text[0].upper() + text[1:]
        if text in seen:
            continue
        seen.add(text)
        rows.append((text, "positive" if positive else "negative"))
    return rows


QUESTIONS = {
    "next": [
        "What number comes after {n}?",
        "What is the next number after {n}?",
        "Count up one from {n}.",
        "{n} plus one is?",
    ],
    "previous": [
        "What number comes before {n}?",
        "What is the number before {n}?",
        "Count down one from {n}.",
        "{n} minus one is?",
    ],
    "double": ["What is double {n}?", "What is {n} times two?", "Twice {n} is?"],
}


def qa_rows(seed: int = 7) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows: list[dict[str, str]] = []
    for n in range(1, 50):
        for kind, phrasings in QUESTIONS.items():
            answer = {"next": n + 1, "previous": n - 1, "double": 2 * n}[kind]
            for phrasing in phrasings:
                rows.append({"prompt": phrasing.format(n=n), "response": str(answer)})
    rng.shuffle(rows)
    return rows


def write_demo_data(directory: Path = DEMO_DIR) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "sentiment.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(sentiment_rows())
    with (directory / "qa.jsonl").open("w") as f:
        for row in qa_rows():
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    write_demo_data()
    print(f"wrote {DEMO_DIR}/sentiment.csv and {DEMO_DIR}/qa.jsonl")
