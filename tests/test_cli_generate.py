"""`stage generate` and `stage metronome` end to end, through `stage.cli.main`, with the tiny model.

Fixtures are made here: short synthetic mixes (tests/helpers.py `drum_loop`) and hand-crafted
broken files. What the model hears is read off the real codec call (a recording wrapper around
`Codec.encode`; the encode still runs), not re-derived from the code under test.
"""

from __future__ import annotations

import json
import os
import shlex
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import drum_loop

from stage.audio import load_audio, resample
from stage.cli import main
from stage.generate.params import MAX_TAKE_VARIATIONS
from stage.generate.render import CEILING

FAST = ["--model", "tiny", "--cfg", "1"]  # no CFG: half the compute; CFG itself is covered by the generator tests


def write_wav(path: Path, audio: np.ndarray, sr: int) -> Path:
    sf.write(str(path), audio.T, sr, subtype="PCM_16")
    return path


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def take_files(folder: Path, name: str) -> tuple[Path, Path, Path]:
    return folder / f"{name}.wav", folder / f"{name}_mix.wav", folder / f"{name}.json"


def loud_mix(seconds: float, sr: int, channels: int) -> np.ndarray:
    """A drum loop at nearly full scale, so that adding a stem must be scaled down to avoid clipping."""
    x = drum_loop(120.0, seconds, sr, 0.05, channels=channels)
    return (0.98 * x / np.max(np.abs(x))).astype(np.float32)


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize("sr, channels, ext", [(44_100, 2, "wav"), (48_000, 1, "flac"), (22_050, 2, "ogg")])
def test_output_keeps_rate_channels_and_length(tmp_path, capsys, codec_inputs, sr, channels, ext):
    """Without --bpm the mix is the context; the take (always WAV) has the mix's rate, channels
    and length, whatever the input format."""
    mix = loud_mix(0.5, sr, channels)
    mix_path = tmp_path / f"song.{ext}"
    sf.write(str(mix_path), mix.T, sr, **({"subtype": "PCM_16"} if ext != "ogg" else {}))
    out = tmp_path / "out"
    rc, stdout, err = run(capsys, "generate", mix_path, "--stem", "drums", *FAST, "--seed", 11, "--prompt", "dry funk drums",
                          "--out", out)
    assert rc == 0, err
    stem_path, mix_out, side = take_files(out, "song_drums_s11")
    assert files(out) == sorted(p.name for p in (stem_path, mix_out, side))
    assert "wrote 1 take" in stdout and "real-time factor" in stdout
    stem, stem_sr = load_audio(stem_path)
    preview, preview_sr = load_audio(mix_out)
    source, _ = load_audio(mix_path)
    assert stem_sr == preview_sr == sr
    assert stem.shape == preview.shape == source.shape == (channels, mix.shape[1])
    if channels > 1:
        np.testing.assert_array_equal(stem[0], stem[1])  # the model is mono: the same stem on every channel
    meta = json.loads(side.read_text())
    assert meta["seed"] == 11 and meta["stem"] == "drums" and meta["prompt"] == "dry funk drums"
    assert meta["model"]["source"] == "tiny" and meta["context"]["mode"] == "mix" and meta["bpm"] is None
    assert meta["output"]["sample_rate"] == sr and meta["output"]["channels"] == channels
    assert meta["input"] == {"path": str(mix_path), "sample_rate": sr, "channels": channels, "seconds": 0.5}
    assert shlex.split(meta["reproduce"]) == ["stage", "generate", str(mix_path), "--stem", "drums", "--model", "tiny",
                                              "--seed", "11", "--prompt", "dry funk drums", "--cfg", "1"]
    # What the model heard: the mix itself, down-mixed to mono at 32 kHz.
    assert len(codec_inputs) == 1
    expected = resample(source.mean(axis=0, keepdims=True), sr, 32_000)[0]
    np.testing.assert_allclose(codec_inputs[0][0, 0], expected, atol=1e-5)
    # The preview is input + stem, scaled down so the peak stays at -1 dBFS: nothing clips.
    gain = meta["output"]["mix_gain"]
    assert gain < 1.0  # the input alone peaks at 0.98, above the ceiling
    assert np.max(np.abs(preview)) <= CEILING + 1e-4
    np.testing.assert_allclose(preview, gain * (source + stem), atol=3e-4)


