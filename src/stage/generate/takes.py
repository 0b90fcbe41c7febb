"""What to generate and what the model hears: the `TakeSettings`, the `Context` and the `TakePlan`.

A *take* is one generated stem, written next to a `*_mix.wav` preview and a JSON sidecar with
everything needed to reproduce it. `stage generate`, `stage session` and `stage studio` all go
through `plan_takes` (here), `render_takes` (render.py) and `write_takes` (takefiles.py, with
the names from naming.py), so they behave the same.

What the model hears (the *context*) depends on the tempo option. The released STAGE models
take either a mix or a click track as context, never both (docs/method.md §4: with p = 0.5 the
click track *replaces* the mix in training), so exactly one of these is passed to the model:

| option            | context (what the model hears)                                    | MIX is used for            |
|-------------------|--------------------------------------------------------------------|----------------------------|
| (no --bpm)        | the mix itself, down-mixed to mono, resampled to 32 kHz, cropped to | context, length, rate,     |
|                   | the output window `[0, seconds)` (a longer context is out of        | channels, preview          |
|                   | distribution, §3.5)                                                 |                            |
| `--bpm N`         | a metronome at N BPM, accent every `--beats-per-bar` beats, first   | length, rate, channels,    |
|                   | downbeat at `--offset` s, rendered at 32 kHz with the training      | preview                    |
|                   | recipe (§4: 1 kHz librosa clicks, beats + downbeats summed, clipped)|                            |
|                   | over the whole output window                                        |                            |
| `--bpm auto`      | the same click recipe, placed on the beats and downbeats tracked in | beat tracking, length,     |
|                   | the mix (madmom, librosa fallback) within the output window         | rate, channels, preview    |
| `--metronome-only`| the `--bpm N` metronome; there is no mix (the preview is stem +     | (no MIX)                   |
|                   | click at the output rate)                                           |                            |

The output format (rate, channels, length, headroom) is described in render.py.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import numpy as np

from stage.audio import MAX_SECONDS, as_channels_first, check_rate
from stage.data.beats import TRACK_MAX_BPM, TRACK_MIN_BPM
from stage.errors import AudioError, StageError
from stage.generate.naming import take_name
from stage.generate.params import MAX_TAKE_VARIATIONS, GenerationParams
from stage.model.registry import check_stem

CONTEXT_MODES = ("mix", "metronome", "beats")


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class TakeSettings:
    """What to generate. Validated on construction (StageError names the bad value).

    bpm: None (the mix is the context), a number (a metronome is the context) or "auto" (a click
      track on the mix's tracked beats is the context).
    beats_per_bar: accent period of the metronome (None = DEFAULT_BEATS_PER_BAR, 4); with
      bpm="auto" it restricts the tracker's meter (None = let the tracker choose 3 or 4).
    offset: time of the metronome's first downbeat, seconds (bpm = N only).
    seconds: output length (None = the mix's length). metronome_only: no mix at all.
    min_bpm / max_bpm: tempo range for bpm="auto" (narrow it to settle half/double time).
    """

    stem: str
    prompt: str = ""
    bpm: float | str | None = None
    beats_per_bar: int | None = None
    offset: float = 0.0
    seconds: float | None = None
    variations: int = 1
    params: GenerationParams = field(default_factory=GenerationParams)
    metronome_only: bool = False
    min_bpm: float = TRACK_MIN_BPM
    max_bpm: float = TRACK_MAX_BPM

    def __post_init__(self) -> None:
        object.__setattr__(self, "stem", check_stem(self.stem))
        object.__setattr__(self, "prompt", self.prompt or "")
        self.validate()

    def validate(self) -> None:
        from stage.data.metronome import (
            DEFAULT_BEATS_PER_BAR,
            MAX_BPM,
            MIN_BPM,
            validate_beats_per_bar,
            validate_tempo,
        )

        if isinstance(self.bpm, str) and self.bpm != "auto":
            raise StageError(f"bpm must be a number or 'auto', got {self.bpm!r}")
        if self.beats_per_bar is not None:
            validate_beats_per_bar(self.beats_per_bar)
        if self.bpm is not None and self.bpm != "auto":
            validate_tempo(float(self.bpm), DEFAULT_BEATS_PER_BAR if self.beats_per_bar is None else self.beats_per_bar)
        if not np.isfinite(self.offset):
            raise StageError(f"offset must be a number of seconds, got {self.offset}")
        if self.offset != 0.0 and (self.bpm is None or self.bpm == "auto"):
            raise StageError("--offset places the metronome's first downbeat; it needs --bpm N")
        if self.seconds is not None and (not np.isfinite(self.seconds) or self.seconds <= 0):
            raise StageError(f"seconds must be > 0, got {self.seconds}")
        if self.seconds is not None and self.seconds > MAX_SECONDS:
            raise StageError(f"seconds must be at most {MAX_SECONDS:g} (one hour), got {self.seconds:g}")
        if not isinstance(self.variations, (int, np.integer)) or not 1 <= self.variations <= MAX_TAKE_VARIATIONS:
            raise StageError(f"variations must be an integer in 1..{MAX_TAKE_VARIATIONS}, got {self.variations!r}")
        if self.metronome_only:
            if self.bpm is None or self.bpm == "auto":
                raise StageError("--metronome-only needs a tempo: --bpm N (there is no mix to track beats in)")
            if self.seconds is None:
                raise StageError("--metronome-only needs --seconds (there is no mix to take the length from)")
        if not MIN_BPM <= self.min_bpm < self.max_bpm <= MAX_BPM:
            raise StageError(f"need {MIN_BPM:.0f} <= min bpm < max bpm <= {MAX_BPM:.0f}, got {self.min_bpm}, {self.max_bpm}")

    @property
    def context_mode(self) -> str:
        if self.bpm is None:
            return "mix"
        return "beats" if self.bpm == "auto" else "metronome"


# --------------------------------------------------------------------------- context


@dataclass
class Context:
    """What the model hears, and the beat grid it implies.

    audio: float32 [C, N] at `sample_rate` (the mix at its own rate, or a mono click at the
      model's 32 kHz). beats / downbeats: seconds from the output's start (None in mix mode).
    """

    mode: str
    audio: np.ndarray
    sample_rate: int
    bpm: float | None = None
    beats_per_bar: int | None = None
    offset: float | None = None
    beats: np.ndarray | None = None
    downbeats: np.ndarray | None = None
    tracker: str | None = None

    def describe(self) -> dict:
        """JSON-able summary for sidecars."""
        out = {"mode": self.mode, "seconds": round(self.audio.shape[-1] / self.sample_rate, 4),
               "sample_rate": self.sample_rate}
        if self.bpm is not None:
            out.update(bpm=round(float(self.bpm), 3), beats_per_bar=self.beats_per_bar)
        if self.offset is not None:
            out["offset"] = round(float(self.offset), 4)
        if self.tracker is not None:
            out["tracker"] = self.tracker
        if self.beats is not None:
            assert self.downbeats is not None  # beats and downbeats come together
            out["beats"] = [round(float(t), 4) for t in self.beats]
            out["downbeats"] = [round(float(t), 4) for t in self.downbeats]
        return out


def build_context(settings: TakeSettings, mix: np.ndarray | None, sample_rate: int, seconds: float, model_rate: int) -> Context:
    """The context for `settings` (see the module docstring's table).

    mix: float32 [C, N] at `sample_rate`, or None (metronome-only). seconds: the output length.
    model_rate: the codec's rate (32 kHz); clicks are rendered there, as in training (§4).
    """
    from stage.data.metronome import DEFAULT_BEATS_PER_BAR, metronome_times, render_clicks

    mode = settings.context_mode
    if mode == "mix":
        assert mix is not None  # plan_takes refuses a missing mix unless metronome-only
        n = int(round(seconds * sample_rate))
        return Context("mix", mix[:, :n], sample_rate)
    if mode == "metronome":
        assert settings.bpm is not None  # context_mode says "mix" when it is None
        bpm, bpb = float(settings.bpm), settings.beats_per_bar or DEFAULT_BEATS_PER_BAR
        beats, downbeats = metronome_times(bpm, bpb, seconds, settings.offset)
        if len(beats) == 0:  # a silent click: the model would hear no tempo at all
            raise StageError(f"--offset {settings.offset:g} puts the first beat after the end ({seconds:g} s)")
        click = render_clicks(beats, downbeats, seconds, model_rate)[None]  # [1, N]
        return Context("metronome", click, model_rate, bpm, bpb, settings.offset, beats, downbeats)
    from stage.data.beats import track_beats

    # Track the whole mix (more music gives the tracker a steadier tempo and meter), then keep the
    # beats inside the output window.
    meters = (settings.beats_per_bar,) if settings.beats_per_bar else (3, 4)
    grid = track_beats(mix, sample_rate, beats_per_bar=meters, min_bpm=settings.min_bpm, max_bpm=settings.max_bpm)
    beats, downbeats = grid.beats[grid.beats < seconds], grid.downbeats[grid.downbeats < seconds]
    if len(beats) == 0:
        raise AudioError(f"no beats found in the first {seconds:g} s of the mix (give the tempo with --bpm N)")
    click = render_clicks(beats, downbeats, seconds, model_rate)[None]  # [1, N]
    return Context("beats", click, model_rate, grid.bpm, grid.beats_per_bar, grid.offset, beats, downbeats, grid.source)


# --------------------------------------------------------------------------- plan


@dataclass
class TakePlan:
    """Everything decided before the model runs: the context, the output format and the seeds.

    mix: float32 [C, N] at `sample_rate` (None with metronome-only). Variation v uses seed
    `base_seed + v` (reproducible on its own, see stage.generate.sampling).
    """

    settings: TakeSettings
    mix: np.ndarray | None
    sample_rate: int
    channels: int
    samples: int
    context: Context
    base_seed: int

    @property
    def seconds(self) -> float:
        return self.samples / self.sample_rate

    @property
    def bpm(self) -> float | None:
        return self.context.bpm

    @property
    def seeds(self) -> list[int]:
        return [self.base_seed + v for v in range(self.settings.variations)]

    def names(self, prefix: str) -> list[str]:
        """File stems of the takes (see `take_name`)."""
        return [take_name(prefix, self.settings.stem, self.bpm, seed) for seed in self.seeds]


def plan_takes(settings: TakeSettings, mix: np.ndarray | None, sample_rate: int, model_rate: int) -> TakePlan:
    """Validate the input, build the context (tracking beats for bpm="auto") and fix the seeds.

    mix: float [C, N] at `sample_rate`, or None with metronome_only. The output has the mix's rate,
    channel count and length (`settings.seconds` when given).
    """
    check_rate(sample_rate, "sample rate")
    if mix is None:
        if not settings.metronome_only:
            raise StageError("no mix given (use --metronome-only to generate from a click alone)")
        channels = 1
    else:
        if settings.metronome_only:
            raise StageError("--metronome-only generates from a click alone; do not give a MIX")
        mix = as_channels_first(mix, "mix")
        channels = mix.shape[0]
    if settings.seconds is not None:
        seconds = settings.seconds
    else:
        assert mix is not None  # metronome-only needs seconds (TakeSettings.validate)
        seconds = mix.shape[-1] / sample_rate
    samples = int(round(seconds * sample_rate))
    if samples < 1:
        raise StageError(f"the output would be empty ({seconds} s at {sample_rate} Hz)")
    context = build_context(settings, mix, sample_rate, samples / sample_rate, model_rate)
    base = settings.params.seed if settings.params.seed is not None else secrets.randbelow(2**31)
    return TakePlan(settings, mix, sample_rate, channels, samples, context, int(base))
