"""One policy for every versioned file stage reads (checkpoints, token folders, manifests,
sessions, band songs, the embedding cache).

Each file names its format and carries an integer version >= 1. A reader accepts its own format
at its current version or any older one (it knows how to read what it wrote before) and refuses
an unknown format, a missing or malformed version, and a newer version ("upgrade stage"), each
with a one-line error naming the file. Readers of caches catch the error and start afresh.
"""

from __future__ import annotations

from stage.errors import StageError


def check_format(
    found_format: object,
    found_version: object,
    *,
    expected: str,
    version: int,
    where: object,
    what: str,
    error: type[StageError] = StageError,
) -> int:
    """Check a file's (format, version) against this stage's `expected` format at `version`.

    where: the file, for the message; what: a few words naming the kind of file ("stage
    checkpoint", "session file"). Returns the file's version (1..version); raises `error` otherwise.
    """
    if found_format != expected:
        raise error(f"{where}: not a {what} (format {found_format!r}, expected {expected!r})")
    if isinstance(found_version, bool) or not isinstance(found_version, int) or found_version < 1:
        raise error(f"{where}: bad {what} version {found_version!r}")
    if found_version > version:
        raise error(f"{where}: {what} version {found_version} is newer than this stage supports ({version}); upgrade stage")
    return found_version


def check_header(data: object, **kw) -> int:
    """`check_format` on a JSON object's "format" and "version" keys (anything but an object is a
    foreign file). kw: check_format's keywords."""
    header = data if isinstance(data, dict) else {}
    return check_format(header.get("format"), header.get("version"), **kw)
