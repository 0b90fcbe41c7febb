"""Training examples from a manifest: (context, target stem, caption), as in docs/method.md §6.5.

For every example (`StemDataset[index]`):
1. augmentation draws: speed with `speed_prob` (a playback rate uniform in `speed_range`, rounded
   to 0.01), pitch with `pitch_prob` (integer semitones uniform in `pitch_range`);
2. a random window of `window_seconds * speed` seconds of the song (so it lasts `window_seconds`
   after stretching), read with partial reads of only the needed frames; the tracks of a stem
   are summed, down-mixed to mono (mean of the channels) and resampled to `sample_rate` (soxr);
3. the window is kept if the target stem is not silent and at least one context stem is not
   silent (absolute peak >= `silence_threshold`); otherwise another random window, at most
   `max_tries` times, then the next song (counted in `skips["silent"]`);
4. context = the plain sum of a random non-empty subset of the non-silent context stems: first a
   size n ~ U{1..#non-silent}, then a random subset of that size (no gain normalisation, as the
   authors; §6.5 step 4);
5. with `metronome_prob` the context is REPLACED (never mixed) by a click track of the song's
   beats and downbeats inside the window, re-based to the window start and divided by the speed
   factor, rendered with `render_clicks` at `sample_rate` (§4); a window whose context span has
   no beat keeps the stem mix (counted in `skips["metronome_fallback"]`); with `click_mix_prob`
   (one uniform u per window decides both: u < metronome_prob is the click, then u <
   metronome_prob + click_mix_prob) the context is the mix PLUS that click track at a gain drawn
   uniform in dB in `click_mix_gain_db` (a "click scaffold": the mix's onsets next to a click
   that says where the beat is), context_kind "mix+click"; a window whose context span has no
   beat keeps the plain mix (counted in `skips["click_mix_fallback"]`). With click_mix_prob 0 no
   extra number is drawn, so the windows of existing configs and seeds do not change;
6. speed/pitch augmentation with the same factors for target and mix context (never the click
   track, whose times already include the speed), then pad/crop to exactly the window length;
7. the context is cut to its first U{min..max} context seconds (the full window with
   `full_context_prob`); the target is always the full window (§6.5 step 8).

Determinism: the example at `index` depends only on `(seed, epoch, index)` (and the data). The
random generator of an attempt on a song is `numpy.random.default_rng([seed, epoch, index,
attempt])`, so neither the DataLoader's worker layout nor earlier calls change it: training can
resume bit for bit and the validation set (epoch left at 0) is the same at every evaluation (the
authors re-seeded Python's `random` per worker and drew random validation chunks; §9). Call
`set_epoch(e)` at the start of each training epoch for fresh windows; the authors drew new random
windows at every epoch.

Deviations from the authors, on purpose:
- silence is the absolute peak (they used the signed max, which calls a negative-only signal
  silent; §9); threshold 0.01 as theirs;
- the window search is bounded by `max_tries` (theirs looped forever on a silent song, §9), and
  an unreadable file skips the song with a count instead of becoming zeros (§9);
- speed/pitch use librosa instead of RubberBand and are off by default (see stage.data.augment);
- the vocals can be allowed in contexts (`include_vocals`, off by default as in the paper).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stage import configs
from stage.audio import check_rate, db_to_gain, fit_length, is_silent, resample
from stage.data.augment import augment
from stage.data.datasets import CANONICAL_STEMS
from stage.data.example import AudioExample
from stage.data.manifest import Manifest, SongRecord, StemFile, load_manifest
from stage.data.metronome import render_clicks
from stage.errors import AudioError, ConfigError, StageError
from stage.model.registry import STEMS

log = logging.getLogger(__name__)

# §6.5: the stems the authors used as context (the target is dropped from them): the stems STAGE
# generates, one vocabulary with `stage generate --stem`.
DEFAULT_CONTEXT_STEMS = STEMS


@dataclass(frozen=True)
class SampleConfig:
    """How training examples are cut from songs (§6.5; defaults are the authors' drums config).

    target_stem: the canonical stem to generate ("drums", "bass", ...).
    sample_rate: output rate (EnCodec's 32 kHz).
    window_seconds: the target length (10 s). min/max_context_seconds: the context is the first
    U{min..max} seconds of the window (5-10 s); full_context_prob: keep it whole (0.05).
    metronome_prob: replace the context by the click track (0.5: the drums config, §4; the bass
    config is not in the authors' repository, §11).
    click_mix_prob: the share of windows whose context is the mix plus the song's click track (not
    the authors'; metronome_prob + click_mix_prob <= 1); click_mix_gain_db: [low, high], the
    click's gain, uniform in dB, relative to render_clicks' level (-30..0).
    context_stems: stems that may form the context (the target is removed from it); vocals need
    include_vocals=True (the paper never used them).
    speed_prob / speed_range, pitch_prob / pitch_range: augmentation (the authors: 0.5 / 0.8-1.2
    and 0.5 / -4..4 semitones with RubberBand; off here by default because librosa's phase
    vocoder is slow, see stage.data.augment).
    silence_threshold: a stem window is silent below this absolute peak (the authors: signed max
    < 0.01). max_tries: random windows tried per song before moving to the next song.
    """

    target_stem: str
    sample_rate: int = 32_000
    window_seconds: float = 10.0
    min_context_seconds: float = 5.0
    max_context_seconds: float = 10.0
    full_context_prob: float = 0.05
    metronome_prob: float = 0.5
    click_mix_prob: float = 0.0
    click_mix_gain_db: tuple[float, float] = (-30.0, 0.0)
    context_stems: tuple[str, ...] = DEFAULT_CONTEXT_STEMS
    include_vocals: bool = False
    speed_prob: float = 0.0
    speed_range: tuple[float, float] = (0.8, 1.2)
    pitch_prob: float = 0.0
    pitch_range: tuple[int, int] = (-4, 4)
    silence_threshold: float = 0.01
    max_tries: int = 20

    def __post_init__(self) -> None:
        for name in ("context_stems", "speed_range", "pitch_range", "click_mix_gain_db"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                object.__setattr__(self, name, tuple(value))
        self.validate()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SampleConfig:
        """Build from a mapping (a config file's section). Unknown keys and wrong types are refused
        by name (`stage.configs.from_dict`)."""
        return configs.from_dict(cls, data, what="sample config")

    def to_dict(self) -> dict[str, Any]:
        return configs.to_dict(self)

    @property
    def window_samples(self) -> int:
        return int(round(self.window_seconds * self.sample_rate))

    @property
    def context_names(self) -> tuple[str, ...]:
        """The stems that may form a context: context_stems without the target, plus the vocals
        when include_vocals."""
        names = [s for s in self.context_stems if s != self.target_stem]
        if self.include_vocals and "vocals" not in names and self.target_stem != "vocals":
            names.append("vocals")
        return tuple(names)

    def validate(self) -> None:
        """Raise ConfigError naming the first bad value."""
        if self.target_stem not in CANONICAL_STEMS:
            raise ConfigError(f"target_stem must be one of {', '.join(CANONICAL_STEMS)}, got {self.target_stem!r}")
        try:
            check_rate(self.sample_rate, "sample_rate")
        except AudioError as err:
            raise ConfigError(str(err)) from None
        for name in ("window_seconds", "min_context_seconds", "max_context_seconds", "silence_threshold"):
            value = getattr(self, name)
            if not _is_number(value) or not np.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
        if not self.window_seconds > 0:
            raise ConfigError(f"window_seconds must be > 0, got {self.window_seconds}")
        if not 0 < self.min_context_seconds <= self.max_context_seconds <= self.window_seconds:
            raise ConfigError(
                f"need 0 < min_context_seconds <= max_context_seconds <= window_seconds, got "
                f"{self.min_context_seconds}, {self.max_context_seconds}, {self.window_seconds}")
        for name in ("full_context_prob", "metronome_prob", "click_mix_prob", "speed_prob", "pitch_prob"):
            value = getattr(self, name)
            if not _is_number(value) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be a probability in [0, 1], got {value!r}")
        if self.metronome_prob + self.click_mix_prob > 1.0:
            raise ConfigError(f"metronome_prob + click_mix_prob must be <= 1 (shares of the windows), got "
                              f"{self.metronome_prob} + {self.click_mix_prob}")
        if (not isinstance(self.click_mix_gain_db, tuple) or len(self.click_mix_gain_db) != 2
                or not all(_is_number(v) and np.isfinite(v) for v in self.click_mix_gain_db)
                or not -120.0 <= self.click_mix_gain_db[0] <= self.click_mix_gain_db[1] <= 20.0):
            raise ConfigError(f"click_mix_gain_db must be [low, high] dB with -120 <= low <= high <= 20, got "
                              f"{self.click_mix_gain_db!r}")
        if not isinstance(self.context_stems, tuple) or not self.context_stems:
            raise ConfigError(f"context_stems must be a non-empty list of stems, got {self.context_stems!r}")
        for stem in self.context_stems:
            if stem not in CANONICAL_STEMS:
                raise ConfigError(f"context_stems: {stem!r} is not a stem; use {', '.join(CANONICAL_STEMS)}")
        if len(set(self.context_stems)) != len(self.context_stems):
            raise ConfigError(f"context_stems has duplicates: {list(self.context_stems)}")
        if not isinstance(self.include_vocals, bool):
            raise ConfigError(f"include_vocals must be true or false, got {self.include_vocals!r}")
        if "vocals" in self.context_stems and not self.include_vocals:
            raise ConfigError("context_stems lists vocals but include_vocals is false (set include_vocals: true)")
        if not self.context_names:
            raise ConfigError(f"context_stems {list(self.context_stems)} has no stem besides the target "
                              f"{self.target_stem!r}")
        if (not isinstance(self.speed_range, tuple) or len(self.speed_range) != 2
                or not all(_is_number(v) for v in self.speed_range)
                or not 0.25 <= self.speed_range[0] <= self.speed_range[1] <= 4.0):
            raise ConfigError(f"speed_range must be [low, high] with 0.25 <= low <= high <= 4, got {self.speed_range!r}")
        if (not isinstance(self.pitch_range, tuple) or len(self.pitch_range) != 2
                or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in self.pitch_range)
                or not -24 <= self.pitch_range[0] <= self.pitch_range[1] <= 24):
            raise ConfigError(f"pitch_range must be [low, high] integer semitones in -24..24, got {self.pitch_range!r}")
        if not isinstance(self.max_tries, (int, np.integer)) or isinstance(self.max_tries, bool) or self.max_tries < 1:
            raise ConfigError(f"max_tries must be an integer >= 1, got {self.max_tries!r}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


class _Unreadable(Exception):
    """A stem file that cannot be read (any more) as `stage prepare` saw it."""


class StemDataset(torch.utils.data.Dataset):
    """Map-style dataset of `AudioExample`s (32 kHz mono float32; target [N], context [Nc <= N]).

    manifest: a `Manifest`, or the path of one (file or folder). config: `SampleConfig`.
    length: examples per epoch (the authors: 10 000, cycling over the songs); None = one per song,
    the natural size of a validation set. seed: with the index, fixes every example (see the
    module docstring). split: "train", "valid", "test" or None (all). root: the dataset root if
    it moved since `stage prepare`. epoch: see `set_epoch`.

    Songs of the split are left out at construction (counted in `excluded`) when they have no
    target stem, a target silent throughout, or no non-silent context stem; none left raises
    StageError. `skips` counts, per process (each DataLoader worker has its own), the song
    attempts skipped while building examples: "unreadable", "silent" (no good window in
    max_tries), "metronome_fallback" and "click_mix_fallback".
    """

    def __init__(self, manifest: Manifest | str, config: SampleConfig, length: int | None = None, seed: int = 0,
                 split: str | None = "train", root=None, epoch: int = 0):
        if not isinstance(config, SampleConfig):
            raise ConfigError(f"config must be a SampleConfig, got {type(config).__name__}")
        config.validate()
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
        self.manifest = manifest if isinstance(manifest, Manifest) else load_manifest(manifest, root=root)
        if root is not None and isinstance(manifest, Manifest):
            self.manifest = dataclasses.replace(manifest, root=Path(root).expanduser())
        self.config = config
        self.seed = int(seed)
        self.split = split
        self.epoch = 0
        self.set_epoch(epoch)
        self.excluded: Counter = Counter()
        self.skips: Counter = Counter()
        self._unreadable: set[str] = set()
        self._warned: set[str] = set()
        target, threshold = config.target_stem, config.silence_threshold
        candidates = self.manifest.select(split)
        songs = []
        for song in candidates:
            if target not in song.stems:
                self.excluded["no_target"] += 1
            elif song.peaks.get(target, np.inf) < threshold:
                self.excluded["silent_target"] += 1
            elif not any(n in song.stems and song.peaks.get(n, np.inf) >= threshold for n in config.context_names):
                self.excluded["no_context"] += 1
            else:
                songs.append(song)
        if not songs:
            where = f"split {split!r} of " if split else ""
            detail = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in sorted(self.excluded.items()))
            raise StageError(
                f"no usable song in {where}{self.manifest.path}: {len(candidates)} songs"
                f"{' (' + detail + ')' if detail else ''}; each needs a non-silent {target!r} stem and a non-silent "
                f"context stem among {', '.join(config.context_names)}")
        for name in ("metronome_prob", "click_mix_prob"):
            if getattr(config, name) > 0 and not any(len(s.beats) for s in songs):
                raise ConfigError(f"{name} is {getattr(config, name)} but no song has beats; run `stage prepare` "
                                  f"with --beats madmom or librosa, or set {name} to 0")
        if not self.manifest.root.is_dir():
            raise StageError(f"dataset root {self.manifest.root} does not exist (moved? pass root=...)")
        self.songs: list[SongRecord] = songs
        if length is None:
            length = len(songs)
        if not isinstance(length, (int, np.integer)) or isinstance(length, bool) or length < 1:
            raise ConfigError(f"length must be a positive integer, got {length!r}")
        self.length = int(length)

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        """Draw a different set of examples (the same for the same epoch). DataLoader workers hold
        copies of the dataset: non-persistent workers copy it at each epoch and see the change;
        with `persistent_workers=True` rebuild the loader, or the workers keep their epoch."""
        if not isinstance(epoch, (int, np.integer)) or isinstance(epoch, bool) or epoch < 0:
            raise ConfigError(f"epoch must be an integer >= 0, got {epoch!r}")
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> AudioExample:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} examples")
        n = len(self.songs)
        tried: Counter = Counter()
        for attempt in range(n):  # the song at index % n first, then the next ones (§6.4 cycles songs)
            song = self.songs[(index + attempt) % n]
            if song.id in self._unreadable:
                tried["unreadable"] += 1
                continue
            rng = np.random.default_rng([self.seed, self.epoch, int(index), attempt])
            try:
                example = self._build(song, rng)
            except _Unreadable as err:
                self._unreadable.add(song.id)
                if song.id not in self._warned:
                    self._warned.add(song.id)
                    log.warning("skipping song %s: %s", song.id, err)
                tried["unreadable"] += 1
                continue
            if example is None:
                tried["silent"] += 1
                continue
            self.skips.update(tried)
            return example
        self.skips.update(tried)
        raise StageError(
            f"no usable example at index {index}: every one of the {n} songs was skipped "
            f"({', '.join(f'{v} {k}' for k, v in sorted(tried.items()))}); a 'silent' song had a silent "
            f"{self.config.target_stem!r} stem or silent context stems in {self.config.max_tries} random windows")

    @property
    def skip_counts(self) -> dict[str, int]:
        return dict(self.skips)

    # -----------------------------------------------------------------------------------------

    def _build(self, song: SongRecord, rng: np.random.Generator) -> AudioExample | None:
        """One example from one song, or None when no acceptable window was found."""
        cfg = self.config
        sr, n = cfg.sample_rate, cfg.window_samples
        speed, semitones = 1.0, 0
        if rng.random() < cfg.speed_prob:
            speed = round(float(rng.uniform(*cfg.speed_range)), 2)
        if rng.random() < cfg.pitch_prob:
            semitones = int(rng.integers(cfg.pitch_range[0], cfg.pitch_range[1] + 1))
        read_seconds = cfg.window_seconds * speed
        names = [s for s in cfg.context_names if s in song.stems and song.peaks.get(s, np.inf) >= cfg.silence_threshold]
        for _ in range(cfg.max_tries):
            start = float(rng.uniform(0.0, max(0.0, song.seconds - read_seconds)))
            target = self._read(song.stems[cfg.target_stem], start, read_seconds)
            if is_silent(target, cfg.silence_threshold):
                continue
            stems = {name: self._read(song.stems[name], start, read_seconds) for name in names}
            live = [name for name in names if not is_silent(stems[name], cfg.silence_threshold)]
            if live:
                break
        else:
            return None
        size = int(rng.integers(1, len(live) + 1))
        chosen = [live[i] for i in sorted(rng.choice(len(live), size=size, replace=False))]
        u = rng.random()  # one draw for the kind, so click_mix_prob 0 changes no later draw
        use_metronome = u < cfg.metronome_prob
        use_click_mix = not use_metronome and u < cfg.metronome_prob + cfg.click_mix_prob
        if rng.random() < cfg.full_context_prob:
            n_context = n
        else:
            low = int(round(cfg.min_context_seconds * sr))
            high = min(n, int(round(cfg.max_context_seconds * sr)))
            n_context = int(rng.integers(low, high + 1))
        gain_db = float(rng.uniform(*cfg.click_mix_gain_db)) if use_click_mix else None  # (drawn only then)
        kind = "mix"
        context = clicks = None
        if use_metronome or use_click_mix:
            beats = _window_times(song.beats, start, speed, cfg.window_seconds)
            if np.any(beats < n_context / sr):
                downbeats = _window_times(song.downbeats, start, speed, cfg.window_seconds)
                clicks = render_clicks(beats, downbeats, cfg.window_seconds, sr)[:n_context]
            else:
                self.skips["metronome_fallback" if use_metronome else "click_mix_fallback"] += 1
        if use_metronome and clicks is not None:
            context, kind = clicks, "metronome"
        else:
            mix = np.sum([stems[name] for name in chosen], axis=0)
            context = augment(mix, sr, speed, semitones, length=n)[:n_context]
            if use_click_mix and clicks is not None:
                assert gain_db is not None
                context = context + np.float32(db_to_gain(gain_db)) * clicks
                kind = "mix+click"
        target = augment(target, sr, speed, semitones, length=n)
        return AudioExample(target=np.ascontiguousarray(target, np.float32),
                            context=np.ascontiguousarray(context, np.float32),
                            caption=song.caption, song=song.id, context_kind=kind, start=start, speed=speed,
                            semitones=semitones, click_gain_db=gain_db if kind == "mix+click" else None)

    def _read(self, files: tuple[StemFile, ...], start: float, seconds: float) -> np.ndarray:
        """Sum of a stem's tracks over [start, start + seconds) of the song -> float32 [round(seconds * sr)],
        mono, at the config's rate; zero-padded past the end of a file."""
        import soundfile as sf

        sr = self.config.sample_rate
        total = np.zeros(int(round(seconds * sr)), np.float32)
        for file in files:
            first = int(round(start * file.sample_rate))
            frames = max(0, min(int(round(seconds * file.sample_rate)), file.frames - first))
            if frames == 0:
                continue
            path = self.manifest.resolve(file)
            try:
                with sf.SoundFile(str(path)) as handle:
                    if handle.samplerate != file.sample_rate or handle.frames != file.frames:
                        raise _Unreadable(f"{path} changed since `stage prepare` ({handle.frames} frames at "
                                          f"{handle.samplerate} Hz, recorded {file.frames} at {file.sample_rate} Hz)")
                    handle.seek(first)
                    data = handle.read(frames, dtype="float32", always_2d=True)  # [n, C]
            except (RuntimeError, OSError) as err:  # libsndfile errors (sf.LibsndfileError), missing files, permission errors
                reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise _Unreadable(f"{path}: {reason}") from None
            if data.shape[0] < frames or not np.isfinite(data).all():
                raise _Unreadable(f"{path}: truncated or corrupt (read {data.shape[0]} of {frames} frames)")
            mono = _mean_channels(data)[None]  # [1, n]
            total += fit_length(resample(mono, file.sample_rate, sr), len(total))[0]
        return total


def _mean_channels(data: np.ndarray) -> np.ndarray:
    """[n, C] -> [n]: the authors' down-mix, the mean of the channels. Column by column: numpy's
    reduction over the short, strided channel axis is >10x slower."""
    mono = data[:, 0].copy()
    for c in range(1, data.shape[1]):
        mono += data[:, c]
    if data.shape[1] > 1:
        mono *= np.float32(1.0 / data.shape[1])
    return mono


def _window_times(times: np.ndarray, start: float, speed: float, seconds: float) -> np.ndarray:
    """Song times (s) -> times inside a window that starts at `start` and is played `speed` times
    faster, keeping those in [0, seconds) (§4 step 2: beats re-based and scaled by the speed)."""
    t = (np.asarray(times, np.float64) - start) / speed
    return t[(t >= 0) & (t < seconds)]