@pytest.fixture
def decoded_codes(monkeypatch):
    """Every code tensor the model's codec decodes during the test: int64 [B, K, T]."""
    from stage.tokens.codec import Codec

    seen = []
    original = Codec.decode

    def record(self, codes, *args, **kwargs):
        seen.append(codes.detach().cpu().clone())
        return original(self, codes, *args, **kwargs)

    monkeypatch.setattr(Codec, "decode", record)
    return seen


def test_variations_are_distinct_takes_with_distinct_seeds(tmp_path, capsys, decoded_codes):
    sr = 32_000
    mix_path = write_wav(tmp_path / "loop.wav", drum_loop(120.0, 0.4, sr, 0.1), sr)
    out = tmp_path / "out"
    rc, _, err = run(capsys, "generate", mix_path, "--stem", "bass", *FAST, "--variations", 3, "--seed", 40, "--out", out)
    assert rc == 0, err
    metas = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    assert sorted(m["seed"] for m in metas) == [40, 41, 42]
    assert sorted(m["output"]["stem"] for m in metas) == [f"loop_bass_s{s}.wav" for s in (40, 41, 42)]
    assert all((out / m["output"]["mix"]).is_file() for m in metas)
    codes = torch.cat(decoded_codes)  # [3, K, T]: what the model generated for the three takes
    assert codes.shape[0] == 3
    for i in range(3):
        for j in range(i + 1, 3):
            assert (codes[i] != codes[j]).float().mean() > 0.5, "two variations generated the same codes"
    # The sidecar's command line makes the second take again, on its own.
    command = shlex.split(metas[1]["reproduce"])
    assert command[:2] == ["stage", "generate"] and "--seed" in command and "41" in command
    decoded_codes.clear()
    rc, _, err = run(capsys, *command[1:], "--out", tmp_path / "again")
    assert rc == 0, err
    again = torch.cat(decoded_codes)
    assert again.shape == codes[1:2].shape
    assert (again[0] == codes[1]).float().mean() > 0.99  # batched vs single-row numerics may flip a rare token


# --------------------------------------------------------------------------- tempo


@pytest.mark.parametrize("click_rate, extra", [(44_100, []), (32_000, ["--offset", "0.25", "--beats-per-bar", "3"])])
def test_bpm_context_is_the_metronome_command_output(tmp_path, capsys, codec_inputs, click_rate, extra):
    """`--bpm 120`: the model hears exactly `stage metronome --bpm 120` (resampled to 32 kHz)
    instead of the mix."""
    sr, seconds = 48_000, 0.8
    mix_path = write_wav(tmp_path / "song.wav", drum_loop(97.0, seconds, sr, 0.2, channels=2), sr)
    click_path = tmp_path / "click.wav"
    rc, _, err = run(capsys, "metronome", "--bpm", 120, "--seconds", seconds, "--sample-rate", click_rate, *extra,
                     "--out", click_path)
    assert rc == 0, err
    rc, _, err = run(capsys, "generate", mix_path, "--stem", "drums", *FAST, "--bpm", 120, *extra, "--seed", 3,
                     "--out", tmp_path / "out")
    assert rc == 0, err
    assert len(codec_inputs) == 1, "in --bpm mode only the click is encoded, never the mix"
    heard = codec_inputs[0][0, 0]
    click, rate = load_audio(click_path)
    expected = resample(click, rate, 32_000)[0]
    assert heard.shape == expected.shape
    tolerance = 2 / 32768 if click_rate == 32_000 else 0.05  # 16-bit file; resampling ripple
    assert np.max(np.abs(heard - expected)) < tolerance
    assert np.corrcoef(heard, expected)[0, 1] > 0.999
    # ...and not some other click: one at another tempo is far from it.
    from stage.data.metronome import render_metronome

    other = render_metronome(126.0, 4, seconds, 0.0, 32_000)
    assert np.max(np.abs(heard - other)) > 0.5
    meta = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
    assert meta["context"]["mode"] == "metronome" and meta["bpm"] == 120.0
    assert "_120bpm_" in meta["output"]["stem"]


