"""One exception vocabulary for bad input: every message names the file (or key) and the problem."""

from __future__ import annotations

from pathlib import Path

__all__ = ["SegdiffError", "InputError", "ConfigError", "WeightsUnavailable"]


class SegdiffError(Exception):
    """Base class of all errors raised for bad user input."""


class InputError(SegdiffError):
    """A data file (volume, label map, case sheet, checkpoint) is unusable.

    The message is one line: ``<path>: <problem>``.

    Args:
        path: the file (or other source, e.g. ``upload``) that is unusable.
        problem: what is wrong with it, one line.
    """

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ConfigError(SegdiffError):
    """A configuration key is missing, unknown or of the wrong type/value.

    The message is one line: ``config key '<dotted.key>': <problem>``.

    Args:
        key: the dotted config key.
        problem: what is wrong with it, one line.
    """

    def __init__(self, key: str, problem: str):
        self.key = key
        self.problem = problem
        super().__init__(f"config key '{key}': {problem}")


class WeightsUnavailable(SegdiffError):
    """Pretrained weights are missing or could not be fetched.

    The message says where they were looked for and how to provide them.
    """
