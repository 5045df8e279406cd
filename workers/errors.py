"""The one exception type users see, and the two ways errors are shortened for them.

A `UserError` carries a message that names the field, file or library at fault and what to do
about it. The CLI prints it on one line and exits 2; programming errors keep their tracebacks.
It lives in `workers` because both sides raise it and dependencies only flow driver -> worker.
"""

from __future__ import annotations

import difflib
from typing import Iterable


class UserError(Exception):
    """A problem the user can fix: bad spec, missing file, missing library, impossible request."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class RunFailed(UserError):
    """The run could not finish (a shard failed for good, every worker died): exit 1, not 2."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception, at most `limit` characters, for one-line errors.

    A UserError already speaks to the user; any other exception keeps its type name in front
    ("OSError: ..."), because a bare library message rarely says what kind of failure it was.
    """
    text = str(exc).strip()
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if not isinstance(exc, UserError):
        first = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return first if len(first) <= limit else first[: limit - 3] + "..."


def did_you_mean(name: str, known: Iterable[str], listed: int = 8) -> str:
    """' Did you mean: bert?' for a near miss, else the first `listed` known names."""
    known = sorted(known)
    close = difflib.get_close_matches(str(name), known, n=1)
    if close:
        return f" Did you mean: {close[0]}?"
    more = ", ..." if len(known) > listed else ""
    return f" Known: {', '.join(known[:listed])}{more}."