@pytest.mark.parametrize("bpm", [120.0])
def test_bpm_auto_follows_the_loop(tmp_path, capsys, codec_inputs, bpm):
    """`--bpm auto` on a drum loop of known tempo: the BPM within 1 %, and the clicks the model
    hears within 20 ms of the loop's beats."""
    sr, offset, seconds = 44_100, 0.3, 1.5
    mix_path = write_wav(tmp_path / "loop.wav", drum_loop(bpm, 8.0, sr, offset, channels=2), sr)
    out = tmp_path / "out"
    rc, _, err = run(capsys, "generate", mix_path, "--stem", "drums", *FAST, "--bpm", "auto", "--seconds", seconds,
                     "--seed", 5, "--out", out)
    assert rc == 0, err
    meta = json.loads(next(out.glob("*.json")).read_text())
    assert meta["context"]["mode"] == "beats"
    assert abs(meta["bpm"] - bpm) / bpm < 0.01
    assert f"_{bpm:g}bpm_" in meta["output"]["stem"]
    stem, stem_sr = load_audio(out / meta["output"]["stem"])
    assert stem_sr == sr and stem.shape == (2, int(seconds * sr))
    assert len(codec_inputs) == 1
    heard = codec_inputs[0][0, 0]  # the click track, 32 kHz
    active = np.abs(heard) > 1e-3
    starts = np.flatnonzero(active & ~np.concatenate([[False], active[:-1]]))
    onsets = []
    for i in starts:  # one onset per click (a click is 0.1 s; beats are 0.5 s apart)
        if not onsets or i - onsets[-1] > 0.2 * 32_000:
            onsets.append(i)
    onsets = np.array(onsets) / 32_000
    truth = offset + np.arange(0, 8) * 60 / bpm
    truth = truth[truth < seconds]
    assert len(onsets) == len(truth)
    assert np.max(np.abs(onsets - truth)) < 0.02


def test_metronome_only(tmp_path, capsys, codec_inputs):
    out = tmp_path / "out"
    rc, stdout, err = run(capsys, "generate", "--metronome-only", "--bpm", 100, "--seconds", 0.5, "--sample-rate", 22_050,
                          "--stem", "drums", *FAST, "--seed", 9, "--out", out)
    assert rc == 0, err
    stem_path, mix_path, side = take_files(out, "metronome_drums_100bpm_s9")
    stem, sr = load_audio(stem_path)
    assert sr == 22_050 and stem.shape == (1, round(0.5 * 22_050))
    preview, _ = load_audio(mix_path)
    assert np.max(np.abs(preview - stem)) > 0.1  # the preview carries the click
    assert json.loads(side.read_text())["context"]["mode"] == "metronome"
    assert len(codec_inputs) == 1


def test_metronome_command(tmp_path, capsys):
    out = tmp_path / "click.wav"
    rc, stdout, _ = run(capsys, "metronome", "--bpm", 90, "--seconds", 2, "--beats-per-bar", 3, "--out", out)
    assert rc == 0 and "wrote" in stdout
    click, sr = load_audio(out)
    assert sr == 44_100 and click.shape == (1, 88_200)
    # Beats every 2/3 s; the downbeat (beat 0: beat + downbeat summed, then clipped) carries more
    # energy than beat 1, and nothing sounds between the clicks.
    def energy(start):
        return float(np.sqrt(np.mean(click[0, start:start + 4410] ** 2)))

    assert energy(0) > 1.2 * energy(29_400) > 0
    assert np.max(np.abs(click[0, 8000:29_000])) < 1e-3
    rc, _, err = run(capsys, "metronome", "--bpm", 90, "--seconds", 2, "--out", out)
    assert rc == 2 and "already exists" in err
    rc, _, err = run(capsys, "metronome", "--bpm", 1000, "--seconds", 2, "--out", tmp_path / "fast.wav")
    assert rc == 2 and "bpm" in err and not (tmp_path / "fast.wav").exists()


