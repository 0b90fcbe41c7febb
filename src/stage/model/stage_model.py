"""StageModel: the codec, the text conditioner and the LM, with the high-level `generate`.

    model = stage.load_model("tiny")
    result = model.generate(context=mix, sample_rate=44_100, prompt="funky drums", seconds=10)
    result.stems  # float32 [V, C, N] at 44.1 kHz, C = the mix's channels

The LM works on 32 kHz mono EnCodec codes; `generate` resamples and down-mixes the context on
the way in and restores the caller's rate and channel count on the way out.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from stage.audio import as_channels_first, check_rate, resample, to_mono
from stage.errors import StageError
from stage.generate.params import GenerationParams, GenerationResult
from stage.generate.reference import reference_generate
from stage.generate.sampling import make_generators
from stage.model.config import StageConfig
from stage.model.lm import StageLM
from stage.text import TextConditioner
from stage.tokens.codec import Codec

MAX_VARIATIONS = 64


class StageModel(nn.Module):
    """codec (frozen EnCodec), text (frozen T5 + trained projection) and lm (StageLM)."""

    def __init__(self, config: StageConfig, lm: StageLM, codec: Codec, text: TextConditioner):
        super().__init__()
        self.config = config
        self.lm = lm
        self.codec = codec
        self.text = text

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    @property
    def frame_rate(self) -> int:
        return self.codec.frame_rate

    @property
    def device(self) -> torch.device:
        return self.lm.norm.weight.device

    def save(self, out_dir, bundle: bool = True, overwrite: bool = False, dtype: torch.dtype | None = None) -> Path:
        """Write a stage checkpoint folder (see `stage.model.checkpoints.save_checkpoint`)."""
        from stage.model.checkpoints import save_checkpoint

        return save_checkpoint(self, out_dir, bundle=bundle, overwrite=overwrite, dtype=dtype)

    # ------------------------------------------------------------------ audio <-> codes

    def encode_audio(self, audio, sample_rate: int, what: str = "audio") -> Tensor:
        """[C, N] or [N] audio at `sample_rate` -> codes [1, K, T] (down-mixed, resampled to 32 kHz)."""
        check_rate(sample_rate, what)
        x = to_mono(as_channels_first(audio, what))
        x = resample(x, sample_rate, self.sample_rate)
        if x.shape[-1] < self.codec.hop_length:
            raise StageError(
                f"{what} is {x.shape[-1] / self.sample_rate * 1000:.1f} ms long; it must cover at least one "
                f"codec frame ({1000 / self.frame_rate:.0f} ms)"
            )
        wav = torch.from_numpy(x)[None].to(self.device)  # [1, 1, N]
        return self.codec.encode(wav)  # [1, K, T]

    def decode_codes(self, codes: Tensor, num_samples: int, sample_rate: int, channels: int) -> np.ndarray:
        """codes [V, K, T] -> float32 [V, C, num_samples] at `sample_rate`, mono copied to C channels."""
        audio = self.codec.decode(codes.to(self.device)).cpu().numpy()  # [V, 1, T * hop]
        out = np.stack([resample(a, self.sample_rate, sample_rate) for a in audio])  # [V, 1, N']
        if out.shape[-1] < num_samples:
            out = np.pad(out, [(0, 0), (0, 0), (0, num_samples - out.shape[-1])])
        return np.repeat(out[..., :num_samples], channels, axis=1).astype(np.float32)

    # ------------------------------------------------------------------ generation

    @torch.no_grad()
    def generate(
        self,
        context=None,
        sample_rate: int | None = None,
        prompt: str | None = "",
        seconds: float | None = None,
        variations: int = 1,
        params: GenerationParams = GenerationParams(),
        bpm: float | None = None,
        beats_per_bar: int = 4,
        offset: float = 0.0,
        continuation=None,
        progress: Callable[[int, int], None] | None = None,
    ) -> GenerationResult:
        """Generate `variations` stems that fit `context`.

        context: the mix (or a click track) as [C, N] / [N] float audio at `sample_rate`, or None
          for text-only generation. Context and stem start at the same time (§3.5).
        sample_rate: rate of `context`/`continuation` and of the returned stems (default 32 kHz).
        prompt: the text description ("" or None = no text).
        seconds: stem length (default: the context's length, else 10 s).
        bpm / beats_per_bar / offset: tempo control. A metronome click track (the training recipe,
          §4) at `bpm`, first downbeat at `offset` seconds, becomes the context. It **replaces** the
          mix as the model's input, as in training; a given `context` then only sets the length
          and channel count of the result.
        continuation: optional [C, N] audio of the stem to continue (it is part of `seconds`).
        Returns a GenerationResult with stems [V, C, N] (C = the context's channel count).
        """
        if self.lm.training:
            raise StageError("the model is in training mode; call model.eval() before generating")
        t0 = time.perf_counter()
        sample_rate = check_rate(sample_rate or self.sample_rate, "sample_rate")
        if not isinstance(variations, (int, np.integer)) or not 1 <= variations <= MAX_VARIATIONS:
            raise StageError(f"variations must be an integer in 1..{MAX_VARIATIONS}, got {variations!r}")
        channels, context_codes, context_samples = 1, None, None
        if context is not None:
            x = as_channels_first(context, "context")
            channels, context_samples = x.shape[0], x.shape[1]
            context_codes = self.encode_audio(x, sample_rate, "context").repeat(variations, 1, 1)  # [V, K, Tc]
        if seconds is None:
            seconds = context_samples / sample_rate if context_samples else 10.0
        if not np.isfinite(seconds) or seconds <= 0:
            raise StageError(f"seconds must be > 0, got {seconds}")
        if bpm is not None:
            from stage.data.metronome import render_metronome

            click = render_metronome(bpm, beats_per_bar, seconds, offset, self.sample_rate)
            context_codes = self.encode_audio(click, self.sample_rate, "metronome").repeat(variations, 1, 1)
        num_samples = int(round(seconds * sample_rate))
        num_frames = max(1, -(-int(round(seconds * self.sample_rate)) // self.codec.hop_length))
        prompt_codes = None
        if continuation is not None:
            prompt_codes = self.encode_audio(continuation, sample_rate, "continuation")[..., :num_frames]
            prompt_codes = prompt_codes.repeat(variations, 1, 1)
        t_encode = time.perf_counter()
        cond = self.text([prompt] * variations)
        base = params.seed if params.seed is not None else secrets.randbelow(2**31)
        seeds = [base + v for v in range(variations)]
        codes = reference_generate(
            self.lm, cond, num_frames, params, context=context_codes, prompt=prompt_codes,
            generators=make_generators(seeds, self.device), progress=progress,
        )
        t_lm = time.perf_counter()
        stems = self.decode_codes(codes, num_samples, sample_rate, channels)
        t_end = time.perf_counter()
        timings = {"encode": t_encode - t0, "lm": t_lm - t_encode, "decode": t_end - t_lm, "total": t_end - t0}
        timings["real_time_factor"] = timings["total"] / seconds
        return GenerationResult(stems=stems, sample_rate=sample_rate, codes=codes.cpu(), seeds=seeds, timings=timings)
