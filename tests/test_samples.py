"""Training examples (§6.5): windows, context subsets, metronome contexts, determinism, bad input.

The fixture songs are 32 kHz mono, so the expected windows are plain slices of the files: every
check below compares the dataset's output with audio read independently from disk.
"""

from __future__ import annotations

import dataclasses
import itertools
import shutil

import numpy as np
import pytest
import soundfile as sf

from helpers import fake_stem, make_fake_folder_dataset
from stage.data.augment import augment, pitch_shift, time_stretch
from stage.data.manifest import load_manifest, prepare_manifest
from stage.data.metronome import render_clicks
from stage.data.samples import DEFAULT_CONTEXT_STEMS, SampleConfig, StemDataset
from stage.errors import ConfigError, StageError

SR = 32_000
FILES = {"drums": "drums", "bass": "bass", "guitar": "guitar", "piano": "keys", "vocals": "vocals"}
SILENT_INTRO = 5.0  # the drums (the target) are silent for the first 5 s of every 8 s song


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Three 8 s songs (drums silent for 5 s), prepared with librosa beats. -> (root, manifest path)."""
    base = tmp_path_factory.mktemp("samples")
    root = make_fake_folder_dataset(base / "songs", songs=3, seconds=8.0, sample_rate=SR, channels=1, files=FILES)
    for song in sorted(root.iterdir()):
        audio, _ = sf.read(str(song / "drums.wav"), dtype="float32")
        audio[: int(SILENT_INTRO * SR)] = 0
        sf.write(str(song / "drums.wav"), audio, SR, subtype="PCM_16")
    result = prepare_manifest(root, "folder", base / "manifest", beats="librosa", valid_songs=0, progress=False)
    return root, result.path


def config(**overrides) -> SampleConfig:
    """Short windows keep the tests fast; the logic is the same as with 10 s."""
    base = dict(target_stem="drums", window_seconds=2.0, min_context_seconds=1.0, max_context_seconds=1.5)
    return SampleConfig(**{**base, **overrides})


_cache: dict = {}


def window(root, song: str, stem: str, start: float, n: int) -> np.ndarray:
    """The stem's samples [round(start * SR), +n) read straight from its file, zero-padded."""
    path = root / song / f"{stem}.wav"
    if path not in _cache:
        _cache[path] = sf.read(str(path), dtype="float32")[0]
    a = int(round(start * SR))
    x = _cache[path][a: a + n]
    return np.pad(x, (0, n - len(x)))


def matching_subset(root, example, candidates) -> tuple[str, ...] | None:
    """Which subset of `candidates` sums to the example's context (None if no subset does)."""
    n = len(example.context)
    stems = {s: window(root, example.song, s, example.start, n) for s in candidates}
    for size in range(1, len(candidates) + 1):
        for subset in itertools.combinations(candidates, size):
            if np.allclose(example.context, np.sum([stems[s] for s in subset], axis=0), atol=1e-5):
                return subset
    return None


def test_shapes_lengths_and_context_bounds(data):
    root, manifest = data
    ds = StemDataset(manifest, config(full_context_prob=0.3), length=40, seed=1)
    assert len(ds) == 40 and ds.excluded == {}
    lengths, kinds = set(), set()
    for i in range(len(ds)):
        ex = ds[i]
        assert ex.target.dtype == np.float32 and ex.context.dtype == np.float32
        assert ex.target.shape == (2 * SR,)
        assert len(ex.context) == 2 * SR or SR <= len(ex.context) <= 1.5 * SR  # U{1..1.5 s} or full
        assert np.abs(ex.target).max() >= 0.01  # never a silent target...
        assert ex.start + 2.0 > SILENT_INTRO  # ...so never a window inside the drums' silent intro
        assert ex.caption == "" and ex.song.startswith("song_")
        lengths.add(len(ex.context) == 2 * SR)
        kinds.add(ex.context_kind)
    assert lengths == {True, False} and kinds == {"mix", "metronome"}
    with pytest.raises(IndexError):
        ds[40]