@pytest.mark.parametrize("extra, message", [
    (["--seconds", "1e9"], "at most 3600 s"),  # refused before the beat times are allocated (it ran out of memory)
    (["--seconds", "nan"], "click track length must be > 0 s, got nan"),
    (["--seconds", "0"], "click track length must be > 0 s"),
    (["--sample-rate", "0"], "unsupported sample rate 0 Hz"),
    (["--beats-per-bar", "0"], "beats per bar"),
    (["--out", "{tmp}/click.mp3"], "written as .wav or .flac"),
    (["--out", "{tmp}/exists.wav"], "already exists"),
    (["--offset", "1e12"], "--offset 1e+12 puts the first beat after the end (2 s)"),  # it wrote a silent file
])
def test_metronome_mistakes_are_one_line_and_write_nothing(tmp_path, capsys, extra, message):
    (tmp_path / "exists.wav").write_bytes(b"mine")
    args = ["metronome", "--bpm", 120, "--seconds", 2, "--out", tmp_path / "click.wav"]
    rc, stdout, err = run(capsys, *args, *[str(a).format(tmp=tmp_path) for a in extra])
    lines = err.strip().splitlines()
    assert rc == 2 and lines == [lines[-1]] and lines[-1].startswith("error:") and message in lines[-1], err
    assert files(tmp_path) == ["exists.wav"] and (tmp_path / "exists.wav").read_bytes() == b"mine"


# --------------------------------------------------------------------------- files on disk


def test_existing_files_are_not_overwritten_without_force(tmp_path, capsys):
    sr = 32_000
    mix_path = write_wav(tmp_path / "song.wav", drum_loop(120.0, 0.4, sr, 0.1), sr)
    out = tmp_path / "out"
    args = ["generate", mix_path, "--stem", "drums", *FAST, "--seed", 2, "--out", out]
    assert run(capsys, *args)[0] == 0
    stem_path = out / "song_drums_s2.wav"
    stem_path.write_bytes(b"my edited take")
    rc, _, err = run(capsys, *args)
    assert rc == 2 and "already exists" in err and "--force" in err
    assert stem_path.read_bytes() == b"my edited take"
    rc, _, err = run(capsys, *args, "--force")
    assert rc == 0, err
    assert load_audio(stem_path)[1] == sr


def test_registry_lookup_order(tmp_path, monkeypatch):
    from stage.model.registry import resolve_known

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STAGE_MODELS", str(tmp_path / "mine"))
    assert resolve_known("tiny") is None and resolve_known("some/path") is None
    assert resolve_known("musicgen-small").source == "facebook/musicgen-small"  # no local copy: the hub
    (tmp_path / "checkpoints" / "musicgen-small").mkdir(parents=True)
    assert resolve_known("musicgen-small").source == str(Path("checkpoints") / "musicgen-small")
    (tmp_path / "checkpoints" / "stage-drums.safetensors").write_bytes(b"x")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "stage-drums.safetensors").write_bytes(b"x")
    found = resolve_known("stage-drums")  # $STAGE_MODELS comes first
    assert found.source == str(tmp_path / "mine" / "stage-drums.safetensors") and found.stem == "drums"
    (tmp_path / "stage-drums").mkdir()  # an existing path of that name wins over the registry
    assert resolve_known("stage-drums") is None


def test_known_model_names_resolve_through_the_registry(tmp_path, capsys, monkeypatch):
    """`--stem drums` alone uses the released drums model; a local copy in $STAGE_MODELS is
    found; a missing one gets instructions; a drums model refuses to be called bass."""
    import stage
    from stage.model import registry

    models = tmp_path / "models"
    stage.load_model("tiny", stem="drums").save(models / "stage-drums")
    monkeypatch.setenv("STAGE_MODELS", str(models))
    monkeypatch.setattr(registry, "ASSETS", tmp_path / "no-assets")  # no bundled stage-mini-bass either
    monkeypatch.chdir(tmp_path)
    sr = 32_000
    mix_path = write_wav(tmp_path / "song.wav", drum_loop(120.0, 0.4, sr, 0.1), sr)
    rc, _, err = run(capsys, "generate", mix_path, "--stem", "drums", "--cfg", 1, "--seed", 4, "--out", "a")
    assert rc == 0, err
    meta = json.loads((tmp_path / "a" / "song_drums_s4.json").read_text())
    assert meta["model"]["source"] == "stage-drums" and meta["model"]["stem"] == "drums"
    rc, _, err = run(capsys, "generate", mix_path, "--stem", "bass", "--model", "stage-drums", "--out", "b")
    assert rc == 2 and "generates drums, not bass" in err and not (tmp_path / "b").exists()
    rc, _, err = run(capsys, "generate", mix_path, "--stem", "bass", "--out", "c")  # stage-bass is not installed
    assert rc == 2 and not (tmp_path / "c").exists()
    assert [ln for ln in err.splitlines() if ln.startswith("error:")] == [err.strip().splitlines()[-1]]
    assert "stage-bass.safetensors" in err and "github.com/giorgioskij/stage" in err and str(models) in err


