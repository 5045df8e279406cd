"""The ways a run ends other than a stored row, each its own type, and how errors are shortened for users.

- `UserError`: a problem the user can fix (bad spec, missing file or library, impossible request);
  its message names the field, file or library at fault and what to do. Exit 2.
- `RunFailed`: the run could not finish (a shard failed for good, every worker died). Exit 1.
- `RunInterrupted` (a `RunFailed`): Ctrl-C; the workers were stopped. Exit 130.
- `RunComplete`: `--resume` of a run whose row is stored already: nothing to do. Exit 0.
The CLI tells them apart by type and prints one line; programming errors keep their tracebacks.
They live in `workers` because both sides raise them and dependencies only flow driver -> worker.
"""

from __future__ import annotations

import difflib
import shlex
from typing import Iterable


class UserError(Exception):
    """A problem the user can fix: bad spec, missing file, missing library, impossible request."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class RunFailed(Exception):
    """The run could not finish (a shard failed for good, every worker died): exit 1, not 2."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class RunInterrupted(RunFailed):
    """Ctrl-C: the workers were stopped; the run folder keeps every finished shard."""

    def __init__(self, run_id: str, resumable: bool, results: str, why: str = "") -> None:
        self.run_id = run_id
        self.resumable = resumable
        how = (f"; workers stopped, finished shards kept: bench submit --resume {run_id} --results {shlex.quote(results)}"
               if resumable else "; workers stopped before any shard finished (nothing to resume)")
        super().__init__(f"interrupted: run {run_id}{why or how}")


class RunComplete(Exception):
    """`--resume` of a run whose row is already in the table: nothing to do, nothing added."""


SPEAKS_TO_USERS = (UserError, RunFailed)  # messages written for the user: shown without a type name


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception, at most `limit` characters, for one-line errors.

    A UserError or RunFailed already speaks to the user; any other exception keeps its type name in front
    ("OSError: ..."), because a bare library message rarely says what kind of failure it was.
    """
    text = str(exc).strip()
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if not isinstance(exc, SPEAKS_TO_USERS):
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
