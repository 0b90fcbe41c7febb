"""Song-level tokenisation (`stage tokenize --per-song`): aligned windows cut from whole-song codes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import make_fake_folder_dataset
from stage.cli import main
from stage.data.manifest import load_manifest, prepare_manifest
from stage.data.metronome import render_clicks
from stage.train.song_tokens import CLICK_GAIN_STREAM, encode, load_stem
from stage.train.tokens import TokenDataset

WINDOW = 1.0  # seconds


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = make_fake_folder_dataset(tmp_path_factory.mktemp("songs"), songs=2, seconds=4.0, sample_rate=32_000,
                                    files={"drums": "drums", "bass": "bass", "keyboard": "keys"})
    out = tmp_path_factory.mktemp("manifest")
    prepare_manifest(root, "folder", out, beats="none", valid_songs=0, progress=False)
    # The click track needs beats: give each song the grid it was made on (120 / 130 BPM).
    path = out / "manifest.jsonl"
    lines = path.read_text().splitlines()
    records = [json.loads(line) for line in lines[1:]]
    for i, record in enumerate(records):
        beats = np.arange(0.25, 4.0, 60 / (120 + 10 * i))
        record["beats"], record["downbeats"] = beats.tolist(), beats[::4].tolist()
    path.write_text("\n".join([lines[0], *map(json.dumps, records)]) + "\n")
    return load_manifest(out)


def tokenize(manifest, out, *extra):
    return main(["tokenize", str(manifest.path), "--model", "tiny", "--stem", "drums", "--per-song", "6",
                 "--out", str(out), "--quiet", "--sample", f"window_seconds={WINDOW}", *extra])


def offset_of(window: np.ndarray, codes: np.ndarray) -> list[int]:
    """Every frame offset where `window` [K, W] appears in `codes` [K, T]."""
    W = window.shape[1]
    return [s for s in range(codes.shape[1] - W + 1) if np.array_equal(codes[:, s:s + W], window)]


def test_examples_are_aligned_windows_of_whole_song_codes(manifest, tiny_model, tmp_path, capsys):
    assert tokenize(manifest, tmp_path / "tokens", "metronome_prob=0.5") == 0
    assert "wrote 12 examples" in capsys.readouterr().out
    tokens = TokenDataset(tmp_path / "tokens")
    codec = tiny_model.codec
    sr = codec.sample_rate
    whole = {}
    for song in manifest.select("train"):
        n = int(round(song.seconds * sr))
        target = load_stem(manifest, song, "drums", sr, n)
        mix = sum(load_stem(manifest, song, s, sr, n) for s in song.stems if s != "drums")
        clicks = render_clicks(song.beats, song.downbeats, song.seconds, sr)[:n]
        enc = lambda x: codec.encode(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None])[0].numpy()  # noqa: E731
        whole[song.id] = {"target": enc(target), "mix": enc(mix), "metronome": enc(clicks)}
    captions = {song.id: song.caption for song in manifest.songs}
    kinds = set()
    for i in range(len(tokens)):
        ex = tokens[i]
        assert ex.target.shape == ex.context.shape == (4, int(WINDOW * codec.frame_rate))
        codes = whole[ex.song]
        starts = offset_of(ex.target, codes["target"])
        assert starts, f"example {i} is not a window of its song's target codes"
        # The context starts at the same frame as the target (one of the matching offsets).
        assert any(np.array_equal(codes[ex.context_kind][:, s:s + ex.context.shape[1]], ex.context) for s in starts)
        kinds.add(ex.context_kind)
        assert ex.caption == captions[ex.song]
    assert kinds == {"mix", "metronome"}


def test_the_same_seed_gives_the_same_examples_and_another_seed_others(manifest, tmp_path):
    assert tokenize(manifest, tmp_path / "a", "metronome_prob=0") == 0
    assert tokenize(manifest, tmp_path / "b", "metronome_prob=0") == 0
    assert tokenize(manifest, tmp_path / "c", "metronome_prob=0", "--seed", "3") == 0
    a, b, c = (TokenDataset(tmp_path / x) for x in "abc")
    assert all(np.array_equal(a[i].target, b[i].target) for i in range(len(a)))
    assert any(not np.array_equal(a[i].target, c[i].target) for i in range(len(a)))
    assert {a[i].context_kind for i in range(len(a))} == {"mix"}


def test_click_mix_windows_are_the_mix_plus_the_click_and_leave_other_windows_alone(manifest, tiny_model, tmp_path):
    """click_mix_prob (gain from --sample as a YAML list): a "mix+click" context is a window of the
    song's mix plus its click at the song's drawn gain; every other example is the one the same seed
    gives without click_mix_prob (the kind draw is the same single uniform)."""
    assert tokenize(manifest, tmp_path / "plain", "metronome_prob=0.3") == 0
    assert tokenize(manifest, tmp_path / "scaffold", "metronome_prob=0.3", "click_mix_prob=0.5",
                    "click_mix_gain_db=[-12,-3]") == 0
    plain, scaffold = TokenDataset(tmp_path / "plain"), TokenDataset(tmp_path / "scaffold")
    assert len(plain) == len(scaffold)
    codec, sr = tiny_model.codec, tiny_model.codec.sample_rate
    kinds = []
    for i in range(len(plain)):
        a, b = plain[i], scaffold[i]
        kinds.append(b.context_kind)
        assert np.array_equal(a.target, b.target) and a.song == b.song
        if b.context_kind != "mix+click":
            assert a.context_kind == b.context_kind and np.array_equal(a.context, b.context)
            continue
        assert a.context_kind == "mix"
        index = [s.id for s in manifest.select("train")].index(b.song)
        song = manifest.select("train")[index]
        n = int(round(song.seconds * sr))
        gain_db = np.random.default_rng([0, index, CLICK_GAIN_STREAM]).uniform(-12, -3)
        mix = sum(load_stem(manifest, song, s, sr, n) for s in song.stems if s != "drums")
        clicks = render_clicks(song.beats, song.downbeats, song.seconds, sr)[:n]
        codes = encode(codec, mix + np.float32(10 ** (gain_db / 20)) * clicks)
        starts = offset_of(b.target, encode(codec, load_stem(manifest, song, "drums", sr, n)))
        assert any(np.array_equal(codes[:, s:s + b.context.shape[1]], b.context) for s in starts)
        assert not np.array_equal(a.context, b.context)
    assert "mix+click" in kinds and len(set(kinds)) > 1  # (12 examples: seed 0 draws no plain mix)


@pytest.mark.parametrize("extra, message", [
    ([], "give one of --examples N or --per-song N"),
    (["--per-song", "0"], "--per-song must be >= 1"),
])
def test_bad_counts_are_one_line_errors(manifest, tmp_path, capsys, extra, message):
    argv = ["tokenize", str(manifest.path), "--model", "tiny", "--stem", "drums", "--out", str(tmp_path / "t"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "t").exists()