def test_mix_context_is_a_random_subset_of_the_other_stems(data):
    root, manifest = data
    ds = StemDataset(manifest, config(metronome_prob=0.0, full_context_prob=1.0), length=24)
    sizes = set()
    for i in range(len(ds)):
        ex = ds[i]
        assert ex.context_kind == "mix" and len(ex.context) == len(ex.target)
        assert np.allclose(ex.target, window(root, ex.song, "drums", ex.start, len(ex.target)), atol=1e-6)
        subset = matching_subset(root, ex, ["bass", "guitar", "piano", "vocals"])
        assert subset and "vocals" not in subset  # vocals never in contexts by default (§6.5)
        sizes.add(len(subset))
    assert sizes == {1, 2, 3}  # n ~ U{1..3} non-silent context stems


def test_vocals_join_contexts_with_the_flag(data):
    root, manifest = data
    ds = StemDataset(manifest, config(metronome_prob=0.0, full_context_prob=1.0, include_vocals=True), length=16)
    subsets = [matching_subset(root, ds[i], ["bass", "guitar", "piano", "vocals"]) for i in range(len(ds))]
    assert all(subsets) and any("vocals" in s for s in subsets)


@pytest.mark.parametrize("speed_prob", [0.0, 1.0])
def test_metronome_context_is_the_click_track_of_the_window_beats(data, speed_prob):
    root, manifest = data
    songs = {s.id: s for s in load_manifest(manifest).songs}
    ds = StemDataset(manifest, config(metronome_prob=1.0, speed_prob=speed_prob), length=8, seed=3)
    for i in range(len(ds)):
        ex = ds[i]
        song = songs[ex.song]
        assert ex.context_kind == "metronome" and (ex.speed != 1.0) == bool(speed_prob)
        # §4: beat times re-based to the window start and scaled by the speed, clicks rendered
        # at 32 kHz; the click track replaces the mix and is cut like a mix context.
        beats = (song.beats - ex.start) / ex.speed
        downbeats = (song.downbeats - ex.start) / ex.speed
        inside = lambda t: t[(t >= 0) & (t < 2.0)]  # noqa: E731
        expected = render_clicks(inside(beats), inside(downbeats), 2.0, SR)
        assert np.array_equal(ex.context, expected[: len(ex.context)])
        assert len(ex.target) == 2 * SR


def test_a_window_without_beats_keeps_the_mix_context(data):
    root, manifest = data
    loaded = load_manifest(manifest)
    one_beat = dataclasses.replace(loaded, songs=[  # a single beat, at 6.5 s: some contexts hold it
        dataclasses.replace(s, beats=np.array([6.5]), downbeats=np.array([6.5])) for s in loaded.songs])
    ds = StemDataset(one_beat, config(metronome_prob=1.0), length=16)
    examples = [ds[i] for i in range(len(ds))]
    fallback = [e for e in examples if e.context_kind == "mix"]
    assert 0 < len(fallback) < len(examples) and ds.skip_counts["metronome_fallback"] == len(fallback)
    for ex in examples:
        holds_beat = ex.start <= 6.5 < ex.start + len(ex.context) / SR
        assert holds_beat == (ex.context_kind == "metronome")
        if not holds_beat:
            assert matching_subset(root, ex, ["bass", "guitar", "piano"])


