"""Readers for multitrack stem datasets: MoisesDB, MUSDB18-HQ, Slakh2100 and a plain folder layout.

Every reader turns a dataset tree into a sorted list of `Song`s: an id, the split, and for each
canonical stem name the audio files that make it up (several tracks of one stem — e.g. MoisesDB's
kick/snare/overhead tracks in `drums/` — are summed at load time). Readers only look at the
directory layout and the metadata files; they never decode audio (`stage prepare` does, see
`stage.data.manifest`).

Canonical stems (docs/method.md §6.5 names them after MoisesDB's folders):
    drums, bass, guitar, keyboard (MoisesDB `other_keys`), piano, strings (`bowed_strings`),
    vocals, percussion, wind, other_plucked, other.

Deviation from the authors (§6.3): their `prepare_data` wrote MoisesDB's `drums/` tracks summed
into a `drums_mixed/drums.wav` file; we list the `drums/` tracks and sum them at load time, like
every other multi-track stem, so no derived audio is written. A `drums_mixed/` folder left by
their script is ignored (it would count the drums twice).

Splits are "train", "valid" and "test". Datasets without a native validation split (MoisesDB,
MUSDB18-HQ, the folder layout, a flat Slakh tree) get one carved from the end of the sorted
training songs, as the authors did for MoisesDB (§6.4: the last 24 songs by id).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stage.errors import ConfigError, StageError

log = logging.getLogger(__name__)

CANONICAL_STEMS = (
    "drums", "bass", "guitar", "keyboard", "piano", "strings", "vocals", "percussion", "wind", "other_plucked",
    "other",
)
SPLITS = ("train", "valid", "test")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
FORMATS = ("moisesdb", "musdb", "slakh", "folder")
DEFAULT_VALID_SONGS = 24  # §6.4: the authors held out the last 24 MoisesDB songs (sorted by id)

# MoisesDB stem folder -> canonical stem.
MOISESDB_STEMS = {
    "drums": "drums", "bass": "bass", "guitar": "guitar", "other_keys": "keyboard", "piano": "piano",
    "bowed_strings": "strings", "vocals": "vocals", "percussion": "percussion", "wind": "wind",
    "other_plucked": "other_plucked", "other": "other",
}
MUSDB_STEMS = ("bass", "drums", "other", "vocals")  # mixture.wav is not a stem
MUSDB_SPLITS = {"train": "train", "test": "test"}

# Slakh2100 `inst_class` (General MIDI program families, Slakh's class map) -> canonical stem.
SLAKH_CLASSES = {
    "Drums": "drums", "Bass": "bass", "Guitar": "guitar", "Piano": "piano",
    "Organ": "keyboard", "Synth Lead": "keyboard", "Synth Pad": "keyboard", "Chromatic Percussion": "keyboard",
    "Strings": "strings", "Strings (continued)": "strings", "Ensemble": "strings",
    "Brass": "wind", "Reed": "wind", "Pipe": "wind",
}
SLAKH_SPLITS = {"train": "train", "validation": "valid", "test": "test"}  # `omitted/` is left out

# Folder layout: file names that are a full mix, never a stem (unless the stem map says otherwise).
FOLDER_SKIP = ("mixture", "mix")
SKIP_STEM = "skip"  # --stem-map value that ignores a file name


@dataclass(frozen=True)
class Song:
    """One multitrack song of a dataset.

    id: unique within the dataset (MoisesDB uuid, MUSDB/folder song folder, Slakh TrackXXXXX).
    dataset: the format name ("moisesdb", "musdb", "slakh", "folder").
    split: "train", "valid" or "test".
    stems: canonical stem name -> the absolute paths of its tracks, summed at load time.
    caption: text prompt built from the metadata ("" when the dataset has none).
    meta: other metadata worth keeping (title, artist, genre, instruments).
    """

    id: str
    dataset: str
    split: str
    stems: dict[str, tuple[Path, ...]]
    caption: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


def make_caption(genres=(), instruments=(), moods=()) -> str:
    """A caption from the metadata that exists: "Genre: rock." / "Genres: rock, pop. Instruments:
    piano." / "". Empty or missing parts are left out, never rendered as "Genre: ." (§6.5 step 9;
    the authors' template did that for songs without a genre)."""

    def part(label: str, values) -> str:
        if isinstance(values, str):
            values = [values]
        clean = []
        for value in values or ():
            text = re.sub(r"\s+", " ", str(value).replace("_", " ")).strip().rstrip(".")
            if text and text not in clean:
                clean.append(text)
        if not clean:
            return ""
        return f"{label if len(clean) == 1 else label + 's'}: {', '.join(clean)}."

    return " ".join(p for p in (part("Genre", genres), part("Mood", moods), part("Instrument", instruments)) if p)


