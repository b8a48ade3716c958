"""Errors raysweep reports to a user as one line, without a traceback."""

from __future__ import annotations

import re


class UserInputError(Exception):
    """Bad input (spec, data, profile): the CLI prints it as one line and exits 2.

    The message names the file and the field or column, states the rule and the
    value that broke it.
    """


class RunFailedError(Exception):
    """A run that started but failed: the CLI prints it and exits 1."""


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_SNIPPET = re.compile(r"^\[Rank ([\d,]+) Error Snippet\]:[ \t]*$", re.MULTILINE)
_EXCEPTION_LINE = re.compile(
    r"^(?:[A-Za-z_]\w*\.)*([A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt|Failure))(?::\s*(.*))?$")
_EXIT_DETAIL = re.compile(r"Worker exit detail:\s*(.+?)\s*$", re.MULTILINE)


def one_line_cause(text: str) -> str:
    """The root cause in a Ray error text (a trial's error file, a WorkerGroupError), in
    one line: for a worker-group failure, the first failing rank's `Type: message`, or
    "worker destroyed: <Ray's exit detail>" when Ray killed the worker; else the last
    `Type: message` line (the innermost exception of a traceback)."""
    text = _ANSI.sub("", text)
    parts = _SNIPPET.split(text)  # [before, ranks, snippet, ranks, snippet, ...]
    if len(parts) >= 3:
        ranks = parts[1]
        return f"{'ranks' if ',' in ranks else 'rank'} {ranks}: {_cause(parts[2])}"
    return _cause(text)


def _cause(text: str) -> str:
    detail = _EXIT_DETAIL.search(text)
    if detail:
        return f"worker destroyed: {detail.group(1).rstrip('.')}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        match = _EXCEPTION_LINE.match(line)
        if match:
            name, message = match.groups()
            return f"{name}: {message}" if message else name
    return lines[-1][:500] if lines else "unknown error"
