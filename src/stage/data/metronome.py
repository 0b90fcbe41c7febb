"""Click tracks exactly as STAGE trained on them (docs/method.md §4).

Beats and downbeats are each rendered with `librosa.clicks` (a 1 kHz sine of 0.1 s with an
exponential decay from 1 to 2^-10, placed at floor(t * sr)); the two tracks are **summed** (a
downbeat is also a beat, so it sounds twice as loud) and clipped to [-1, 1]. Training contexts
were made this way at 32 kHz, so rendering inference clicks with the same recipe keeps them in
distribution.
"""

from __future__ import annotations

import numpy as np

from stage.errors import StageError

CLICK_FREQ = 1000.0  # Hz (§4: librosa.clicks(click_freq=1000))
CLICK_SECONDS = 0.1  # librosa's default click_duration
MAX_BPM = 400.0
DEFAULT_BEATS_PER_BAR = 4  # the metronome's accent period when none is given (4/4), everywhere
MIN_BPM = 20.0


def check_length(seconds: float) -> None:
    """A click track's length: > 0 and at most `stage.audio.MAX_SECONDS` (the beat times and the
    buffer grow with it, so a runaway length is refused before anything is allocated)."""
    from stage.audio import MAX_SECONDS

    if not isinstance(seconds, (int, float, np.number)) or not np.isfinite(seconds) or seconds <= 0:
        raise StageError(f"click track length must be > 0 s, got {seconds}")
    if seconds > MAX_SECONDS:
        raise StageError(f"click track length must be at most {MAX_SECONDS:g} s (one hour), got {seconds:g}")


def render_clicks(beats, downbeats, seconds: float, sample_rate: int = 32_000) -> np.ndarray:
    """Click track for given beat and downbeat times (seconds) -> float32 [N], N = round(seconds * sr).

    Times outside [0, seconds) are ignored. The downbeats are usually a subset of the beats.
    """
    import librosa

    check_length(seconds)
    n = int(round(seconds * sample_rate))
    out = np.zeros(n, dtype=np.float64)
    for times in (beats, downbeats):
        t = np.asarray(times, dtype=np.float64).reshape(-1)
        t = t[(t >= 0) & (t < seconds)]
        if t.size:
            out += librosa.clicks(times=t, sr=sample_rate, click_freq=CLICK_FREQ, click_duration=CLICK_SECONDS, length=n)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def metronome_times(bpm: float, beats_per_bar: int, seconds: float, offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Beat and downbeat times (seconds) of a steady metronome; the first beat (at `offset`) is a
    downbeat. Beats before 0 (negative offset) are dropped, keeping the bar phase."""
    validate_tempo(bpm, beats_per_bar)
    check_length(seconds)
    if not np.isfinite(offset):
        raise StageError(f"offset must be a number of seconds, got {offset}")
    period = 60.0 / bpm
    first = int(np.ceil(-offset / period - 1e-9)) if offset < 0 else 0
    count = int(np.floor((seconds - offset) / period - 1e-9)) + 1
    index = np.arange(first, max(first, count))
    times = offset + index * period
    keep = (times >= 0) & (times < seconds)
    beats = times[keep]
    downbeats = times[keep & (index % beats_per_bar == 0)]
    return beats, downbeats


def render_metronome(
    bpm: float, beats_per_bar: int = DEFAULT_BEATS_PER_BAR, seconds: float = 10.0, offset: float = 0.0, sample_rate: int = 32_000
) -> np.ndarray:
    """A click track at `bpm` with an accent every `beats_per_bar` beats -> float32 [N]."""
    beats, downbeats = metronome_times(bpm, beats_per_bar, seconds, offset)
    return render_clicks(beats, downbeats, seconds, sample_rate)


def validate_tempo(bpm: float, beats_per_bar: int) -> None:
    if not isinstance(bpm, (int, float, np.number)) or not np.isfinite(bpm) or not MIN_BPM <= bpm <= MAX_BPM:
        raise StageError(f"bpm must be between {MIN_BPM:.0f} and {MAX_BPM:.0f}, got {bpm}")
    validate_beats_per_bar(beats_per_bar)


MAX_BEATS_PER_BAR = 16


def validate_beats_per_bar(beats_per_bar) -> None:
    if isinstance(beats_per_bar, bool) or not isinstance(beats_per_bar, (int, np.integer)) or not 1 <= beats_per_bar <= MAX_BEATS_PER_BAR:
        raise StageError(f"beats per bar must be an integer in 1..{MAX_BEATS_PER_BAR}, got {beats_per_bar}")
