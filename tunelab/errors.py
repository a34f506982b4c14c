"""User-facing errors. The CLI prints these without a traceback and exits non-zero."""

from __future__ import annotations


class TunelabError(Exception):
    """A mistake the user can fix; `problems` lists each one (location: what is wrong, and the fix)."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or []

    def __str__(self) -> str:
        head = super().__str__()
        return "\n".join([head, *("  - " + p for p in self.problems)]) if self.problems else head


class ConfigError(TunelabError):
    """The config is wrong: file:line, key, reason and fix."""


class DataError(TunelabError):
    """The data is wrong: file:line, field, reason."""


class ModelNotAvailableError(TunelabError):
    """The model cannot be found locally and cannot be downloaded."""


class RunIncompleteError(TunelabError):
    """A run directory has no completion marker: training did not finish."""


class TrainingDivergedError(TunelabError):
    """The loss became NaN or infinite."""


class TrainingFailedError(TunelabError):
    """A process of a multi-process run failed; the run stays incomplete."""
