"""The one exception type users see.

A `UserError` carries a message that names the field, file or library at fault and what to do
about it. The CLI prints it on one line and exits 2; programming errors keep their tracebacks.
It lives in `workers` because both sides raise it and dependencies only flow driver -> worker.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix: bad spec, missing file, missing library, impossible request."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class RunFailed(UserError):
    """The run could not finish (a shard failed for good, every worker died): exit 1, not 2."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message (its type name when it has none)."""
    text = str(exc).strip()
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    return first[:limit]


def one_line(exc: BaseException) -> str:
    """The first meaningful line of an exception, for errors that cross the actor boundary."""
    text = str(exc).strip() or type(exc).__name__
    first = next((line.strip() for line in text.splitlines() if line.strip()), text)
    return first if isinstance(exc, UserError) else f"{type(exc).__name__}: {first}"
