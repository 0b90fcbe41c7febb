"""The studio's lane mixer (mute / solo) and the take streamed into the player while it is
generated, with the tiny model on short sessions (stage.app.mixer, Studio.mix_lanes, Studio.generate(stream=...))."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from helpers import drum_loop, open_studio, session_files
from stage.app.mixer import SONG, audible, lane_factors
from stage.app.studio import Studio
from stage.errors import Cancelled, StageError
from stage.generate.pipeline import fits_one_window

OFF = "off: the mix is the context"


@pytest.fixture
def studio(tiny_model, tmp_path):
    s = open_studio(tiny_model, tmp_path, max_upload_mb=2.0, max_seconds=30.0)
    yield s
    s.close()


def new_song(studio: Studio, tmp_path: Path, seconds: float, name: str = "song", sr: int = 16_000) -> str:
    path = tmp_path / f"{name}.wav"
    sf.write(str(path), drum_loop(120.0, seconds, sr, 0.3, channels=2).T, sr, subtype="PCM_16")
    return studio.new_session(str(path), name)



def read(path: Path) -> np.ndarray:
    return sf.read(str(path), always_2d=True, dtype="float32")[0].T  # [C, N]


def test_audible_lanes():
    lanes = [SONG, "drums take001", "bass take002"]
    assert audible(lanes, [], []) == lanes
    assert audible(lanes, ["drums take001"], None) == [SONG, "bass take002"]
    assert audible(lanes, None, ["bass take002", SONG]) == [SONG, "bass take002"]  # page order, not click order
    assert audible(lanes, [SONG], [SONG, "drums take001"]) == ["drums take001"]  # a muted solo stays silent
    with pytest.raises(StageError, match="no lane 'vocals take009'"):
        audible(lanes, ["vocals take009"], [])


def test_mute_and_solo_take_the_mix_apart(studio, tmp_path):
    """Two accepted stems (one at -6 dB): all lanes on is the current mix; a soloed stem is that
    stem as the mix holds it; muting every lane is silence; a forged lane changes nothing."""
    name = new_song(studio, tmp_path, 0.5)
    drums = studio.generate(name, "drums", bpm_mode=OFF, takes=1, seed=1).takes[0]
    studio.accept(name, drums.id, -6.0)
    bass = studio.generate(name, "bass", bpm_mode=OFF, takes=1, seed=2).takes[0]
    studio.accept(name, bass.id)
    session = studio.workspace.open(name)
    folder = session.folder
    lanes = lane_factors(session)
    assert [lane.label for lane in lanes] == [SONG, f"drums {drums.id}", f"bass {bass.id}"]
    assert studio.view(name, "drums").mixer == [lane.label for lane in lanes]

    current = read(folder / session.current_mix.file)
    everything = read(studio.mix_lanes(name))
    assert everything.shape == current.shape
    np.testing.assert_allclose(everything, current, atol=1e-4)  # three 16-bit files summed vs one

    g1, g2 = (session.state.mixes[i].mix_gain for i in (1, 2))
    solo = read(studio.mix_lanes(name, soloed=[f"drums {drums.id}"]))
    np.testing.assert_allclose(solo, read(folder / drums.file) * 10 ** (-6 / 20) * g1 * g2, atol=1e-4)
    assert np.abs(solo).max() > 1e-3
    no_song = read(studio.mix_lanes(name, muted=[SONG]))
    np.testing.assert_allclose(no_song, current - read(folder / session.state.mixes[0].file) * g1 * g2, atol=1e-4)
    silent = read(studio.mix_lanes(name, muted=[lane.label for lane in lanes]))
    assert not silent.any()

    # An earlier mix version has fewer lanes; a lane of the later one is refused there.
    before = session_files(folder)
    studio.use_version(name, "v1")
    assert [lane.label for lane in lane_factors(studio.workspace.open(name))] == [SONG, f"drums {drums.id}"]
    before = session_files(folder)
    with pytest.raises(StageError, match=f"no lane 'bass {bass.id}'"):
        studio.mix_lanes(name, soloed=[f"bass {bass.id}"])
    with pytest.raises(StageError, match="bad session name"):
        studio.mix_lanes("../" + name)
    assert session_files(folder) == before


def joined_stream(got, session) -> np.ndarray:
    """The chunks of one stream joined, after checking them: one stream, at the session's rate
    and channels, each starting where the last ended."""
    s = session.state
    assert len(got) >= 1 and len({c.stream for c in got}) == 1
    pieces = []
    for chunk in got:
        info = sf.info(str(chunk.path))
        assert info.samplerate == s.sample_rate and info.channels == s.channels
        assert chunk.start == sum(p.shape[-1] for p in pieces)
        pieces.append(read(chunk.path))
    return np.concatenate(pieces, axis=-1)


def test_a_take_streams_into_the_player(studio, tmp_path):
    """A 1.5 s song fits one window: the first take over the mix arrives in chunks at the song's
    rate while the model runs, back to back, and agrees with the written take's preview."""
    name = new_song(studio, tmp_path, 1.5)
    got: list = []
    result = studio.generate(name, "drums", bpm_mode=OFF, takes=2, seed=3, stream=got.append)
    session = studio.workspace.open(name)
    joined = joined_stream(got, session)
    assert 0 < joined.shape[-1] < session.state.samples
    final = read(session.folder / result.takes[0].mix_file)
    m = joined.shape[-1] // 2  # away from the resampler's edge at the end of the partial
    corr = np.corrcoef(joined[:, :m].ravel(), final[:, :m].ravel())[0, 1]
    assert corr > 0.99, corr


def test_a_long_song_streams_window_by_window(studio, tiny_model, tmp_path):
    """Past one window the take is made by long-form windows: it streams a chunk per window but
    the last (the end comes with the written take), and the stream agrees with the take."""
    name = new_song(studio, tmp_path, 10.5, sr=8_000)
    session = studio.workspace.open(name)
    assert not fits_one_window(tiny_model, session.state.samples / session.state.sample_rate)
    got: list = []
    result = studio.generate(name, "drums", bpm_mode=OFF, takes=1, seed=3, stream=got.append)
    joined = joined_stream(got, session)
    assert len(got) >= 1 and 0 < joined.shape[-1] < session.state.samples
    final = read(session.folder / result.takes[0].mix_file)
    m = joined.shape[-1] - 8_000 // 10  # away from the resampler's edge at the end of the stream
    corr = np.corrcoef(joined[:, :m].ravel(), final[:, :m].ravel())[0, 1]
    assert corr > 0.99, corr


def test_the_callers_cancel_event_stops_the_take(studio, tmp_path):
    """The page's own event (set when a request is closed early) cancels; nothing is written."""
    name = new_song(studio, tmp_path, 0.3)
    folder = studio.workspace.path(name)
    before = session_files(folder)
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        studio.generate(name, "drums", bpm_mode=OFF, takes=1, stream=lambda path: None, cancel=stop)
    assert session_files(folder) == before and studio.running(name) == []
