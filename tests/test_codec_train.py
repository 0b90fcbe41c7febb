"""The codec trainer (`stage train-codec`): real Lightning steps on two tiny songs."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from stage.cli import main
from stage.model.config import CodecConfig
from stage.model.sources import build_codec
from stage.train.codec import CodecTrainConfig, EmaRVQ, kmeans, perplexity, train_codec

SR = 32_000


def write_songs(root, seconds=2.0):
    """Two songs, each a drums stem (noise bursts on a grid), a bass stem (a sine riff) and their mix."""
    rng = np.random.default_rng(0)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    for s, (bpm, root_hz) in enumerate(((120, 55.0), (95, 73.4))):
        song = root / f"song-{s}"
        song.mkdir(parents=True)
        drums = np.zeros(n, np.float32)
        for beat in np.arange(0, seconds, 60 / bpm / 2):
            i = int(beat * SR)
            hit = rng.standard_normal(min(1500, n - i)) * np.exp(-np.arange(min(1500, n - i)) / 250)
            drums[i:i + len(hit)] += 0.5 * hit
        bass = (0.3 * np.sin(2 * np.pi * root_hz * (1 + (t % 1 > 0.5) * 0.5) * t)).astype(np.float32)
        for name, x in (("drums", drums), ("bass", bass), ("mix", drums + bass)):
            sf.write(song / f"{name}.wav", x, SR, subtype="FLOAT")


def small_config(tmp_path, **kw):
    options = dict(
        data=(str(tmp_path / "songs"),), out=str(tmp_path / "run"), max_steps=30, batch_size=4,
        segment_seconds=0.2, num_filters=4, hidden_size=16, num_lstm_layers=1, lr=3e-3, threads=1,
        log_every=5, checkpoint_every=5, kmeans_batches=4, ema_decay=0.9,
    )
    return CodecTrainConfig(**{**options, **kw})


def test_trainer_learns_and_the_codec_loader_reads_it(tmp_path):
    write_songs(tmp_path / "songs")
    config = small_config(tmp_path)

    result = train_codec(config, progress_bar=False)

    assert result.steps == 30
    rows = list(csv.DictReader(open(tmp_path / "run" / "logs" / "version_0" / "metrics.csv")))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 6 and all(np.isfinite(losses))
    assert np.mean(losses[-2:]) < 0.9 * np.mean(losses[:2]), losses
    # Every codebook is in use (more than one code over the last 5 steps).
    perp = [float(rows[-1][f"vq/perplexity_q{k}"]) for k in range(4)]
    assert all(p > 1.2 for p in perp), perp

    codec = build_codec(CodecConfig(source=str(result.model_dir), codebook_size=1024))
    from transformers import EncodecModel

    # The EMA moved every codebook between step 5 and step 30.
    early = EncodecModel.from_pretrained(str(tmp_path / "run" / "checkpoints" / "step-5"))
    for k in range(4):
        a = codec.model.quantizer.layers[k].codebook.embed
        b = early.quantizer.layers[k].codebook.embed
        assert (a - b).abs().max() > 1e-4, k
    x, _ = sf.read(tmp_path / "songs" / "song-0" / "mix.wav", dtype="float32")
    audio = torch.from_numpy(x[: SR // 2])[None, None]
    codes = codec.encode(audio)
    assert codes.shape == (1, 4, 25) and int(codes.max()) < 1024
    assert codec.decode(codes).shape == (1, 1, 25 * 640)

    # Our training-time quantizer assigns the same codes as transformers' EnCodec encode.
    z = codec.model.encoder(audio)
    rvq = EmaRVQ(codec.model.quantizer, 4, 0.99, 0.1, seed=0)
    _, ours, _, _ = rvq.quantize(z, training=False)
    assert torch.equal(ours[:, 0], codes[0])


def test_resume_continues_the_step_count(tmp_path):
    write_songs(tmp_path / "songs")
    first = small_config(tmp_path).to_dict()
    train_codec(CodecTrainConfig.from_dict({**first, "max_steps": 5}), progress_bar=False)
    config = CodecTrainConfig.from_dict({**first, "max_steps": 8, "log_every": 1})
    result = train_codec(config, resume=True, progress_bar=False)
    assert result.steps == 8
    # Each start keeps its own metrics: the resumed run does not wipe the first one's.
    assert (tmp_path / "run" / "logs" / "version_0" / "metrics.csv").is_file()
    assert (tmp_path / "run" / "logs" / "version_1" / "metrics.csv").is_file()
    assert json.loads((tmp_path / "run" / "train-codec.json").read_text())["max_steps"] == 8


def test_kmeans_and_perplexity():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.1 * torch.randn(50, 2, generator=g) for c in centres])
    found, counts = kmeans(x, 3, 10, g)
    assert sorted(counts.tolist()) == [50, 50, 50]
    assert torch.cdist(found, centres).min(dim=1).values.max() < 0.1
    assert perplexity(torch.tensor([5.0, 5.0, 5.0, 5.0])) == pytest.approx(4.0)
    assert perplexity(torch.tensor([7.0, 0.0, 0.0])) == pytest.approx(1.0)


@pytest.mark.parametrize("argv, message", [
    (["train-codec"], "--data DIR is required"),
    (["train-codec", "--data", "/nonexistent-folder"], "no such folder"),
    (["train-codec", "--data", ".", "--max-steps", "0"], "--max-steps must be >= 1"),
    (["train-codec", "--resume", "/nonexistent-run"], "no train-codec.json"),
])
def test_bad_arguments_are_one_line_errors(tmp_path, capsys, argv, message):
    argv = [a if a != "." else str(tmp_path) for a in argv]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_an_existing_run_is_never_replaced_without_force(tmp_path, capsys):
    write_songs(tmp_path / "songs")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("mine")
    assert main(["train-codec", "--data", str(tmp_path / "songs"), "--out", str(tmp_path / "run")]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (tmp_path / "run" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_a_file_for_the_run_folder_is_refused(tmp_path, capsys, force):
    """--out naming a file: one line and exit 2 (it was a NotADirectoryError traceback), the file
    kept, even with --force (which replaces a run folder, never a file)."""
    write_songs(tmp_path / "songs")
    (tmp_path / "run.wav").write_text("mine")
    assert main(["train-codec", "--data", str(tmp_path / "songs"), "--out", str(tmp_path / "run.wav"), *force]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1 and "exists and is not a folder" in err, err
    assert (tmp_path / "run.wav").read_text() == "mine"


def _tone(hz: float, amplitude: float, sr: int = 32_000) -> torch.Tensor:
    t = torch.arange(sr) / sr
    return amplitude * torch.sin(2 * torch.pi * hz * t)


def test_low_band_mel_scales_make_a_missing_bass_cost_more():
    from stage.train.codec import MultiScaleMel

    bass, high = _tone(55, 0.5), _tone(1500, 0.1)
    target = (bass + high)[None, None]
    no_bass, no_high = high[None, None], bass[None, None]
    full = MultiScaleMel(32_000, (64, 128, 256, 512, 1024, 2048))
    low = MultiScaleMel(32_000, (64, 128, 256, 512, 1024, 2048), low_windows=(2048, 4096))
    assert low.scales[-2:] == ["2048low", "4096low"]
    # Dropping the bass costs much more with the low-band scales; dropping the 1.5 kHz line does not.
    assert float(low(no_bass, target)) > 2 * float(full(no_bass, target))
    assert float(low(no_high, target)) <= float(full(no_high, target))
    assert float(low(target, target)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("options, message", [
    ({"low_mel_windows": [8]}, "every window must be >= 16"),
    ({"low_mel_windows": [2048], "low_mel_fmax": 20_000.0}, "low_mel_fmax must be in"),
    ({"low_mel_windows": [2048], "low_mel_bins": 0}, "low_mel_bins must be a positive integer"),
])
def test_low_band_options_are_validated(options, message):
    from stage.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        CodecTrainConfig(data=("x",), **options)


def test_low_stft_makes_noise_between_harmonics_cost():
    """Low-level noise between a bass note's harmonics costs, relative to dropping the note, several
    times more under the linear-frequency log-STFT scales than under the low-band mel scales."""
    from stage.train.codec import LowStft, MultiScaleMel

    t = torch.arange(SR) / SR
    note = sum(0.3 / k * torch.sin(2 * torch.pi * 55.0 * k * t) for k in range(1, 9))[None, None]
    noisy = note + 0.01 * torch.randn(note.shape, generator=torch.Generator().manual_seed(0))
    silence = torch.zeros_like(note)
    mel = MultiScaleMel(SR, (2048,), low_windows=(2048, 4096))
    stft = LowStft(SR, (4096, 8192), fmax=1000.0)
    assert stft.bins == {4096: 129, 8192: 257}
    share_mel = float(mel(noisy, note)) / float(mel(silence, note))
    share_stft = float(stft(noisy, note)) / float(stft(silence, note))
    assert share_stft > 2 * share_mel, (share_stft, share_mel)
    assert float(stft(note, note)) == pytest.approx(0.0, abs=1e-6)


def test_decoder_only_fine_tuning_keeps_every_code(tmp_path):
    """Phase 3 (configs/mini-codec-decoder.yaml) on a small codec: the decoder learns, while the
    encoder, the codebooks and so the codes of every input stay exactly those of the init codec."""
    write_songs(tmp_path / "songs")
    first = train_codec(small_config(tmp_path, max_steps=10), progress_bar=False).model_dir
    tuned_config = small_config(tmp_path, max_steps=10, init_from=str(first), decoder_only=True,
                                stft_windows=(1024,), stft_fmax=1000.0, out=str(tmp_path / "tuned"))
    result = train_codec(tuned_config, progress_bar=False)

    rows = list(csv.DictReader(open(tmp_path / "tuned" / "logs" / "version_0" / "metrics.csv")))
    stft = [float(r["train/stft"]) for r in rows if r.get("train/stft")]
    assert len(stft) == 2 and all(np.isfinite(stft))
    a, b = (build_codec(CodecConfig(source=str(d), codebook_size=1024)) for d in (first, result.model_dir))
    sa, sb = a.model.state_dict(), b.model.state_dict()
    frozen = [k for k in sa if not k.startswith("decoder.")]
    assert frozen and all(torch.equal(sa[k], sb[k]) for k in frozen)
    assert any(not torch.equal(sa[k], sb[k]) for k in sa if k.startswith("decoder."))
    x, _ = sf.read(tmp_path / "songs" / "song-1" / "mix.wav", dtype="float32")
    x = torch.from_numpy(x)[None, None]
    assert torch.equal(a.encode(x), b.encode(x))
    assert not torch.equal(a.decode(a.encode(x)), b.decode(b.encode(x)))


@pytest.mark.parametrize("options, message", [
    ({"decoder_only": True}, "decoder_only needs init_from"),
    ({"stft_windows": [8]}, "every stft_windows entry must be >= 16"),
    ({"stft_windows": [4096], "stft_fmax": 0.0}, "stft_fmax must be in"),
])
def test_phase3_options_are_validated(options, message):
    from stage.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        CodecTrainConfig(data=("x",), **options)


def test_init_from_must_match_the_architecture(tmp_path):
    from stage.errors import ConfigError
    from stage.train.codec import load_init_codec

    write_songs(tmp_path / "songs")
    first = train_codec(small_config(tmp_path, max_steps=2), progress_bar=False).model_dir
    with pytest.raises(ConfigError, match="num_filters is 4, the config says 8"):
        load_init_codec(CodecTrainConfig(data=("x",), init_from=str(first), num_filters=8, hidden_size=16,
                                         num_lstm_layers=1))
    with pytest.raises(ConfigError, match="not a codec folder"):
        load_init_codec(CodecTrainConfig(data=("x",), init_from=str(tmp_path / "nowhere")))
