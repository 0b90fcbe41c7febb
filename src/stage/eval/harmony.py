"""Harmonic and rhythmic coherence of a bass stem with its song.

- `chord_tone_share`: the share of a bass stem's voiced frames (librosa.pyin, Mauch & Dixon 2014)
  whose pitch class is a tone of the chord sounding at that moment. Chords are (start, end,
  pitch classes) spans: the band's score (meta.json) or a chord recogniser's output
  (`recognise_chords`, madmom's deep chroma + CRF, Korzeniowski & Widmer 2016, when installed).
- `grid_alignment`: the share of a stem's onsets within +-`window` of the song's eighth-note
  grid (each beat interval split in two).

Both are fractions in [0, 1]; a random bass line scores about the chord's share of the 12 pitch
classes (3-4 of 12) on the first and about 2 x window / (eighth-note length) on the second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stage.errors import StageError

PYIN_FMIN = 32.0  # Hz: two periods fit a 2048-sample frame at 32 kHz (31.25 Hz); C1 is 32.7 Hz
PYIN_FMAX = 400.0
GRID_WINDOW = 0.035  # s: half of mir_eval's 70 ms beat window


@dataclass(frozen=True)
class ChordSpan:
    start: float
    end: float
    pitch_classes: tuple[int, ...]


@dataclass(frozen=True)
class HarmonyScores:
    """chord_tone_share: voiced frames on a chord tone / voiced frames inside a chord span;
    voiced_frames: the denominator (0: the stem had no pitched notes, share is nan)."""

    chord_tone_share: float
    voiced_frames: int


def chord_spans(chords) -> list[ChordSpan]:
    """Spans from dicts with start/end/pitch_classes (meta.json's `chords`) or ChordSpans."""
    out = []
    for c in chords:
        if isinstance(c, ChordSpan):
            out.append(c)
        else:
            out.append(ChordSpan(float(c["start"]), float(c["end"]), tuple(int(p) % 12 for p in c["pitch_classes"])))
    return out


def bass_pitch(audio: np.ndarray, sample_rate: int, hop_length: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """pyin f0 of a mono stem -> (frame times [F], MIDI pitch [F], nan where unvoiced)."""
    import librosa

    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    if not np.any(np.abs(x) > 1e-4):
        return np.zeros(0), np.zeros(0)
    f0, voiced, _ = librosa.pyin(x, fmin=PYIN_FMIN, fmax=PYIN_FMAX, sr=sample_rate, frame_length=2048,
                                 hop_length=hop_length)
    times = librosa.frames_to_time(np.arange(len(f0)), sr=sample_rate, hop_length=hop_length)
    midi = np.where(voiced, librosa.hz_to_midi(np.where(voiced, f0, 1.0)), np.nan)
    return times, midi


def chord_tone_share(audio: np.ndarray, sample_rate: int, chords, offset: float = 0.0) -> HarmonyScores:
    """Share of voiced bass frames on a tone of the chord of the moment.

    audio: mono [N]; chords: spans in song time; offset: the song time of audio sample 0."""
    spans = chord_spans(chords)
    times, midi = bass_pitch(audio, sample_rate)
    hits = total = 0
    for t, m in zip(times + offset, midi):
        if np.isnan(m):
            continue
        span = next((s for s in spans if s.start <= t < s.end), None)
        if span is None:
            continue
        total += 1
        hits += int(round(m)) % 12 in span.pitch_classes
    return HarmonyScores(hits / total if total else float("nan"), total)


def eighth_grid(beats) -> np.ndarray:
    """The beats plus the midpoints between consecutive beats (seconds, sorted)."""
    b = np.asarray(beats, dtype=np.float64)
    if len(b) < 2:
        return b
    return np.sort(np.concatenate([b, (b[:-1] + b[1:]) / 2]))


def grid_alignment(onsets, beats, window: float = GRID_WINDOW) -> float:
    """Share of `onsets` within +-window of the eighth-note grid of `beats` (onsets outside the
    grid's span, more than one eighth before the first or after the last beat, are ignored);
    nan when no onset is inside."""
    grid = eighth_grid(beats)
    o = np.asarray(onsets, dtype=np.float64)
    if len(grid) < 2 or len(o) == 0:
        return float("nan")
    step = float(np.median(np.diff(grid)))
    o = o[(o >= grid[0] - step) & (o <= grid[-1] + step)]
    if len(o) == 0:
        return float("nan")
    nearest = np.abs(o[:, None] - grid[None, :]).min(axis=1)
    return float(np.mean(nearest <= window))


def recognise_chords(audio: np.ndarray, sample_rate: int) -> list[ChordSpan]:
    """Chord spans of a mix with madmom's deep-chroma chord recogniser (major/minor/no-chord).

    Raises StageError when madmom (or its chord models) is not installed."""
    from stage.data.beats import MADMOM_RATE, madmom_available

    if not madmom_available():
        raise StageError("chord recognition needs madmom (pip install 'stage-music[beats]')")
    try:
        from madmom.audio.chroma import DeepChromaProcessor
        from madmom.features.chords import DeepChromaChordRecognitionProcessor
    except ImportError as err:  # a madmom build without the chord models
        raise StageError(f"madmom's chord recogniser is unavailable ({err})") from None
    from stage.audio import prepare

    x = prepare(audio, sample_rate, MADMOM_RATE)[0]  # madmom's chroma network runs at 44.1 kHz
    chroma = DeepChromaProcessor()(x)
    labels = DeepChromaChordRecognitionProcessor()(chroma)
    return [span for start, end, label in labels if (span := _span(float(start), float(end), str(label)))]


NOTE_NAMES = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


def _span(start: float, end: float, label: str) -> ChordSpan | None:
    """A madmom label ("A:maj", "C#:min", "N") -> the triad's pitch classes; None for no chord."""
    if label == "N" or ":" not in label:
        return None
    root_name, quality = label.split(":", 1)
    root = NOTE_NAMES[root_name[0]] + root_name[1:].count("#") - root_name[1:].count("b")
    third = 3 if quality.startswith("min") else 4
    return ChordSpan(start, end, tuple(sorted({root % 12, (root + third) % 12, (root + 7) % 12})))
