"""A terminal progress line for a job: its queue position, then its denoising steps.

On a terminal it redraws one line; elsewhere (a log, a pipe) it writes a line per
change, so the output still tells the story.
"""

from __future__ import annotations

from typing import Any, TextIO

_WIDTH = 30


def bar(step: int, total: int) -> str:
    done = _WIDTH * step // total
    return f"[{'#' * done}{'.' * (_WIDTH - done)}] step {step}/{total}"


def _steps(view: dict[str, Any]) -> tuple[int, int]:
    progress = view.get("progress") or {}
    return int(progress.get("step") or 0), int(progress.get("total") or 0)


def describe(view: dict[str, Any]) -> str:
    status = str(view.get("status", "?"))
    step, total = _steps(view)
    if status == "queued":
        ahead = view.get("queue_position")  # jobs that start first (0 = next)
        return "queued" + (f", position {ahead + 1}" if ahead is not None else "")
    if status == "running" and total:
        return bar(step, total)
    if status == "running":
        return "running"
    return status


class ProgressLine:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.last = ""
        self.shown = (0, 0)  # the last step/total drawn

    def __call__(self, view: dict[str, Any]) -> None:
        step, total = self.shown
        if view.get("status") == "succeeded" and 0 < step < total:
            # Progress events are coalesced: the last steps may arrive with the result.
            self._write(bar(total, total))
        if view.get("status") == "running":
            self.shown = _steps(view)
        self._write(describe(view))

    def _write(self, text: str) -> None:
        if text == self.last:
            return
        self.last = text
        if self.tty:
            self.out.write("\r\033[K" + text)
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def close(self) -> None:
        if self.tty and self.last:
            self.out.write("\n")
            self.out.flush()
