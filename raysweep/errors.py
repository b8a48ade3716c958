"""Errors raysweep reports to a user as one line, without a traceback."""

from __future__ import annotations


class UserInputError(Exception):
    """Bad input (spec, data, profile): the CLI prints it as one line and exits 2.

    The message names the file and the field or column, states the rule and the
    value that broke it.
    """


class RunFailedError(Exception):
    """A run that started but failed: the CLI prints it and exits 1."""
