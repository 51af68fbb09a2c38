"""The sweep's user-facing errors. Each carries fix-it lines; the CLI prints them and exits 2."""

from __future__ import annotations

from trainers.errors import ConfigError


class SweepError(Exception):
    """Root of the sweep's user-facing errors."""


class SpecError(SweepError, ConfigError):
    """A spec (or its data) is wrong; ``problems`` has one fix-it line each."""


class SecretError(SweepError):
    """A URL whose password is not available (masked in the record, or an unset ${ENV_VAR})."""
