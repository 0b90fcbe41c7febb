"""Built-in embedders, the embedding cache and the optional adapters' skip paths."""

from __future__ import annotations

import copy
import importlib.util
import os

import numpy as np
import pytest
import torch

from stage.errors import StageError
from stage.eval.adapters import (
    AdapterOptions,
    AdapterUnavailable,
    ClapEmbedder,
    CocolaScorer,
    MertEmbedder,
    VggishEmbedder,
    build_embedder,
)
from stage.eval.cache import EmbeddingCache
from stage.eval.embedders import EncodecEmbedder, LogMelEmbedder


def _noise(seconds: float, sr: int, seed: int = 0, channels: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 0.7 * t)) / 2
    return (tone + 0.05 * rng.standard_normal((channels, t.size))).astype(np.float32)


def test_logmel_shape_determinism_and_gain():
    emb = LogMelEmbedder()
    x = _noise(3.2, 32_000)
    a, b = emb.embed(x, 32_000), emb.embed(x.copy(), 32_000)
    assert a.shape == (3, 128) and a.dtype == np.float32  # 3 whole 1 s windows, the 0.2 s tail dropped
    np.testing.assert_array_equal(a, b)
    # dB relative to a fixed reference: twice the amplitude adds 20 log10(2) dB to every band
    # mean and leaves the within-window spread unchanged.
    louder = emb.embed(2 * x, 32_000)
    np.testing.assert_allclose(louder[:, :64] - a[:, :64], 20 * np.log10(2), atol=1e-3)
    np.testing.assert_allclose(louder[:, 64:], a[:, 64:], atol=1e-3)
    assert emb.embed(x[:, :8000], 32_000).shape == (1, 128)  # shorter than a window: one row


def test_logmel_ignores_channel_count_and_rate_up_to_resampling():
    emb = LogMelEmbedder()
    x = _noise(2.0, 32_000)
    stereo = np.repeat(x, 2, axis=0)
    np.testing.assert_allclose(emb.embed(stereo, 32_000), emb.embed(x, 32_000), atol=1e-4)
    from stage.audio import resample

    at_48k = resample(x, 32_000, 48_000)
    assert np.abs(emb.embed(at_48k, 48_000) - emb.embed(x, 32_000)).mean() < 0.5  # dB


def test_encodec_embedder_is_the_pre_quantizer_latent(tiny_model):
    """Quantizing our latents with the codec's own RVQ gives exactly the codes `encode` gives,
    so they are the encoder output right before quantization."""
    codec = tiny_model.codec
    emb = EncodecEmbedder(codec, "tiny")
    x = _noise(2.0, 32_000, seed=1)
    latents = emb.latents(x, 32_000)  # [T, D]
    assert latents.shape == (100, codec.model.config.hidden_size)
    wav = torch.from_numpy(x)[None]  # [1, 1, N]
    codes = codec.model.quantizer.encode(torch.from_numpy(latents.T)[None], codec.bandwidth).transpose(0, 1)
    assert torch.equal(codes.long(), codec.encode(wav))
    pooled = emb.embed(x, 32_000)
    np.testing.assert_allclose(pooled, latents.reshape(2, 50, -1).mean(axis=1), rtol=1e-6, atol=1e-7)


def test_encodec_chunking_keeps_frame_count(tiny_model):
    emb = EncodecEmbedder(tiny_model.codec, "tiny", chunk_seconds=1.0)
    assert emb.latents(_noise(3.0, 32_000), 32_000).shape[0] == 150
    assert emb.embed(_noise(3.0, 32_000), 32_000).shape[0] == 3


def test_embedder_keys_tell_configurations_and_weights_apart(tiny_model):
    codec = tiny_model.codec
    other = copy.deepcopy(codec)
    with torch.no_grad():
        next(other.model.parameters()).add_(1e-3)
    keys = {EncodecEmbedder(codec).key, EncodecEmbedder(other).key, LogMelEmbedder().key, LogMelEmbedder(n_mels=32).key}
    assert len(keys) == 4
    assert EncodecEmbedder(codec).key == EncodecEmbedder(copy.deepcopy(codec)).key


def test_cache_hits_misses_and_invalidation(tmp_path):
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"x" * 100)
    path = tmp_path / "cache.npz"
    cache = EmbeddingCache(path)
    assert cache.get("logmel|v1", audio) is None
    cache.put("logmel|v1", audio, np.arange(6, dtype=np.float32).reshape(2, 3))
    cache.save()
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # like open(), not mkstemp's 0600

    again = EmbeddingCache(path)
    np.testing.assert_array_equal(again.get("logmel|v1", audio), np.arange(6).reshape(2, 3))
    assert again.get("encodec|abc", audio) is None  # another embedder never reads this entry
    audio.write_bytes(b"y" * 101)  # the file changed: stale entry not used
    assert again.get("logmel|v1", audio) is None
    assert (again.hits, again.misses) == (1, 2)


