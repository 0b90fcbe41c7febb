"""Audio I/O and checks shared by the CLI, the studio, the data pipeline and evaluation.

Arrays are float32 numpy `[C, N]` (channels first; `N` counts samples). Reading goes through
soundfile (WAV, FLAC, OGG, MP3 where libsndfile supports it), with librosa/audioread as a fallback
for other containers; resampling goes through soxr. Every problem a user can cause becomes an
`AudioError` with a one-line message. Writing is atomic: a temporary file in the target folder,
then a rename, so an interrupted write never leaves a partial file or clobbers an existing one.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from stage.errors import AudioError
from stage.files import atomic_write, probe_writable

MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 768_000
MAX_CHANNELS = 64
MAX_SECONDS = 60 * 60  # one hour: longer inputs are almost surely a mistake (and would exhaust memory)
SILENCE_PEAK = 1e-4  # about -80 dBFS


def db_to_gain(db: float) -> float:
    """A level change in decibels -> the amplitude factor 10 ** (db / 20) (-6 dB ~ 0.501)."""
    return 10.0 ** (float(db) / 20.0)


def check_rate(sample_rate: int, what: str = "audio") -> int:
    """Refuse absurd sample rates (0 Hz headers, 10 MHz headers)."""
    if not isinstance(sample_rate, (int, np.integer)) or not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise AudioError(
            f"{what} has an unsupported sample rate {sample_rate!r} Hz (expected {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE})"
        )
    return int(sample_rate)


def as_channels_first(audio, what: str = "audio") -> np.ndarray:
    """Accept [N] or [C, N] (numpy or torch) and return float32 [C, N]; refuse NaN/inf/empty."""
    if hasattr(audio, "detach"):
        audio = audio.detach().cpu().numpy()
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise AudioError(f"{what} must be shaped [samples] or [channels, samples], got {x.shape}")
    if x.shape[0] > MAX_CHANNELS and x.shape[1] <= MAX_CHANNELS:
        raise AudioError(f"{what} looks like [samples, channels] {x.shape}; pass [channels, samples]")
    if x.shape[0] < 1 or x.shape[0] > MAX_CHANNELS:
        raise AudioError(f"{what} has {x.shape[0]} channels (1-{MAX_CHANNELS} supported)")
    if x.shape[1] == 0:
        raise AudioError(f"{what} is empty (0 samples)")
    if not np.isfinite(x).all():
        raise AudioError(f"{what} contains NaN or infinite samples")
    return x


def to_mono(x: np.ndarray) -> np.ndarray:
    """[C, N] -> [1, N] by averaging the channels (the authors' down-mix)."""
    return x.mean(axis=0, keepdims=True) if x.shape[0] > 1 else x


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """[C, N] float32 at sr_in -> [C, N'] at sr_out (soxr, high quality). No-op when equal."""
    if sr_in == sr_out:
        return x
    import soxr

    y = soxr.resample(np.ascontiguousarray(x.T), sr_in, sr_out, quality="HQ")
    return np.ascontiguousarray(y.T, dtype=np.float32)


def prepare(audio, sample_rate: int, rate: int, what: str = "audio") -> np.ndarray:
    """The one preparation chain for audio going into the codec or an analysis: check the rate,
    accept [N] / [C, N] (numpy or torch; NaN, inf and empty refused), down-mix to mono (the
    channels' mean, the authors' down-mix) and resample to `rate`. Returns float32 [1, N']."""
    check_rate(sample_rate, what)
    return resample(to_mono(as_channels_first(audio, what)), int(sample_rate), int(rate))


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """Crop or zero-pad [C, N] to exactly n samples."""
    if x.shape[-1] >= n:
        return x[..., :n]
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n - x.shape[-1])])


def is_silent(x: np.ndarray, threshold: float = SILENCE_PEAK) -> bool:
    """True when the absolute peak is below `threshold` (the authors used the signed max; §9)."""
    return float(np.max(np.abs(x))) < threshold


def load_audio(path: str | os.PathLike, max_seconds: float = MAX_SECONDS) -> tuple[np.ndarray, int]:
    """Read an audio file -> (float32 [C, N], sample_rate). Raises AudioError on any problem."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file")
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except (RuntimeError, OSError):  # sf.LibsndfileError (a RuntimeError): a format libsndfile cannot open
        return _load_fallback(path, max_seconds)
    check_rate(info.samplerate, str(path))
    if info.channels < 1 or info.channels > MAX_CHANNELS:
        raise AudioError(f"{path}: {info.channels} channels (1-{MAX_CHANNELS} supported)")
    if info.frames <= 0:
        raise AudioError(f"{path}: contains no audio samples")
    if info.frames > max_seconds * info.samplerate:
        raise AudioError(f"{path}: {info.frames / info.samplerate:.0f} s is longer than the {max_seconds:.0f} s limit")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, OSError, MemoryError) as err:  # sf.LibsndfileError is a RuntimeError
        raise AudioError(f"{path}: unreadable or truncated audio ({_reason(err)})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: contains no audio samples")
    return as_channels_first(data.T, str(path)), int(sr)


def _load_fallback(path: Path, max_seconds: float) -> tuple[np.ndarray, int]:
    """Formats libsndfile cannot open (e.g. M4A): try librosa's audioread backend."""
    try:
        import warnings

        import librosa

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y, sr = librosa.load(str(path), sr=None, mono=False, duration=max_seconds)
    except Exception:  # broad on purpose: audioread's backends (wave, aifc, ffmpeg, gstreamer) each raise their own types
        raise AudioError(f"{path}: not a readable audio file") from None
    check_rate(int(sr), str(path))
    return as_channels_first(y, str(path)), int(sr)


def _reason(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def save_audio(path: str | os.PathLike, audio, sample_rate: int, overwrite: bool = False, subtype: str = "PCM_16") -> Path:
    """Write [C, N] or [N] float audio as WAV/FLAC atomically. Refuses to replace an existing file
    unless `overwrite`. Samples outside [-1, 1] are clipped (the PCM range); callers that mix
    stems leave headroom first."""
    import soundfile as sf

    path = Path(path)
    x = as_channels_first(audio, str(path))
    check_rate(sample_rate, str(path))
    if path.exists() and not overwrite:
        raise AudioError(f"{path}: already exists (use --force to overwrite)")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise AudioError(f"{folder}: output folder does not exist")
    try:
        probe_writable(folder)
    except OSError as err:
        raise AudioError(f"{folder}: output folder is not writable ({err.strerror or err})") from None
    fmt = "FLAC" if path.suffix.lower() == ".flac" else "WAV"
    data = np.clip(x, -1.0, 1.0).T
    return atomic_write(path, lambda f: sf.write(f, data, sample_rate, format=fmt, subtype=subtype), binary=True)
