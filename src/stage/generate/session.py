"""The musician's workflow: takes over a mix, and iterative sessions that build a song stem by stem.

A *take* is one generated stem, written next to a `*_mix.wav` preview and a JSON sidecar with
everything needed to reproduce it. `stage generate`, `stage session` and `stage studio` all go
through `render_takes` (generate) and `write_takes` (files), so they behave the same.

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

Stems and mixes keep the input's sample rate and channel count (the model's mono output is
copied to every channel), start at the input's first sample and last exactly `seconds`.
Previews are `input + stem`, scaled down (never up) so the peak stays at or below -1 dBFS, so
nothing clips; a stem that itself peaks above -1 dBFS is scaled the same way. Every gain is
recorded in the sidecar.
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from stage.audio import (
    MAX_SECONDS,
    as_channels_first,
    check_rate,
    fit_length,
    load_audio,
    resample,
    save_audio,
)
from stage.data.beats import TRACK_MAX_BPM, TRACK_MIN_BPM
from stage.errors import AudioError, StageError
from stage.files import check_free, ensure_writable_dir, exclusive_lock, write_json
from stage.generate.params import GenerationParams
from stage.model.registry import check_stem

HEADROOM_DB = -1.0
CEILING = 10 ** (HEADROOM_DB / 20)  # peak ceiling of written mixes and stems (about 0.891)
CONTEXT_MODES = ("mix", "metronome", "beats")
SIDECAR_FORMAT = "stage-take"
Progress = Callable[[int, int], None]


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class TakeSettings:
    """What to generate. Validated on construction (StageError names the bad value).

    bpm: None (the mix is the context), a number (a metronome is the context) or "auto" (a click
      track on the mix's tracked beats is the context).
    beats_per_bar: accent period of the metronome; with bpm="auto" it restricts the tracker's
      meter (None = let the tracker choose 3 or 4).
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
            validate_tempo(float(self.bpm), 4 if self.beats_per_bar is None else self.beats_per_bar)
        if not np.isfinite(self.offset):
            raise StageError(f"offset must be a number of seconds, got {self.offset}")
        if self.offset != 0.0 and (self.bpm is None or self.bpm == "auto"):
            raise StageError("--offset places the metronome's first downbeat; it needs --bpm N")
        if self.seconds is not None and (not np.isfinite(self.seconds) or self.seconds <= 0):
            raise StageError(f"seconds must be > 0, got {self.seconds}")
        if self.seconds is not None and self.seconds > MAX_SECONDS:
            raise StageError(f"seconds must be at most {MAX_SECONDS:g} (one hour), got {self.seconds:g}")
        if not isinstance(self.variations, (int, np.integer)) or not 1 <= self.variations <= 16:
            raise StageError(f"variations must be an integer in 1..16, got {self.variations!r}")
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
            out["beats"] = [round(float(t), 4) for t in self.beats]
            out["downbeats"] = [round(float(t), 4) for t in self.downbeats]
        return out


def build_context(settings: TakeSettings, mix: np.ndarray | None, sample_rate: int, seconds: float, model_rate: int) -> Context:
    """The context for `settings` (see the module docstring's table).

    mix: float32 [C, N] at `sample_rate`, or None (metronome-only). seconds: the output length.
    model_rate: the codec's rate (32 kHz); clicks are rendered there, as in training (§4).
    """
    from stage.data.metronome import metronome_times, render_clicks

    mode = settings.context_mode
    if mode == "mix":
        n = int(round(seconds * sample_rate))
        return Context("mix", mix[:, :n], sample_rate)
    if mode == "metronome":
        bpm, bpb = float(settings.bpm), settings.beats_per_bar or 4
        beats, downbeats = metronome_times(bpm, bpb, seconds, settings.offset)
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


# --------------------------------------------------------------------------- takes


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
    seconds = settings.seconds if settings.seconds is not None else mix.shape[-1] / sample_rate
    samples = int(round(seconds * sample_rate))
    if samples < 1:
        raise StageError(f"the output would be empty ({seconds} s at {sample_rate} Hz)")
    context = build_context(settings, mix, sample_rate, samples / sample_rate, model_rate)
    base = settings.params.seed if settings.params.seed is not None else secrets.randbelow(2**31)
    return TakePlan(settings, mix, sample_rate, channels, samples, context, int(base))


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
    """The result of `render_takes`: V takes over one context, with the model's codes
    (int64 [V, K, T]) and timings (seconds per phase, real-time factor)."""

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


def render_takes(model, plan: TakePlan, progress: Progress | None = None, precision: str = "fp32") -> TakeSet:
    """Run the model for `plan` and return the stems and their preview mixes at the input's rate,
    channel count and length. progress(done, total) is called after every decoding step;
    precision is passed to `StageModel.generate` ("fp32", "int8" on CPU, "bf16"/"fp16" on GPU)."""
    t0 = time.perf_counter()
    settings, context = plan.settings, plan.context
    params = replace(settings.params, seed=plan.base_seed)
    options = {} if precision == "fp32" else {"precision": precision}
    result = model.generate(
        context=context.audio, sample_rate=context.sample_rate, prompt=settings.prompt, seconds=plan.seconds,
        variations=settings.variations, params=params, progress=progress, **options,
    )
    stems = result.stems  # [V, C', N'] at the context's rate
    if context.sample_rate != plan.sample_rate:  # clicks were given at 32 kHz: back to the input's rate
        stems = np.stack([resample(s, context.sample_rate, plan.sample_rate) for s in stems])
    stems = fit_length(stems, plan.samples)
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


def format_bpm(bpm: float) -> str:
    """120.0 -> "120", 93.456 -> "93.5" (for file names)."""
    text = f"{round(float(bpm), 1):.1f}"
    return text[:-2] if text.endswith(".0") else text


def take_name(prefix: str, stem: str, bpm: float | None, seed: int) -> str:
    """`<prefix>_<stem>[_<bpm>bpm]_s<seed>`: file names carry the stem, the BPM and the seed."""
    parts = [prefix, stem]
    if bpm is not None:
        parts.append(f"{format_bpm(bpm)}bpm")
    parts.append(f"s{seed}")
    return "_".join(p for p in parts if p)


@dataclass
class WrittenTake:
    """Files of one take on disk."""

    name: str
    seed: int
    stem: Path
    mix: Path
    sidecar: Path


def take_paths(out_dir: Path, name: str) -> tuple[Path, Path, Path]:
    return out_dir / f"{name}.wav", out_dir / f"{name}_mix.wav", out_dir / f"{name}.json"


def reproduce_command(settings: TakeSettings, seed: int, model: str | None, mix: str | None, samples: int, sample_rate: int) -> str:
    """The `stage generate` command line that makes this take again (seed = the take's own seed)."""
    import shlex

    p = settings.params
    args = ["stage", "generate"]
    if settings.metronome_only:
        args += ["--metronome-only", "--sample-rate", str(sample_rate)]
    else:
        args.append(mix or "MIX")
    args += ["--stem", settings.stem, "--model", model or "MODEL", "--seed", str(seed)]
    if settings.prompt:
        args += ["--prompt", settings.prompt]
    if settings.seconds is not None or settings.metronome_only:
        args += ["--seconds", f"{samples / sample_rate:g}"]
    if settings.bpm is not None:
        args += ["--bpm", str(settings.bpm) if settings.bpm == "auto" else f"{float(settings.bpm):g}"]
        if settings.bpm == "auto" and (settings.min_bpm, settings.max_bpm) != (TRACK_MIN_BPM, TRACK_MAX_BPM):
            args += ["--min-bpm", f"{settings.min_bpm:g}", "--max-bpm", f"{settings.max_bpm:g}"]
    if settings.beats_per_bar is not None:
        args += ["--beats-per-bar", str(settings.beats_per_bar)]
    if settings.offset:
        args += ["--offset", f"{settings.offset:g}"]
    defaults = GenerationParams()
    for flag, value, default in (("--cfg", p.guidance, defaults.guidance), ("--temperature", p.temperature, defaults.temperature),
                                 ("--top-k", p.top_k, defaults.top_k), ("--top-p", p.top_p, defaults.top_p),
                                 ("--text-cfg", getattr(p, "text_guidance", None), None)):
        if value != default:
            args += [flag, f"{value:g}"]
    return " ".join(shlex.quote(a) for a in args)


def sidecar(takeset: TakeSet, take: Take, files: tuple[Path, Path, Path], extra: dict | None = None) -> dict:
    """The JSON written next to a take: enough to reproduce it and to know what the model heard.

    extra: more keys to record; `extra["model"]["source"]` and `extra["input"]["path"]`, when
    given, complete the `reproduce` command line."""
    s = takeset.settings
    from stage import __version__

    extra = extra or {}
    model = (extra.get("model") or {}).get("source")
    mix = (extra.get("input") or {}).get("path")
    return {
        "format": SIDECAR_FORMAT,
        "version": 1,
        "stage_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "stem": s.stem,
        "prompt": s.prompt,
        "seed": take.seed,
        "variation": take.index,
        "variations": s.variations,
        "base_seed": takeset.plan.base_seed,
        "params": {"cfg": s.params.guidance, "text_cfg": getattr(s.params, "text_guidance", None),
                   "temperature": s.params.temperature, "top_k": s.params.top_k, "top_p": s.params.top_p},
        "bpm": None if takeset.bpm is None else round(float(takeset.bpm), 3),
        "context": takeset.context.describe(),
        "output": {"stem": files[0].name, "mix": files[1].name, "sample_rate": takeset.sample_rate,
                   "channels": takeset.channels, "samples": takeset.samples, "seconds": round(takeset.seconds, 4),
                   "stem_gain": round(take.stem_gain, 6), "mix_gain": round(take.mix_gain, 6),
                   "headroom_db": HEADROOM_DB},
        "timings": {k: round(v, 3) for k, v in takeset.timings.items()},
        "reproduce": reproduce_command(s, take.seed, model, mix, takeset.samples, takeset.sample_rate),
        **extra,
    }


def write_takes(takeset: TakeSet, out_dir: Path, prefix: str, force: bool = False, extra: dict | None = None) -> list[WrittenTake]:
    """Write every take (stem WAV, `_mix.wav` preview, JSON sidecar) into `out_dir`.

    All or nothing: if any write fails, the files this call wrote are removed again.
    """
    out_dir = Path(out_dir)
    names = [take_name(prefix, takeset.settings.stem, takeset.bpm, t.seed) for t in takeset.takes]
    planned = [take_paths(out_dir, n) for n in names]
    check_free([p for group in planned for p in group], force)
    written: list[Path] = []
    out: list[WrittenTake] = []
    try:
        for take, name, (stem_path, mix_path, json_path) in zip(takeset.takes, names, planned):
            written.append(save_audio(stem_path, take.stem, takeset.sample_rate, overwrite=force))
            written.append(save_audio(mix_path, take.mix, takeset.sample_rate, overwrite=force))
            written.append(write_json(json_path, sidecar(takeset, take, (stem_path, mix_path, json_path), extra), overwrite=force))
            out.append(WrittenTake(name, take.seed, stem_path, mix_path, json_path))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return out


# --------------------------------------------------------------------------- sessions

SESSION_FILE = "session.json"
SESSION_FORMAT = "stage-session"
SESSION_VERSION = 1
LOCK_FILE = ".session.lock"


@dataclass
class MixVersion:
    """One version of the session's mix. take: the take added to the previous version (None for
    the starting mix). gain_db: the take's gain; mix_gain: the headroom scaling applied."""

    index: int
    file: str
    created: str
    take: str | None = None
    gain_db: float = 0.0
    mix_gain: float = 1.0
    source: str | None = None


@dataclass
class SessionTake:
    """A take in a session: its files (relative to the session folder) and how it was made."""

    id: str
    stem: str
    seed: int
    prompt: str
    bpm: float | None
    context: str
    over_mix: int
    file: str
    mix_file: str
    sidecar: str
    created: str
    accepted_in: int | None = None


@dataclass
class SessionState:
    """Everything `session.json` holds. Rewritten atomically after every change."""

    sample_rate: int
    channels: int
    samples: int
    mixes: list[MixVersion]
    current: int
    takes: list[SessionTake] = field(default_factory=list)
    next_take: int = 1

    def to_dict(self) -> dict:
        return {"format": SESSION_FORMAT, "version": SESSION_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict, where: str) -> SessionState:
        if not isinstance(data, dict) or data.get("format") != SESSION_FORMAT:
            raise StageError(f"{where}: not a stage session file")
        if data.get("version", 0) > SESSION_VERSION:
            raise StageError(f"{where}: session version {data['version']} is newer than this stage; upgrade stage")
        try:
            return cls(
                sample_rate=int(data["sample_rate"]), channels=int(data["channels"]), samples=int(data["samples"]),
                mixes=[MixVersion(**m) for m in data["mixes"]], current=int(data["current"]),
                takes=[SessionTake(**t) for t in data.get("takes", [])], next_take=int(data.get("next_take", 1)),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise StageError(f"{where}: malformed session file ({err})") from None


@dataclass
class SessionTakes:
    """What `Session.add_takes` returns: the recorded takes and the audio behind them."""

    takes: list[SessionTake]
    takeset: TakeSet


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Session:
    """A folder that builds a song stem by stem.

    Layout: `session.json` (the state), `mixes/mix_000.wav` (the starting mix),
    `mixes/mix_001.wav`... (one per accepted take; every version is kept), and `takes/` (every
    take: stem, `_mix.wav` preview, JSON sidecar). `generate` always works over the current mix;
    `accept` adds a take to it and makes a new current version.
    """

    def __init__(self, folder: Path, state: SessionState):
        self.folder = Path(folder)
        self.state = state

    # ----------------------------------------------------------- create / open / save

    @classmethod
    def create(cls, folder, mix: np.ndarray, sample_rate: int, source: str | None = None) -> Session:
        """Start a session in `folder` (new, or an empty folder) from `mix` float [C, N]."""
        folder = Path(folder)
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise StageError(f"{folder}: already exists and is not empty (choose a new session folder)")
        mix = as_channels_first(mix, "mix")
        check_rate(sample_rate, "mix")
        created = ensure_writable_dir(folder)
        try:
            (folder / "mixes").mkdir()
            (folder / "takes").mkdir()
            gain = 1.0 if np.max(np.abs(mix)) <= 1.0 else headroom_gain(mix)  # only to avoid clipping the copy
            save_audio(folder / "mixes" / "mix_000.wav", mix * gain, sample_rate)
            state = SessionState(sample_rate, mix.shape[0], mix.shape[1],
                                 [MixVersion(0, "mixes/mix_000.wav", _now(), mix_gain=gain, source=source)], current=0)
            session = cls(folder, state)
            session.save()
        except BaseException:
            if created:
                shutil.rmtree(folder, ignore_errors=True)
            else:  # the folder was empty before: empty it again
                for child in list(folder.iterdir()):
                    if child.is_dir():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)
            raise
        return session

    @classmethod
    def open(cls, folder) -> Session:
        folder = Path(folder)
        path = folder / SESSION_FILE
        if not path.is_file():
            raise StageError(f"{folder}: not a stage session (no {SESSION_FILE}; start one with `stage session new`)")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise StageError(f"{path}: unreadable session file ({err})") from None
        return cls(folder, SessionState.from_dict(data, str(path)))

    def save(self) -> None:
        write_json(self.folder / SESSION_FILE, self.state.to_dict(), overwrite=True)

    def lock(self):
        """Exclusive use of the session folder (one stage command at a time)."""
        return exclusive_lock(self.folder / LOCK_FILE,
                              f"{self.folder}: another stage command is working on this session; try again when it ends")

    # ----------------------------------------------------------- queries

    @property
    def current_mix(self) -> MixVersion:
        return self.state.mixes[self.state.current]

    def load_current_mix(self) -> np.ndarray:
        audio, sr = load_audio(self.folder / self.current_mix.file)
        if sr != self.state.sample_rate or audio.shape[0] != self.state.channels:
            raise StageError(f"{self.current_mix.file}: does not match the session ({sr} Hz, {audio.shape[0]} ch)")
        return fit_length(audio, self.state.samples)

    def find_take(self, take_id: str) -> SessionTake:
        text = str(take_id).strip()
        if text.isdigit():
            text = f"take{int(text):03d}"
        for take in self.state.takes:
            if take.id == text or Path(take.file).stem == text or take.file == text:
                return take
        known = ", ".join(t.id for t in self.state.takes) or "none yet"
        raise StageError(f"no take {take_id!r} in {self.folder} (takes: {known})")

    # ----------------------------------------------------------- changes

    def add_takes(self, model, settings: TakeSettings, progress: Progress | None = None, extra: dict | None = None,
                  precision: str = "fp32") -> SessionTakes:
        """Generate takes over the current mix and record them (files in `takes/`)."""
        if settings.metronome_only or settings.seconds is not None:
            raise StageError("a session's takes always cover the whole session mix (no --seconds / --metronome-only)")
        plan = plan_takes(settings, self.load_current_mix(), self.state.sample_rate, model.sample_rate)
        names = [take_name(f"take{self.state.next_take + i:03d}", settings.stem, plan.bpm, seed) for i, seed in enumerate(plan.seeds)]
        check_free([p for n in names for p in take_paths(self.folder / "takes", n)], force=False)
        takeset = render_takes(model, plan, progress, precision)
        first = self.state.next_take
        added: list[SessionTake] = []
        written: list[WrittenTake] = []
        before = (list(self.state.takes), self.state.next_take)
        try:
            for i, take in enumerate(takeset.takes):
                take_id = f"take{first + i:03d}"
                meta = {**(extra or {}), "session_take": take_id, "over_mix": self.current_mix.file,
                        "input": {"path": str(self.folder / self.current_mix.file)}}
                [w] = write_takes(replace(takeset, takes=[take]), self.folder / "takes", take_id, extra=meta)
                written.append(w)
                added.append(SessionTake(
                    id=take_id, stem=settings.stem, seed=take.seed, prompt=settings.prompt,
                    bpm=None if takeset.bpm is None else round(float(takeset.bpm), 3), context=takeset.context.mode,
                    over_mix=self.state.current, file=f"takes/{w.stem.name}", mix_file=f"takes/{w.mix.name}",
                    sidecar=f"takes/{w.sidecar.name}", created=_now(),
                ))
            self.state.takes.extend(added)
            self.state.next_take = first + len(added)
            self.save()
        except BaseException:
            self.state.takes, self.state.next_take = before
            for w in written:
                for path in (w.stem, w.mix, w.sidecar):
                    path.unlink(missing_ok=True)
            raise
        return SessionTakes(added, takeset)

    def accept(self, take_id: str, gain_db: float = 0.0) -> MixVersion:
        """Mix take `take_id` (its stem, times `gain_db`) into the current mix, with headroom, as
        a new mix version. Every earlier version stays on disk."""
        if not np.isfinite(gain_db) or not -60.0 <= gain_db <= 24.0:
            raise StageError(f"gain must be between -60 and +24 dB, got {gain_db}")
        take = self.find_take(take_id)
        if take.accepted_in is not None:
            raise StageError(f"{take.id} is already in the mix (version {take.accepted_in})")
        stem, sr = load_audio(self.folder / take.file)
        if sr != self.state.sample_rate or stem.shape[0] != self.state.channels:
            raise AudioError(f"{take.file}: {sr} Hz, {stem.shape[0]} ch does not match the session")
        mix = self.load_current_mix()
        new, gain = mix_with_headroom(mix, fit_length(stem, self.state.samples) * 10 ** (gain_db / 20))
        index = len(self.state.mixes)
        rel = f"mixes/mix_{index:03d}.wav"
        save_audio(self.folder / rel, new, self.state.sample_rate)
        version = MixVersion(index, rel, _now(), take=take.id, gain_db=gain_db, mix_gain=gain)
        self.state.mixes.append(version)
        self.state.current = index
        take.accepted_in = index
        try:
            self.save()
        except BaseException:
            (self.folder / rel).unlink(missing_ok=True)
            raise
        return version

    def describe(self) -> str:
        """A human-readable summary (what `stage session show` prints)."""
        s = self.state
        lines = [f"session {self.folder} ({s.sample_rate} Hz, {s.channels} ch, {s.samples / s.sample_rate:.2f} s)",
                 f"current mix: {self.current_mix.file} (version {s.current})", "mix versions:"]
        for m in s.mixes:
            what = f"+ {m.take} ({m.gain_db:+.1f} dB)" if m.take else f"start{(' from ' + m.source) if m.source else ''}"
            if m.mix_gain < 1.0:
                what += f", scaled {20 * np.log10(m.mix_gain):.1f} dB for headroom"
            lines.append(f"  v{m.index}  {m.file}  {what}")
        lines.append("takes:" if s.takes else "takes: none yet (stage session generate ...)")
        for t in s.takes:
            tempo = f"{format_bpm(t.bpm)} bpm ({t.context})" if t.bpm is not None else "mix context"
            state = f"in mix v{t.accepted_in}" if t.accepted_in is not None else "not accepted"
            prompt = f' "{t.prompt}"' if t.prompt else ""
            lines.append(f"  {t.id}  {t.stem:<8} seed {t.seed:<10} {tempo}, over v{t.over_mix}{prompt}  [{state}]  {t.file}")
        return "\n".join(lines)
