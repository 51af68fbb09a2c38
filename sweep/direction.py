"""Which way an objective is better (as Optuna's ``StudyDirection``), and the one ``sign`` that turns a
value into a score where larger is better."""

from __future__ import annotations

from enum import StrEnum


class Direction(StrEnum):
    MINIMIZE = "minimize"
    MAXIMIZE = "maximize"

    @property
    def sign(self) -> float:
        """+1 when larger is better: ``sign * value`` grows as the objective improves."""
        return 1.0 if self is Direction.MAXIMIZE else -1.0

    def score(self, value: float) -> float:
        """``value`` as a score where larger is better."""
        return self.sign * value

    def reaches(self, value: float, threshold: float) -> bool:
        """True when ``value`` is at least as good as ``threshold``."""
        return self.score(value) >= self.score(threshold)

    def relation(self, reached: bool = True) -> str:
        """How a value that (does not) reach a threshold compares with it: ``>=``/``<`` when maximizing."""
        if self is Direction.MAXIMIZE:
            return ">=" if reached else "<"
        return "<=" if reached else ">"
