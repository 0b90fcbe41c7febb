"""`stage generate`, `stage metronome` and `stage session`: the musician's command line.

The commands are thin: they parse options, load audio and the model, and call the take
pipeline (`plan_takes` in stage.generate.takes, `render_takes` in stage.generate.render,
`write_takes` in stage.generate.takefiles) and `Session` (stage.generate.session), which the web
studio uses too. What the model hears in each tempo mode is documented in stage.generate.takes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from stage.data.beats import TRACK_MAX_BPM, TRACK_MIN_BPM
from stage.errors import ConfigError, OptionError, StageError
from stage.model.registry import KNOWN_MODELS, STEMS
from stage.threads import check_threads, generation_threads

CONTEXT_HELP = """what the model hears (its context; the released models take a mix OR a click, never both, §4):
  (no --bpm)          the mix itself (mono, 32 kHz, cropped to the output window)
  --bpm N             a metronome at N BPM instead of the mix (accent every --beats-per-bar beats,
                      first downbeat at --offset s); the mix only sets length, rate and channels
  --bpm auto          a click track on the beats and downbeats tracked in the mix
  --metronome-only    a metronome and no mix at all (needs --bpm N and --seconds)"""

GENERATE_HELP = f"""Generate a stem (drums, bass, ...) that fits MIX: sample-aligned, at MIX's sample rate
and channel count, as long as MIX (or --seconds).

{CONTEXT_HELP}

files written to --out, for each variation:
  <mix>_<stem>[_<bpm>bpm]_s<seed>.wav       the stem
  <mix>_<stem>[_<bpm>bpm]_s<seed>_mix.wav   stem + MIX preview, scaled so the peak stays <= -1 dBFS
  <mix>_<stem>[_<bpm>bpm]_s<seed>.json      model, prompt, seed, sampling, tempo/beat grid, timings
Existing files are never replaced unless --force. Rerun a take with --seed <its seed>.

