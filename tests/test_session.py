"""`stage session`: generate a take, accept it into a new mix version, generate the next stem over
that mix; plus the headroom and option checks the take pipeline relies on."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from helpers import drum_loop

from stage.audio import MAX_SECONDS, load_audio, resample
from stage.cli import main
from stage.errors import StageError
from stage.generate.params import MAX_TAKE_VARIATIONS, GenerationParams
from stage.generate.render import CEILING, mix_with_headroom
from stage.generate.session import LOCK_FILE, Session
from stage.generate.takes import TakeSettings

FAST = ["--model", "tiny", "--cfg", "1"]


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_headroom_scales_down_only_when_needed():
    a = np.array([[0.5, -0.9, 0.2]], np.float32)
    b = np.array([[0.5, -0.6, 0.1]], np.float32)
    mixed, gain = mix_with_headroom(a, b)  # sum peaks at 1.5 (sample 1)
    assert gain == pytest.approx(CEILING / 1.5)
    np.testing.assert_allclose(mixed, (a + b) * CEILING / 1.5, rtol=1e-6)
    assert np.max(np.abs(mixed)) == pytest.approx(CEILING)  # -1 dBFS
    quiet, gain = mix_with_headroom(a * 0.1, b * 0.1)
    assert gain == 1.0
    np.testing.assert_allclose(quiet, (a + b) * 0.1, rtol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(bpm="auto", offset=0.5), "--offset"),
    (dict(bpm=None, offset=0.5), "--offset"),
    (dict(bpm="fast"), "bpm"),
    (dict(bpm=900.0), "bpm"),
    (dict(metronome_only=True, seconds=4.0), "--bpm N"),
    (dict(metronome_only=True, bpm="auto", seconds=4.0), "--bpm N"),
    (dict(metronome_only=True, bpm=120.0), "--seconds"),
    (dict(variations=0), "variations"),
    (dict(seconds=-1.0), "seconds"),
    (dict(stem="vocals"), "unknown stem"),
    (dict(bpm="auto", min_bpm=150.0, max_bpm=100.0), "min bpm"),
])
def test_take_settings_refuse_contradictions(kwargs, message):
    with pytest.raises(StageError, match=message):
        TakeSettings(**{"stem": "drums", **kwargs})


def test_a_session_builds_the_mix_stem_by_stem(tmp_path, capsys, codec_inputs):
    sr = 44_100
    song = tmp_path / "demo.wav"
    sf.write(str(song), drum_loop(120.0, 0.5, sr, 0.05, channels=2).T * 0.9, sr, subtype="PCM_16")
    folder = tmp_path / "mysong"

    rc, out, err = run(capsys, "session", "new", folder, "--mix", song)
    assert rc == 0, err
    assert (folder / "session.json").is_file() and (folder / "mixes" / "mix_000.wav").is_file()
    rc, _, err = run(capsys, "session", "new", folder, "--mix", song)
    assert rc == 2 and "not empty" in err

    # 1. two drum takes over the starting mix
    rc, out, err = run(capsys, "session", "generate", folder, "--stem", "drums", *FAST, "--variations", 2, "--seed", 10)
    assert rc == 0, err
    assert "take001" in out and "take002" in out
    state = json.loads((folder / "session.json").read_text())
    assert [t["id"] for t in state["takes"]] == ["take001", "take002"]
    assert [t["seed"] for t in state["takes"]] == [10, 11]
    assert all(t["over_mix"] == 0 and t["accepted_in"] is None for t in state["takes"])
    for t in state["takes"]:
        for key in ("file", "mix_file", "sidecar"):
            assert (folder / t[key]).is_file()

    # 2. accept take002: mix v1 = headroom(mix v0 + take002), every version kept
    rc, out, err = run(capsys, "session", "accept", folder, "take002")
    assert rc == 0, err
    v0, _ = load_audio(folder / "mixes" / "mix_000.wav")
    take2, _ = load_audio(folder / state["takes"][1]["file"])
    v1, v1_sr = load_audio(folder / "mixes" / "mix_001.wav")
    state = json.loads((folder / "session.json").read_text())
    assert state["current"] == 1 and state["takes"][1]["accepted_in"] == 1
    gain = state["mixes"][1]["mix_gain"]
    assert v1_sr == sr and v1.shape == v0.shape
    np.testing.assert_allclose(v1, gain * (v0 + take2), atol=3e-4)
    assert np.max(np.abs(v1)) <= CEILING + 1e-4
    rc, _, err = run(capsys, "session", "accept", folder, "2")
    assert rc == 2 and "already in the mix" in err
    rc, _, err = run(capsys, "session", "accept", folder, "take009")
    assert rc == 2 and "no take" in err

    # 3. the bass is generated over mix v1: that is what the model hears
    codec_inputs.clear()
    rc, out, err = run(capsys, "session", "generate", folder, "--stem", "bass", *FAST, "--seed", 3)
    assert rc == 0, err
    assert len(codec_inputs) == 1
    expected = resample(v1.mean(axis=0, keepdims=True), sr, 32_000)[0]
    np.testing.assert_allclose(codec_inputs[0][0, 0], expected, atol=1e-5)
    state = json.loads((folder / "session.json").read_text())
    bass = state["takes"][2]
    assert bass["id"] == "take003" and bass["stem"] == "bass" and bass["over_mix"] == 1
    assert json.loads((folder / bass["sidecar"]).read_text())["over_mix"] == "mixes/mix_001.wav"

    # 4. accept it 6 dB down: mix v2 = headroom(v1 + 0.5 * bass)
    rc, out, err = run(capsys, "session", "accept", folder, "take003", "--gain", -6.0206)
    assert rc == 0, err
    bass_audio, _ = load_audio(folder / bass["file"])
    v2, _ = load_audio(folder / "mixes" / "mix_002.wav")
    state = json.loads((folder / "session.json").read_text())
    np.testing.assert_allclose(v2, state["mixes"][2]["mix_gain"] * (v1 + 0.5 * bass_audio), atol=3e-4)
    assert [m["file"] for m in state["mixes"]] == [f"mixes/mix_00{i}.wav" for i in range(3)]
    assert all((folder / m["file"]).is_file() for m in state["mixes"])
    assert not list(folder.rglob("*.part")), "a temporary file was left behind"

    rc, out, err = run(capsys, "session", "show", folder)
    assert rc == 0
    assert "current mix: mixes/mix_002.wav" in out
    for text in ("take001", "take002", "take003", "in mix v1", "in mix v2", "not accepted", "+ take002", "+ take003"):
        assert text in out, text


def test_a_session_from_silence_with_a_metronome(tmp_path, capsys, codec_inputs):
    folder = tmp_path / "sketch"
    rc, _, err = run(capsys, "session", "new", folder, "--seconds", 0.5, "--sample-rate", 48_000, "--channels", 1)
    assert rc == 0, err
    rc, out, err = run(capsys, "session", "generate", folder, "--stem", "drums", *FAST, "--bpm", 100, "--seed", 1)
    assert rc == 0, err
    take = json.loads((folder / "session.json").read_text())["takes"][0]
    assert take["context"] == "metronome" and take["bpm"] == 100.0 and "_100bpm_" in take["file"]
    stem, sr = load_audio(folder / take["file"])
    assert sr == 48_000 and stem.shape == (1, 24_000)
    heard = codec_inputs[0][0, 0]
    assert np.max(np.abs(heard)) > 0.5  # a click, not the silent mix


def test_one_command_at_a_time(tmp_path, capsys):
    folder = tmp_path / "s"
    Session.create(folder, np.zeros((1, 1000), np.float32), 16_000)
    with Session.open(folder).lock():
        rc, _, err = run(capsys, "session", "accept", folder, "take001")
    assert rc == 2 and "another stage command" in err


def tree(folder):
    """Every path under `folder` with its bytes (None for folders), but the empty lock file that
    `Session.lock` leaves behind."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))
            if p.name != LOCK_FILE}