def test_corrupt_cache_is_ignored_with_a_note(tmp_path):
    path = tmp_path / "cache.npz"
    path.write_bytes(b"not a zip")
    cache = EmbeddingCache(path)
    assert cache.note and "ignored unreadable embedding cache" in cache.note
    assert EmbeddingCache(None).get("k", path) is None


def test_adapters_without_checkpoints_or_packages_skip_with_one_line(tmp_path):
    cases = [
        (lambda: ClapEmbedder(None), "--clap-checkpoint"),
        (lambda: VggishEmbedder(None), "--vggish-checkpoint"),
        (lambda: MertEmbedder(None), "--mert-checkpoint"),
        (lambda: CocolaScorer(None), "--cocola-checkpoint"),
        (lambda: ClapEmbedder(tmp_path / "missing.pt"), "does not exist"),
    ]
    for make, needle in cases:
        with pytest.raises(AdapterUnavailable) as err:
            make()
        message = str(err.value)
        assert message.startswith("skipped:") and needle in message and "\n" not in message
    ckpt = tmp_path / "clap.pt"
    ckpt.write_bytes(b"0")
    if importlib.util.find_spec("laion_clap") is None:  # a .pt file goes through the laion_clap package
        with pytest.raises(AdapterUnavailable, match=r"skipped: CLAP needs the `laion_clap` package \(pip install laion-clap\)"):
            ClapEmbedder(ckpt)


def test_build_embedder():
    assert isinstance(build_embedder("logmel"), LogMelEmbedder)
    with pytest.raises(StageError, match="--model"):
        build_embedder("encodec", AdapterOptions())
    with pytest.raises(StageError, match="unknown embedder"):
        build_embedder("wav2vec")
    with pytest.raises(AdapterUnavailable):
        build_embedder("vggish", AdapterOptions())


@pytest.mark.slow
def test_encodec_embedder_on_full_size_32khz_encodec_shapes():
    """The real 32 kHz EnCodec architecture (random weights: no download): 128-d latents at
    50 Hz that the codec's RVQ quantizes to exactly its own codes."""
    from transformers import EncodecModel

    from stage.model.config import CodecConfig
    from stage.tokens.codec import Codec, encodec_config

    torch.manual_seed(0)
    codec = Codec(EncodecModel(encodec_config()).eval(), CodecConfig())
    emb = EncodecEmbedder(codec, "random-32khz")
    x = _noise(2.0, 44_100, seed=2, channels=2)
    latents = emb.latents(x, 44_100)
    assert latents.shape == (100, 128)
    from stage.audio import resample, to_mono

    wav = torch.from_numpy(resample(to_mono(x), 44_100, 32_000))[None]
    codes = codec.model.quantizer.encode(torch.from_numpy(latents.T)[None], codec.bandwidth).transpose(0, 1)
    assert torch.equal(codes.long(), codec.encode(wav))
    assert emb.embed(x, 44_100).shape == (2, 128)


@pytest.fixture(scope="module")
def tiny_clap(tmp_path_factory):
    from helpers import make_tiny_clap

    folder = tmp_path_factory.mktemp("clap")
    return folder, make_tiny_clap(folder)


def test_clap_folder_embeds_windows_and_scores_text(tiny_clap):
    from transformers import ClapFeatureExtractor

    from stage.audio import resample, to_mono
    from stage.eval.adapters import ClapTextScorer

    folder, model = tiny_clap
    emb = ClapEmbedder(folder)
    x = _noise(12.0, 44_100, seed=3, channels=2)
    rows = emb.embed(x, 44_100)
    assert rows.shape == (2, 16)  # one whole 10 s window + the 2 s tail on its own
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-5)
    # The first row is CLAP on the first 10 s at 48 kHz, exactly as transformers computes it.
    y = resample(to_mono(x), 44_100, 48_000)[0]
    inputs = ClapFeatureExtractor(truncation="rand_trunc")([y[:480_000]], sampling_rate=48_000, return_tensors="pt")
    with torch.no_grad():
        direct = model.get_audio_features(**inputs).pooler_output[0].numpy()
    np.testing.assert_allclose(rows[0], direct, rtol=1e-4, atol=1e-5)

    scorer = ClapTextScorer(folder, embedder=emb)
    text = emb.embed_text(["rock drums"])[0]
    mean = rows.mean(axis=0)
    expected = float(mean @ text / (np.linalg.norm(mean) * np.linalg.norm(text)))
    assert scorer.score(x, 44_100, "rock drums") == pytest.approx(expected, rel=1e-5)
    assert emb.key.startswith("clap|hf|")
