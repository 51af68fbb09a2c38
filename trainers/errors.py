"""ConfigError: a user's mistake in a trial's config or its data, said as one fix-it line per problem.

Every module that checks input raises it, so it imports nothing: it sits below them all.
"""

from __future__ import annotations

from collections.abc import Sequence


class ConfigError(ValueError):
    """A user mistake in a config or its data; ``problems`` holds one fix-it line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    def __reduce__(self) -> tuple[type, tuple[list[str]]]:  # survives pickling (Ray workers -> driver)
        return (type(self), (self.problems,))