@pytest.mark.parametrize("argv, message", [
    (["generate", "{dir}", *FAST, "--stem", "drums", "--device", "cuda:7"], "cuda"),
    (["generate", "{dir}", *FAST, "--stem", "drums", "--device", "gpu0"], "unknown device"),
    (["generate", "{dir}", *FAST, "--stem", "drums", "--variations", "17"], f"variations must be an integer in 1..{MAX_TAKE_VARIATIONS}, got 17"),
    (["generate", "{dir}", *FAST, "--stem", "drums", "--bpm", "120", "--beats-per-bar", "0"], "beats per bar"),
    (["accept", "{dir}", "take001", "--gain", "nan"], "no take"),
    (["use", "{dir}", "v9"], "no mix version 'v9'"),
    (["new", "{dir}/../other", "--mix", "{dir}/mixes/mix_000.wav", "--sample-rate", "0"], "unsupported sample rate 0 Hz"),
    (["new", "{dir}/../other", "--seconds", "1e9"], f"--seconds must be in (0, {MAX_SECONDS:g}], got 1e+09"),
])
def test_session_mistakes_are_one_line_and_touch_nothing(tmp_path, capsys, argv, message):
    """A user mistake: exit 2, one `error:` line, and the session folder as it was."""
    folder = tmp_path / "s"
    Session.create(folder, np.zeros((1, 1000), np.float32), 16_000)
    before = tree(tmp_path)
    rc, _, err = run(capsys, "session", *[a.format(dir=folder) for a in argv])
    lines = err.strip().splitlines()
    assert rc == 2 and lines[-1].startswith("error:") and message in lines[-1], err
    assert [ln for ln in lines if ln.startswith(("error:", "Traceback"))] == [lines[-1]]
    assert tree(tmp_path) == before


