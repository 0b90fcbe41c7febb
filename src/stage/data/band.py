"""`stage synth`: a procedural band that writes a stem corpus with exact beats, chords and captions.

Each song is a random score (`stage.data.band_score.compose_song`, deterministic per (seed, index))
rendered with FluidSynth and a General MIDI soundfont, every stem separately, at 32 kHz mono float32:

    DIR/song-00042/drums.wav, bass.wav, ... (stems of stage.model.registry.STEMS)
    DIR/song-00042/mix.wav                   (the sum of the stems; `prepare` ignores mix files)
    DIR/song-00042/score.mid                 (the score, for inspection)
    DIR/song-00042/meta.json                 (written last: it marks the song as complete)

meta.json (format "stage-band", version 1) holds the exact beat grid, chords, drum onsets, the
instruments, gains and effects; `stage prepare --format folder` takes beats and the caption from it
instead of tracking beats. Every file is written atomically, so a killed run resumes cleanly: song
folders with a valid meta.json are skipped, any other song folder is rendered again.

Rendering (`BandRenderer`): a fresh FluidSynth per song (the soundfont stays in FluidSynth's sample
cache), so a song never depends on the songs rendered before it; each stem plays into its own
audio and effects group, so one pass gives every stem separately with its own reverb and chorus.
Note events lie on FluidSynth's 64-sample block grid and the audio between two events is pulled
in one `fluid_synth_process` call: no per-sample Python.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from stage.audio import db_to_gain
from stage.errors import StageError
from stage.files import atomic_write, atomic_write_text
from stage.formats import check_header

FORMAT = "stage-band"
VERSION = 1
SAMPLE_RATE = 32_000
MAX_SECONDS = 600.0
SOUNDFONT_ENV = "STAGE_SOUNDFONT"
SOUNDFONT_DIRS = ("/usr/share/sounds/sf2", "/usr/share/soundfonts", "/usr/local/share/soundfonts")
# FluidR3 (148 MB) sounds best and is preferred for corpora; TimGM6mb (6 MB) loads fast for tests.
SOUNDFONT_NAMES = ("FluidR3_GM.sf2", "TimGM6mb.sf2", "default-GM.sf2")
# Speed (STAGE needs thousands of songs): 32 voices a song, beyond which FluidSynth steals released
# and quiet voices first, and linear interpolation instead of 4th order; together about 1.6x faster.
POLYPHONY = 32
INTERPOLATION = 1  # FLUID_INTERP_LINEAR
GROUPS = 8  # audio and effects groups: one per stem (7 stems)
MIDI_CHANNELS = 32  # 4 channels per group: up to 4 instruments a stem
MIX_PEAK = 0.89  # the mix is scaled (all stems alike) to a peak drawn from U(0.5, MIX_PEAK)
BASE_GAIN_DB = {"drums": 0.0, "bass": -2.0, "guitar": -5.0, "keyboard": -5.0, "piano": -4.0,
                "strings": -7.0, "other": -6.0}
APT_HINT = "apt-get install libfluidsynth3 fluid-soundfont-gm (or timgm6mb-soundfont)"


def song_name(index: int) -> str:
    return f"song-{index:05d}"


def find_soundfont(path: str | os.PathLike | None = None) -> Path:
    """The soundfont to use: `path`, else $STAGE_SOUNDFONT, else the first GM soundfont installed."""
    given = path or os.environ.get(SOUNDFONT_ENV)
    if given:
        p = Path(given).expanduser()
        if not p.is_file():
            source = "--soundfont" if path else f"${SOUNDFONT_ENV}"
            raise StageError(f"soundfont {p} ({source}) does not exist")
        return p
    for name in SOUNDFONT_NAMES:
        for folder in SOUNDFONT_DIRS:
            if (Path(folder) / name).is_file():
                return Path(folder) / name
    raise StageError(f"no General MIDI soundfont found in {', '.join(SOUNDFONT_DIRS)}: {APT_HINT}, "
                     f"or pass --soundfont PATH / set {SOUNDFONT_ENV}")


class BandRenderer:
    """FluidSynth with a soundfont; `render` turns one song's stems into separate audio signals.

    Each song gets a fresh synthesizer: FluidSynth keeps per-voice state (amplitude ramps, filter
    history) across `system_reset`, so reusing one would make a song depend on the songs before
    it. A long-lived holder synth keeps the soundfont in FluidSynth's sample cache, so the per-song
    `sfload` only re-reads the preset tables. Within the song every stem has its own audio group
    and effects group (`synth.audio-groups`, `synth.effects-groups`): one `fluid_synth_process`
    pass writes each stem, with its own reverb and chorus, into its own buffers.
    """

    def __init__(self, soundfont: str | os.PathLike, sample_rate: int = SAMPLE_RATE):
        try:
            import fluidsynth
        except (ImportError, OSError) as err:
            raise StageError(f"FluidSynth is not available ({err}): {APT_HINT}; "
                             "pip install pyfluidsynth") from None
        from ctypes import POINTER, c_int, c_void_p

        self.fluidsynth = fluidsynth
        self.sample_rate = sample_rate
        self.soundfont = Path(soundfont)
        self._holder = self._new_synth()
        if self._holder.sfload(str(self.soundfont)) < 0:
            self._holder.delete()
            raise StageError(f"FluidSynth cannot read the soundfont {self.soundfont}")
        f = fluidsynth.cfunc
        synth, group, on = ("synth", c_void_p, 1), ("fx_group", c_int, 1), ("on", c_int, 1)
        self._process = f("fluid_synth_process", c_int, synth, ("len", c_int, 1), ("nfx", c_int, 1),
                          ("fx", POINTER(c_void_p), 1), ("nout", c_int, 1), ("out", POINTER(c_void_p), 1))
        self._reverb_on = f("fluid_synth_reverb_on", c_int, synth, group, on)
        self._chorus_on = f("fluid_synth_chorus_on", c_int, synth, group, on)
        self._interp = f("fluid_synth_set_interp_method", c_int, synth, ("chan", c_int, 1), ("method", c_int, 1))
        self._channel_type = f("fluid_synth_set_channel_type", c_int, synth, ("chan", c_int, 1), ("type", c_int, 1))
        self._c_void_p = c_void_p

    def _new_synth(self):
        return self.fluidsynth.Synth(gain=0.5, samplerate=self.sample_rate, channels=MIDI_CHANNELS, **{
            "synth.polyphony": POLYPHONY, "synth.audio-groups": GROUPS, "synth.audio-channels": GROUPS,
            "synth.effects-groups": GROUPS, "synth.verbose": 0})

    def close(self) -> None:
        self._holder.delete()

    def render(self, stems: dict, n_samples: int, reverb: dict, chorus: dict) -> dict[str, np.ndarray]:
        """{stem: pretty_midi instruments} -> {stem: mono float32 audio [N]}, N = n_samples.

        reverb / chorus: the song's settings (see `draw_mixing`), with per-stem "sends" (0 = off)."""
        if len(stems) > GROUPS:
            raise ValueError(f"at most {GROUPS} stems a song, got {len(stems)}")
        fs = self._new_synth()
        try:
            sfid = fs.sfload(str(self.soundfont))
            self._interp(fs.synth, -1, INTERPOLATION)
            fs.set_reverb(reverb["room_size"], reverb["damping"], reverb["width"], reverb["level"])
            fs.set_chorus(int(chorus["voices"]), chorus["level"], chorus["speed"], chorus["depth_ms"], 0)
            events = []  # (frame, 0 off / 1 on, channel, pitch, velocity)
            for group, (stem, insts) in enumerate(stems.items()):
                rev, cho = reverb["sends"][stem], chorus["sends"][stem]
                self._reverb_on(fs.synth, group, int(rev > 0))  # idle effects still cost CPU
                self._chorus_on(fs.synth, group, int(cho > 0))
                for k, inst in enumerate(insts):
                    ch = group + k * GROUPS  # MIDI channel c plays into audio/effects group c % GROUPS
                    self._channel_type(fs.synth, ch, 1 if inst.is_drum else 0)
                    fs.program_select(ch, sfid, 128 if inst.is_drum else 0, inst.program)
                    fs.cc(ch, 7, 100)
                    fs.cc(ch, 91, rev)
                    fs.cc(ch, 93, cho)
                    for n in inst.notes:
                        events.append((int(round(n.start * self.sample_rate)), 1, ch, n.pitch, n.velocity))
                        events.append((int(round(n.end * self.sample_rate)), 0, ch, n.pitch, 0))
            for group in range(len(stems), GROUPS):
                self._reverb_on(fs.synth, group, 0)
                self._chorus_on(fs.synth, group, 0)
            events.sort()
            out = np.zeros((2 * GROUPS, n_samples), np.float32)  # [L0, R0, L1, R1, ...]; FluidSynth adds into it
            row = out.strides[0]
            base = out.ctypes.data
            pos = 0

            def process(frames: int) -> None:
                at = base + 4 * pos
                dry = (self._c_void_p * (2 * GROUPS))(*[at + i * row for i in range(2 * GROUPS)])
                # effects of group k (reverb, chorus; L, R) are mixed into group k's own dry buffers
                wet = (self._c_void_p * (4 * GROUPS))(*[at + (2 * (i // 4) + i % 2) * row for i in range(4 * GROUPS)])
                self._process(fs.synth, frames, 4 * GROUPS, wet, 2 * GROUPS, dry)

            for frame, on, ch, pitch, vel in events:
                frame = min(frame, n_samples)
                if frame > pos:
                    process(frame - pos)
                    pos = frame
                if on:
                    fs.noteon(ch, pitch, vel)
                else:
                    fs.noteoff(ch, pitch)
            if n_samples > pos:
                process(n_samples - pos)
        finally:
            fs.delete()
        # mono: the mean of left and right
        return {stem: (out[2 * g] + out[2 * g + 1]) * np.float32(0.5) for g, stem in enumerate(stems)}


def draw_mixing(seed: int, index: int, stems) -> dict:
    """Per-song gains (dB) and FluidSynth reverb/chorus settings, from their own rng stream."""
    rng = np.random.default_rng([int(seed), int(index), 1])
    reverb: dict[str, Any] = {"room_size": round(float(rng.uniform(0.2, 0.9)), 3), "damping": round(float(rng.uniform(0.0, 0.6)), 3),
                              "width": round(float(rng.uniform(0.5, 1.0)), 3), "level": round(float(rng.uniform(0.3, 0.9)), 3)}
    chorus: dict[str, Any] = {"voices": int(rng.integers(2, 5)), "level": round(float(rng.uniform(0.5, 2.0)), 3),
                              "speed": round(float(rng.uniform(0.2, 0.8)), 3), "depth_ms": round(float(rng.uniform(3.0, 10.0)), 3)}
    reverb["sends"], chorus["sends"], gains = {}, {}, {}
    # Send 0 switches the effect unit off for that stem: FluidSynth's reverb and chorus cost as much
    # as a dozen voices even when idle, so dry stems (as in many productions) keep rendering fast.
    wet = {"drums": 0.5, "bass": 0.25}
    for stem in stems:
        reverb["sends"][stem] = int(rng.integers(20, 90)) if rng.random() < wet.get(stem, 0.7) else 0
        chorus["sends"][stem] = int(rng.integers(20, 70)) if stem not in wet and rng.random() < 0.3 else 0
        gains[stem] = float(BASE_GAIN_DB.get(stem, -5.0) + rng.uniform(-2.0, 2.0))
    peak = float(rng.uniform(0.5, MIX_PEAK))
    return {"reverb": reverb, "chorus": chorus, "gains_db": gains, "peak": peak}


SFC_SET_ADD_PEAK_CHUNK = 0x1050  # libsndfile command


def _write_wav(path: Path, audio: np.ndarray) -> None:
    """Mono float32 WAV, atomically. libsndfile's PEAK chunk is switched off: it holds a timestamp,
    which would make the same song's files differ byte for byte."""
    import soundfile as sf

    def write(f) -> None:
        with sf.SoundFile(f, "w", SAMPLE_RATE, 1, subtype="FLOAT", format="WAV") as w:
            sf._snd.sf_command(w._file, SFC_SET_ADD_PEAK_CHUNK, sf._ffi.NULL, 0)
            w.write(audio)

    atomic_write(path, write, binary=True)


def render_song(renderer: BandRenderer, seed: int, index: int, seconds: float, folder: Path,
                genres: tuple[str, ...] | None = None) -> dict:
    """Compose, render and write one song into `folder`; returns its meta (written last)."""
    from stage.data.band_score import compose_song

    score = compose_song(seed, index, seconds, genres)
    n = int(round(seconds * SAMPLE_RATE))
    mixing = draw_mixing(seed, index, score.stems)
    dry = renderer.render(score.stems, n, mixing["reverb"], mixing["chorus"])
    stems = {stem: audio * np.float32(db_to_gain(mixing["gains_db"][stem])) for stem, audio in dry.items()}
    mix = np.sum(list(stems.values()), axis=0, dtype=np.float32)
    peak = float(np.abs(mix).max())
    if peak > 0:  # normalise the mix peak; one factor for every stem keeps mix == sum of stems
        scale = mixing["peak"] / peak
        stems = {k: v * np.float32(scale) for k, v in stems.items()}
        mix = np.sum(list(stems.values()), axis=0, dtype=np.float32)
        mixing["gains_db"] = {k: g + 20 * np.log10(scale) for k, g in mixing["gains_db"].items()}
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.iterdir():  # a partial folder from an interrupted or different run
        if stale.is_file() and stale.name not in {f"{s}.wav" for s in stems} | {"mix.wav", "score.mid"}:
            stale.unlink()
    for stem, audio in stems.items():
        _write_wav(folder / f"{stem}.wav", audio)
    _write_wav(folder / "mix.wav", cast(np.ndarray, mix))  # np.sum over axis 0: numpy types it "array or scalar"
    atomic_write(folder / "score.mid", lambda f: score.to_midi().write(f), binary=True)
    r6 = lambda xs: [round(float(x), 6) for x in xs]  # noqa: E731
    meta = {
        "format": FORMAT, "version": VERSION, "seed": int(seed), "index": int(index), "sample_rate": SAMPLE_RATE,
        "seconds": float(seconds), "genre": score.genre.name, "caption": score.caption, "moods": score.moods,
        "bpm": round(score.bpm, 6), "meter": score.meter, "beats_per_bar": score.beats_per_bar,
        "swing": round(score.swing, 6), "key": score.key, "tonic": score.tonic, "mode": score.mode,
        "beats": r6(score.beats), "downbeats": r6(score.downbeats), "chords": [c.to_json() for c in score.chords],
        "drum_kit": score.drum_kit, "drum_breaks": score.drum_breaks, "instruments": score.instrument_names(),
        "gains_db": {k: round(float(v), 3) for k, v in mixing["gains_db"].items()},
        "reverb": mixing["reverb"], "chorus": mixing["chorus"],
        "stems": {s: f"{s}.wav" for s in stems}, "mix": "mix.wav", "drum_onsets": score.drum_onsets,
    }
    atomic_write_text(folder / "meta.json", json.dumps(meta, indent=1) + "\n")
    return meta


def read_meta(folder: Path) -> dict | None:
    """A complete song's meta.json, or None when it is missing, unreadable, or its files are gone."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    try:
        check_header(meta, expected=FORMAT, version=VERSION, where=folder, what="band song")
    except StageError:
        return None  # a foreign, non-object or newer meta.json: the song is rendered again
    files = list((meta.get("stems") or {}).values()) + [meta.get("mix")]
    if not all(isinstance(f, str) and (folder / f).is_file() for f in files):
        return None
    return meta


@dataclass(frozen=True)
class SynthResult:
    """What `synth_songs` did: songs rendered now, songs already complete, audio seconds rendered,
    wall and CPU (this process) seconds spent rendering them, and the soundfont used."""

    out: Path
    rendered: int
    resumed: int
    audio_seconds: float
    wall_seconds: float
    cpu_seconds: float
    soundfont: Path

    @property
    def speed(self) -> float:
        """Real-time factor of the rendering (audio seconds per wall second)."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else float("inf")

    @property
    def cpu_speed(self) -> float:
        """Audio seconds per CPU second: the speed on one core, whatever else the machine runs."""
        return self.audio_seconds / self.cpu_seconds if self.cpu_seconds > 0 else float("inf")


def check_options(songs: int, seconds: float, out, start: int = 0, genres=None) -> tuple[str, ...] | None:
    """Validate `synth_songs` options; raises StageError naming the bad one. Returns the genres."""
    from stage.data.band_score import GENRES

    if not isinstance(songs, int) or songs < 1:
        raise StageError(f"--songs must be at least 1, got {songs}")
    if not isinstance(start, int) or start < 0:
        raise StageError(f"--start must be >= 0, got {start}")
    if not np.isfinite(seconds) or not 0 < seconds <= MAX_SECONDS:
        raise StageError(f"--seconds must be in (0, {MAX_SECONDS:g}], got {seconds:g}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise StageError(f"--out {out} is a file, not a folder")
    if genres:
        genres = tuple(genres)
        unknown = [g for g in genres if g not in GENRES]
        if unknown:
            raise StageError(f"unknown genre {unknown[0]!r}; choose from: {', '.join(GENRES)}")
    return genres or None


def synth_songs(songs: int, seconds: float, out, *, seed: int = 0, start: int = 0, genres=None,
                soundfont=None, progress: bool = True,
                report: Callable[[str], None] = lambda line: None) -> SynthResult:
    """Render songs `start .. start + songs - 1` of `seed` into `out` (resumable, see the module doc)."""
    from tqdm import tqdm

    genres = check_options(songs, seconds, out, start, genres)
    font = find_soundfont(soundfont)
    out = Path(out)
    todo, resumed = [], 0
    for index in range(start, start + songs):
        meta = read_meta(out / song_name(index))
        if meta is None:
            todo.append(index)
            continue
        if meta.get("seed") != seed or meta.get("seconds") != float(seconds):
            raise StageError(f"{out / song_name(index)} holds seed {meta.get('seed')}, {meta.get('seconds')} s songs, "
                             f"not seed {seed}, {float(seconds):g} s: use another --out or the same options")
        resumed += 1
    renderer = BandRenderer(font) if todo else None
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StageError(f"cannot create --out {out}: {err.strerror or err}") from None
    wall = cpu = 0.0
    try:
        for index in tqdm(todo, desc="synth", unit="song", disable=not progress):
            assert renderer is not None  # made when there is something to do
            t0, c0 = time.perf_counter(), time.process_time()
            render_song(renderer, seed, index, seconds, out / song_name(index), genres)
            wall += time.perf_counter() - t0
            cpu += time.process_time() - c0
    finally:
        if renderer is not None:
            renderer.close()
    if resumed:
        report(f"{resumed} songs already complete in {out}, skipped")
    return SynthResult(out=out, rendered=len(todo), resumed=resumed, audio_seconds=len(todo) * float(seconds),
                       wall_seconds=wall, cpu_seconds=cpu, soundfont=font)


__all__ = ["BandRenderer", "SynthResult", "find_soundfont", "read_meta", "render_song", "song_name", "synth_songs"]
