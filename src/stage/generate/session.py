"""Sessions: a folder that builds a song stem by stem, one accepted take at a time.

`session.json` holds the state and is rewritten atomically after every change; every mix version
and every take stays on disk (a rejected take is only marked so; going back to an earlier mix
version makes it current again, and the next accepted take branches from it), and `Session.lock`
keeps to one stage command at a time. The CLI (`stage session`) and the web studio
(`stage studio`) share this store. Takes are
made by the same pipeline as `stage generate`: `plan_takes` (takes.py), `render_takes`
(render.py) and `write_takes` (takefiles.py).
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import numpy as np

from stage.audio import as_channels_first, check_rate, db_to_gain, fit_length, load_audio, save_audio
from stage.errors import AudioError, StageError
from stage.files import check_free, ensure_writable_dir, exclusive_lock, write_json
from stage.formats import check_header
from stage.generate.cancel import check as check_cancel
from stage.generate.cancel import watch
from stage.generate.naming import format_bpm, numbered_take_id, take_name, take_paths
from stage.generate.render import Progress, TakeSet, headroom_gain, mix_with_headroom, render_takes
from stage.generate.takefiles import WrittenTake, write_takes
from stage.generate.takes import TakeSettings, plan_takes

SESSION_FILE = "session.json"
SESSION_FORMAT = "stage-session"
SESSION_VERSION = 2  # 2: mix versions record their parent, takes can be rejected (1 still opens)
LOCK_FILE = ".session.lock"


@dataclass
class MixVersion:
    """One version of the session's mix. take: the take added to version `parent` (None for the
    starting mix). gain_db: the take's gain; mix_gain: the headroom scaling applied. parent: the
    version the take was mixed into (None in files from before it was recorded: the previous one)."""

    index: int
    file: str
    created: str
    take: str | None = None
    gain_db: float = 0.0
    mix_gain: float = 1.0
    source: str | None = None
    parent: int | None = None

    @property
    def base(self) -> int | None:
        """The version this one was built on (None for the starting mix)."""
        if self.index == 0:
            return None
        return self.index - 1 if self.parent is None else self.parent


@dataclass
class SessionTake:
    """A take in a session: its files (relative to the session folder) and how it was made.
    accepted_in: the mix version it was last mixed into; rejected: set aside by the user (kept on disk)."""

    id: str
    stem: str
    seed: int
    prompt: str
    bpm: float | None
    context: str
    over_mix: int
    file: str
    mix_file: str
    sidecar: str
    created: str
    accepted_in: int | None = None
    rejected: bool = False


@dataclass
class SessionState:
    """Everything `session.json` holds. Rewritten atomically after every change."""

    sample_rate: int
    channels: int
    samples: int
    mixes: list[MixVersion]
    current: int
    takes: list[SessionTake] = field(default_factory=list)
    next_take: int = 1

    def to_dict(self) -> dict:
        return {"format": SESSION_FORMAT, "version": SESSION_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict, where: str) -> SessionState:
        check_header(data, expected=SESSION_FORMAT, version=SESSION_VERSION, where=where, what="stage session file")
        try:
            state = cls(
                sample_rate=int(data["sample_rate"]), channels=int(data["channels"]), samples=int(data["samples"]),
                mixes=[MixVersion(**m) for m in data["mixes"]], current=int(data["current"]),
                takes=[SessionTake(**t) for t in data.get("takes", [])], next_take=int(data.get("next_take", 1)),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise StageError(f"{where}: malformed session file ({err})") from None
        # Every file the state names is read (views, accept) or copied (the studio's zip export):
        # each must stay inside the session folder, whoever edited the file.
        names = [m.file for m in state.mixes] + [f for t in state.takes for f in (t.file, t.mix_file, t.sidecar)]
        for name in names:
            if not _inside(name):
                raise StageError(f"{where}: the file {str(name)[:80]!r} leads outside the session folder "
                                 "(a session file names files in its own mixes/ and takes/ only)")
        return state


@dataclass
class SessionTakes:
    """What `Session.add_takes` returns: the recorded takes and the audio behind them."""

    takes: list[SessionTake]
    takeset: TakeSet


def _inside(name) -> bool:
    """Whether `name` (from session.json) is a relative path inside the session folder:
    "mixes/mix_001.wav", not "/etc/x", "../x" or "C:x"."""
    if not isinstance(name, str) or not name or "\\" in name or ":" in name:
        return False
    path = PurePosixPath(name)
    return not path.is_absolute() and ".." not in path.parts and path.parts[0] in ("mixes", "takes")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Session:
    """A folder that builds a song stem by stem.

    Layout: `session.json` (the state), `mixes/mix_000.wav` (the starting mix),
    `mixes/mix_001.wav`... (one per accepted take; every version is kept), and `takes/` (every
    take: stem, `_mix.wav` preview, JSON sidecar). `generate` always works over the current mix;
    `accept` adds a take to it and makes a new current version.
    """

    def __init__(self, folder: Path, state: SessionState):
        self.folder = Path(folder)
        self.state = state

    # ----------------------------------------------------------- create / open / save

    @classmethod
    def create(cls, folder, mix: np.ndarray, sample_rate: int, source: str | None = None) -> Session:
        """Start a session in `folder` (new, or an empty folder) from `mix` float [C, N]."""
        folder = Path(folder)
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise StageError(f"{folder}: already exists and is not empty (choose a new session folder)")
        mix = as_channels_first(mix, "mix")
        check_rate(sample_rate, "mix")
        created = ensure_writable_dir(folder)
        try:
            (folder / "mixes").mkdir()
            (folder / "takes").mkdir()
            gain = 1.0 if np.max(np.abs(mix)) <= 1.0 else headroom_gain(mix)  # only to avoid clipping the copy
            save_audio(folder / "mixes" / "mix_000.wav", mix * gain, sample_rate)
            state = SessionState(sample_rate, mix.shape[0], mix.shape[1],
                                 [MixVersion(0, "mixes/mix_000.wav", _now(), mix_gain=gain, source=source)], current=0)
            session = cls(folder, state)
            session.save()
        except BaseException:
            if created:
                shutil.rmtree(folder, ignore_errors=True)
            else:  # the folder was empty before: empty it again
                for child in list(folder.iterdir()):
                    if child.is_dir():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)
            raise
        return session

    @classmethod
    def open(cls, folder) -> Session:
        folder = Path(folder)
        path = folder / SESSION_FILE
        if not path.is_file():
            raise StageError(f"{folder}: not a stage session (no {SESSION_FILE}; start one with `stage session new`)")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise StageError(f"{path}: unreadable session file ({err})") from None
        return cls(folder, SessionState.from_dict(data, str(path)))

    def save(self) -> None:
        write_json(self.folder / SESSION_FILE, self.state.to_dict(), overwrite=True)

    def lock(self):
        """Exclusive use of the session folder (one stage command at a time)."""
        return exclusive_lock(self.folder / LOCK_FILE,
                              f"{self.folder}: another stage command is working on this session; try again when it ends")

    # ----------------------------------------------------------- queries

    @property
    def current_mix(self) -> MixVersion:
        return self.state.mixes[self.state.current]

    def load_current_mix(self) -> np.ndarray:
        audio, sr = load_audio(self.folder / self.current_mix.file)
        if sr != self.state.sample_rate or audio.shape[0] != self.state.channels:
            raise StageError(f"{self.current_mix.file}: does not match the session ({sr} Hz, {audio.shape[0]} ch)")
        return fit_length(audio, self.state.samples)

    def find_take(self, take_id: str) -> SessionTake:
        text = str(take_id).strip()
        if text.isdigit():
            text = numbered_take_id(int(text))
        for take in self.state.takes:
            if take.id == text or Path(take.file).stem == text or take.file == text:
                return take
        known = ", ".join(t.id for t in self.state.takes) or "none yet"
        raise StageError(f"no take {take_id!r} in {self.folder} (takes: {known})")

    def find_version(self, version) -> MixVersion:
        """Mix version `version`: an index, or "v2" / "2"."""
        text = str(version).strip().lower().removeprefix("v")
        if text.isdigit() and int(text) < len(self.state.mixes):
            return self.state.mixes[int(text)]
        raise StageError(f"no mix version {version!r} in {self.folder} (versions: v0..v{len(self.state.mixes) - 1})")

    def chain(self, index: int | None = None) -> list[MixVersion]:
        """The versions that led to version `index` (default: the current one), starting mix first."""
        out = [self.state.mixes[self.state.current if index is None else index]]
        while out[-1].base is not None:
            out.append(self.state.mixes[out[-1].base])
        return out[::-1]

    def accepted_takes(self, index: int | None = None) -> list[SessionTake]:
        """The takes mixed into version `index` (default: the current one), in the order they were accepted."""
        return [self.find_take(m.take) for m in self.chain(index) if m.take is not None]

    # ----------------------------------------------------------- changes

    def add_takes(self, model, settings: TakeSettings, progress: Progress | None = None, extra: dict | None = None,
                  precision: str = "fp32", cancel: threading.Event | None = None,
                  on_partial: Callable[[np.ndarray], None] | None = None) -> SessionTakes:
        """Generate takes over the current mix and record them (files in `takes/`).
        cancel: set from another thread to stop the takes (`Cancelled`, see cancel.py); it is
        checked before the model starts, after every decoding step and before anything is
        written, so a cancelled call leaves the folder as it was. on_partial(stems [B, C, m]):
        streaming, the stems so far (render.render_takes)."""
        if settings.metronome_only or settings.seconds is not None:
            raise StageError("a session's takes always cover the whole session mix (no --seconds / --metronome-only)")
        check_cancel(cancel)
        plan = plan_takes(settings, self.load_current_mix(), self.state.sample_rate, model.sample_rate)
        names = [take_name(numbered_take_id(self.state.next_take + i), settings.stem, plan.bpm, seed) for i, seed in enumerate(plan.seeds)]
        check_free([p for n in names for p in take_paths(self.folder / "takes", n)], force=False)
        check_cancel(cancel)  # beat tracking (bpm auto) may have taken a while
        takeset = render_takes(model, plan, watch(progress, cancel), precision, on_partial=on_partial)
        check_cancel(cancel)  # the last check: from here on the takes are written whole
        first = self.state.next_take
        added: list[SessionTake] = []
        written: list[WrittenTake] = []
        before = (list(self.state.takes), self.state.next_take)
        try:
            for i, take in enumerate(takeset.takes):
                take_id = numbered_take_id(first + i)
                meta = {**(extra or {}), "session_take": take_id, "over_mix": self.current_mix.file,
                        "input": {"path": str(self.folder / self.current_mix.file)}}
                [w] = write_takes(replace(takeset, takes=[take]), self.folder / "takes", take_id, extra=meta)
                written.append(w)
                added.append(SessionTake(
                    id=take_id, stem=settings.stem, seed=take.seed, prompt=settings.prompt,
                    bpm=None if takeset.bpm is None else round(float(takeset.bpm), 3), context=takeset.context.mode,
                    over_mix=self.state.current, file=f"takes/{w.stem.name}", mix_file=f"takes/{w.mix.name}",
                    sidecar=f"takes/{w.sidecar.name}", created=_now(),
                ))
            self.state.takes.extend(added)
            self.state.next_take = first + len(added)
            self.save()
        except BaseException:
            self.state.takes, self.state.next_take = before
            for w in written:
                for path in (w.stem, w.mix, w.sidecar):
                    path.unlink(missing_ok=True)
            raise
        return SessionTakes(added, takeset)

    def accept(self, take_id: str, gain_db: float = 0.0) -> MixVersion:
        """Mix take `take_id` (its stem, times `gain_db`) into the current mix, with headroom, as
        a new mix version. Every earlier version stays on disk."""
        if not np.isfinite(gain_db) or not -60.0 <= gain_db <= 24.0:
            raise StageError(f"gain must be between -60 and +24 dB, got {gain_db}")
        take = self.find_take(take_id)
        if take.id in {t.id for t in self.accepted_takes()}:
            raise StageError(f"{take.id} is already in the mix (version {take.accepted_in})")
        if take.rejected:
            raise StageError(f"{take.id} was rejected; generate a new take (or regenerate with its seed {take.seed})")
        stem, sr = load_audio(self.folder / take.file)
        if sr != self.state.sample_rate or stem.shape[0] != self.state.channels:
            raise AudioError(f"{take.file}: {sr} Hz, {stem.shape[0]} ch does not match the session")
        mix = self.load_current_mix()
        new, gain = mix_with_headroom(mix, fit_length(stem, self.state.samples) * db_to_gain(gain_db))
        index = len(self.state.mixes)
        rel = f"mixes/mix_{index:03d}.wav"
        save_audio(self.folder / rel, new, self.state.sample_rate)
        version = MixVersion(index, rel, _now(), take=take.id, gain_db=gain_db, mix_gain=gain, parent=self.state.current)
        before = (self.state.current, take.accepted_in)
        self.state.mixes.append(version)
        self.state.current = index
        take.accepted_in = index
        try:
            self.save()
        except BaseException:
            self.state.mixes.pop()
            self.state.current, take.accepted_in = before
            (self.folder / rel).unlink(missing_ok=True)
            raise
        return version

    def reject(self, take_id: str) -> SessionTake:
        """Set take `take_id` aside (its files stay; `accept` refuses it from now on)."""
        take = self.find_take(take_id)
        if take.id in {t.id for t in self.accepted_takes()}:
            raise StageError(f"{take.id} is in the current mix (version {take.accepted_in}); "
                             "go back to an earlier mix version instead")
        if not take.rejected:
            take.rejected = True
            try:
                self.save()
            except BaseException:
                take.rejected = False
                raise
        return take

    def use_version(self, version) -> MixVersion:
        """Make mix version `version` (e.g. an earlier one) current: the next takes are generated
        over it, and the next accepted take branches from it. Nothing is deleted."""
        chosen = self.find_version(version)
        before = self.state.current
        self.state.current = chosen.index
        try:
            self.save()
        except BaseException:
            self.state.current = before
            raise
        return chosen

    def describe(self) -> str:
        """A human-readable summary (what `stage session show` prints)."""
        s = self.state
        lines = [f"session {self.folder} ({s.sample_rate} Hz, {s.channels} ch, {s.samples / s.sample_rate:.2f} s)",
                 f"current mix: {self.current_mix.file} (version {s.current})", "mix versions:"]
        for m in s.mixes:
            what = f"+ {m.take} ({m.gain_db:+.1f} dB)" if m.take else f"start{(' from ' + m.source) if m.source else ''}"
            if m.base is not None and m.base != m.index - 1:
                what += f" over v{m.base}"
            if m.mix_gain < 1.0:
                what += f", scaled {20 * np.log10(m.mix_gain):.1f} dB for headroom"
            lines.append(f"  v{m.index}  {m.file}  {what}")
        lines.append("takes:" if s.takes else "takes: none yet (stage session generate ...)")
        for t in s.takes:
            tempo = f"{format_bpm(t.bpm)} bpm ({t.context})" if t.bpm is not None else "mix context"
            state = "rejected" if t.rejected else f"in mix v{t.accepted_in}" if t.accepted_in is not None else "not accepted"
            prompt = f' "{t.prompt}"' if t.prompt else ""
            lines.append(f"  {t.id}  {t.stem:<8} seed {t.seed:<10} {tempo}, over v{t.over_mix}{prompt}  [{state}]  {t.file}")
        return "\n".join(lines)