def test_sessions_refuse_foreign_folders(tmp_path, capsys):
    rc, _, err = run(capsys, "session", "show", tmp_path)
    assert rc == 2 and "not a stage session" in err
    (tmp_path / "session.json").write_text("{not json")
    rc, _, err = run(capsys, "session", "show", tmp_path)
    assert rc == 2 and "unreadable session file" in err


def test_takes_are_reproducible_from_their_seed(tmp_path, tiny_model):
    """Re-running a take's seed alone gives the same stem (variation v uses seed + v)."""
    from stage.generate.render import render_takes
    from stage.generate.takes import plan_takes

    mix = drum_loop(120.0, 0.4, 32_000, 0.1)
    params = GenerationParams(guidance=1.0, seed=20)
    both = render_takes(tiny_model, plan_takes(TakeSettings("drums", variations=2, params=params), mix, 32_000, 32_000))
    again = render_takes(tiny_model, plan_takes(TakeSettings("drums", params=GenerationParams(guidance=1.0, seed=21)),
                                                mix, 32_000, 32_000))
    assert [t.seed for t in both.takes] == [20, 21] and again.takes[0].seed == 21
    assert both.codes.shape[0] == 2 and not (both.codes[0] == both.codes[1]).all()
    assert (again.codes[0] == both.codes[1]).float().mean() > 0.99  # batch numerics may flip a rare token
    np.testing.assert_allclose(again.takes[0].stem, both.takes[1].stem, atol=1e-4)


def test_python_api_example(tmp_path):
    """The README's Python example, with the tiny model and half a second of audio."""
    import stage

    sf.write(str(tmp_path / "song.wav"), drum_loop(120.0, 0.5, 44_100, 0.1, channels=2).T, 44_100)
    model = stage.load_model("tiny")
    mix, sr = sf.read(str(tmp_path / "song.wav"), dtype="float32", always_2d=True)
    options = stage.GenerationOptions(prompt="Genres: Rock. Moods: energetic.", variations=2, guidance=1.0, seed=7)
    result = stage.generate_stems(model, mix.T, sr, options)
    assert result.stems.shape == (2, 2, mix.shape[0]) and result.seeds == [7, 8]
    sf.write(str(tmp_path / "drums.wav"), result.stems[0].T, sr)
    click = stage.render_metronome(bpm=120, beats_per_bar=4, seconds=0.5)
    assert click.shape == (16_000,)
    result = stage.generate_stems(model, click, 32_000, stage.GenerationOptions(prompt="Genres: Funk.", guidance=1.0, seed=1))
    assert result.stems.shape == (1, 1, 16_000)
    result = stage.generate_stems(model, mix.T, sr, stage.GenerationOptions(bpm=120, guidance=1.0, seed=1))
    assert result.stems.shape == (1, 2, mix.shape[0])
    from stage.data.beats import track_beats

    assert stage.track_beats is track_beats  # re-exported (exercised by tests/test_beats.py)


