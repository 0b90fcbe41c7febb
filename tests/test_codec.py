"""The EnCodec wrapper on the tiny random codec: frame counts, and codes that follow the input."""

from __future__ import annotations

import torch
from helpers import drum_loop


def test_encode_frame_count_and_decode_length(tiny_model):
    codec = tiny_model.codec
    for n, frames in [(640, 1), (641, 2), (32_000, 50), (192_320, 301)]:
        codes = codec.encode(torch.zeros(1, 1, n))
        assert codes.shape == (1, 4, frames) and codes.dtype == torch.int64
    assert codec.decode(torch.zeros(2, 4, 7, dtype=torch.long)).shape == (2, 1, 7 * 640)


def test_tiny_codec_codes_and_audio_follow_the_input(tiny_model):
    """A random EnCodec from transformers has zero codebooks (every frame -> code 0); ours must not."""
    codec = tiny_model.codec
    noise = codec.encode(torch.randn(1, 1, 32_000, generator=torch.Generator().manual_seed(0)) * 0.1)
    drums = codec.encode(torch.from_numpy(drum_loop(120, 1.0, 32_000))[None])
    assert (noise != drums).float().mean() > 0.5
    assert all(len(torch.unique(noise[0, k])) > 5 for k in range(4))
    codes = torch.randint(0, 2048, (2, 4, 10), generator=torch.Generator().manual_seed(0))
    audio = codec.decode(codes)
    assert not torch.allclose(audio[0], audio[1], atol=1e-5)