def parse_stem_map(text: str | None) -> dict[str, str]:
    """"kick=drums,snare=drums,bass_di=bass" -> {"kick": "drums", ...}. Values must be canonical
    stem names or "skip" (ignore that file). Keys are matched case-insensitively."""
    mapping: dict[str, str] = {}
    if not text:
        return mapping
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if item.count("=") != 1:
            raise ConfigError(f"bad stem map entry {item!r}: expected NAME=STEM, e.g. kick=drums")
        name, stem = (s.strip() for s in item.split("="))
        if not name:
            raise ConfigError(f"bad stem map entry {item!r}: empty file name")
        stem = stem.lower()
        if stem not in CANONICAL_STEMS and stem != SKIP_STEM:
            raise ConfigError(f"stem map {item!r}: {stem!r} is not a stem; use one of {', '.join(CANONICAL_STEMS)} or skip")
        mapping[name.lower()] = stem
    return mapping


def _check_root(root, what: str) -> Path:
    root = Path(root).expanduser()
    if not root.exists():
        raise StageError(f"{root}: no such dataset folder")
    if not root.is_dir():
        raise StageError(f"{root}: not a folder (give the root of the {what} tree)")
    if not any(True for _ in _visible(root)):
        raise StageError(f"{root}: the dataset folder is empty")
    return root.resolve()