def test_reject_and_go_back_to_an_earlier_mix(tmp_path, capsys):
    """`reject` sets a take aside; `use` makes an earlier mix version current, and the next
    accepted take branches from it (its version records that parent)."""
    sr = 16_000
    song = tmp_path / "demo.wav"
    sf.write(str(song), drum_loop(120.0, 0.3, sr, 0.05).T * 0.5, sr, subtype="PCM_16")
    folder = tmp_path / "s"
    assert run(capsys, "session", "new", folder, "--mix", song)[0] == 0
    rc, _, err = run(capsys, "session", "generate", folder, "--stem", "drums", *FAST, "--variations", 2, "--seed", 4)
    assert rc == 0, err
    assert run(capsys, "session", "accept", folder, "take001")[0] == 0
    rc, _, err = run(capsys, "session", "reject", folder, "take001")
    assert rc == 2 and "in the current mix" in err

    rc, out, err = run(capsys, "session", "use", folder, "v0")
    assert rc == 0 and "mix_000.wav" in out, err
    assert run(capsys, "session", "reject", folder, "take001")[0] == 0  # not in mix v0
    rc, _, err = run(capsys, "session", "accept", folder, "take001")
    assert rc == 2 and "was rejected" in err
    assert run(capsys, "session", "accept", folder, "take002")[0] == 0
    session = Session.open(folder)
    v2 = session.state.mixes[2]
    assert (v2.take, v2.parent, session.state.current) == ("take002", 0, 2)
    assert [t.id for t in session.accepted_takes()] == ["take002"]
    v0, _ = load_audio(folder / "mixes" / "mix_000.wav")
    take2, _ = load_audio(folder / session.find_take("take002").file)
    mixed, _ = load_audio(folder / v2.file)
    np.testing.assert_allclose(mixed, v2.mix_gain * (v0 + take2), atol=3e-4)
    rc, out, _ = run(capsys, "session", "show", folder)
    assert "+ take002 (+0.0 dB) over v0" in out and "rejected" in out
    rc, _, err = run(capsys, "session", "use", folder, "v9")
    assert rc == 2 and "no mix version" in err


def test_version_1_session_files_still_open(tmp_path):
    folder = tmp_path / "old"
    Session.create(folder, np.zeros((1, 100), np.float32), 8_000)
    state = json.loads((folder / "session.json").read_text())
    state["version"] = 1
    for m in state["mixes"]:
        del m["parent"]
    (folder / "session.json").write_text(json.dumps(state))
    session = Session.open(folder)
    assert session.state.mixes[0].base is None and session.accepted_takes() == []


def test_a_cancelled_take_leaves_the_session_as_it_was(tmp_path, tiny_model):
    """`add_takes(cancel=...)` with the real tiny model: a cancel that arrives at the last
    decoding step (the generation is done, nothing written yet) still stops the takes, the
    folder stays byte for byte as it was, and the next call numbers its takes as if nothing
    had happened."""
    import threading

    from stage.errors import Cancelled

    sr = 16_000
    folder = tmp_path / "s"
    session = Session.create(folder, drum_loop(120.0, 0.3, sr, 0.05) * 0.5, sr)
    before = {p.name: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    cancel = threading.Event()
    steps = []

    def progress(done, total):
        steps.append(done)
        if done == total:
            cancel.set()

    settings = TakeSettings(stem="drums", variations=2, params=GenerationParams(guidance=1.0, seed=5))
    with pytest.raises(Cancelled, match="take cancelled; nothing was written"):
        session.add_takes(tiny_model, settings, progress, cancel=cancel)
    assert steps and steps[-1] > 1  # the model really ran to its end
    assert {p.name: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    assert Session.open(folder).state.takes == [] and not any((folder / "takes").iterdir())

    with pytest.raises(Cancelled):  # already set: refused before the model starts
        session.add_takes(tiny_model, settings, lambda done, total: steps.append(-1), cancel=cancel)
    assert steps[-1] != -1
    added = session.add_takes(tiny_model, settings, cancel=threading.Event())
    assert [t.id for t in added.takes] == ["take001", "take002"]
