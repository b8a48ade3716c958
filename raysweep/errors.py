"""Errors raysweep reports to a user as one line, without a traceback."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

STORAGE_FULL = "storage full"
"""How a sweep's stop reason starts when a trial ran out of disk space (SweepBudget)."""


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


CAUSE_ATTR = "raysweep_cause"
"""The attribute a trainer's exception carries its Cause in (it travels with the
exception when Ray pickles it: an exception's __dict__ is part of its pickle)."""


@dataclass(frozen=True)
class Cause:
    """Why a trainer failed, as the training process saw it: which rank (of how many),
    the exception's type and message, and the trainer's own frame it came through."""

    rank: int
    world_size: int
    type: str
    message: str
    frame: str = ""
    """"module:line in function" of the deepest frame in the trainer's module ("" when
    the exception never passed through it)."""

    def line(self) -> str:
        text = self.message.strip().splitlines()[0] if self.message.strip() else ""
        where = f" (at {self.frame})" if self.frame else ""
        rank = f"rank {self.rank}: " if self.world_size > 1 else ""
        return f"{rank}{self.type}{': ' + text if text else ''}{where}"


def note_cause(exc: BaseException, rank: int, world_size: int, trainer_module: str) -> None:
    """Attach the Cause of `exc`, raised by the trainer in `trainer_module`, to it (once:
    the innermost rank that saw it keeps it)."""
    if getattr(exc, CAUSE_ATTR, None) is not None:
        return
    frame, tb = "", exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if tb.tb_frame.f_globals.get("__name__") == trainer_module:
            frame = f"{trainer_module}:{tb.tb_lineno} in {code.co_name}"
        tb = tb.tb_next
    try:
        setattr(exc, CAUSE_ATTR, Cause(rank, world_size, type(exc).__name__, str(exc), frame))
    except AttributeError:  # (an exception type that takes no attributes: read from text)
        pass


def cause_of(exc: BaseException) -> Cause | None:
    """The Cause a trainer's exception carries, looked for through the wrappers Ray puts
    round it (a task error's `cause`, Train's per-rank `worker_failures` and
    `controller_failure`, chained exceptions unless raised `from None`); of several
    ranks, the lowest."""
    found: list[Cause] = []
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        item = todo.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        cause = getattr(item, CAUSE_ATTR, None)
        if isinstance(cause, Cause):  # (what the trainer raised: the exceptions it led to are not looked at)
            found.append(cause)
            continue
        failures = getattr(item, "worker_failures", None)
        inner = list(failures.values()) if isinstance(failures, dict) else []
        todo += inner + [getattr(item, "cause", None), getattr(item, "controller_failure", None), item.__cause__]
        if not item.__suppress_context__:  # (`raise ... from None` says the context is not the cause)
            todo.append(item.__context__)
    return min(found, key=lambda c: c.rank) if found else None
