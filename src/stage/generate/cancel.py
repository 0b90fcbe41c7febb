"""Stopping a generation on request: a `threading.Event` set by another thread (the studio's
Cancel button), checked between decoding steps.

The check rides on the progress callback that the Generator already calls after every sampling
step (generator.py), so the decode loop itself stays free of host syncs and knows nothing about
cancelling: `watch(progress, cancel)` returns a callback that raises `Cancelled` once the event is
set, and the exception unwinds through the model, leaving nothing half-written. Callers also
`check` at the points where no step runs (before the model starts, after it ends and before the
takes are written), so a cancel that arrives during beat tracking or the final codec decode still
stops the take.

    cancel = threading.Event()
    session.add_takes(model, settings, progress, cancel=cancel)   # another thread: cancel.set()
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from stage.errors import Cancelled

Progress = Callable[[int, int], None]


def check(cancel: threading.Event | None) -> None:
    """Raise `Cancelled` if `cancel` is set (None: never)."""
    if cancel is not None and cancel.is_set():
        raise Cancelled()


def watch(progress: Progress | None, cancel: threading.Event | None) -> Progress | None:
    """progress(done, total), checking `cancel` first at every step (unchanged when cancel is None)."""
    if cancel is None:
        return progress

    def step(done: int, total: int) -> None:
        check(cancel)
        if progress is not None:
            progress(done, total)

    return step