def _visible(folder: Path):
    """Entries of a folder, sorted, without hidden files (.DS_Store, ._*)."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _audio_files(folder: Path) -> list[Path]:
    return [p for p in _visible(folder) if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS]


def list_moisesdb(root) -> list[Song]:
    """MoisesDB: ROOT/<uuid>/data.json + ROOT/<uuid>/<stem folder>/<track>.wav.

    data.json gives "song", "artist", "genre" (the caption) and a "stems" list; the audio is taken
    from the stem folders (every audio file in them), so tracks data.json does not name still count.
    """
    root = _check_root(root, "MoisesDB")
    songs = []
    for folder in _visible(root):
        meta_file = folder / "data.json"
        if not folder.is_dir() or not meta_file.is_file():
            continue
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise StageError(f"{meta_file}: not valid JSON ({err})") from None
        if not isinstance(meta, dict):
            raise StageError(f"{meta_file}: expected a JSON object")
        stems: dict[str, list[Path]] = {}
        for sub in _visible(folder):
            if not sub.is_dir():
                continue
            name = MOISESDB_STEMS.get(sub.name)
            if name is None:
                log.debug("%s: ignoring folder %s (not a MoisesDB stem)", folder.name, sub.name)
                continue
            files = _audio_files(sub)
            if files:
                stems.setdefault(name, []).extend(files)
        if not stems:
            log.warning("%s: no stem audio in any stem folder; song left out", folder.name)
            continue
        genre = meta.get("genre") or ""
        songs.append(Song(
            id=folder.name, dataset="moisesdb", split="train",
            stems={k: tuple(v) for k, v in sorted(stems.items())},
            caption=make_caption(genres=[genre] if isinstance(genre, str) else genre),
            meta={k: meta[k] for k in ("song", "artist", "genre") if meta.get(k)},
        ))
    if not songs:
        raise StageError(f"{root}: no MoisesDB songs found (expected ROOT/<song-id>/data.json with stem folders "
                         f"such as drums/ and bass/)")
    return songs


def list_musdb(root) -> list[Song]:
    """MUSDB18-HQ: ROOT/{train,test}/<song>/{bass,drums,other,vocals,mixture}.wav (mixture ignored)."""
    root = _check_root(root, "MUSDB18-HQ")
    found = [root / name for name in MUSDB_SPLITS if (root / name).is_dir()]
    if not found:
        raise StageError(f"{root}: not a MUSDB18-HQ tree (expected ROOT/train/<song>/drums.wav and ROOT/test/...)")
    songs = []
    for split_dir in found:
        for folder in _visible(split_dir):
            if not folder.is_dir():
                continue
            stems = {name: (folder / f"{name}.wav",) for name in MUSDB_STEMS if (folder / f"{name}.wav").is_file()}
            if not stems:
                log.warning("%s: no {bass,drums,other,vocals}.wav; song left out", folder)
                continue
            songs.append(Song(id=folder.name, dataset="musdb", split=MUSDB_SPLITS[split_dir.name],
                              stems=dict(sorted(stems.items())), meta={"song": folder.name}))
    if not songs:
        raise StageError(f"{root}: no MUSDB18-HQ songs found (expected ROOT/train/<song>/drums.wav ...)")
    return songs


def list_slakh(root) -> list[Song]:
    """Slakh2100: ROOT/[train|validation|test/]TrackXXXXX/{metadata.yaml, stems/SXX.flac}.

    Each rendered stem of metadata.yaml's "stems" goes to the canonical stem of its `inst_class`
    (`is_drum` always means drums); stems with `audio_rendered: false` or no file are skipped.
    The caption lists the instruments (MIDI program names).
    """
    import yaml

    root = _check_root(root, "Slakh2100")
    if any(_is_track(p) for p in _visible(root)):
        track_dirs = [(p, "train") for p in _visible(root) if _is_track(p)]
    else:
        track_dirs = [(p, split) for name, split in SLAKH_SPLITS.items() if (root / name).is_dir()
                      for p in _visible(root / name) if _is_track(p)]
    if not track_dirs:
        raise StageError(f"{root}: not a Slakh2100 tree (expected ROOT/[train/]TrackXXXXX/metadata.yaml "
                         f"with stems/SXX.flac)")
    songs = []
    for folder, split in track_dirs:
        meta_file = folder / "metadata.yaml"
        try:
            meta = yaml.safe_load(meta_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            raise StageError(f"{meta_file}: not valid YAML ({str(err).splitlines()[0]})") from None
        entries = meta.get("stems") if isinstance(meta, dict) else None
        if not isinstance(entries, dict):
            raise StageError(f"{meta_file}: no 'stems' mapping")
        audio_dir = folder / str(meta.get("audio_dir") or "stems")
        stems: dict[str, list[Path]] = {}
        instruments = []
        for stem_id, info in sorted(entries.items(), key=lambda kv: str(kv[0])):
            if not isinstance(info, dict) or info.get("audio_rendered") is False:
                continue
            path = audio_dir / f"{stem_id}.flac"
            if not path.is_file():
                candidates = [p for p in audio_dir.glob(f"{stem_id}.*") if p.suffix.lower() in AUDIO_EXTENSIONS] \
                    if audio_dir.is_dir() else []
                if not candidates:
                    log.debug("%s: %s has no audio file; skipped", folder.name, stem_id)
                    continue
                path = sorted(candidates)[0]
            drum = bool(info.get("is_drum"))
            name = "drums" if drum else SLAKH_CLASSES.get(str(info.get("inst_class", "")), "other")
            stems.setdefault(name, []).append(path)
            instruments.append("Drums" if drum else str(info.get("midi_program_name") or info.get("inst_class") or ""))
        if not stems:
            log.warning("%s: no rendered stems; song left out", folder.name)
            continue
        instruments = [i for i in instruments if i]
        songs.append(Song(id=folder.name, dataset="slakh", split=split,
                          stems={k: tuple(v) for k, v in sorted(stems.items())},
                          caption=make_caption(instruments=instruments), meta={"instruments": sorted(set(instruments))}))
    if not songs:
        raise StageError(f"{root}: no Slakh2100 track has a rendered stem")
    return songs


def _is_track(path: Path) -> bool:
    return path.is_dir() and (path / "metadata.yaml").is_file()


def list_folder(root, stem_map: dict[str, str] | None = None) -> list[Song]:
    """Plain folders: ROOT/<song>/<name>.{wav,flac,ogg,mp3}.

    A file's stem is `stem_map[name]` (case-insensitive; "skip" ignores the file), else the
    lower-cased name when it is a canonical stem, else "other". Files named mixture/mix are full
    mixes and are ignored unless mapped. An optional ROOT/<song>/caption.txt gives the caption.
    """
    root = _check_root(root, "song")
    stem_map = {k.lower(): v for k, v in (stem_map or {}).items()}
    songs = []
    for folder in _visible(root):
        if not folder.is_dir():
            continue
        stems: dict[str, list[Path]] = {}
        for path in _audio_files(folder):
            name = path.stem.lower()
            stem = stem_map.get(name) or (SKIP_STEM if name in FOLDER_SKIP else None) \
                or (name if name in CANONICAL_STEMS else "other")
            if stem != SKIP_STEM:
                stems.setdefault(stem, []).append(path)
        if not stems:
            continue
        caption_file = folder / "caption.txt"
        caption = " ".join(caption_file.read_text(encoding="utf-8").split()) if caption_file.is_file() else ""
        songs.append(Song(id=folder.name, dataset="folder", split="train",
                          stems={k: tuple(v) for k, v in sorted(stems.items())}, caption=caption))
    if not songs:
        raise StageError(f"{root}: no songs found (expected ROOT/<song>/<stem>.wav, e.g. ROOT/song1/drums.wav)")
    return songs


READERS: dict[str, Callable[..., list[Song]]] = {
    "moisesdb": list_moisesdb, "musdb": list_musdb, "slakh": list_slakh, "folder": list_folder,
}


def list_songs(root, format: str, stem_map: dict[str, str] | None = None,
               valid_songs: int = DEFAULT_VALID_SONGS) -> list[Song]:
    """Read a dataset tree -> songs sorted by id, with a validation split assigned.

    format: one of FORMATS. stem_map: only for "folder" (see `list_folder`).
    valid_songs: when the dataset has no native validation split, the last
    `min(valid_songs, max(1, n_train // 10))` training songs by id become "valid" (0 = none).
    """
    if format not in READERS:
        raise ConfigError(f"unknown dataset format {format!r}; choose one of {', '.join(FORMATS)}")
    if stem_map and format != "folder":
        raise ConfigError("a stem map only applies to --format folder")
    if not isinstance(valid_songs, int) or valid_songs < 0:
        raise ConfigError(f"valid_songs must be an integer >= 0, got {valid_songs!r}")
    songs = READERS[format](root, stem_map) if format == "folder" else READERS[format](root)
    songs = sorted(songs, key=lambda s: s.id)
    seen: dict[str, Song] = {}
    for song in songs:
        if song.id in seen:
            raise StageError(f"song id {song.id!r} appears twice ({seen[song.id].split} and {song.split}); "
                             f"song folder names must be unique")
        seen[song.id] = song
    return assign_validation(songs, valid_songs)


def assign_validation(songs: list[Song], valid_songs: int) -> list[Song]:
    """Carve a validation split from the end of the sorted training songs when there is none.

    n = min(valid_songs, max(1, n_train // 10)) with at least 2 training songs, so that small
    datasets keep most songs for training (240 MoisesDB songs -> 24, as in §6.4; 3 songs -> 1).
    """
    if any(s.split == "valid" for s in songs) or valid_songs == 0:
        return songs
    train = [s.id for s in songs if s.split == "train"]
    n = min(valid_songs, max(1, len(train) // 10)) if len(train) >= 2 else 0
    held = set(train[len(train) - n:]) if n else set()
    return [Song(s.id, s.dataset, "valid", s.stems, s.caption, s.meta) if s.id in held else s for s in songs]
