"""Bass coherence metrics: chord-tone share (pyin) and eighth-grid alignment, and `stage eval --metrics chords`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from stage.cli import main
from stage.eval.harmony import ChordSpan, _span, chord_tone_share, eighth_grid, grid_alignment

SR = 32_000
C_MAJOR = {"start": 0.0, "end": 2.0, "label": "C:maj", "root": 0, "pitch_classes": [0, 4, 7]}
A_MINOR = {"start": 2.0, "end": 4.0, "label": "A:min", "root": 9, "pitch_classes": [9, 0, 4]}


def bass_line(midis, note_seconds=0.5):
    """Plucked-ish sawtooth-free bass: a decaying sine with two harmonics per note."""
    out = []
    t = np.arange(int(note_seconds * SR)) / SR
    for m in midis:
        f = 440.0 * 2 ** ((m - 69) / 12)
        env = np.exp(-t * 3)
        out.append(env * (0.5 * np.sin(2 * np.pi * f * t) + 0.2 * np.sin(4 * np.pi * f * t)))
    return np.concatenate(out).astype(np.float32)


def test_chord_tones_score_high_and_wrong_notes_low():
    on = bass_line([36, 40, 43, 36, 45, 48, 52, 45])  # C E G C | A C E A: chord tones of C, then Am
    off = bass_line([37, 39, 42, 37, 46, 47, 51, 46])  # a semitone away from every chord tone
    good = chord_tone_share(on, SR, [C_MAJOR, A_MINOR])
    bad = chord_tone_share(off, SR, [C_MAJOR, A_MINOR])
    assert good.voiced_frames > 100
    assert good.chord_tone_share > 0.9
    assert bad.chord_tone_share < 0.1
    # The offset moves the stem in song time: the same line judged against the other chord order.
    shifted = chord_tone_share(on, SR, [A_MINOR | {"start": 0.0, "end": 2.0}, C_MAJOR | {"start": 2.0, "end": 4.0}])
    assert shifted.chord_tone_share < good.chord_tone_share


def test_silence_has_no_voiced_frames():
    h = chord_tone_share(np.zeros(SR, np.float32), SR, [C_MAJOR])
    assert h.voiced_frames == 0 and np.isnan(h.chord_tone_share)


def test_grid_alignment():
    beats = np.arange(0, 4, 0.5)  # 120 BPM
    assert np.allclose(eighth_grid(beats)[:4], [0, 0.25, 0.5, 0.75])
    assert grid_alignment(np.arange(0.25, 3.5, 0.25) + 0.01, beats) == 1.0
    assert grid_alignment(np.arange(0.125, 3.5, 0.25), beats) == 0.0  # sixteenth offbeats
    assert np.isnan(grid_alignment([], beats))


def test_madmom_chord_labels():
    assert _span(0.0, 1.0, "A:min") == ChordSpan(0.0, 1.0, (0, 4, 9))
    assert _span(0.0, 1.0, "F#:maj") == ChordSpan(0.0, 1.0, (1, 6, 10))
    assert _span(0.0, 1.0, "Bb:maj") == ChordSpan(0.0, 1.0, (2, 5, 10))
    assert _span(0.0, 1.0, "N") is None


def test_stage_eval_chords_from_a_band_meta(tmp_path, capsys):
    gen = tmp_path / "gen"
    gen.mkdir()
    sf.write(gen / "song_bass_s0.wav", bass_line([36, 40, 43, 36, 45, 48, 52, 45]), SR)
    meta = {"beats": list(np.arange(0, 4, 0.5)), "downbeats": [0.0, 2.0], "chords": [C_MAJOR, A_MINOR]}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    out = tmp_path / "report.json"
    assert main(["eval", "--generated", str(gen), "--beats", str(tmp_path / "meta.json"), "--metrics", "chords",
                 "--out", str(out), "--no-cache"]) == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert report["summary"]["eval/chord_tone_share"] > 0.9
    assert report["files"][0]["chords"]["source"] == "file"


def test_stage_eval_chords_without_a_chord_source_is_skipped_with_a_note(tmp_path, capsys):
    gen = tmp_path / "gen"
    gen.mkdir()
    sf.write(gen / "take.wav", bass_line([36, 40]), SR)
    (tmp_path / "beats.json").write_text(json.dumps({"beats": [0.0, 0.5, 1.0]}))
    out = tmp_path / "report.json"
    assert main(["eval", "--generated", str(gen), "--beats", str(tmp_path / "beats.json"), "--metrics", "chords",
                 "--out", str(out), "--no-cache"]) == 0
    report = json.loads(out.read_text())
    assert any("chords" in s for s in report["skipped"])
    assert "eval/chord_tone_share" not in report["summary"]
