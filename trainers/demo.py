"""Generates the shipped demo datasets (``python -m trainers.demo``): written by this project, seeded.

- ``sentiment.csv``: short product/movie reviews, labels 'positive' / 'negative', with negation
  ("not good" is negative) so that a model has to read more than single words.
- ``ratings.csv``: the same kind of reviews with a 0-5 score (regression): the adjective sets the base
  score, intensifiers push it to the extremes, hedges and negation pull it to the middle.
- ``qa.jsonl``: question -> expected response pairs about numbers (next / previous / double),
  asked in several phrasings; validation asks about numbers in phrasings the model has seen
  with other numbers.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from trainers.tasks import DEMO_DIR

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


STRONG = {"really ": 0.6, "very ": 0.6, "truly ": 0.7, "incredibly ": 0.9}
HEDGES = {"quite ": -0.3, "rather ": -0.5}


def rating_rows(n: int = 600, seed: int = 17) -> list[tuple[str, float]]:
    """Reviews with a score in [0, 5]: each adjective has its own strength, so the words matter."""
    rng = random.Random(seed)
    strength = {a: 3.4 + 1.4 * i / (len(POSITIVE) - 1) for i, a in enumerate(POSITIVE)}
    strength |= {a: 1.6 - 1.4 * i / (len(NEGATIVE) - 1) for i, a in enumerate(NEGATIVE)}
    rows: list[tuple[str, float]] = []
    seen: set[str] = set()
    while len(rows) < n:
        adjective = rng.choice(POSITIVE + NEGATIVE)
        intensifier = rng.choice(INTENSIFIERS)
        negate = rng.random() < 0.2
        base = strength[adjective]
        push = STRONG.get(intensifier, 0.0) + HEDGES.get(intensifier, 0.0)
        score = base + push if base > 2.5 else base - push
        if negate:
            score = 2.5 - 0.4 * (score - 2.5)  # "not great" is lukewarm, not terrible
        template = rng.choice(NEGATED if negate else TEMPLATES)
        text = template.format(s=rng.choice(SUBJECTS), i=intensifier, a=adjective)
        text = text[0].upper() + text[1:]
        if text in seen:
            continue
        seen.add(text)
        rows.append((text, round(min(5.0, max(0.0, score)), 2)))
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
    with (directory / "ratings.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rating_rows())
    with (directory / "qa.jsonl").open("w") as f:
        for row in qa_rows():
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    write_demo_data()
    print(f"wrote sentiment.csv, ratings.csv and qa.jsonl in {DEMO_DIR}")
