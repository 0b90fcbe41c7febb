"""Safe file writing shared by every command: atomic writes and real writability probes.

`atomic_write` writes to a temporary file in the target's folder, flushes it to disk, gives it
the permissions a plain `open()` would (mkstemp makes owner-only 0600 files), then renames it
over the target; on any error the temporary file is removed. An interrupted write therefore never
leaves a partial file and never clobbers the previous version.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO


def default_mode() -> int:
    """Permissions a plain `open()` gives a new file: 0666 minus the umask."""
    return 0o666 & ~process_umask()


def process_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux: /proc), else by
    setting and restoring it under a lock. Flipping it to 0 to read it (as before) raced with the
    studio's worker threads creating files at that moment."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o077)  # a restrictive value for the instant it is set
        os.umask(mask)
    return mask


_UMASK_LOCK = threading.Lock()


def atomic_write(path: str | os.PathLike, write: Callable[[IO], None], binary: bool = False) -> Path:
    """Call `write(file)` on a temporary file next to `path`, then rename it to `path`."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text))


def probe_writable(folder: str | os.PathLike) -> None:
    """Create and delete a file in `folder`; raises OSError when that fails. A real probe:
    `os.access` says yes to root even where writes fail (/proc, /sys, read-only mounts)."""
    with tempfile.TemporaryFile(dir=folder, prefix=".stage-probe-"):
        pass