# --------------------------------------------------------------------------- bad input


def wav_header(rate: int, channels: int = 1, bits: int = 16, frames: int = 0) -> bytes:
    """A canonical 44-byte PCM WAV header (fields written by hand, so they can be absurd)."""
    block = channels * bits // 8
    data = frames * block
    return (b"RIFF" + struct.pack("<I", 36 + data) + b"WAVE" + b"fmt " +
            struct.pack("<IHHIIHH", 16, 1, channels, rate, (rate * block) % 2**32, block, bits) + b"data" + struct.pack("<I", data))


def unwritable_dir(tmp_path: Path) -> Path | None:
    """An existing folder that cannot be written to, even as root, if the machine has one."""
    if os.geteuid() != 0:
        d = tmp_path / "locked"
        d.mkdir()
        d.chmod(0o500)
        return d
    for candidate in ("/sys", "/proc"):
        try:
            fd, probe = tempfile.mkstemp(dir=candidate)
        except OSError:
            return Path(candidate)
        os.close(fd)
        os.unlink(probe)
    return None


def put(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def good_mix(d: Path) -> Path:
    return write_wav(d / "ok.wav", drum_loop(120, 0.5, 32_000), 32_000)


# case -> (make the MIX file in a folder, extra options, what the message must say)
BAD_INPUTS = {
    "missing file": (lambda d: d / "nope.wav", [], "no such file"),
    "not audio": (lambda d: put(d / "notes.wav", b"these are my lyrics\n" * 50), [], "not a readable audio"),
    "empty file": (lambda d: put(d / "empty.wav", b""), [], "empty"),
    "header only": (lambda d: put(d / "h.wav", wav_header(44_100)), [], "no audio"),
    "truncated header": (lambda d: put(d / "t.wav", wav_header(44_100, frames=1000)[:30]), [], "audio"),
    "0 Hz": (lambda d: put(d / "z.wav", wav_header(0, frames=100) + bytes(200)), [], "sample rate 0 Hz"),
    "absurd rate": (lambda d: put(d / "a.wav", wav_header(4_000_000_000, frames=100) + bytes(200)), [], "unsupported sample rate"),
    "0 channels": (lambda d: put(d / "c.wav", wav_header(44_100, channels=0, frames=100) + bytes(200)), [], "audio"),
    "silent mix, bpm auto": (lambda d: write_wav(d / "silence.wav", np.zeros((2, 44_100), np.float32), 44_100),
                             ["--bpm", "auto"], "no beats found"),
    "unknown stem": (good_mix, ["--stem", "kazoo"], "unknown stem"),
    "missing model": (good_mix, ["--model", "/nonexistent/stage-model"], "no such file"),
    "bad bpm": (good_mix, ["--bpm", "fast"], "--bpm"),
    "offset without bpm": (good_mix, ["--offset", "0.5"], "--offset"),
    "runaway length": (good_mix, ["--seconds", "1e9"], "at most 3600"),
    "offset past the end": (good_mix, ["--bpm", "120", "--offset", "5"], "--offset 5 puts the first beat after the end"),
    "bad output rate": (good_mix, ["--sample-rate", "0"], "unsupported sample rate 0 Hz"),
    "0 variations": (good_mix, ["--variations", "0"], f"variations must be an integer in 1..{MAX_TAKE_VARIATIONS}, got 0"),
    "too many variations": (good_mix, ["--variations", str(MAX_TAKE_VARIATIONS + 1)], f"in 1..{MAX_TAKE_VARIATIONS}"),
    "0 beats per bar": (good_mix, ["--bpm", "120", "--beats-per-bar", "0"], "beats per bar"),
    "0 beats per bar, bpm auto": (good_mix, ["--bpm", "auto", "--beats-per-bar", "0"], "beats per bar"),
    "top-p above 1": (good_mix, ["--top-p", "1.5"], "--top-p must be in [0, 1], got 1.5"),
    "negative cfg": (good_mix, ["--cfg", "-1"], "--cfg must be a finite number >= 0"),
    "negative seed": (good_mix, ["--seed", "-3"], "--seed must be a non-negative integer"),
    "absent gpu": (good_mix, ["--device", "cuda:7"], "cuda"),
    "unknown device": (good_mix, ["--device", "gpu0"], "unknown device"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_no_files(tmp_path, capsys, case):
    make, extra, message = BAD_INPUTS[case]
    mix = make(tmp_path)
    out = tmp_path / "out"
    args = ["generate", mix, "--stem", "drums", "--model", "tiny", "--out", out]
    # later options win in argparse, so `extra` overrides --stem / --model
    rc, stdout, err = run(capsys, *args, *extra)
    assert rc == 2
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error:") and message.lower() in lines[-1].lower(), err
    assert [ln for ln in lines if ln.startswith("error:")] == [lines[-1]]
    assert not any(ln.startswith("Traceback") for ln in lines)
    assert files(out) == []
    if case == "silent mix, bpm auto":
        assert "--bpm N" in lines[-1]


@pytest.mark.parametrize("kind", ["under a file", "read-only folder"])
def test_unwritable_output_folder(tmp_path, capsys, kind):
    mix = write_wav(tmp_path / "ok.wav", drum_loop(120, 0.5, 32_000), 32_000)
    if kind == "under a file":
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "takes"
    else:
        out = unwritable_dir(tmp_path)
        if out is None:
            pytest.skip("no folder on this machine is unwritable for this user")
    rc, _, err = run(capsys, "generate", mix, "--stem", "drums", "--model", "tiny", "--out", out)
    assert rc == 2 and err.strip().startswith("error:") and len(err.strip().splitlines()) == 1
    assert "output folder" in err or "not a folder" in err


# `stage generate` / `stage session generate` option -> the GenerationOptions field it defaults to
CLI_DEFAULTS = {"prompt": "prompt", "seconds": "seconds", "offset": "offset", "variations": "variations", "seed": "seed",
                "cfg": "guidance", "temperature": "temperature", "top_k": "top_k", "top_p": "top_p",
                "text_cfg": "text_guidance", "precision": "precision"}


def test_take_option_defaults_are_the_generation_options(monkeypatch, capsys):
    """Every sampling / length / take default of the CLI is GenerationOptions' (derived: other
    defaults in the dataclass give other CLI defaults, and the help shows them)."""
    from dataclasses import dataclass

    from stage.cli import build_parser
    from stage.generate import params

    def parsed():
        return [build_parser().parse_args(["generate", "mix.wav"]), build_parser().parse_args(["session", "generate", "d"])]

    d = params.GenerationOptions()
    for args in parsed():
        for dest, name in CLI_DEFAULTS.items():
            if dest != "seconds" or args.command == "generate":
                assert getattr(args, dest) == getattr(d, name), dest

    @dataclass(frozen=True)
    class Changed(params.GenerationOptions):
        guidance: float = 5.5
        temperature: float = 0.7
        top_k: int = 17
        top_p: float = 0.25
        variations: int = 3
        precision: str = "bf16"

    monkeypatch.setattr(params, "GenerationOptions", Changed)
    for args in parsed():
        assert (args.cfg, args.temperature, args.top_k, args.top_p, args.variations, args.precision) == (
            5.5, 0.7, 17, 0.25, 3, "bf16")
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default 5.5," in text and "default 17;" in text and "(default 3)" in text


def test_help_teaches_with_examples(capsys):
    for command in (["generate"], ["metronome"], ["session"], ["session", "generate"]):
        with pytest.raises(SystemExit) as exit_info:
            main([*command, "--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        assert "examples:" in text and "stage " in text
