"""Test helpers that build real transformers models from tiny configs."""

from __future__ import annotations

import torch


def make_hf_musicgen(seed: int = 0, hidden: int = 64, layers: int = 2, heads: int = 4, ffn: int = 128,
                     text_dim: int = 32, t5_config=None, encodec_overrides=None):
    """A random `MusicgenForConditionalGeneration` (tiny T5 + tiny 32 kHz-stride EnCodec) and the
    tiny tokenizer. Returns (model in eval mode, tokenizer)."""
    from transformers import AutoTokenizer, MusicgenConfig, MusicgenDecoderConfig, MusicgenForConditionalGeneration

    from stage.model.sources import TINY_TOKENIZER
    from stage.text import tiny_t5_config
    from stage.tokens.codec import TINY_ENCODEC_CONFIG, encodec_config

    tokenizer = AutoTokenizer.from_pretrained(str(TINY_TOKENIZER))
    t5 = t5_config or tiny_t5_config(len(tokenizer), text_dim)
    config = MusicgenConfig(
        text_encoder=t5.to_dict(),
        audio_encoder=encodec_config(**{**TINY_ENCODEC_CONFIG, **(encodec_overrides or {})}).to_dict(),
        decoder=MusicgenDecoderConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                                      ffn_dim=ffn, vocab_size=2048, num_codebooks=4, dropout=0.0).to_dict(),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MusicgenForConditionalGeneration(config).eval()
    return model, tokenizer


def hf_generate_codes(model, inputs, guidance: float, frames: int) -> torch.Tensor:
    """Greedy transformers `generate` and the codes it decodes: [B, K, frames].

    `generate` returns audio; the codes are read off the real call of the audio decoder (a
    recording wrapper around it, the decode still runs)."""
    seen = []
    decode = model.audio_encoder.decode

    def record(audio_codes, *args, **kwargs):
        seen.append(audio_codes.clone())
        return decode(audio_codes, *args, **kwargs)

    model.audio_encoder.decode = record
    try:
        with torch.no_grad():
            model.generate(**inputs, do_sample=False, guidance_scale=guidance, max_new_tokens=frames + 3)
    finally:
        del model.audio_encoder.decode
    return seen[0][0]


def drum_loop(bpm: float, seconds: float, sample_rate: int, offset: float = 0.0, channels: int = 1, seed: int = 0):
    """A synthetic drum loop of known tempo in 4/4: kick on beats 1 and 3, snare on 2 and 4,
    closed hi-hat on eighths and a crash on every downbeat; the first beat (a downbeat) at
    `offset` seconds. float32 [C, N]."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    y = np.zeros(n, np.float64)

    def add(t, signal):
        i = int(round(t * sample_rate))
        if 0 <= i < n:
            m = min(len(signal), n - i)
            y[i:i + m] += signal[:m]

    def env(length, decay):
        tt = np.arange(int(length * sample_rate)) / sample_rate
        return tt, np.exp(-tt / decay)

    period = 60.0 / bpm
    beat = 0
    while offset + beat * period < seconds:
        t = offset + beat * period
        if beat % 4 == 0:
            tt, e = env(0.8, 0.3)
            add(t, 0.25 * rng.standard_normal(len(tt)) * e)  # crash
        if beat % 2 == 0:
            tt, e = env(0.25, 0.07)
            add(t, 0.9 * np.sin(2 * np.pi * (50 + 60 * np.exp(-tt / 0.02)) * tt) * e)
        else:
            tt, e = env(0.18, 0.05)
            add(t, 0.5 * rng.standard_normal(len(tt)) * e)
        for half in (0.0, 0.5):
            tt, e = env(0.04, 0.01)
            add(t + half * period, 0.04 * rng.standard_normal(len(tt)) * e)
        beat += 1
    y = np.clip(y, -1, 1).astype(np.float32)
    return np.repeat(y[None], channels, axis=0)
