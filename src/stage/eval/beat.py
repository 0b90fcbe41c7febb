"""Rhythm metrics: beat and downbeat F-measure, tempo error and onset F-measure.

Pure functions on event times (seconds), plus thin helpers that track or detect the events in
audio first. Every function returns a frozen dataclass.

Matching follows mir_eval (Raffel et al. 2014): `mir_eval.util.match_events` finds the largest
one-to-one matching of reference and estimated events within +-window, precision = matches /
estimated, recall = matches / reference, F = their harmonic mean. This is exactly what
`mir_eval.beat.f_measure` (window 70 ms) and `mir_eval.onset.f_measure` (window 50 ms) compute;
we call the matcher directly to also report precision and recall.

**Trimming.** `mir_eval.beat.evaluate` drops every beat before 5 s (`trim_beats`) because
human tappers need a few beats to lock in. Generated stems are 10 s long, so that would throw
away half of each clip and all of its most telling part (does the stem lock in at once?).
Here trimming is an option (`trim=True`, `min_time=5.0` reproduces mir_eval's evaluate) and is
**off by default**: every beat counts.

**Span.** A context may be shorter than the stem (STAGE uses 5-10 s contexts for 10 s stems,
docs/method.md §3.5); beats can only be judged where a reference exists, so both sequences are
cut to `[0, span)` when a span is given.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from stage.errors import AudioError, StageError

BEAT_WINDOW = 0.07  # s, mir_eval.beat.f_measure's default (+-70 ms)
ONSET_WINDOW = 0.05  # s, mir_eval.onset.f_measure's default (+-50 ms)
TRIM_SECONDS = 5.0  # mir_eval.beat.trim_beats' default min_beat_time
ONSET_LEAD_SECONDS = 0.1  # silence prepended before onset detection (see detect_onsets)
# Tempo accuracy tolerance of Gouyon et al. (2006), "An experimental comparison of audio tempo
# induction algorithms": ACC1 = within 4 % of the reference, ACC2 = also at 2x, 1/2x, 3x, 1/3x.
TEMPO_TOLERANCE = 0.04
OCTAVE_FACTORS = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)


@dataclass(frozen=True)
class EventScores:
    """Matching of estimated against reference events within +-`window` seconds.

    f1 / precision / recall are None when undefined (no reference events). With reference
    events but no estimated ones, precision is 0 by convention (as in mir_eval) and f1 = 0.
    """

    f1: float | None
    precision: float | None
    recall: float | None
    num_reference: int
    num_estimated: int
    num_matched: int
    window: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TempoScores:
    """Tempo of the generated stem against the reference.

    ratio: generated BPM / reference BPM (1.0 = same tempo, 2.0 = double time).
    acc1: |ratio - 1| <= tolerance. acc2: within tolerance of 1, 2, 1/2, 3 or 1/3 (octave errors
    allowed). All None when either tempo is unknown (fewer than two beats).
    """

    ratio: float | None
    generated_bpm: float | None
    reference_bpm: float | None
    acc1: bool | None
    acc2: bool | None
    tolerance: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class BeatScores:
    """Beat, downbeat and tempo agreement of one generated stem with its reference grid."""

    beat: EventScores
    downbeat: EventScores
    tempo: TempoScores
    trimmed: bool
    span: float | None

    def to_dict(self) -> dict:
        return {"beat": self.beat.to_dict(), "downbeat": self.downbeat.to_dict(), "tempo": self.tempo.to_dict(),
                "trimmed": self.trimmed, "span": self.span}


def _times(values, what: str) -> np.ndarray:
    t = np.asarray(values if values is not None else [], dtype=np.float64).reshape(-1)
    if not np.isfinite(t).all():
        raise StageError(f"{what} contain NaN or infinite times")
    if (t < 0).any():
        raise StageError(f"{what} contain negative times")
    return np.sort(t)


def crop_events(times, span: float | None = None, min_time: float = 0.0) -> np.ndarray:
    """Keep the times in [min_time, span) (span None = no upper bound); sorted float64."""
    t = _times(times, "event times")
    keep = t >= min_time
    if span is not None:
        keep &= t < span
    return t[keep]


def event_scores(reference, estimated, window: float) -> EventScores:
    """F-measure, precision and recall of `estimated` against `reference` event times (seconds)."""
    import mir_eval

    if not window > 0:
        raise StageError(f"matching window must be > 0 s, got {window}")
    ref, est = _times(reference, "reference times"), _times(estimated, "estimated times")
    if ref.size == 0:
        return EventScores(None, None, None, 0, int(est.size), 0, window)
    matched = len(mir_eval.util.match_events(ref, est, window)) if est.size else 0
    precision = matched / est.size if est.size else 0.0
    recall = matched / ref.size
    f1 = float(mir_eval.util.f_measure(precision, recall)) if matched else 0.0
    return EventScores(f1, precision, recall, int(ref.size), int(est.size), matched, window)


def bpm_of(beats) -> float | None:
    """Tempo of a beat sequence: 60 / median inter-beat interval; None below two beats."""
    t = _times(beats, "beat times")
    if t.size < 2:
        return None
    ibi = float(np.median(np.diff(t)))
    return 60.0 / ibi if ibi > 0 else None


def tempo_scores(generated_bpm: float | None, reference_bpm: float | None, tolerance: float = TEMPO_TOLERANCE) -> TempoScores:
    """Tempo ratio and ACC1/ACC2 of a generated tempo against a reference tempo (BPM)."""
    if not generated_bpm or not reference_bpm or generated_bpm <= 0 or reference_bpm <= 0:
        return TempoScores(None, generated_bpm or None, reference_bpm or None, None, None, tolerance)
    ratio = float(generated_bpm) / float(reference_bpm)
    acc1 = abs(ratio - 1.0) <= tolerance
    acc2 = any(abs(ratio / f - 1.0) <= tolerance for f in OCTAVE_FACTORS)
    return TempoScores(ratio, float(generated_bpm), float(reference_bpm), acc1, acc2, tolerance)


def beat_scores(
    reference_beats,
    reference_downbeats,
    generated_beats,
    generated_downbeats,
    window: float = BEAT_WINDOW,
    trim: bool = False,
    min_time: float = TRIM_SECONDS,
    span: float | None = None,
    reference_bpm: float | None = None,
    generated_bpm: float | None = None,
) -> BeatScores:
    """Score generated beats/downbeats against a reference grid (all times in seconds).

    trim: drop events before `min_time` first (mir_eval's evaluate does, with 5 s); off by
      default so short clips keep all their beats.
    span: only events in [0, span) are compared (the part of the stem that has a reference).
    reference_bpm / generated_bpm: tempi to compare; default to 60 / median inter-beat interval
      of the (uncropped) beat sequences. A metronome passes its exact BPM.
    """
    start = min_time if trim else 0.0
    ref_b, ref_d = crop_events(reference_beats, span, start), crop_events(reference_downbeats, span, start)
    gen_b, gen_d = crop_events(generated_beats, span, start), crop_events(generated_downbeats, span, start)
    tempo = tempo_scores(generated_bpm if generated_bpm is not None else bpm_of(generated_beats),
                         reference_bpm if reference_bpm is not None else bpm_of(reference_beats))
    return BeatScores(event_scores(ref_b, gen_b, window), event_scores(ref_d, gen_d, window), tempo, trim, span)


def onset_scores(reference_onsets, estimated_onsets, window: float = ONSET_WINDOW, span: float | None = None) -> EventScores:
    """Onset F-measure (mir_eval.onset.f_measure semantics, +-50 ms by default) within [0, span)."""
    return event_scores(crop_events(reference_onsets, span), crop_events(estimated_onsets, span), window)


# --------------------------------------------------------------------------- from audio


def detect_onsets(audio, sample_rate: int) -> np.ndarray:
    """Onset times (seconds) of [C, N] or [N] audio with librosa's spectral-flux detector
    (`librosa.onset.onset_detect`, default peak picking, hop 512). Silence gives no onsets."""
    import librosa

    from stage.audio import as_channels_first, check_rate, is_silent, to_mono

    check_rate(sample_rate, "audio")
    x = to_mono(as_channels_first(audio, "audio"))[0]
    if is_silent(x):
        return np.zeros(0)
    # librosa's peak picking cannot report an onset in the first few frames (it needs frames
    # before the peak), so a stem that starts on a hit at t = 0 would lose it: prepend silence.
    lead = int(round(ONSET_LEAD_SECONDS * sample_rate))
    y = np.concatenate([np.zeros(lead, dtype=x.dtype), x])
    t = np.asarray(librosa.onset.onset_detect(y=y, sr=sample_rate, units="time"), dtype=np.float64) - lead / sample_rate
    return np.clip(t[t > -ONSET_WINDOW], 0.0, None)


def quiet_track(audio, sample_rate: int, method: str = "auto"):
    """`stage.data.beats.track_beats` with library warnings silenced (librosa warns about empty
    mel filters in its low-band onset strength; that is expected and not the user's concern)."""
    import warnings

    from stage.data.beats import track_beats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return track_beats(audio, sample_rate, method=method)


def track_or_empty(audio, sample_rate: int, method: str = "auto"):
    """`stage.data.beats.track_beats`, except that silence or a beatless stem gives an empty grid
    (a generated stem with no beats scores 0, it is not an error)."""
    from stage.data.beats import BeatGrid

    try:
        return quiet_track(audio, sample_rate, method)
    except AudioError:
        empty = np.zeros(0)
        return BeatGrid(empty, empty, 0.0, 4, method)


def score_stem(audio, sample_rate: int, reference, method: str = "auto", window: float = BEAT_WINDOW,
               trim: bool = False, span: float | None = None, reference_bpm: float | None = None):
    """Track beats of a generated stem ([C, N] or [N]) and score them against `reference` (a
    `BeatGrid`). Returns (BeatScores, the generated stem's BeatGrid)."""
    grid = track_or_empty(audio, sample_rate, method)
    scores = beat_scores(reference.beats, reference.downbeats, grid.beats, grid.downbeats, window=window, trim=trim,
                         span=span, reference_bpm=reference_bpm, generated_bpm=grid.bpm or None)
    return scores, grid