--stream writes each stem WAV while it is generated: every --stream-seconds (default 1) of stem,
the file is replaced (atomically: a reader never sees a broken file) by the stem so far; the
preview and sidecar follow at the end. The codes are exactly those of a run without --stream; the
final WAV is the joined stream, which matches the offline decode to float rounding (~1e-6 of the
signal's rms; benchmarks/README.md "Streaming"). Only a take that fits one model window streams (5 s for
the stage-mini models, 10 s for the authors'); a longer one is refused.

models: {", ".join(KNOWN_MODELS)}, tiny (random, for tests), or a path (see `stage convert`);
  known models are looked up in $STAGE_MODELS, ./checkpoints and ~/.cache/stage/models.
  Without --model: the authors' model for --stem (stage-drums, stage-bass) when its weights are
  found there, else the small STAGE-mini one bundled with stage (stage-mini-drums, -bass).
  A model that records its stem (stage-drums, stage-bass) is refused for another --stem: it
  would still play its own instrument. Without --stem, the model's stem is used.

examples:
  stage generate song.wav --stem drums --model stage-drums --prompt "Genres: Rock. Moods: energetic."
  stage generate song.flac --stem drums --bpm auto --variations 3 --out takes/
  stage generate song.wav --stem bass --model stage-bass --bpm 96 --offset 0.42 --seed 7
  stage generate --metronome-only --bpm 120 --seconds 10 --stem drums --model stage-drums
  stage generate loop.wav --stem drums --seconds 5 --stream         # watch the take grow on disk
  stage generate loop.wav --stem drums --model tiny --seconds 2      # smoke test, no downloads"""

METRONOME_HELP = """Write a click track with the recipe STAGE was trained on (docs/method.md §4): 1 kHz clicks
of 0.1 s on every beat, beats and downbeats summed (accented downbeats), clipped to [-1, 1].
`stage generate --bpm N` gives the model exactly this click (rendered at 32 kHz).

examples:
  stage metronome --bpm 120 --seconds 10 --out click.wav
  stage metronome --bpm 90 --beats-per-bar 3 --offset 0.25 --seconds 30 --sample-rate 48000 --out waltz.wav"""

SESSION_HELP = """Build a song stem by stem in a session folder: generate takes over the current mix, listen,
accept one (it is mixed into a new version of the mix, with headroom), generate the next stem
over the new mix. Every take and every mix version is kept; the state is in session.json.
Reject a take to set it aside; `use` an earlier mix version to go back to it (the next accepted
take branches from there). `stage studio` opens the same session folders in the browser.

examples:
  stage session new mysong --mix demo.wav
  stage session generate mysong --stem drums --model stage-drums --bpm auto --variations 3
  stage session show mysong
  stage session accept mysong take002
  stage session reject mysong take001
  stage session use mysong v0                                 # back to the starting mix
  stage session generate mysong --stem bass --model stage-bass --prompt "Genres: Funk."
  stage session new sketch --seconds 20 --sample-rate 44100   # start from silence
  stage session generate sketch --stem drums --model stage-drums --bpm 100"""


# --------------------------------------------------------------------------- options


def _bpm(text: str | None) -> float | str | None:
    """--bpm: a number or 'auto' (checked here, so a typo is a one-line StageError)."""
    if text is None:
        return None
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise StageError(f"--bpm must be a number or 'auto', got {text!r}") from None


STREAM_SECONDS = 1.0  # --stream's default chunk: one file update per second of stem


def stream_seconds(args: argparse.Namespace) -> float | None:
    """--stream / --stream-seconds: the chunk length, or None without --stream (checked here)."""
    import math

    if args.stream_seconds is not None and not args.stream:
        raise StageError("--stream-seconds sets the chunk length of --stream; add --stream")
    if not args.stream:
        return None
    chunk = STREAM_SECONDS if args.stream_seconds is None else args.stream_seconds
    if not math.isfinite(chunk) or chunk <= 0:
        raise StageError(f"--stream-seconds must be a number of seconds > 0, got {chunk:g}")
    return chunk


# GenerationParams fields -> the flags that set them, so a bad value is reported by its flag
SAMPLING_FLAGS = {"guidance": "--cfg", "text_guidance": "--text-cfg", "temperature": "--temperature", "top_k": "--top-k",
                  "top_p": "--top-p", "seed": "--seed"}


def add_take_options(p: argparse.ArgumentParser, session: bool = False) -> None:
    """The options shared by `stage generate` and `stage session generate`; their defaults are
    `GenerationOptions`' (stage.generate.params)."""
    from stage.generate.params import MAX_TAKE_VARIATIONS, PRECISIONS, GenerationOptions

    d = GenerationOptions()
    stems = "|".join(STEMS)
    p.add_argument("--stem", help=f"instrument to generate: {stems} (default: the model's own stem)")
    p.add_argument("--model", help="model name or path (default: the best installed model for --stem: stage-drums if "
                   "found, else the bundled stage-mini-drums; likewise for bass)")
    p.add_argument("--prompt", default=d.prompt, help="text description, e.g. 'Genres: Rock, Punk. Moods: energetic.'")
    if not session:
        p.add_argument("--seconds", type=float, default=d.seconds, help="output length (default: the mix's length)")
    p.add_argument("--bpm", help="tempo: N (metronome context) or 'auto' (track the mix's beats); default: the mix is the context")
    p.add_argument("--beats-per-bar", type=int,
                   help=f"metronome accent period (default {d.beats_per_bar}); with --bpm auto, the meter to track")
    p.add_argument("--offset", type=float, default=d.offset,
                   help=f"time of the metronome's first downbeat, seconds (with --bpm N; default {d.offset:g})")
    p.add_argument("--min-bpm", type=float, default=TRACK_MIN_BPM, help=f"lowest tempo --bpm auto may report (default {TRACK_MIN_BPM:g})")
    p.add_argument("--max-bpm", type=float, default=TRACK_MAX_BPM, help=f"highest tempo --bpm auto may report (default {TRACK_MAX_BPM:g})")
    p.add_argument("--variations", type=int, default=d.variations,
                   help=f"number of takes (at most {MAX_TAKE_VARIATIONS}), generated in one batch (default {d.variations})")
    p.add_argument("--seed", type=int, default=d.seed,
                   help="base seed; take v uses seed + v (default: random, written to the sidecar)")
    p.add_argument("--cfg", type=float, default=d.guidance,
                   help=f"classifier-free guidance scale (default {d.guidance:g}, the authors'; 1 = off)")
    p.add_argument("--temperature", type=float, default=d.temperature,
                   help=f"sampling temperature (default {d.temperature:g}; 0 = greedy)")
    p.add_argument("--top-k", type=int, default=d.top_k, help=f"keep the k most likely codes (default {d.top_k}; 0 = all)")
    p.add_argument("--top-p", type=float, default=d.top_p, help=f"nucleus sampling mass (default {d.top_p:g}; 0 = off)")
    p.add_argument("--text-cfg", type=float, default=d.text_guidance,
                   help="separate text guidance scale (default: one joint scale, --cfg)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--precision", default=d.precision, choices=PRECISIONS,
                   help=f"LM precision: fp32 (exact), int8 (faster on CPU), bf16/fp16 (GPU); default {d.precision}")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads for generation (default: 1 for small models such as tiny and stage-mini-*, "
                   "else one per physical core but one; $OMP_NUM_THREADS when set). Idle threads sleep rather than spin "
                   "(OMP_WAIT_POLICY=PASSIVE unless set), so a busy neighbour slows generation less")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def register(sub: argparse._SubParsersAction) -> None:
    """Add `generate`, `metronome` and `session` to the `stage` parser."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("generate", help="generate a stem that fits a mix", description=GENERATE_HELP, formatter_class=fmt)
    p.add_argument("mix", metavar="MIX", nargs="?", help="the mix: WAV, FLAC, OGG, MP3..., any rate, mono or multichannel")
    add_take_options(p)
    p.add_argument("--metronome-only", action="store_true", help="generate from a click alone (needs --bpm N and --seconds)")
    p.add_argument("--sample-rate", type=int, default=44_100, help="output rate with --metronome-only (default 44100)")
    p.add_argument("--out", default="stage-takes", help="output folder, created if needed (default ./stage-takes)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.add_argument("--stream", action="store_true",
                   help="write each stem progressively while it is generated (every --stream-seconds of stem; "
                        "past one model window, after each long-form window)")
    p.add_argument("--stream-seconds", type=float,
                   help=f"with --stream: stem seconds between file updates (default {STREAM_SECONDS:g})")
    p.set_defaults(func=run_generate)

    p = sub.add_parser("metronome", help="write a click track (the training recipe)", description=METRONOME_HELP,
                       formatter_class=fmt)
    p.add_argument("--bpm", type=float, required=True, help="tempo in beats per minute")
    p.add_argument("--seconds", type=float, required=True, help="length in seconds")
    p.add_argument("--beats-per-bar", type=int, default=4, help="accent every N beats (default 4)")
    p.add_argument("--offset", type=float, default=0.0, help="time of the first downbeat, seconds (default 0)")
    p.add_argument("--sample-rate", type=int, default=44_100, help="sample rate (default 44100)")
    p.add_argument("--out", required=True, help="output WAV or FLAC file")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(func=run_metronome)

    p = sub.add_parser("session", help="build a song stem by stem (new, generate, accept, reject, use, show)",
                       description=SESSION_HELP, formatter_class=fmt)
    ss = p.add_subparsers(dest="session_command", metavar="ACTION")
    q = ss.add_parser("new", help="start a session from a mix (or from silence)", description=SESSION_HELP, formatter_class=fmt)
    q.add_argument("dir", metavar="DIR", help="session folder (must be new or empty)")
    start = q.add_mutually_exclusive_group(required=True)
    start.add_argument("--mix", help="the starting mix (any common audio format)")
    start.add_argument("--seconds", type=float, help="start from silence of this length instead")
    q.add_argument("--sample-rate", type=int, default=44_100, help="rate when starting from silence (default 44100)")
    q.add_argument("--channels", type=int, default=2, help="channels when starting from silence (default 2)")
    q.set_defaults(func=run_session_new)
    q = ss.add_parser("generate", help="generate takes over the current mix", description=SESSION_HELP, formatter_class=fmt)
    q.add_argument("dir", metavar="DIR", help="session folder")
    add_take_options(q, session=True)
    q.set_defaults(func=run_session_generate)
    q = ss.add_parser("accept", help="mix a take into the current mix (a new mix version)", description=SESSION_HELP,
                      formatter_class=fmt)
    q.add_argument("dir", metavar="DIR", help="session folder")
    q.add_argument("take", metavar="TAKE", help="take id (e.g. take002 or 2), as listed by `stage session show`")
    q.add_argument("--gain", type=float, default=0.0, help="gain of the take in the mix, dB (default 0)")
    q.set_defaults(func=run_session_accept)
    q = ss.add_parser("reject", help="set a take aside (its files stay)", description=SESSION_HELP, formatter_class=fmt)
    q.add_argument("dir", metavar="DIR", help="session folder")
    q.add_argument("take", metavar="TAKE", help="take id (e.g. take002 or 2)")
    q.set_defaults(func=run_session_reject)
    q = ss.add_parser("use", help="make a mix version current (e.g. go back to an earlier one)", description=SESSION_HELP,
                      formatter_class=fmt)
    q.add_argument("dir", metavar="DIR", help="session folder")
    q.add_argument("version", metavar="VERSION", help="mix version (e.g. v1 or 1), as listed by `stage session show`")
    q.set_defaults(func=run_session_use)
    q = ss.add_parser("show", help="list the mix versions and takes", description=SESSION_HELP, formatter_class=fmt)
    q.add_argument("dir", metavar="DIR", help="session folder")
    q.set_defaults(func=run_session_show)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


# --------------------------------------------------------------------------- shared steps


def resolve_stem_and_model(stem: str | None, model: str | None, quiet: bool = False) -> tuple[str | None, str]:
    """--stem / --model defaults: the best installed model for a stem (`registry.default_model`:
    the authors' if found, else the bundled STAGE-mini; one line on stderr says which), or the
    known model's stem."""
    from stage.model.registry import check_stem, default_model

    if stem is not None:
        stem = check_stem(stem)
    if model is None:
        if stem is None:
            raise StageError("give --stem (e.g. --stem drums) or --model")
        choice = default_model(stem)
        if choice is None:
            raise StageError(f"no released model generates {stem!r}; pass --model (a checkpoint trained for {stem})")
        model = choice.name
        if not quiet:
            print(choice.note, file=sys.stderr)
    if stem is None and model in KNOWN_MODELS:
        stem = KNOWN_MODELS[model].stem
    return stem, model


def load_for_stem(source: str, stem: str | None, device: str = "auto", quiet: bool = False):
    """Load the model and settle the stem. A model that records its stem (a STAGE checkpoint)
    refuses another one: a drums model asked for bass would still play drums, under a bass name."""
    from stage.model.checkpoints import load_model

    if not quiet:
        print(f"loading model {source} ...", file=sys.stderr)
    model = load_model(source, device=device)
    own = model.config.stem
    if stem is None:
        if own is None:
            raise StageError(f"model {source!r} does not say which stem it generates; give --stem")
        stem = own
    elif own is not None and own != stem:
        raise StageError(f"model {source!r} generates {own}, not {stem}; use --stem {own} or a {stem} model")
    return model, stem


def take_settings(args: argparse.Namespace, stem: str, seconds: float | None = None, metronome_only: bool = False):
    from stage.generate.params import GenerationParams
    from stage.generate.takes import TakeSettings

    try:
        params = GenerationParams(guidance=args.cfg, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                                  seed=args.seed, text_guidance=args.text_cfg)
    except OptionError as err:  # said with the flag: `--cfg must be ...` (one line, exit 2 as usual)
        raise ConfigError(f"{SAMPLING_FLAGS.get(err.field, err.field)} {err.reason}") from None
    return TakeSettings(stem=stem, prompt=args.prompt, bpm=_bpm(args.bpm), beats_per_bar=args.beats_per_bar,
                        offset=args.offset, seconds=seconds, variations=args.variations, params=params,
                        metronome_only=metronome_only, min_bpm=args.min_bpm, max_bpm=args.max_bpm)


class ProgressBar:
    """A tqdm bar fed by the generator's progress(done, total) callback."""

    def __init__(self, desc: str, quiet: bool):
        self.desc, self.quiet = desc, quiet
        self.bar: Any = None  # a tqdm bar, made on the first call

    def __call__(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.desc, unit="step", file=sys.stderr, dynamic_ncols=True)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def describe_context(plan) -> str:
    c = plan.context
    if c.mode == "mix":
        return "context: the mix"
    if c.mode == "metronome":
        return f"context: metronome {c.bpm:g} BPM, {c.beats_per_bar} beats per bar, first downbeat at {c.offset:g} s"
    return (f"context: click track on the mix's beats ({c.tracker}: {c.bpm:.1f} BPM, {c.beats_per_bar}/bar, "
            f"{len(c.beats)} beats, first downbeat at {c.offset:.3f} s)")


def generation_meta(model_source: str, model) -> dict:
    return {"model": {"source": str(model_source), "name": model.config.name, "stem": model.config.stem}}


# --------------------------------------------------------------------------- generate


def run_generate(args: argparse.Namespace) -> int:
    """`stage generate`: see GENERATE_HELP."""
    from stage.audio import check_rate, load_audio
    from stage.files import check_free, ensure_writable_dir
    from stage.generate.naming import take_paths
    from stage.generate.pipeline import fits_one_window
    from stage.generate.render import render_takes
    from stage.generate.takefiles import StemStream, write_takes
    from stage.generate.takes import plan_takes
    from stage.tokens.stream import HOLD_FRAMES

    t0 = time.perf_counter()
    chunk = stream_seconds(args)  # before anything slow
    stem, model_source = resolve_stem_and_model(args.stem, args.model, args.quiet)
    check_rate(args.sample_rate, "--sample-rate")  # (used with --metronome-only; a bad value is refused always)
    if args.metronome_only:
        if args.mix is not None:
            raise StageError("--metronome-only generates from a click alone; do not give a MIX")
        mix, sr, prefix = None, args.sample_rate, "metronome"
    else:
        if args.mix is None:
            raise StageError("give the MIX to accompany (or --metronome-only --bpm N --seconds S)")
        mix, sr = load_audio(args.mix)
        prefix = Path(args.mix).stem
    if stem is not None:  # validate every option before the (slow) model load
        take_settings(args, stem, args.seconds, args.metronome_only)
    check_threads(args.threads)
    out = Path(args.out)
    created = ensure_writable_dir(out)
    streamed = None
    try:
        model, stem = load_for_stem(model_source, stem, args.device, args.quiet)
        settings = take_settings(args, stem, args.seconds, args.metronome_only)
        if settings.context_mode == "beats" and not args.quiet:
            print("tracking beats ...", file=sys.stderr)
        plan = plan_takes(settings, mix, sr, model.sample_rate)
        check_free([p for n in plan.names(prefix) for p in take_paths(out, n)], args.force)
        if not args.quiet:
            print(describe_context(plan), file=sys.stderr)
        if chunk is not None:
            streamed = StemStream([take_paths(out, n)[0] for n in plan.names(prefix)], plan.sample_rate)
            if not args.quiet:
                every = (f"every {chunk:g} s of stem" if fits_one_window(model, plan.seconds)
                         else "after each long-form window")
                print(f"streaming to {', '.join(str(p) for p in streamed.paths)} ({every})", file=sys.stderr)
        bar = ProgressBar(f"{stem} x{settings.variations}", args.quiet)
        try:
            with generation_threads(args.threads, model.lm.num_parameters()):
                takeset = render_takes(model, plan, bar, args.precision, on_partial=streamed,
                                       chunk_seconds=chunk or STREAM_SECONDS)
        finally:
            bar.close()
        meta = generation_meta(model_source, model)
        if mix is not None:  # a MIX was given
            meta["input"] = {"path": str(args.mix), "sample_rate": sr, "channels": int(mix.shape[0]),
                             "seconds": round(mix.shape[1] / sr, 4)}
        if streamed is not None:
            meta["stream"] = {"chunk_seconds": chunk, "updates": streamed.updates, "hold_frames": HOLD_FRAMES}
        written = write_takes(takeset, out, prefix, force=args.force, extra=meta,
                              replace=() if streamed is None else streamed.written)
    except BaseException:
        if streamed is not None:  # all or nothing, as without --stream: no half take is left behind
            streamed.remove()
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    elapsed = time.perf_counter() - t0
    audio = takeset.seconds * len(written)
    print(f"wrote {len(written)} take{'s' * (len(written) > 1)} ({3 * len(written)} files) to {out}/ in {elapsed:.1f} s "
          f"({audio:.1f} s of audio, real-time factor {elapsed / audio:.2f}): " + ", ".join(w.stem.name for w in written))
    return 0


# --------------------------------------------------------------------------- metronome


def run_metronome(args: argparse.Namespace) -> int:
    """`stage metronome`: see METRONOME_HELP."""
    from stage.audio import check_rate, save_audio
    from stage.data.metronome import metronome_times, render_metronome
    from stage.files import check_free, ensure_writable_dir

    check_rate(args.sample_rate, "--sample-rate")
    out = Path(args.out)
    if out.suffix.lower() not in (".wav", ".flac"):
        raise StageError(f"{out}: the click track is written as .wav or .flac")
    check_free([out], args.force)  # before rendering: an existing file is refused at once
    if not len(metronome_times(args.bpm, args.beats_per_bar, args.seconds, args.offset)[0]):
        raise StageError(f"--offset {args.offset:g} puts the first beat after the end ({args.seconds:g} s)")
    click = render_metronome(args.bpm, args.beats_per_bar, args.seconds, args.offset, args.sample_rate)
    ensure_writable_dir(out.parent if str(out.parent) else Path("."))
    save_audio(out, click, args.sample_rate, overwrite=args.force)
    print(f"wrote {out} ({args.bpm:g} BPM, {args.beats_per_bar} beats per bar, {args.seconds:g} s at {args.sample_rate} Hz)")
    return 0


# --------------------------------------------------------------------------- session


def run_session_new(args: argparse.Namespace) -> int:
    import numpy as np

    from stage.audio import MAX_CHANNELS, MAX_SECONDS, check_rate, load_audio
    from stage.generate.session import Session

    check_rate(args.sample_rate, "--sample-rate")  # (used without --mix; a bad value is refused always)
    if args.mix is not None:
        mix, sr = load_audio(args.mix)
        source = str(args.mix)
    else:
        sr = args.sample_rate
        if not np.isfinite(args.seconds) or not 0 < args.seconds <= MAX_SECONDS:
            raise StageError(f"--seconds must be in (0, {MAX_SECONDS:g}], got {args.seconds:g}")
        if not 1 <= args.channels <= MAX_CHANNELS:
            raise StageError(f"--channels must be in 1..{MAX_CHANNELS}, got {args.channels}")
        mix = np.zeros((args.channels, int(round(args.seconds * sr))), np.float32)
        source = "silence"
    session = Session.create(args.dir, mix, sr, source)
    s = session.state
    print(f"started session {args.dir} ({s.sample_rate} Hz, {s.channels} ch, {s.samples / s.sample_rate:.2f} s); "
          f"next: stage session generate {args.dir} --stem drums ...")
    return 0


def run_session_generate(args: argparse.Namespace) -> int:
    from stage.devices import resolve_device
    from stage.generate.session import Session

    t0 = time.perf_counter()
    session = Session.open(args.dir)
    stem, model_source = resolve_stem_and_model(args.stem, args.model, args.quiet)
    if stem is not None:
        take_settings(args, stem)
    resolve_device(args.device)  # a bad --device is refused before the session folder is touched
    check_threads(args.threads)
    with session.lock():
        session = Session.open(args.dir)  # re-read under the lock
        model, stem = load_for_stem(model_source, stem, args.device, args.quiet)
        settings = take_settings(args, stem)
        bar = ProgressBar(f"{stem} x{settings.variations}", args.quiet)
        try:
            with generation_threads(args.threads, model.lm.num_parameters()):
                result = session.add_takes(model, settings, bar, extra=generation_meta(model_source, model),
                                           precision=args.precision)
        finally:
            bar.close()
    elapsed = time.perf_counter() - t0
    audio = result.takeset.seconds * len(result.takes)
    print(f"added {len(result.takes)} take{'s' * (len(result.takes) > 1)} over mix v{session.state.current} in {elapsed:.1f} s "
          f"(real-time factor {elapsed / audio:.2f}):")
    for t in result.takes:
        print(f"  {t.id}  {t.file}  (preview: {t.mix_file})")
    print(f"accept one with: stage session accept {args.dir} {result.takes[0].id}")
    return 0


def run_session_accept(args: argparse.Namespace) -> int:
    from stage.generate.session import Session

    session = Session.open(args.dir)
    with session.lock():
        session = Session.open(args.dir)
        take = session.find_take(args.take)
        if take.over_mix != session.state.current:
            print(f"note: {take.id} was generated over mix v{take.over_mix}, the current mix is v{session.state.current}",
                  file=sys.stderr)
        version = session.accept(args.take, args.gain)
    scaled = f", scaled by {version.mix_gain:.3f} for headroom" if version.mix_gain < 1.0 else ""
    print(f"mixed {version.take} into {version.file} (mix v{version.index}{scaled})")
    return 0


def run_session_reject(args: argparse.Namespace) -> int:
    from stage.generate.session import Session

    with Session.open(args.dir).lock():
        take = Session.open(args.dir).reject(args.take)
    print(f"rejected {take.id} ({take.file} stays on disk)")
    return 0


def run_session_use(args: argparse.Namespace) -> int:
    from stage.generate.session import Session

    with Session.open(args.dir).lock():
        version = Session.open(args.dir).use_version(args.version)
    print(f"current mix: {version.file} (version {version.index}); the next accepted take branches from it")
    return 0


def run_session_show(args: argparse.Namespace) -> int:
    from stage.generate.session import Session

    print(Session.open(args.dir).describe())
    return 0
