"""Click tracks follow STAGE's training recipe (§4) sample for sample."""

from __future__ import annotations

import librosa
import numpy as np
import pytest

from stage.data.metronome import metronome_times, render_clicks, render_metronome
from stage.errors import StageError

SR = 32_000


def test_metronome_equals_librosa_click_sums():
    clicks = render_metronome(120, 4, 4.0, 0.0, SR)
    beats = np.arange(8) * 0.5
    downbeats = np.array([0.0, 2.0])
    n = 4 * SR
    expected = np.clip(
        librosa.clicks(times=beats, sr=SR, click_freq=1000, length=n)
        + librosa.clicks(times=downbeats, sr=SR, click_freq=1000, length=n), -1, 1)
    assert clicks.shape == (n,) and clicks.dtype == np.float32
    assert np.array_equal(clicks, expected.astype(np.float32))


def test_onsets_at_exact_beat_samples_and_accented_downbeats():
    clicks = render_metronome(90, 3, 6.0, 0.25, SR)
    beats, downbeats = metronome_times(90, 3, 6.0, 0.25)
    assert np.allclose(beats, 0.25 + np.arange(len(beats)) * 60 / 90)
    assert np.allclose(downbeats, beats[::3])
    click = librosa.clicks(times=[0.0], sr=SR, click_freq=1000, length=3200)  # one 0.1 s click
    for t in beats:
        start = int(np.floor(t * SR))
        assert clicks[start - 1] == 0.0  # silence right before each onset
        segment = clicks[start:start + 3200]
        expected = np.clip(2 * click, -1, 1) if t in downbeats else click
        assert np.allclose(segment, expected, atol=1e-6)
    assert np.abs(clicks).max() == 1.0  # downbeats saturate: twice a ~1.0 click, clipped


def test_render_clicks_ignores_times_outside_and_rejects_bad_length():
    out = render_clicks([-1.0, 0.5, 9.0], [0.5], 1.0, SR)
    assert out.shape == (SR,)
    assert np.count_nonzero(out[:int(0.5 * SR)]) == 0
    with pytest.raises(StageError):
        render_clicks([0.0], [], 0.0, SR)


@pytest.mark.parametrize("bpm, bar", [(0, 4), (1000, 4), (float("nan"), 4), (120, 0), (120, 2.5)])
def test_bad_tempo_is_refused(bpm, bar):
    with pytest.raises(StageError):
        render_metronome(bpm, bar, 4.0)


def test_negative_offset_keeps_bar_phase():
    beats, downbeats = metronome_times(120, 4, 3.0, -0.75)
    assert np.allclose(beats[:2], [0.25, 0.75])
    assert np.allclose(downbeats, [1.25])
