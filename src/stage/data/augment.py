"""Speed and pitch augmentation of training windows (docs/method.md §6.5 steps 1, 2 and 7).

The authors stretched with RubberBand (`pylibrb`, engine "faster") and applied the same factors
to target and context. RubberBand is not among our dependencies, so we use librosa's phase
vocoder (`librosa.effects.time_stretch` / `pitch_shift`): it sounds rougher on transients and is
slow (tens of milliseconds per second of audio), which is why `SampleConfig` turns augmentation
off by default (the authors used p = 0.5 for each).

Speed convention: `speed` is a playback rate. A window of `seconds * speed` seconds of the song
is read and played `speed` times faster, so it lasts `seconds` (speed 1.2 = 20 % faster). The
authors' factor was the inverse (a duration ratio: `time_ratio = speed`, chunk `10 s / speed`);
both draw the factor uniformly from [0.8, 1.2].
"""

from __future__ import annotations

import numpy as np

from stage.audio import fit_length
from stage.errors import StageError


def time_stretch(x: np.ndarray, speed: float) -> np.ndarray:
    """Play mono float32 [N] audio `speed` times faster, keeping the pitch -> [~N / speed]."""
    if not speed > 0:
        raise StageError(f"speed must be > 0, got {speed}")
    if speed == 1.0:
        return x
    import librosa

    return librosa.effects.time_stretch(np.asarray(x, np.float32), rate=float(speed)).astype(np.float32)


def pitch_shift(x: np.ndarray, sample_rate: int, semitones: float) -> np.ndarray:
    """Shift mono float32 [N] audio by `semitones`, keeping the length -> [N]."""
    if semitones == 0:
        return x
    import librosa

    y = librosa.effects.pitch_shift(np.asarray(x, np.float32), sr=sample_rate, n_steps=float(semitones))
    return y.astype(np.float32)


def augment(x: np.ndarray, sample_rate: int, speed: float = 1.0, semitones: float = 0,
            length: int | None = None) -> np.ndarray:
    """Time-stretch then pitch-shift mono [N] audio; pad or crop to `length` samples when given
    (the stretched length is only approximately N / speed). -> float32 [length or ~N / speed]."""
    y = pitch_shift(time_stretch(x, speed), sample_rate, semitones)
    if length is not None:
        y = fit_length(y[None], length)[0]
    return np.ascontiguousarray(y, dtype=np.float32)
