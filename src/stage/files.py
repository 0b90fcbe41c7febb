"""Safe file writing shared by every command: atomic writes, real writability probes, the
refusal to overwrite, and an exclusive lock on a folder.

`atomic_write` writes to a temporary file in the target's folder, flushes it to disk, gives it
the permissions a plain `open()` would (mkstemp makes owner-only 0600 files), then renames it
over the target; on any error the temporary file is removed. An interrupted write therefore never
leaves a partial file and never clobbers the previous version.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from stage.errors import StageError


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


def atomic_write(path: str | os.PathLike, write: Callable[[IO], object], binary: bool = False) -> Path:
    """Call `write(file)` on a temporary file next to `path`, then rename it to `path`."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=folder)
    try:
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8")) as f:
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


def probe_writable(folder: str | os.PathLike[str]) -> None:
    """Create and delete a file in `folder`; raises OSError when that fails. A real probe:
    `os.access` says yes to root even where writes fail (/proc, /sys, read-only mounts)."""
    with tempfile.TemporaryFile(dir=folder, prefix=".stage-probe-"):
        pass


def write_json(path: Path, data: dict, overwrite: bool = False) -> Path:
    """Atomic JSON write (temp file + rename); refuses to replace a file unless `overwrite`."""
    check_free([path], overwrite)
    return atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def ensure_writable_dir(folder: Path) -> bool:
    """Create `folder` if needed and prove it is writable by creating a file in it.
    Returns True when this call created it. Raises StageError otherwise (before any work)."""
    folder = Path(folder)
    created = False
    if folder.exists() and not folder.is_dir():
        raise StageError(f"{folder}: exists and is not a folder")
    if not folder.exists():
        try:
            folder.mkdir(parents=True)
            created = True
        except OSError as err:
            raise StageError(f"{folder}: cannot create the output folder ({err.strerror or err})") from None
    try:
        probe_writable(folder)
    except OSError as err:
        if created:
            shutil.rmtree(folder, ignore_errors=True)
        raise StageError(f"{folder}: output folder is not writable ({err.strerror or err})") from None
    return created


def check_free(paths, force: bool) -> None:
    """Refuse (before any work) to replace existing files unless `force`."""
    if force:
        return
    for path in paths:
        if Path(path).exists():
            raise StageError(f"{path}: already exists (use --force to overwrite)")


@contextlib.contextmanager
def exclusive_lock(path: Path, busy: str) -> Iterator[None]:
    """Hold an exclusive, non-blocking `flock` on `path` (created if missing) while the block runs.
    Raises StageError(busy) when another process holds it. Not on POSIX: no locking."""
    try:
        import fcntl
    except ImportError:  # not on POSIX: no locking
        yield
        return
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise StageError(busy) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