@pytest.mark.parametrize("speed_prob", [0.0, 1.0])
def test_click_mix_adds_the_click_to_the_mix_and_changes_no_other_window(data, speed_prob):
    """A "mix+click" context is the very mix the same seed gives without click_mix_prob, plus the
    window's click track times the recorded gain; every other window is byte for byte the one of
    the config without click_mix_prob (no extra random number is drawn for it)."""
    _, manifest = data
    songs = {s.id: s for s in load_manifest(manifest).songs}
    base = dict(metronome_prob=0.3, speed_prob=speed_prob, click_mix_gain_db=(-20.0, -6.0))
    plain = StemDataset(manifest, config(**base), length=24, seed=4)
    scaffold = StemDataset(manifest, config(**base, click_mix_prob=0.5), length=24, seed=4)
    kinds = []
    for i in range(len(plain)):
        a, b = plain[i], scaffold[i]
        kinds.append(b.context_kind)
        assert np.array_equal(a.target, b.target) and (a.song, a.start, a.speed) == (b.song, b.start, b.speed)
        if b.context_kind != "mix+click":
            assert b.click_gain_db is None and a.context_kind == b.context_kind
            assert a.context.tobytes() == b.context.tobytes()
            continue
        assert a.context_kind == "mix" and len(a.context) == len(b.context) and -20.0 <= b.click_gain_db <= -6.0
        inside = lambda t: t[(t >= 0) & (t < 2.0)]  # noqa: E731
        song = songs[b.song]
        clicks = render_clicks(inside((song.beats - b.start) / b.speed), inside((song.downbeats - b.start) / b.speed),
                               2.0, SR)[: len(b.context)]
        assert np.abs(clicks).max() > 0.1  # the context span holds a beat
        assert np.allclose(b.context - a.context, 10 ** (b.click_gain_db / 20) * clicks, atol=1e-6)
    assert {"mix", "metronome", "mix+click"} <= set(kinds)
    assert len({scaffold[i].click_gain_db for i in range(len(scaffold))} - {None}) > 1  # a gain per window


def test_a_config_without_click_mix_gives_the_same_windows_as_click_mix_prob_zero(data):
    """The default (the field unset, as in every config written before it) and an explicit 0 agree
    byte for byte, with every augmentation on."""
    _, manifest = data
    cfg = config(speed_prob=0.5, pitch_prob=0.5, full_context_prob=0.3)
    assert cfg.click_mix_prob == 0.0
    explicit = SampleConfig.from_dict({**cfg.to_dict(), "click_mix_prob": 0, "click_mix_gain_db": [-10, 0]})
    a = StemDataset(manifest, cfg, length=8, seed=9)
    b = StemDataset(manifest, explicit, length=8, seed=9)
    for i in range(len(a)):
        x, y = a[i], b[i]
        assert x.context.tobytes() == y.context.tobytes() and x.target.tobytes() == y.target.tobytes()
        assert (x.start, x.context_kind, x.click_gain_db) == (y.start, y.context_kind, None)


def test_examples_depend_only_on_seed_and_index(data):
    _, manifest = data
    cfg = config(speed_prob=0.5, pitch_prob=0.5)
    a = StemDataset(manifest, cfg, length=6, seed=7)
    b = StemDataset(manifest, cfg, length=6, seed=7)
    first = [a[i] for i in range(6)]
    for i in reversed(range(6)):  # another instance, another access order
        x, y = first[i], b[i]
        assert np.array_equal(x.target, y.target) and np.array_equal(x.context, y.context)
        fields = ("song", "start", "speed", "semitones", "context_kind")
        assert [getattr(x, f) for f in fields] == [getattr(y, f) for f in fields]
    assert len({round(e.start, 6) for e in first}) == 6  # different indices, different windows
    other = StemDataset(manifest, cfg, length=6, seed=8)[0]
    assert other.start != first[0].start
    b.set_epoch(1)  # a new epoch draws new windows, reproducibly
    assert b[0].start != first[0].start
    assert np.array_equal(b[0].target, StemDataset(manifest, cfg, length=6, seed=7, epoch=1)[0].target)


def test_dataloader_workers_give_the_same_examples(data):
    """Worker processes (each with its own dataset copy) and shuffling change nothing: the
    example at an index is fixed by (seed, index)."""
    import torch

    _, manifest = data
    ds = StemDataset(manifest, config(), length=6, seed=11)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, shuffle=True, num_workers=2, collate_fn=list,
                                         generator=torch.Generator().manual_seed(0))
    seen = {ex.start: ex for batch in loader for ex in batch}
    direct = {ex.start: ex for ex in (ds[i] for i in range(6))}
    assert len(direct) == 6 and seen.keys() == direct.keys()
    for start, ex in seen.items():
        assert np.array_equal(ex.target, direct[start].target) and np.array_equal(ex.context, direct[start].context)


