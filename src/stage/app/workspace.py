"""The studio's sessions folder: one `stage session` folder per song, under one root.

Session names come from requests, so every name is validated before it becomes a path: letters,
digits, '-', '_' and '.', not starting with '.', and the resolved folder must sit directly in the
root. The state itself is read and written only through `Session` (stage.generate.session), the
same store as `stage session`, so a session made here opens with `stage session show` and back.

`Workspace.locked(name)` gives one request at a time a session: requests of this server wait
their turn (a thread lock per session), and a CLI command working on it at that moment makes the
request fail with the store's one-line "another stage command" message (its file lock).
"""

from __future__ import annotations

import contextlib
import re
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stage.errors import StageError
from stage.generate.session import SESSION_FILE, Session

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
NAME_RULE = "1-64 letters, digits, '-', '_' or '.', starting with a letter or digit"


def check_name(name) -> str:
    """A session name from a request -> the same name, or StageError."""
    text = "" if name is None else str(name).strip()
    if not text:
        raise StageError("choose a session (or create one from an upload)")
    if not NAME.fullmatch(text) or ".." in text:
        raise StageError(f"bad session name {text[:80]!r}: use {NAME_RULE}")
    return text


def name_from_file(path: Path) -> str:
    """A valid session name made from an upload's file name ("My Song (v2).wav" -> "My-Song-v2")."""
    text = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(path).stem).strip("-.")[:48]
    return text if text and NAME.fullmatch(text) and ".." not in text else "song"


@dataclass
class Workspace:
    """A root folder of session folders, and the per-session locks of this server."""

    root: Path
    locks: dict[str, threading.Lock] = field(default_factory=dict)
    guard: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()

    def path(self, name) -> Path:
        """The folder of session `name` (validated; always directly inside the root)."""
        folder = (self.root / check_name(name)).resolve()
        if folder.parent != self.root:  # e.g. a symlink pointing elsewhere
            raise StageError(f"bad session name {name!r}: it leads outside the sessions folder")
        return folder

    def names(self) -> list[str]:
        """The sessions in the root, newest first."""
        if not self.root.is_dir():
            return []
        found = [d for d in self.root.iterdir() if NAME.fullmatch(d.name) and (d / SESSION_FILE).is_file()]
        return [d.name for d in sorted(found, key=lambda d: (d / SESSION_FILE).stat().st_mtime, reverse=True)]

    def free_name(self, wanted: str) -> str:
        """`wanted`, or `wanted-2`, `wanted-3`... whichever does not exist yet."""
        name = check_name(wanted)
        for i in range(2, 10_000):
            if not self.path(name).exists():
                return name
            name = check_name(f"{wanted[:58]}-{i}")
        raise StageError(f"too many sessions named {wanted!r}; choose another name")

    def create(self, name, mix: np.ndarray, sample_rate: int, source: str | None = None) -> Session:
        """A new session `name` from `mix` float [C, N] (an existing name is refused)."""
        folder = self.path(name)
        if folder.exists():
            raise StageError(f"a session named {folder.name!r} already exists; choose another name")
        self.root.mkdir(parents=True, exist_ok=True)
        return Session.create(folder, mix, sample_rate, source)

    def open(self, name) -> Session:
        folder = self.path(name)
        if not folder.is_dir():
            raise StageError(f"no session named {folder.name!r} in the sessions folder")
        return Session.open(folder)

    @contextlib.contextmanager
    def locked(self, name) -> Iterator[Session]:
        """The session, re-read under this server's lock and the store's file lock."""
        folder = self.path(name)
        with self.guard:
            lock = self.locks.setdefault(folder.name, threading.Lock())
        with lock:
            session = self.open(name)
            with session.lock():
                yield Session.open(folder)


def export_zip(session: Session, out: Path) -> Path:
    """Write `out` (a zip): the current mix, every stem in it (with its JSON sidecar: prompt,
    seed, sampling, beat grid, `reproduce` line), the starting mix, `session.json` and a
    README listing the stems and how to make each again. Every WAV is the session's own file:
    the song's rate, channels and length, sample-aligned with the upload."""
    folder, state = session.folder, session.state
    stems = session.accepted_takes()
    lines = [f"stage session {folder.name}: mix v{state.current}, {state.sample_rate} Hz, {state.channels} ch, "
             f"{state.samples} samples ({state.samples / state.sample_rate:.2f} s)", "",
             "mix.wav        the current mix (start + the stems below, with headroom)",
             "original.wav   the starting mix (the upload)", ""]
    members = [(folder / session.current_mix.file, "mix.wav"), (folder / session.state.mixes[0].file, "original.wav"),
               (folder / SESSION_FILE, SESSION_FILE)]
    for take in stems:
        stem_file, sidecar = Path(take.file), Path(take.sidecar)
        members += [(folder / stem_file, f"stems/{stem_file.name}"), (folder / sidecar, f"stems/{sidecar.name}")]
        reproduce = _reproduce_line(folder / sidecar)
        lines += [f"stems/{stem_file.name}  {take.id}: {take.stem}, seed {take.seed}"
                  + (f', prompt "{take.prompt}"' if take.prompt else ""), f"  reproduce: {reproduce}", ""]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.part")
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            for path, arcname in members:
                z.write(path, arcname)
            z.writestr("README.txt", "\n".join(lines) + "\n")
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def _reproduce_line(sidecar: Path) -> str:
    import json

    try:
        return str(json.loads(sidecar.read_text()).get("reproduce", "(not recorded)"))
    except (OSError, ValueError):
        return "(sidecar unreadable)"
