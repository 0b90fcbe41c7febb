"""Generation options and results as dataclasses (docs/method.md §5 defaults).

- `GenerationParams`: the sampling options (guidance, temperature, top-k, top-p, seed), what the
  `Generator` and the reference loop take.
- `WindowParams`: the long-form windows (generate/longform.py).
- `GenerationOptions`: everything `generate_stems` (generate/pipeline.py) takes besides the audio:
  the sampling options (it extends `GenerationParams`), the length, the number of variations,
  the tempo, the output rate, the windows and the engine. The CLI (`stage generate`,
  `stage session`) and the studio take their defaults from it.

All are frozen and validated on construction by one `validate()`; a bad value raises an
`OptionError` (a ConfigError, so a StageError) whose one-line message starts with the field's
name.

    options = GenerationOptions(prompt="rock drums", seconds=10, variations=2, seed=7)
    options = dataclasses.replace(options, top_k=1)        # a changed copy, validated again

Only numpy and stage's light modules are imported here: the CLI builds its parser from these
defaults, and `stage --help` must stay fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np

from stage.audio import MAX_SAMPLE_RATE, MAX_SECONDS, MIN_SAMPLE_RATE
from stage.data.metronome import DEFAULT_BEATS_PER_BAR, MAX_BEATS_PER_BAR, MAX_BPM, MIN_BPM
from stage.errors import ConfigError, OptionError

ENGINES = ("cached", "reference")  # the fast Generator, or the authors' uncached loop (tests)
PRECISIONS = ("fp32", "bf16", "fp16", "int8")  # see generate/quantize.py
# The variation caps, one home each. `MAX_VARIATIONS` bounds one `generate_stems` batch (the decoder
# runs variations x CFG branches rows at once). `MAX_TAKE_VARIATIONS` bounds the takes one
# `stage generate` / `stage session generate` call writes (each is a stem, a mix preview and a
# sidecar), lower because every take is also rendered and written. The studio's slider has its
# own, lower UI limit (stage.app.form.MAX_TAKES), checked against this one.
MAX_VARIATIONS = 64
MAX_TAKE_VARIATIONS = 16
assert MAX_TAKE_VARIATIONS <= MAX_VARIATIONS


def _is_number(value) -> bool:
    """A finite real number (bools are not numbers here)."""
    return (not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
            and math.isfinite(value))


def _is_integer(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


@dataclass(frozen=True)
class GenerationParams:
    """Sampling options. Defaults are the authors': joint CFG 3.0, top-k 250, temperature 1, no top-p.

    guidance: classifier-free guidance scale s in `uncond + s * (cond - uncond)`; the
      unconditional branch drops both the context (all pad) and the text (§5). 1.0 = off.
    text_guidance: optional separate text scale (§9 asks for separate scales; the authors have
      one joint scale). When set, a third branch runs with the context kept and the text dropped
      (`ctx`), `guidance` becomes the context scale and the logits are
      `uncond + guidance * (ctx - uncond) + text_guidance * (cond - ctx)`; with equal scales this
      is the joint formula. None (default) = the joint scale only.
    temperature: softmax temperature; 0 = greedy.
    top_k: keep the k most likely codes (0 = no limit, 1 = greedy).
    top_p: nucleus sampling mass in (0, 1]; 0 or 1 = off.
    seed: base seed; variation v uses seed + v. None = a fresh random seed (reported back).
    """

    guidance: float = 3.0
    temperature: float = 1.0
    top_k: int = 250
    top_p: float = 0.0
    seed: int | None = None
    text_guidance: float | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not _is_number(self.guidance) or self.guidance < 0:
            raise OptionError("guidance", f"must be a finite number >= 0, got {self.guidance!r}")
        if self.text_guidance is not None and (not _is_number(self.text_guidance) or self.text_guidance < 0):
            raise OptionError("text_guidance", f"must be a finite number >= 0 or None, got {self.text_guidance!r}")
        if not _is_number(self.temperature) or self.temperature < 0:
            raise OptionError("temperature", f"must be >= 0, got {self.temperature!r}")
        if not _is_integer(self.top_k) or self.top_k < 0:
            raise OptionError("top_k", f"must be an integer >= 0, got {self.top_k!r}")
        if not _is_number(self.top_p) or not 0.0 <= self.top_p <= 1.0:
            raise OptionError("top_p", f"must be in [0, 1], got {self.top_p!r}")
        if self.seed is not None and (not _is_integer(self.seed) or not 0 <= self.seed < 2**63):
            raise OptionError("seed", f"must be a non-negative integer, got {self.seed!r}")

    @property
    def uses_cfg(self) -> bool:
        return self.guidance != 1.0 or (self.text_guidance is not None and self.text_guidance != 1.0)

    @property
    def branches(self) -> int:
        """LM rows per variation: 1 (no guidance), 2 (joint CFG: cond, uncond) or 3 (separate
        scales: cond, uncond, ctx)."""
        if not self.uses_cfg:
            return 1
        return 2 if self.text_guidance is None else 3


@dataclass(frozen=True)
class WindowParams:
    """Long-form options (seconds at the model's frame rate; rounded to whole frames).

    window_seconds: length of each generated window (10 s, as trained, §6.5).
    context_seconds: conditioning length, the first part of each window (clamped to the window).
    prompt_seconds: overlap between consecutive windows: the previous stem's tail continued as the
      prompt. The hop between windows is window - prompt.
    crossfade_seconds: crossfade between windows, inside the overlap.
    crossfade_shape: "power" (equal power, cos / sin; default) or "linear" (equal gain).
    """

    window_seconds: float = 10.0
    context_seconds: float = 10.0
    prompt_seconds: float = 5.0
    crossfade_seconds: float = 0.1
    crossfade_shape: str = "power"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for name in ("window_seconds", "context_seconds", "prompt_seconds", "crossfade_seconds"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.window_seconds <= 0:
            raise ConfigError(f"window_seconds must be > 0, got {self.window_seconds}")
        if not 0 < self.prompt_seconds < self.window_seconds:
            raise ConfigError(
                f"prompt_seconds must be between 0 and window_seconds ({self.window_seconds}), got {self.prompt_seconds}"
            )
        if self.crossfade_shape not in ("power", "linear"):
            raise ConfigError(f"crossfade_shape must be 'power' or 'linear', got {self.crossfade_shape!r}")
        if self.crossfade_seconds > self.prompt_seconds:
            raise ConfigError(
                f"crossfade_seconds ({self.crossfade_seconds}) must fit in the overlap (prompt_seconds {self.prompt_seconds})"
            )

    @classmethod
    def trained(cls, window_seconds: float) -> WindowParams:
        """Windows and contexts as long as a model was trained on (`config.window_seconds`),
        consecutive windows overlapping by half; the defaults for 10 s."""
        w = float(window_seconds)
        if w == cls.window_seconds:
            return cls()
        return cls(window_seconds=w, context_seconds=w, prompt_seconds=w / 2)

    def frames(self, frame_rate: int) -> tuple[int, int, int]:
        """(window, context, prompt) in frames; context clamped to the window, prompt >= 1 and
        < window."""
        window = max(2, int(round(self.window_seconds * frame_rate)))
        context = min(window, int(round(self.context_seconds * frame_rate)))
        prompt = min(window - 1, max(1, int(round(self.prompt_seconds * frame_rate))))
        return window, context, prompt


@dataclass(frozen=True)
class GenerationOptions(GenerationParams):
    """Everything `generate_stems` takes besides the audio: the sampling options of
    `GenerationParams` (inherited, with their defaults) and these.

    prompt: the text description ("" or None = no text).
    seconds: stem length (None = the context's length, else one window: `config.window_seconds`,
      10 s for the authors' models). Longer than one window: whole-song accompaniment, window
      by window (generate/longform.py).
    variations: stems generated in one batch (1..MAX_VARIATIONS); variation v uses seed + v.
    bpm / beats_per_bar / offset: tempo control. A metronome click track (the training recipe,
      §4) at `bpm`, first downbeat at `offset` seconds, becomes the context. It **replaces** the
      mix as the model's input, as in training; a given context then only sets the length and
      channel count of the result. None = no metronome (beats_per_bar and offset unused).
    output_rate: rate of the returned stems (None = the input's `sample_rate`).
    window: the long-form `WindowParams` (None = as the model was trained:
      `WindowParams.trained(config.window_seconds)`).
    engine: "cached" (the Generator) or "reference" (the authors' uncached loop, slow; for
      tests: fp32, joint guidance, no compile or CUDA graphs).
    precision: "fp32" (exact), "bf16" / "fp16" (GPU), "int8" (CPU); see generate/quantize.py
      (whether the model's device supports it is checked when generating).
    compile / cuda_graphs: the Generator's static decode step options.
    """

    prompt: str | None = ""
    seconds: float | None = None
    variations: int = 1
    bpm: float | None = None
    beats_per_bar: int = DEFAULT_BEATS_PER_BAR
    offset: float = 0.0
    output_rate: int | None = None
    window: WindowParams | None = None
    engine: str = "cached"
    precision: str = "fp32"
    compile: bool = False
    cuda_graphs: bool = False

    @classmethod
    def from_params(cls, params: GenerationParams, **options) -> GenerationOptions:
        """The sampling `params` with the other `options` (which may override a sampling field)."""
        if not isinstance(params, GenerationParams):
            raise OptionError("params", f"must be a GenerationParams, got {type(params).__name__}")
        return cls(**{**_sampling(params), **options})

    @property
    def params(self) -> GenerationParams:
        """The sampling options alone."""
        return GenerationParams(**_sampling(self))

    def validate(self) -> None:
        super().validate()
        if self.prompt is not None and not isinstance(self.prompt, str):
            raise OptionError("prompt", f"must be a string or None, got {type(self.prompt).__name__}")
        if self.seconds is not None:
            if not _is_number(self.seconds) or self.seconds <= 0:
                raise OptionError("seconds", f"must be a number > 0, got {self.seconds!r}")
            if self.seconds > MAX_SECONDS:  # the output buffers grow with the length: refuse before allocating
                raise OptionError("seconds", f"must be at most {MAX_SECONDS:g} (one hour), got {self.seconds:g}")
        if not _is_integer(self.variations) or not 1 <= self.variations <= MAX_VARIATIONS:
            raise OptionError("variations", f"must be an integer in 1..{MAX_VARIATIONS}, got {self.variations!r}")
        if self.bpm is not None and (not _is_number(self.bpm) or not MIN_BPM <= self.bpm <= MAX_BPM):
            raise OptionError("bpm", f"must be between {MIN_BPM:.0f} and {MAX_BPM:.0f} or None, got {self.bpm!r}")
        if not _is_integer(self.beats_per_bar) or not 1 <= self.beats_per_bar <= MAX_BEATS_PER_BAR:
            raise OptionError("beats_per_bar", f"must be an integer in 1..{MAX_BEATS_PER_BAR}, got {self.beats_per_bar!r}")
        if not _is_number(self.offset):
            raise OptionError("offset", f"must be a number of seconds, got {self.offset!r}")
        if self.output_rate is not None and (not _is_integer(self.output_rate)
                                             or not MIN_SAMPLE_RATE <= self.output_rate <= MAX_SAMPLE_RATE):
            raise OptionError("output_rate", f"must be a sample rate in {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz or None, "
                                             f"got {self.output_rate!r}")
        if self.window is not None and not isinstance(self.window, WindowParams):
            raise OptionError("window", f"must be a WindowParams or None, got {type(self.window).__name__}")
        if self.engine not in ENGINES:
            raise OptionError("engine", f"must be 'cached' or 'reference', got {self.engine!r}")
        if self.precision not in PRECISIONS:
            raise OptionError("precision", f"must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        for name in ("compile", "cuda_graphs"):
            if not isinstance(getattr(self, name), bool):
                raise OptionError(name, f"must be True or False, got {getattr(self, name)!r}")
        if self.engine == "reference":
            if self.precision != "fp32" or self.compile or self.cuda_graphs:
                raise OptionError("engine", "'reference' runs in fp32 only, without compile or CUDA graphs")
            if self.text_guidance is not None:
                raise OptionError("text_guidance", "must be None with engine='reference' (the authors' joint guidance only)")


def _sampling(params: GenerationParams) -> dict:
    """The `GenerationParams` fields of `params` (a GenerationParams or GenerationOptions)."""
    return {f.name: getattr(params, f.name) for f in fields(GenerationParams)}


@dataclass
class GenerationResult:
    """What `generate_stems` (generate/pipeline.py) returns.

    stems: float32 [B, C, N] at `sample_rate` (B variations, C channels of the input mix).
    codes: int64 [B, K, T] EnCodec codes of the stems.
    seeds: the seed of each variation. timings: seconds spent per phase ("encode": text and
    context encoding, "lm": language model, of which "prefill", "decode": EnCodec decoding and
    resampling, "total"), "decode_steps" and "step_ms" (mean LM decode step), "windows" (1, or
    more for whole-song generation), "real_time_factor" (total / audio seconds) and
    "x_real_time" (audio seconds / total).
    """

    stems: np.ndarray
    sample_rate: int
    codes: object
    seeds: list[int]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.stems.shape[-1] / self.sample_rate