def test_speed_and_pitch_augmentation(data):
    root, manifest = data
    ds = StemDataset(manifest, config(metronome_prob=0.0, speed_prob=1.0, pitch_prob=1.0), length=4, seed=5)
    for i in range(len(ds)):
        ex = ds[i]
        assert 0.8 <= ex.speed <= 1.2 and ex.speed == round(ex.speed, 2) and -4 <= ex.semitones <= 4
        assert ex.target.shape == (2 * SR,) and len(ex.context) <= 2 * SR
        # The window read is 2 s * speed long, so that it lasts 2 s once played `speed` times faster.
        read = window(root, ex.song, "drums", ex.start, int(round(2.0 * ex.speed * SR)))
        assert np.allclose(ex.target, augment(read, SR, ex.speed, ex.semitones, length=2 * SR), atol=1e-5)


def test_time_stretch_and_pitch_shift_do_what_they_say():
    t = np.arange(SR) / SR
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)

    def peak_hz(x):
        spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
        return np.argmax(spectrum) * SR / len(x)

    faster = time_stretch(tone, 1.25)
    assert abs(len(faster) - SR / 1.25) < 0.01 * SR and abs(peak_hz(faster) - 440) < 5
    up = pitch_shift(tone, SR, 12)
    assert len(up) == SR and abs(peak_hz(up) - 880) < 5
    assert augment(tone, SR, 0.8, 0, length=SR).shape == (SR,)


def test_unreadable_or_changed_files_skip_the_song_with_a_count(data, tmp_path, caplog):
    root, manifest = data
    copy = tmp_path / "songs"
    shutil.copytree(root, copy)
    (copy / "song_01" / "bass.wav").write_bytes(b"RIFF....WAVEfmt not audio at all")
    ds = StemDataset(manifest, config(), length=6, root=copy)
    served = [ds[i] for i in range(len(ds))]
    assert "song_01" not in {e.song for e in served}  # never served as silence
    assert all(np.abs(e.target).max() >= 0.01 for e in served)
    assert ds.skip_counts["unreadable"] == 2  # indices 1 and 4 start at song_01
    assert "skipping song song_01" in caplog.text and "bass.wav" in caplog.text

    # Every song broken: readable but not the file that was prepared, deleted, corrupt.
    sf.write(str(copy / "song_01" / "bass.wav"), np.zeros(SR, np.float32), SR)
    (copy / "song_02" / "guitar.wav").unlink()
    (copy / "song_00" / "piano.wav").write_bytes(b"junk")
    ds = StemDataset(manifest, config(), length=3, root=copy)
    with pytest.raises(StageError, match="every one of the 3 songs was skipped \\(3 unreadable\\)"):
        ds[0]
    assert "changed since `stage prepare`" in caplog.text and "song_02/guitar.wav" in caplog.text


def test_songs_without_a_usable_target(tmp_path):
    root = make_fake_folder_dataset(tmp_path / "songs", songs=2, seconds=4.0, sample_rate=SR, files={
        "drums": "silence", "bass": "bass"})
    # song_01: drums only in a 20 ms blip at the very end, which almost no window holds.
    blip = np.zeros(4 * SR, np.float32)
    blip[-640:] = 0.5
    sf.write(str(root / "song_01" / "drums.wav"), blip, SR)
    manifest = load_manifest(prepare_manifest(root, "folder", tmp_path / "m", beats="none", valid_songs=0,
                                              progress=False).path)
    cfg = config(metronome_prob=0.0, max_tries=3)
    ds = StemDataset(manifest, cfg, length=2)
    assert ds.excluded == {"silent_target": 1} and [s.id for s in ds.songs] == ["song_01"]  # song_00 left out
    with pytest.raises(StageError, match="1 silent.*silent 'drums' stem.*in 3 random windows"):
        ds[0]
    assert ds.skip_counts == {"silent": 1}
    only_silent = dataclasses.replace(manifest, songs=[s for s in manifest.songs if s.id == "song_00"])
    with pytest.raises(StageError, match=r"no usable song in split 'train'.*1 silent target.*non-silent 'drums'"):
        StemDataset(only_silent, cfg)
    with pytest.raises(StageError, match="no usable song in split 'test'"):
        StemDataset(manifest, cfg, split="test")


