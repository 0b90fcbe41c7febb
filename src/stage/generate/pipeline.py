"""`generate_stems`: audio and a `GenerationOptions` in, stems out (the library's one generate call).

    model = stage.load_model("tiny")
    options = stage.GenerationOptions(prompt="funky drums", seconds=10, seed=7)
    result = stage.generate_stems(model, mix, 44_100, options)
    result.stems  # float32 [B, C, N] at 44.1 kHz (B variations), C = the mix's channels

The LM works on 32 kHz mono EnCodec codes; `generate_stems` resamples and down-mixes the
context on the way in and restores the caller's rate and channel count on the way out, with the
model's audio helpers (`StageModel.to_model_audio`, `finish_audio`). Generation runs the cached
`Generator` (generator.py); a song longer than one window (10 s) is accompanied window by window
(longform.py). `engine="reference"` runs the authors' uncached loop (reference.py).

Streaming: `on_chunk` receives the stem's audio while it is generated, an `AudioChunk` every
`chunk_seconds` of completed frames (after the delay pattern), decoded with overlap by
`tokens.stream.StreamingDecoder`; the chunks joined are the result's audio (before resampling),
equal to the offline decode of the same codes to float rounding (the decoder's LSTM state is
carried from chunk to chunk; tolerance stated there). The codes are
exactly those of a run without streaming. A take longer than one window streams window by
window: after each long-form window, the stem up to the next window's crossfade is final and is
handed out (`generate_longform(on_audio=...)`); those chunks joined are the result's audio exactly.

The model keeps what is worth keeping between calls in `model.generation_cache` (a plain dict,
never in the state dict): the LM converted for a precision (`cached_lm`) and the last
`Generator` (`cached_generator`, its KV caches allocated once), both dropped when a weight
changes (`StageModel.weights_key`).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch

from stage.audio import MAX_SECONDS, as_channels_first, check_rate
from stage.errors import OptionError, StageError
from stage.generate.generator import Generator, steps_needed
from stage.generate.longform import generate_longform
from stage.generate.params import GenerationOptions, GenerationParams, GenerationResult, WindowParams
from stage.generate.quantize import check_precision, prepare_lm
from stage.generate.reference import reference_generate
from stage.generate.sampling import make_generators
from stage.model.lm import StageLM
from stage.model.stage_model import StageModel
from stage.tokens.stream import StreamingDecoder

DEFAULT_OPTIONS = GenerationOptions()


@dataclass
class AudioChunk:
    """A piece of a streamed generation: audio float32 [B, 1, n] at the model rate (B variations)
    covering frames [first, stop), i.e. samples [first * hop, stop * hop); final: the last chunk;
    seconds: time since `generate_stems` was called."""

    audio: np.ndarray
    first: int
    stop: int
    final: bool
    seconds: float


def default_window(model: StageModel) -> WindowParams:
    """The long-form `WindowParams` for `model`: windows and contexts as long as it was trained
    on (`config.window_seconds`), consecutive windows overlapping by half."""
    return WindowParams.trained(model.config.window_seconds)


def fits_one_window(model: StageModel, seconds: float, window: WindowParams | None = None) -> bool:
    """Whether a stem of `seconds` is generated in one window (and so can be streamed)."""
    window = default_window(model) if window is None else window
    total_frames = max(1, model.codec.num_frames(int(round(seconds * model.sample_rate))))
    return total_frames <= window.frames(model.frame_rate)[0]


def cached_lm(model: StageModel, precision: str) -> StageLM:
    """The LM converted for `precision` (quantize.py), kept while the weights are unchanged."""
    if precision == "fp32":
        return prepare_lm(model.lm, precision)
    key = model.weights_key()
    hit = model.generation_cache.get(precision)
    if hit is None or hit[0] != key:
        model.generation_cache[precision] = (key, prepare_lm(model.lm, precision))
    return model.generation_cache[precision][1]


def cached_generator(model: StageModel, precision: str, variations: int, branches: int, max_steps: int,
                     compile: bool = False, cuda_graphs: bool = False) -> Generator:
    """The `Generator` for these sizes: kept between calls (KV caches allocated once, packed
    weights and captured graphs reused) until the sizes or the weights change."""
    key = (precision, variations, branches, max_steps, compile, cuda_graphs, model.weights_key())
    hit = model.generation_cache.get("generator")
    if hit is None or hit[0] != key:
        model.generation_cache.pop("generator", None)  # free the old caches first
        gen = Generator(cached_lm(model, precision), max_steps, batch=variations, branches=branches,
                        precision=precision, compile=compile, cuda_graphs=cuda_graphs)
        model.generation_cache["generator"] = (key, gen)
    return model.generation_cache["generator"][1]


@torch.no_grad()
def generate_stems(
    model: StageModel,
    context=None,
    sample_rate: int | None = None,
    options: GenerationOptions = DEFAULT_OPTIONS,
    continuation=None,
    progress: Callable[[int, int], None] | None = None,
    on_chunk: Callable[[AudioChunk], None] | None = None,
    chunk_seconds: float = 1.0,
) -> GenerationResult:
    """Generate `options.variations` stems that fit `context`.

    context: the mix (or a click track) as [C, N] / [N] float audio at `sample_rate`, or None
      for text-only generation. Context and stem start at the same time (§3.5). Each long-form
      window is conditioned on the time-aligned part of the mix (a mix shorter than the stem
      conditions only the windows it reaches).
    sample_rate: rate of `context` and `continuation` (default: the model's, 32 kHz).
    options: a `GenerationOptions` (prompt, seconds, variations, sampling, tempo, output rate,
      windows, engine, precision); see stage.generate.params.
    continuation: optional [C, N] audio of the stem to continue (it is part of `seconds`; in
      long-form it must be shorter than one window).
    progress: called as progress(step, total) after every sampling step.
    on_chunk: streaming (see the module docstring): called with each `AudioChunk`, the first one
      after `chunk_seconds` of stem frames are complete, the last one (final=True) at the end.
    Returns a GenerationResult with stems [B, C, N] (B variations, C = the context's channel count, N the
    requested length at `options.output_rate`) and timings (seconds per phase, real-time factor).
    """
    if not isinstance(options, GenerationOptions):
        raise OptionError("options", f"must be a GenerationOptions, got {type(options).__name__}")
    if model.lm.training:
        raise StageError("the model is in training mode; call model.eval() before generating")
    t0 = time.perf_counter()
    sample_rate = check_rate(model.sample_rate if sample_rate is None else sample_rate, "sample_rate")
    output_rate = sample_rate if options.output_rate is None else options.output_rate
    window = default_window(model) if options.window is None else options.window
    if options.engine == "cached":
        check_precision(options.precision, model.device)  # the name is checked already; this checks the device
    B = int(options.variations)
    channels, mix, context_samples = 1, None, None
    if context is not None:
        x = as_channels_first(context, "context")
        channels, context_samples = x.shape[0], x.shape[1]
        mix = model.to_model_audio(x, sample_rate, "context")  # [1, N32]
    seconds = options.seconds
    if seconds is None:  # the context's length (checked like a given length), else one window
        seconds = context_samples / sample_rate if context_samples else window.window_seconds
        if seconds > MAX_SECONDS:
            raise OptionError("seconds", f"must be at most {MAX_SECONDS:g} (one hour); the context is {seconds:g} s")
    if options.bpm is not None:
        from stage.data.metronome import render_metronome

        mix = render_metronome(options.bpm, options.beats_per_bar, seconds, options.offset, model.sample_rate)[None]  # [1, N32]
    if mix is not None and model.config.lm.layout == "musicgen":
        raise StageError("a plain MusicGen model takes no context or metronome; use a STAGE model")
    num_samples = int(round(seconds * output_rate))
    total_frames = max(1, model.codec.num_frames(int(round(seconds * model.sample_rate))))
    win_frames = window.frames(model.frame_rate)[0]
    prompt_codes = None
    if continuation is not None:
        prompt_codes = model.encode_audio(continuation, sample_rate, "continuation")[..., :total_frames]  # [1, K, P]
        if total_frames > win_frames and prompt_codes.shape[-1] >= win_frames:
            raise StageError(
                f"the continuation ({prompt_codes.shape[-1] / model.frame_rate:.1f} s) must be shorter than one "
                f"window ({window.window_seconds} s) for long-form generation"
            )
    stream = None
    by_window: Callable[[np.ndarray, int, bool], None] | None = None
    if on_chunk is not None:
        if options.engine != "cached":
            raise StageError("streaming needs the cached engine (engine='cached')")
        if not isinstance(chunk_seconds, (int, float)) or not np.isfinite(chunk_seconds) or chunk_seconds <= 0:
            raise OptionError("chunk_seconds", f"must be a number > 0, got {chunk_seconds!r}")
        if fits_one_window(model, seconds, window):
            stream = _Stream(on_chunk, StreamingDecoder(model.codec),
                             max(1, int(round(chunk_seconds * model.frame_rate))), t0)
        else:
            by_window = _window_chunks(on_chunk, model.codec.hop_length, t0)
    cond = model.text([options.prompt])  # [1, L, D], shared by every variation
    t_text = time.perf_counter()
    base = options.seed if options.seed is not None else secrets.randbelow(2**31)
    seeds = [base + v for v in range(B)]
    generators = make_generators(seeds, model.device)
    run = _window_runner(model, options, cond, generators, window, total_frames, mix, stream)

    first = [True]

    def run_window(ctx, prm, n, prog):
        if first[0] and prompt_codes is not None:  # the caller's continuation opens the first window
            prm = prompt_codes
        first[0] = False
        return run(ctx, prm, n, prog)

    out = generate_longform(
        run_window, model.encode_model_audio, model.decode_model_audio if stream is None else stream.finish, mix,
        total_frames, window,
        model.frame_rate, model.codec.hop_length, progress=progress, extra_steps=max(model.config.lm.delays),
        first_prompt=0 if prompt_codes is None else prompt_codes.shape[-1], on_audio=by_window,
    )
    t_lm_end = time.perf_counter()
    stems = model.finish_audio(out.audio, num_samples, output_rate, channels)
    t_end = time.perf_counter()
    lm_seconds = out.prefill_seconds + out.decode_seconds
    timings = {
        "encode": (t_text - t0) + out.encode_seconds,
        "lm": lm_seconds if options.engine == "cached" else (t_lm_end - t_text) - out.encode_seconds - out.codec_decode_seconds,
        "prefill": out.prefill_seconds,
        "decode_steps": float(out.steps),
        "step_ms": out.step_ms,
        "decode": out.codec_decode_seconds + (t_end - t_lm_end) + (0.0 if stream is None else stream.seconds),
        "windows": float(len(out.windows)),
        "total": t_end - t0,
    }
    if stream is not None:
        timings["first_audio"] = stream.first_audio
        timings["stream_chunks"] = float(stream.chunks)
    timings["real_time_factor"] = timings["total"] / seconds
    timings["x_real_time"] = seconds / timings["total"]
    return GenerationResult(stems=stems, sample_rate=output_rate, codes=out.codes.cpu(), seeds=seeds, timings=timings)


def _window_chunks(on_chunk: Callable[[AudioChunk], None], hop: int, t0: float) -> Callable[[np.ndarray, int, bool], None]:
    """Long-form streaming: `generate_longform`'s on_audio (the audio made final by each window)
    as `AudioChunk`s."""
    def on_audio(audio: np.ndarray, first: int, last: bool) -> None:
        on_chunk(AudioChunk(audio, first // hop, (first + audio.shape[-1]) // hop, last, time.perf_counter() - t0))
    return on_audio


class _Stream:
    """The streaming state of one `generate_stems` call: the Generator's `on_frames` feeds the
    decoder, each newly final piece of audio goes to `on_chunk`; `finish` (long-form's decode of
    the one window) flushes and returns the joined stream."""

    def __init__(self, on_chunk: Callable[[AudioChunk], None], decoder: StreamingDecoder, chunk_frames: int, t0: float):
        self.on_chunk, self.decoder, self.chunk_frames, self.t0 = on_chunk, decoder, chunk_frames, t0
        self.seconds = 0.0  # codec time inside on_frames (the Generator leaves it out of its decode time)
        self.first_audio = float("nan")
        self.chunks = 0

    def on_frames(self, first: int, frames) -> None:
        t = time.perf_counter()
        self._send(self.decoder.push(frames), final=False)
        self.seconds += time.perf_counter() - t

    def finish(self, codes) -> np.ndarray:
        """Flush the decoder; the joined stream [B, 1, T * hop] (codes: the window's [B, K, T])."""
        streamed = self.decoder.codes
        if streamed is None or streamed.shape != codes.shape or not torch.equal(streamed.cpu(), codes.cpu()):
            raise RuntimeError("the streamed codes differ from the generated ones")  # unreachable: a bug guard
        self._send(self.decoder.flush(), final=True)
        return self.decoder.audio()

    def _send(self, audio: np.ndarray, final: bool) -> None:
        if audio.shape[-1] == 0 and not final:
            return
        hop = self.decoder.hop
        stop = self.decoder.emitted
        first = stop - audio.shape[-1] // hop
        now = time.perf_counter() - self.t0
        if self.chunks == 0:
            self.first_audio = now
        self.chunks += 1
        self.on_chunk(AudioChunk(audio, first, stop, final, now))


def _window_runner(model: StageModel, options: GenerationOptions, cond, generators, window: WindowParams,
                   total_frames: int, mix, stream: _Stream | None = None):
    """run(context [1, K, Tc] | None, prompt [1|B, K, P] | None, frames, progress) for one window."""
    B = int(options.variations)
    params: GenerationParams = options.params
    if options.engine == "reference":

        def run_reference(ctx, prm, n, prog):
            ctx = None if ctx is None else ctx.expand(B, -1, -1)  # [B, K, Tc]
            prm = None if prm is None else prm.expand(B, -1, -1)  # [B, K, P]
            codes = reference_generate(model.lm, cond.repeat(B), n, params, context=ctx, prompt=prm,
                                       generators=generators, progress=prog)
            return SimpleNamespace(codes=codes)

        return run_reference
    win, ctx_frames, _ = window.frames(model.frame_rate)
    frames = min(win, total_frames)
    context_frames = 0 if mix is None else min(ctx_frames, frames)
    steps = steps_needed(model.config.lm, frames, context_frames)
    gen = cached_generator(model, options.precision, B, params.branches, steps, options.compile, options.cuda_graphs)

    def run(ctx, prm, n, prog):
        if stream is not None:
            return gen.generate(cond, n, params, context=ctx, prompt=prm, variations=B, generators=generators,
                                progress=prog, on_frames=stream.on_frames, chunk_frames=stream.chunk_frames)
        return gen.generate(cond, n, params, context=ctx, prompt=prm, variations=B, generators=generators, progress=prog)

    return run
