"""`stage eval` end to end on tiny-model outputs and synthetic references, plus its error paths."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import drum_loop

from stage.audio import load_audio, save_audio
from stage.cli import main
from stage.data.metronome import metronome_times, render_metronome
from stage.eval.distribution import frechet_distance, kernel_audio_distance, pool_embeddings
from stage.eval.embedders import LogMelEmbedder
from stage.generate.params import GenerationOptions
from stage.generate.pipeline import generate_stems

SR = 32_000


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_model):
    """gen/: three tiny-model takes for ctx/song.wav (+ a mix preview that must be ignored);
    ref/: three synthetic drum loops at 44.1 kHz stereo."""
    root = tmp_path_factory.mktemp("eval")
    gen, ref, ctx = root / "gen", root / "ref", root / "ctx"
    for d in (gen, ref, ctx):
        d.mkdir()
    context = drum_loop(120.0, 2.0, SR, offset=0.1)
    save_audio(ctx / "song.wav", context, SR)
    result = generate_stems(tiny_model, context, SR, GenerationOptions(prompt="drums", seconds=1.5, variations=3, seed=0))
    for v, stem in enumerate(result.stems):
        save_audio(gen / f"song_drums_seed{v}.wav", stem, SR)
    save_audio(gen / "song_drums_seed0_mix.wav", context[:, :SR], SR)  # a preview, excluded by default
    for i, bpm in enumerate((96.0, 110.0, 128.0)):
        save_audio(ref / f"loop{i}.wav", drum_loop(bpm, 2.5, 44_100, offset=0.05 * i, channels=2, seed=i), 44_100)
    return root


@pytest.fixture(autouse=True)
def private_cache_home(tmp_path, monkeypatch):
    """The default embedding cache lives under XDG_CACHE_HOME: keep it inside the test."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def _run(capsys, *args):
    code = main(["eval", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_eval_writes_json_markdown_and_html(folders, tmp_path, capsys):
    out = tmp_path / "report.json"
    cache = tmp_path / "cache.npz"
    code, stdout, stderr = _run(capsys, "--generated", folders / "gen", "--reference", folders / "ref",
                                "--contexts", folders / "ctx", "--embedder", "logmel,encodec,clap", "--model", "tiny",
                                "--tracker", "librosa", "--cache", cache, "--out", out)
    assert code == 0, stderr
    report = json.loads(out.read_text())
    assert [f["name"] for f in report["files"]] == [f"song_drums_seed{v}" for v in range(3)]
    assert all(f["context"].endswith("song.wav") and f["beat"] is not None for f in report["files"])
    for key in ("eval/beat_f1", "eval/downbeat_f1", "eval/onset_f1", "eval/fad_logmel", "eval/kad_logmel",
                "eval/fad_encodec", "eval/kad_encodec"):
        assert key in report["summary"] and key in stdout
    # The CLAP embedder has no checkpoint: a one-line skip, the other embedders still ran.
    assert any("pass --clap-checkpoint PATH" in s for s in report["skipped"])
    assert "skipped: CLAP needs a local checkpoint (pass --clap-checkpoint PATH)" in stderr

    # The reported FAD/KAD are those of the library functions on the same files.
    emb = LogMelEmbedder()
    gen = pool_embeddings([emb.embed(*load_audio(folders / "gen" / f"song_drums_seed{v}.wav")) for v in range(3)])
    ref = pool_embeddings([emb.embed(*load_audio(p)) for p in sorted((folders / "ref").iterdir())])
    assert report["summary"]["eval/fad_logmel"] == pytest.approx(frechet_distance(gen, ref).value, rel=1e-9)
    assert report["summary"]["eval/kad_logmel"] == pytest.approx(kernel_audio_distance(gen, ref).value, rel=1e-9)
    assert report["distributions"]["logmel"]["generated_rows"] == 3  # 1.5 s stems: one 1 s window each

    html = out.with_suffix(".html").read_text()
    assert html.count("<svg") == 3 + 2  # a beat grid per file, a histogram per embedder
    assert "song_drums_seed2" in html and "eval/fad_encodec" in html
    md = out.with_suffix(".md").read_text()
    assert "| song_drums_seed1 |" in md and "eval/kad_logmel" in md

    # Existing reports are not replaced without --force; with it, the reference cache is used.
    code, _, stderr = _run(capsys, "--generated", folders / "gen", "--reference", folders / "ref", "--metrics", "fad",
                           "--out", out)
    assert code == 2 and "already exists (use --force" in stderr
    code, _, stderr = _run(capsys, "--generated", folders / "gen", "--reference", folders / "ref", "--metrics", "fad,kad",
                           "--cache", cache, "--out", out, "--force")
    assert code == 0, stderr
    again = json.loads(out.read_text())
    assert again["distributions"]["logmel"]["cache"]["hits"] == 3
    assert again["summary"]["eval/fad_logmel"] == pytest.approx(report["summary"]["eval/fad_logmel"], rel=1e-12)


def test_metronome_grid_and_beats_file(tmp_path, capsys):
    """Click tracks 'generated' at 120 BPM score perfect precision against --bpm 120, and the
    same grid given as a beats file gives the same numbers; half a beat off gives 0."""
    gen = tmp_path / "gen"
    gen.mkdir()
    for i in range(2):
        save_audio(gen / f"take{i}.wav", render_metronome(120.0, 4, 4.0, offset=0.25, sample_rate=SR), SR)
    out = tmp_path / "bpm.json"
    code, _, stderr = _run(capsys, "--generated", gen, "--metrics", "beat,onset", "--bpm", 120, "--offset", 0.25,
                           "--tracker", "librosa", "--out", out)
    assert code == 0, stderr
    by_bpm = json.loads(out.read_text())
    beat = by_bpm["files"][0]["beat"]
    assert beat["beat"]["num_reference"] == 8  # all 8 beats of the 4 s clip count, none trimmed
    assert beat["beat"]["precision"] == 1.0 and beat["beat"]["recall"] >= 7 / 8
    assert by_bpm["files"][0]["onset"]["f1"] == 1.0
    assert beat["tempo"]["reference_bpm"] == 120.0 and beat["tempo"]["acc1"]

    beats, downbeats = metronome_times(120.0, 4, 4.0, 0.25)
    grid_file = tmp_path / "beats.json"
    grid_file.write_text(json.dumps({"beats": beats.tolist(), "downbeats": downbeats.tolist()}))
    code, _, stderr = _run(capsys, "--generated", gen, "--metrics", "beat", "--beats", grid_file, "--tracker", "librosa",
                           "--out", tmp_path / "file.json")
    assert code == 0, stderr
    by_file = json.loads((tmp_path / "file.json").read_text())
    assert by_file["summary"]["eval/beat_f1"] == pytest.approx(by_bpm["summary"]["eval/beat_f1"])

    shifted = tmp_path / "shifted.jsonl"  # JSON lines keyed by name, half a beat late
    shifted.write_text("\n".join(json.dumps({"name": f"take{i}.wav", "beats": (beats + 0.25).tolist()}) for i in range(2)))
    code, _, stderr = _run(capsys, "--generated", gen, "--metrics", "beat", "--beats", shifted, "--tracker", "librosa",
                           "--out", tmp_path / "shifted.json")
    assert code == 0, stderr
    assert json.loads((tmp_path / "shifted.json").read_text())["summary"]["eval/beat_f1"] == 0.0


def test_missing_optional_checkpoints_are_skips(folders, tmp_path, capsys):
    out = tmp_path / "opt.json"
    code, _, stderr = _run(capsys, "--generated", folders / "gen", "--contexts", folders / "ctx", "--metrics", "cocola,clap",
                           "--prompt", "rock drums", "--out", out)
    assert code == 0, stderr
    assert "skipped: COCOLA needs a local checkpoint (pass --cocola-checkpoint PATH)" in stderr
    assert "skipped: CLAP needs a local checkpoint (pass --clap-checkpoint PATH)" in stderr
    report = json.loads(out.read_text())
    assert report["summary"] == {} and len(report["skipped"]) == 2


def test_clap_text_score_and_clap_embeddings_from_a_transformers_folder(folders, tmp_path, capsys):
    from helpers import make_tiny_clap

    clap = tmp_path / "clap"
    clap.mkdir()
    make_tiny_clap(clap)
    (folders / "gen" / "song_drums_seed1.txt").write_text("jazz brushes\n")  # a sidecar beats --prompt
    out = tmp_path / "clap.json"
    try:
        code, _, stderr = _run(capsys, "--generated", folders / "gen", "--reference", folders / "ref", "--metrics",
                               "clap,kad", "--embedder", "clap", "--clap-checkpoint", clap, "--prompt", "rock drums",
                               "--no-cache", "--out", out)
    finally:
        (folders / "gen" / "song_drums_seed1.txt").unlink()
    assert code == 0, stderr
    report = json.loads(out.read_text())
    assert [f["prompt"] for f in report["files"]] == ["rock drums", "jazz brushes", "rock drums"]
    assert all(-1.0 <= f["clap"] <= 1.0 for f in report["files"])
    assert report["summary"]["eval/clap_text"] == pytest.approx(np.mean([f["clap"] for f in report["files"]]))
    assert "eval/kad_clap" in report["summary"] and report["distributions"]["clap"]["dim"] == 16


def _make(folder, names, seconds=1.0):
    folder.mkdir()
    for n in names:
        save_audio(folder / n, 0.1 * np.sin(np.linspace(0, 400, int(seconds * SR)))[None], SR)
    return folder


@pytest.mark.parametrize("case, needle", [
    ("mismatch", "have no context (first: other.wav)"),
    ("unreadable", "broken.wav: not a readable audio file"),
    ("one_reference", "FAD/KAD need at least 2 reference files, found 1"),
    ("no_grid", "needs a reference grid: pass --contexts DIR, --bpm N or --beats FILE"),
    ("bad_metric", "unknown metric wobble"),
    ("empty", "no audio files in generated folder"),
])
def test_bad_input_is_a_one_line_error(tmp_path, capsys, case, needle):
    gen = _make(tmp_path / "gen", ["a.wav", "b.wav"] if case != "empty" else [])
    ref = _make(tmp_path / "ref", ["r1.wav"] if case == "one_reference" else ["r1.wav", "r2.wav"])
    args = ["--generated", gen, "--reference", ref, "--out", tmp_path / "r.json"]
    if case == "mismatch":
        save_audio(gen / "other.wav", np.zeros((1, SR), np.float32) + 0.1, SR)
        args += ["--contexts", _make(tmp_path / "ctx", ["a.wav", "b.flac"]), "--metrics", "beat"]
    elif case == "unreadable":
        (ref / "broken.wav").write_bytes(b"RIFF....WAVEfmt garbage")
        args += ["--metrics", "fad"]
    elif case == "one_reference":
        args += ["--metrics", "kad"]
    elif case == "no_grid":
        args += ["--metrics", "beat,fad"]
    elif case == "bad_metric":
        args += ["--metrics", "fad,wobble"]
    code, _, stderr = _run(capsys, *args)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], stderr
    assert not (tmp_path / "r.json").exists()


def test_pairing_rule_and_beats_files(tmp_path):
    from stage.errors import StageError
    from stage.eval.pipeline import load_beats_file, match_name, pair_contexts

    contexts = {"song", "song_b", "intro"}
    assert match_name("song", contexts) == "song"
    assert match_name("song_drums_seed3", contexts) == "song"
    assert match_name("song_b-take2", contexts) == "song_b"  # the longest prefix wins
    assert match_name("songbird", contexts) is None  # a prefix must end at a separator
    gen = [tmp_path / "song_1.wav", tmp_path / "intro.wav"]
    pairs, unused = pair_contexts(gen, [tmp_path / "song.flac", tmp_path / "intro.wav", tmp_path / "outro.wav"])
    assert pairs == {gen[0]: tmp_path / "song.flac", gen[1]: tmp_path / "intro.wav"}
    assert unused == [tmp_path / "outro.wav"]
    with pytest.raises(StageError, match="two contexts share the name 'song'"):
        pair_contexts(gen, [tmp_path / "song.wav", tmp_path / "song.flac"])

    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"song.wav": {"beats": [0.5, 1.0, 1.5], "downbeats": [0.5]}}))
    grid = load_beats_file(mapping)["song"]
    assert grid.bpm == pytest.approx(120.0) and grid.source == "file"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"beats": [1.0]}))
    with pytest.raises(StageError, match="at least two beats"):
        load_beats_file(bad)
    bad.write_text("{not json")
    with pytest.raises(StageError, match="not JSON or JSON lines"):
        load_beats_file(bad)
