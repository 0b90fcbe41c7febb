"""StageModel: the codec, the text conditioner and the LM, with the high-level `generate`.

    model = stage.load_model("tiny")
    result = model.generate(context=mix, sample_rate=44_100, prompt="funky drums", seconds=10)
    result.stems  # float32 [V, C, N] at 44.1 kHz, C = the mix's channels

The LM works on 32 kHz mono EnCodec codes; `generate` resamples and down-mixes the context on
the way in and restores the caller's rate and channel count on the way out. Generation runs the
cached `Generator` (generate/generator.py); a song longer than one window (10 s) is accompanied
window by window (generate/longform.py). `engine="reference"` runs the authors' uncached loop.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from stage.audio import MAX_SECONDS, as_channels_first, check_rate, fit_length, prepare, resample
from stage.errors import StageError
from stage.generate.params import GenerationParams, GenerationResult
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
        # Converted LMs (bf16 / int8) and the last Generator, kept between calls; a plain dict, so
        # never in state_dict.
        self._prepared: dict[str, tuple] = {}

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    @property
    def frame_rate(self) -> int:
        return self.codec.frame_rate

    @property
    def device(self) -> torch.device:
        return self.lm.norm.weight.device

    def default_window(self):
        """The long-form `WindowParams` for this model: windows and contexts as long as it was
        trained on (`config.window_seconds`), consecutive windows overlapping by half."""
        from stage.generate.longform import WindowParams

        w = float(self.config.window_seconds)
        if w == WindowParams.window_seconds:
            return WindowParams()
        return WindowParams(window_seconds=w, context_seconds=w, prompt_seconds=w / 2)

    def save(self, out_dir, bundle: bool = True, overwrite: bool = False, dtype: torch.dtype | None = None) -> Path:
        """Write a stage checkpoint folder (see `stage.model.saving.save_checkpoint`)."""
        from stage.model.saving import save_checkpoint

        return save_checkpoint(self, out_dir, bundle=bundle, overwrite=overwrite, dtype=dtype)

    # ------------------------------------------------------------------ audio <-> codes

    def to_model_audio(self, audio, sample_rate: int, what: str = "audio") -> np.ndarray:
        """[C, N] or [N] audio at `sample_rate` -> float32 [1, N'] mono at the model's rate.

        Refuses NaN/inf, empty input and audio shorter than one codec frame."""
        x = prepare(audio, sample_rate, self.sample_rate, what)
        if x.shape[-1] < self.codec.hop_length:
            raise StageError(
                f"{what} is {x.shape[-1] / self.sample_rate * 1000:.1f} ms long; it must cover at least one "
                f"codec frame ({1000 / self.frame_rate:.0f} ms)"
            )
        return x

    def encode_model_audio(self, x: np.ndarray) -> Tensor:
        """[1, N] mono float at the model's rate -> codes [1, K, ceil(N / hop)]."""
        wav = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None].to(self.device)  # [1, 1, N]
        return self.codec.encode(wav)  # [1, K, T]

    def encode_audio(self, audio, sample_rate: int, what: str = "audio") -> Tensor:
        """[C, N] or [N] audio at `sample_rate` -> codes [1, K, T] (down-mixed, resampled to 32 kHz)."""
        return self.encode_model_audio(self.to_model_audio(audio, sample_rate, what))

    def decode_model_audio(self, codes: Tensor) -> np.ndarray:
        """codes [V, K, T] -> float32 [V, 1, T * hop] at the model's rate."""
        return self.codec.decode(codes.to(self.device)).cpu().numpy()

    def finish_audio(self, audio: np.ndarray, num_samples: int, sample_rate: int, channels: int) -> np.ndarray:
        """[V, 1, N] at the model rate -> float32 [V, C, num_samples] at `sample_rate` (resampled,
        cut or zero-padded to the exact length, mono copied to C channels)."""
        out = np.stack([resample(np.asarray(a, np.float32), self.sample_rate, sample_rate) for a in audio])
        out = fit_length(out, num_samples)
        return np.repeat(out, channels, axis=1).astype(np.float32)

    def prepared_lm(self, precision: str) -> StageLM:
        """The LM converted for `precision` (generate/quantize.py), cached while the weights are
        unchanged (keyed on every parameter's storage and version counter)."""
        from stage.generate.quantize import prepare_lm

        if precision == "fp32":
            return prepare_lm(self.lm, precision)
        key = self._weights_key()
        hit = self._prepared.get(precision)
        if hit is None or hit[0] != key:
            self._prepared[precision] = (key, prepare_lm(self.lm, precision))
        return self._prepared[precision][1]

    def _weights_key(self) -> tuple:
        """Changes whenever an LM parameter is replaced, moved or modified in place."""
        return tuple((p.data_ptr(), p._version, p.device.type) for p in self.lm.parameters())

    def generator(self, precision: str, variations: int, branches: int, max_steps: int,
                  compile: bool = False, cuda_graphs: bool = False):
        """The cached `Generator` for these sizes: kept between calls (KV caches allocated once,
        packed weights and captured graphs reused) until the sizes or the weights change."""
        from stage.generate.generator import Generator

        key = (precision, variations, branches, max_steps, compile, cuda_graphs, self._weights_key())
        hit = self._prepared.get("generator")
        if hit is None or hit[0] != key:
            self._prepared.pop("generator", None)  # free the old caches first
            gen = Generator(self.prepared_lm(precision), max_steps, batch=variations, branches=branches,
                            precision=precision, compile=compile, cuda_graphs=cuda_graphs)
            self._prepared["generator"] = (key, gen)
        return self._prepared["generator"][1]

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
        engine: str = "cached",
        precision: str = "fp32",
        window=None,
        compile: bool = False,
        cuda_graphs: bool = False,
        output_rate: int | None = None,
    ) -> GenerationResult:
        """Generate `variations` stems that fit `context`.

        context: the mix (or a click track) as [C, N] / [N] float audio at `sample_rate`, or None
          for text-only generation. Context and stem start at the same time (§3.5).
        sample_rate: rate of `context`/`continuation` (default 32 kHz). output_rate: rate of the
          returned stems (default: `sample_rate`); a click context rendered at 32 kHz for a 44.1
          kHz song gets its stems at 44.1 kHz in one resampling step.
        prompt: the text description ("" or None = no text).
        seconds: stem length (default: the context's length, else one window: `config.window_seconds`,
          10 s for the authors' models). Longer than one window: whole-song accompaniment, window
          by window (generate/longform.py); each
          window is conditioned on the time-aligned part of the mix (a mix shorter than `seconds`
          conditions only the windows it reaches).
        bpm / beats_per_bar / offset: tempo control. A metronome click track (the training recipe,
          §4) at `bpm`, first downbeat at `offset` seconds, becomes the context. It **replaces** the
          mix as the model's input, as in training; a given `context` then only sets the length
          and channel count of the result.
        continuation: optional [C, N] audio of the stem to continue (it is part of `seconds`; in
          long-form it must be shorter than one window).
        progress: called as progress(step, total) after every sampling step.
        engine: "cached" (the Generator, default) or "reference" (the authors' uncached loop, slow;
          for tests). precision: "fp32" (exact), "bf16" / "fp16" (GPU), "int8" (CPU); see
          generate/quantize.py. window: `WindowParams` (window, context, prompt and crossfade
          lengths; default `default_window()`). compile / cuda_graphs: the Generator's static
          decode step options.
        Returns a GenerationResult with stems [V, C, N] (C = the context's channel count, N the
        requested length at `output_rate`) and timings (seconds per phase, real-time factor).
        """
        from stage.generate.longform import WindowParams, generate_longform
        from stage.generate.quantize import check_precision
        from stage.generate.sampling import make_generators

        if self.lm.training:
            raise StageError("the model is in training mode; call model.eval() before generating")
        t0 = time.perf_counter()
        sample_rate = check_rate(self.sample_rate if sample_rate is None else sample_rate, "sample_rate")
        output_rate = sample_rate if output_rate is None else check_rate(output_rate, "output_rate")
        if isinstance(variations, bool) or not isinstance(variations, (int, np.integer)) or not 1 <= variations <= MAX_VARIATIONS:
            raise StageError(f"variations must be an integer in 1..{MAX_VARIATIONS}, got {variations!r}")
        if not isinstance(params, GenerationParams):
            raise StageError(f"params must be a GenerationParams, got {type(params).__name__}")
        if engine not in ("cached", "reference"):
            raise StageError(f"engine must be 'cached' or 'reference', got {engine!r}")
        window = self.default_window() if window is None else window
        if not isinstance(window, WindowParams):
            raise StageError(f"window must be a WindowParams, got {type(window).__name__}")
        if engine == "cached":
            check_precision(precision, self.device)
        elif precision != "fp32" or compile or cuda_graphs:
            raise StageError("the reference engine runs in fp32 only, without compile or CUDA graphs")
        elif params.text_guidance is not None:
            raise StageError("the reference engine has the authors' joint guidance only; drop text_guidance")
        V = int(variations)
        channels, mix, context_samples = 1, None, None
        if context is not None:
            x = as_channels_first(context, "context")
            channels, context_samples = x.shape[0], x.shape[1]
            mix = self.to_model_audio(x, sample_rate, "context")  # [1, N32]
        if seconds is None:
            seconds = context_samples / sample_rate if context_samples else window.window_seconds
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float, np.number)) or not np.isfinite(seconds) or seconds <= 0:
            raise StageError(f"seconds must be a number > 0, got {seconds!r}")
        if seconds > MAX_SECONDS:  # the output buffers grow with the length: refuse before allocating
            raise StageError(f"seconds must be at most {MAX_SECONDS:g} (one hour), got {seconds:g}")
        if bpm is not None:
            from stage.data.metronome import render_metronome

            mix = render_metronome(bpm, beats_per_bar, seconds, offset, self.sample_rate)[None]  # [1, N32]
        if mix is not None and self.config.lm.layout == "musicgen":
            raise StageError("a plain MusicGen model takes no context or metronome; use a STAGE model")
        num_samples = int(round(seconds * output_rate))
        total_frames = max(1, self.codec.num_frames(int(round(seconds * self.sample_rate))))
        win_frames = window.frames(self.frame_rate)[0]
        prompt_codes = None
        if continuation is not None:
            prompt_codes = self.encode_audio(continuation, sample_rate, "continuation")[..., :total_frames]  # [1, K, P]
            if total_frames > win_frames and prompt_codes.shape[-1] >= win_frames:
                raise StageError(
                    f"the continuation ({prompt_codes.shape[-1] / self.frame_rate:.1f} s) must be shorter than one "
                    f"window ({window.window_seconds} s) for long-form generation"
                )
        cond = self.text([prompt])  # [1, N, D], shared by every variation
        t_text = time.perf_counter()
        base = params.seed if params.seed is not None else secrets.randbelow(2**31)
        seeds = [base + v for v in range(V)]
        generators = make_generators(seeds, self.device)
        run = self._window_runner(engine, cond, params, V, generators, window, total_frames, mix, precision, compile, cuda_graphs)

        first = [True]

        def run_window(ctx, prm, n, prog):
            if first[0] and prompt_codes is not None:  # the caller's continuation opens the first window
                prm = prompt_codes
            first[0] = False
            return run(ctx, prm, n, prog)

        out = generate_longform(
            run_window, self.encode_model_audio, self.decode_model_audio, mix, total_frames, window,
            self.frame_rate, self.codec.hop_length, progress=progress, extra_steps=max(self.config.lm.delays),
            first_prompt=0 if prompt_codes is None else prompt_codes.shape[-1],
        )
        t_lm_end = time.perf_counter()
        stems = self.finish_audio(out.audio, num_samples, output_rate, channels)
        t_end = time.perf_counter()
        lm_seconds = out.prefill_seconds + out.decode_seconds
        timings = {
            "encode": (t_text - t0) + out.encode_seconds,
            "lm": lm_seconds if engine == "cached" else (t_lm_end - t_text) - out.encode_seconds - out.codec_decode_seconds,
            "prefill": out.prefill_seconds,
            "decode_steps": float(out.steps),
            "step_ms": out.step_ms,
            "decode": out.codec_decode_seconds + (t_end - t_lm_end),
            "windows": float(len(out.windows)),
            "total": t_end - t0,
        }
        timings["real_time_factor"] = timings["total"] / seconds
        timings["x_real_time"] = seconds / timings["total"]
        return GenerationResult(stems=stems, sample_rate=output_rate, codes=out.codes.cpu(), seeds=seeds, timings=timings)

    def _window_runner(self, engine, cond, params, V, generators, window, total_frames, mix, precision, compile, cuda_graphs):
        """run(context [1, K, Tc] | None, prompt [1|V, K, P] | None, frames, progress) for one window."""
        from types import SimpleNamespace

        from stage.generate.generator import steps_needed
        from stage.generate.reference import reference_generate

        if engine == "reference":

            def run_reference(ctx, prm, n, prog):
                ctx = None if ctx is None else ctx.expand(V, -1, -1)
                prm = None if prm is None else prm.expand(V, -1, -1)
                codes = reference_generate(self.lm, cond.repeat(V), n, params, context=ctx, prompt=prm,
                                           generators=generators, progress=prog)
                return SimpleNamespace(codes=codes)

            return run_reference
        win, ctx_frames, _ = window.frames(self.frame_rate)
        frames = min(win, total_frames)
        context_frames = 0 if mix is None else min(ctx_frames, frames)
        steps = steps_needed(self.config.lm, frames, context_frames)
        gen = self.generator(precision, V, params.branches, steps, compile, cuda_graphs)

        def run(ctx, prm, n, prog):
            return gen.generate(cond, n, params, context=ctx, prompt=prm, variations=V, generators=generators, progress=prog)

        return run
