"""Rendering takes: run the model for a `TakePlan` and turn its stems into takes at the input's format.

Stems and mixes keep the input's sample rate and channel count (the model's mono output is
copied to every channel), start at the input's first sample and last exactly `seconds`.
Previews are `input + stem`, scaled down (never up) so the peak stays at or below -1 dBFS, so
nothing clips; a stem that itself peaks above -1 dBFS is scaled the same way. Every gain is
recorded in the sidecar.

Streaming (`on_partial`): while the model runs, the stems so far are handed out at the output
format (resampled from the model rate as a whole each time, so the part already handed out is
refined at its end by the resampler's edge), each scaled by the headroom gain of what exists so
far; the final takes are rendered as without streaming, from the joined stream.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from stage.audio import db_to_gain, fit_length
from stage.generate.params import GenerationOptions
from stage.generate.takes import Context, TakePlan, TakeSettings

HEADROOM_DB = -1.0
CEILING = db_to_gain(HEADROOM_DB)  # peak ceiling of written mixes and stems (about 0.891)
Progress = Callable[[int, int], None]


def headroom_gain(x: np.ndarray, ceiling: float = CEILING) -> float:
    """The gain (<= 1) that brings the peak of `x` down to `ceiling`; 1 when it is already below."""
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    return 1.0 if peak <= ceiling else ceiling / peak


def mix_with_headroom(*tracks: np.ndarray) -> tuple[np.ndarray, float]:
    """Sum equally shaped [C, N] tracks, then scale down (never up) to the -1 dBFS ceiling.
    Returns (mix, gain)."""
    total = np.sum(np.stack([t.astype(np.float64) for t in tracks]), axis=0)
    gain = headroom_gain(total)
    return (total * gain).astype(np.float32), gain


@dataclass
class Take:
    """One variation: the stem and its preview mix, float32 [C, N] at the input's rate."""

    index: int
    seed: int
    stem: np.ndarray
    mix: np.ndarray
    stem_gain: float
    mix_gain: float


@dataclass
class TakeSet:
    """The result of `render_takes`: B takes over one context, with the model's codes
    (int64 [B, K, T]) and timings (seconds per phase, real-time factor)."""

    plan: TakePlan
    takes: list[Take]
    timings: dict[str, float]
    codes: object = None

    @property
    def settings(self) -> TakeSettings:
        return self.plan.settings

    @property
    def context(self) -> Context:
        return self.plan.context

    @property
    def sample_rate(self) -> int:
        return self.plan.sample_rate

    @property
    def channels(self) -> int:
        return self.plan.channels

    @property
    def samples(self) -> int:
        return self.plan.samples

    @property
    def seconds(self) -> float:
        return self.plan.seconds

    @property
    def bpm(self) -> float | None:
        return self.plan.bpm


def partial_stems(model, audio: np.ndarray, plan: TakePlan) -> np.ndarray:
    """The stems so far at the take's format: audio float32 [B, 1, n] at the model rate ->
    float32 [B, C, m] at `plan.sample_rate` (m = n samples' worth, at most `plan.samples`), each
    scaled down (never up) to the headroom ceiling."""
    m = min(plan.samples, int(round(audio.shape[-1] * plan.sample_rate / model.sample_rate)))
    stems = model.finish_audio(audio, m, plan.sample_rate, plan.channels)  # [B, C, m]
    return np.stack([(s * headroom_gain(s)).astype(np.float32) for s in stems])


def render_takes(model, plan: TakePlan, progress: Progress | None = None, precision: str = "fp32",
                 on_partial: Callable[[np.ndarray], None] | None = None, chunk_seconds: float = 1.0) -> TakeSet:
    """Run the model for `plan` and return the stems and their preview mixes at the input's rate,
    channel count and length. progress(done, total) is called after every decoding step;
    precision is passed to `generate_stems` ("fp32", "int8" on CPU, "bf16"/"fp16" on GPU).
    on_partial(stems [B, C, m]): streaming, called every `chunk_seconds` of generated stem with
    the stems so far (`partial_stems`; see the module docstring)."""
    from stage.generate.pipeline import AudioChunk, generate_stems

    t0 = time.perf_counter()
    settings, context = plan.settings, plan.context
    options = GenerationOptions.from_params(settings.params, seed=plan.base_seed, prompt=settings.prompt,
                                            seconds=plan.seconds, variations=settings.variations,
                                            output_rate=plan.sample_rate, precision=precision)
    on_chunk = None
    if on_partial is not None:
        pieces: list[np.ndarray] = []

        def on_chunk(chunk: AudioChunk) -> None:
            pieces.append(chunk.audio)
            if not chunk.final:  # the final takes are rendered below, as without streaming
                on_partial(partial_stems(model, np.concatenate(pieces, axis=-1), plan))

    result = generate_stems(model, context.audio, context.sample_rate, options, progress=progress, on_chunk=on_chunk,
                            chunk_seconds=chunk_seconds)
    stems = fit_length(result.stems, plan.samples)  # [B, C', N] at the input's rate (clicks were given at 32 kHz)
    if stems.shape[1] != plan.channels:  # the model is mono: copy it to every channel of the input
        stems = np.repeat(stems[:, :1], plan.channels, axis=1)
    if plan.mix is not None:
        backing = fit_length(plan.mix, plan.samples)
    else:  # metronome-only: preview the stem against the click, at the output rate
        from stage.data.metronome import render_clicks

        backing = render_clicks(context.beats, context.downbeats, plan.seconds, plan.sample_rate)[None]
    takes = []
    for v, (stem, seed) in enumerate(zip(stems, result.seeds)):
        stem_gain = headroom_gain(stem)
        stem = (stem * stem_gain).astype(np.float32)
        preview, mix_gain = mix_with_headroom(backing, stem)
        takes.append(Take(v, int(seed), stem, preview, stem_gain, mix_gain))
    timings = {**{f"model/{k}": v for k, v in result.timings.items()}, "total": time.perf_counter() - t0}
    timings["real_time_factor"] = timings["total"] / (plan.seconds * settings.variations)
    return TakeSet(plan, takes, timings, result.codes)