@pytest.mark.parametrize("overrides, match", [
    (dict(target_stem="drum"), "target_stem must be one of"),
    (dict(min_context_seconds=1.8), "min_context_seconds <= max_context_seconds"),
    (dict(max_context_seconds=3.0), "max_context_seconds <= window_seconds"),
    (dict(min_context_seconds=0.0), "0 < min_context_seconds"),
    (dict(metronome_prob=1.5), "metronome_prob must be a probability"),
    (dict(click_mix_prob=-0.1), "click_mix_prob must be a probability"),
    (dict(metronome_prob=0.6, click_mix_prob=0.5), "metronome_prob \\+ click_mix_prob must be <= 1"),
    (dict(click_mix_gain_db=(0.0, -30.0)), "click_mix_gain_db"),
    (dict(click_mix_gain_db=(-30.0, float("inf"))), "click_mix_gain_db"),
    (dict(speed_range=(0.0, 1.2)), "speed_range"),
    (dict(pitch_range=(-1.5, 2)), "pitch_range"),
    (dict(max_tries=0), "max_tries must be an integer >= 1"),
    (dict(context_stems=("bass", "vocals")), "include_vocals is false"),
    (dict(context_stems=("drums",)), "no stem besides the target"),
    (dict(context_stems=("bass", "keys")), "'keys' is not a stem"),
    (dict(sample_rate=0), "sample_rate"),
    (dict(silence_threshold=float("nan")), "silence_threshold"),
])
def test_bad_config_values_name_the_value(overrides, match):
    with pytest.raises(ConfigError, match=match):
        config(**overrides)


def test_config_from_a_mapping(data):
    _, manifest = data
    cfg = SampleConfig.from_dict({"target_stem": "bass", "speed_range": [0.9, 1.1], "context_stems": ["drums", "piano"]})
    assert cfg.speed_range == (0.9, 1.1) and cfg.context_names == ("drums", "piano")
    assert SampleConfig.from_dict(cfg.to_dict()) == cfg
    scaffold = SampleConfig.from_dict({"target_stem": "drums", "click_mix_prob": 0.5, "click_mix_gain_db": [-24, -3]})
    assert scaffold.click_mix_gain_db == (-24, -3) and SampleConfig.from_dict(scaffold.to_dict()) == scaffold
    assert SampleConfig("drums").context_names == tuple(s for s in DEFAULT_CONTEXT_STEMS if s != "drums")
    assert SampleConfig("drums", include_vocals=True).context_names[-1] == "vocals"
    with pytest.raises(ConfigError, match="unknown sample config key 'window'"):
        SampleConfig.from_dict({"target_stem": "bass", "window": 10})
    with pytest.raises(ConfigError, match="needs target_stem"):
        SampleConfig.from_dict({})
    no_beats = dataclasses.replace(load_manifest(manifest), songs=[
        dataclasses.replace(s, beats=np.zeros(0), downbeats=np.zeros(0)) for s in load_manifest(manifest).songs])
    with pytest.raises(ConfigError, match="metronome_prob is 0.5 but no song has beats"):
        StemDataset(no_beats, config())
    assert len(StemDataset(no_beats, config(metronome_prob=0.0))) == 3  # one example per song by default
    with pytest.raises(ConfigError, match="click_mix_prob is 0.5 but no song has beats"):
        StemDataset(no_beats, config(metronome_prob=0.0, click_mix_prob=0.5))
    for bad in (dict(length=0), dict(seed=-1)):
        with pytest.raises(ConfigError):
            StemDataset(manifest, config(), **bad)


def test_fake_stems_are_loud_enough():
    """The fixture signals must pass the 0.01 silence threshold, or the tests above prove nothing."""
    for kind in ("drums", "hats", "bass", "guitar", "keys", "vocals", "other"):
        assert np.abs(fake_stem(kind, 2.0, SR)).max() > 0.05
