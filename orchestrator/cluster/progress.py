"""A rich progress bar for a run: one bar per pass, in examples, with the live throughput."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from workers.contract import ShardResult


class RunProgress:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"), TimeElapsedColumn(),
            console=Console(stderr=True), transient=False, disable=not enabled,
        )
        self._tasks: dict[str, int] = {}
        self._status = None

    def __enter__(self) -> "RunProgress":
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)

    def status(self, text: str) -> None:
        if self._status is None:
            self._status = self._progress.add_task(text, total=None, note="")
        else:
            self._progress.update(self._status, description=text, visible=True)

    def start_pass(self, pass_name: str, label: str, examples: int, done: int = 0) -> None:
        if self._status is not None:
            self._progress.update(self._status, visible=False)
        self._tasks[pass_name] = self._progress.add_task(f"{label} pass", total=examples, completed=done, note="")

    def advance(self, result: ShardResult) -> None:
        task = self._tasks.get(result.pass_name)
        if task is None:
            return
        if result.error is not None:
            self._progress.update(task, note=f"[yellow]retrying shard {result.shard_id}: {result.error.message[:60]}")
            return
        rate = result.items / result.core_seconds if result.core_seconds else 0.0
        self._progress.update(task, advance=result.examples, note=f"{rate:,.1f} items/s core (last shard)")
