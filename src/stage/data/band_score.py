"""The procedural band's scores: one random, deterministic multitrack MIDI song per (seed, index).

`compose_song(seed, index, seconds)` draws everything from `numpy.random.default_rng([seed, index])`,
so a song depends on nothing but its seed and index (songs can be rendered in any order, resumed,
or in parallel). A `Score` holds one pretty_midi `Instrument` list per stem (stems from
`stage.model.registry.STEMS`) plus the ground truth written to meta.json: the beat grid, chords,
drum breaks and the drum onsets actually played.

Time model. The grid is in *felt beats* at `bpm`:
- 4/4 and 3/4: the felt beat is the quarter note; 4 or 3 beats per bar.
- 6/8: the felt beat is the dotted quarter (12/8 feel), 2 beats per bar, each split in 3 eighths;
  `bpm` counts dotted quarters. 6/8 songs are never swung (already ternary).
The first downbeat is at `offset` ~ U(0, min(1 bar, seconds / 4)): before it there is silence or a short pickup.
`beats`/`downbeats` list every felt beat / bar start from that downbeat to the end of the song and
are exact grid times; swing and humanising move notes, never the grid.

Swing s in [0, 0.35] moves the off-beat of each pair of subdivisions (eighths, or sixteenths for
funk and hip-hop) from 1/2 to (1 + s)/2 of the pair: s = 1/3 is triplet swing.

Length: about 560 lines on purpose: the genres' grooves, bass figures and comping are data
tables that share one time model; one file keeps every genre comparable at a glance.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pretty_midi

SECTION_BARS = (4, 8)  # a fill ends every 4 or 8 bars; a crash marks each section start
JITTER_S = 0.004  # timing jitter std (clipped to +-10 ms)
JITTER_MAX_S = 0.010
SAMPLE_RATE = 32_000
# FluidSynth starts notes on its 64-sample block boundaries, so note times are snapped to that
# grid (2 ms at 32 kHz): meta.json's drum_onsets are then exactly when the audio starts.
BLOCK = 64
NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")

# GM percussion keys (channel 10).
KICK, SIDE, SNARE, CLAP, HAT, PEDAL, OPEN = 36, 37, 38, 39, 42, 44, 46
CRASH, RIDE, BELL, TAMB, COWBELL, SHAKER = 49, 51, 53, 54, 56, 70
TOMS = (50, 48, 47, 45, 43, 41)  # high -> low

# GM drum-bank (128) presets; FluidR3_GM and TimGM6mb both ship these.
DRUM_KITS = {"standard": 0, "room": 8, "power": 16, "electronic": 24, "808": 25, "jazz": 32, "brush": 40}

# Chord qualities: Harte-style label suffix -> intervals.
QUALITIES = {
    "maj": (0, 4, 7), "min": (0, 3, 7), "7": (0, 4, 7, 10), "maj7": (0, 4, 7, 11), "min7": (0, 3, 7, 10),
    "dim": (0, 3, 6), "hdim7": (0, 3, 6, 10), "sus4": (0, 5, 7), "5": (0, 7),
}
SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10), "mixolydian": (0, 2, 4, 5, 7, 9, 10),
}

# Progressions: (family, mode, [(semitones above the tonic, quality, bars)]).
PROGRESSIONS = {
    "pop": ("major", [(0, "maj", 1), (7, "maj", 1), (9, "min", 1), (5, "maj", 1)]),
    "pop2": ("major", [(9, "min", 1), (5, "maj", 1), (0, "maj", 1), (7, "maj", 1)]),
    "doowop": ("major", [(0, "maj", 1), (9, "min", 1), (5, "maj", 1), (7, "maj", 1)]),
    "minor_pop": ("minor", [(0, "min", 1), (8, "maj", 1), (3, "maj", 1), (10, "maj", 1)]),
    "aeolian": ("minor", [(0, "min", 1), (10, "maj", 1), (8, "maj", 1), (10, "maj", 1)]),
    "ii_v_i": ("major", [(2, "min7", 1), (7, "7", 1), (0, "maj7", 2)]),
    "turnaround": ("major", [(0, "maj7", 1), (9, "min7", 1), (2, "min7", 1), (7, "7", 1)]),
    "minor_ii_v": ("minor", [(2, "hdim7", 1), (7, "7", 1), (0, "min7", 2)]),
    "blues": ("mixolydian", [(0, "7", 4), (5, "7", 2), (0, "7", 2), (7, "7", 1), (5, "7", 1), (0, "7", 1), (7, "7", 1)]),
    "dorian_vamp": ("dorian", [(0, "min7", 2), (5, "7", 2)]),
    "minor_vamp": ("minor", [(0, "min7", 4)]),
    "mixo_vamp": ("mixolydian", [(0, "maj", 1), (10, "maj", 1), (5, "maj", 1), (0, "maj", 1)]),
    "power": ("minor", [(0, "5", 2), (8, "5", 1), (10, "5", 1)]),
    "one_drop": ("minor", [(0, "min", 2), (5, "min", 2)]),
}


@dataclass(frozen=True)
class Part:
    """One comping or lead instrument: the stem it renders into, its GM program and how it plays."""

    stem: str
    program: int
    style: str
    low: int = 52  # voicing register (lowest MIDI note of the chord)


@dataclass(frozen=True)
class Genre:
    """Everything a genre fixes: tempo range, meters, swing, harmony, drums, bass, parts, moods."""

    name: str
    tags: tuple[str, ...]  # caption genres: the first always, then 0-2 of the rest
    bpm: tuple[float, float]
    meters: dict[str, float]  # meter -> probability
    swing: tuple[float, float]
    swing_unit: float  # subdivision pair length in beats: 1 (eighths) or 0.5 (sixteenths)
    progressions: tuple[str, ...]
    kits: tuple[str, ...]
    groove: str  # key of GROOVES
    bass: str  # bass style
    bass_programs: tuple[int, ...]
    parts: tuple[Part, ...]  # 1-3 of these are drawn per song
    leads: tuple[int, ...] = ()
    lead_p: float = 0.0
    moods: tuple[str, ...] = ()


GENRES: dict[str, Genre] = {g.name: g for g in (
    Genre("rock", ("Rock", "Pop Rock", "Hard Rock", "Indie Rock"), (90, 160), {"4/4": 0.8, "3/4": 0.1, "6/8": 0.1},
          (0.0, 0.05), 1.0, ("pop", "pop2", "mixo_vamp", "aeolian", "power"), ("standard", "room", "power"),
          "rock", "eighths", (34, 33),
          (Part("guitar", 29, "power", 40), Part("guitar", 27, "strum"), Part("guitar", 25, "strum"),
           Part("keyboard", 18, "sustain"), Part("piano", 0, "block")),
          (30, 81), 0.35, ("energetic", "driving", "upbeat", "rebellious", "anthemic")),
    Genre("funk", ("Funk", "Soul", "R&B"), (90, 120), {"4/4": 1.0}, (0.0, 0.2), 0.5,
          ("dorian_vamp", "minor_vamp", "blues"), ("standard", "room"), "funk", "funk", (33, 36),
          (Part("guitar", 28, "chicks", 60), Part("keyboard", 7, "chicks", 55), Part("keyboard", 4, "stabs"),
           Part("other", 61, "stabs", 60), Part("keyboard", 16, "sustain")),
          (65, 81), 0.3, ("groovy", "funky", "energetic", "playful")),
    Genre("disco", ("Disco", "Funk", "Dance"), (110, 130), {"4/4": 1.0}, (0.0, 0.05), 0.5,
          ("pop", "minor_pop", "dorian_vamp"), ("standard", "electronic"), "disco", "octaves", (33, 38),
          (Part("strings", 48, "sustain", 60), Part("guitar", 27, "chicks", 60), Part("keyboard", 4, "stabs"),
           Part("other", 61, "stabs", 60), Part("piano", 1, "offbeat")),
          (81, 73), 0.3, ("danceable", "happy", "upbeat", "groovy")),
    Genre("hiphop", ("Hip Hop", "Boom Bap", "Trap"), (70, 100), {"4/4": 1.0}, (0.1, 0.3), 0.5,
          ("minor_vamp", "minor_pop", "dorian_vamp"), ("808", "electronic", "standard"), "hiphop", "sparse", (38, 39, 33),
          (Part("keyboard", 4, "sustain"), Part("piano", 0, "sparse"), Part("strings", 49, "sustain", 55),
           Part("other", 89, "sustain", 55)),
          (80, 73), 0.3, ("chill", "dark", "laid-back", "confident")),
    Genre("reggae", ("Reggae", "Dub", "Roots Reggae"), (66, 90), {"4/4": 1.0}, (0.0, 0.15), 1.0,
          ("one_drop", "pop", "minor_vamp"), ("standard", "room"), "reggae", "reggae", (33, 34),
          (Part("guitar", 27, "skank", 60), Part("keyboard", 16, "skank", 55), Part("piano", 0, "skank", 60)),
          (56, 73), 0.25, ("relaxed", "laid-back", "sunny", "positive")),
    Genre("jazz", ("Jazz", "Swing", "Bebop"), (100, 180), {"4/4": 0.8, "3/4": 0.2}, (0.25, 0.35), 1.0,
          ("ii_v_i", "turnaround", "minor_ii_v", "blues"), ("jazz", "brush"), "jazz", "walking", (32,),
          (Part("piano", 0, "jazzcomp", 50), Part("guitar", 26, "quarters", 50), Part("keyboard", 4, "jazzcomp", 50)),
          (65, 66, 56), 0.5, ("sophisticated", "swinging", "relaxed", "lively")),
    Genre("bossa", ("Bossa Nova", "Latin Jazz", "Brazilian"), (110, 145), {"4/4": 1.0}, (0.0, 0.0), 1.0,
          ("ii_v_i", "turnaround", "minor_ii_v"), ("brush", "jazz", "standard"), "bossa", "bossa", (32, 33),
          (Part("guitar", 24, "bossa", 50), Part("piano", 0, "bossa", 52), Part("strings", 48, "sustain", 60)),
          (73, 65), 0.4, ("relaxed", "romantic", "warm", "smooth")),
    Genre("metal", ("Metal", "Heavy Metal", "Thrash Metal"), (100, 170), {"4/4": 0.85, "6/8": 0.15}, (0.0, 0.0), 1.0,
          ("power", "aeolian", "minor_vamp"), ("power", "standard"), "metal", "metal", (34,),
          (Part("guitar", 30, "power", 38), Part("guitar", 29, "power", 40), Part("keyboard", 19, "sustain", 52)),
          (30, 81), 0.3, ("aggressive", "heavy", "dark", "intense")),
    Genre("house", ("House", "Deep House", "Electronic"), (118, 128), {"4/4": 1.0}, (0.0, 0.1), 0.5,
          ("minor_vamp", "dorian_vamp", "minor_pop"), ("electronic", "808"), "house", "pedal", (38, 39),
          (Part("piano", 0, "stabs", 55), Part("other", 89, "sustain", 55), Part("keyboard", 4, "offbeat"),
           Part("other", 90, "stabs", 55)),
          (80, 81), 0.3, ("danceable", "hypnotic", "uplifting", "energetic")),
    Genre("ballad", ("Ballad", "Soft Rock", "Pop"), (60, 84), {"4/4": 0.5, "3/4": 0.25, "6/8": 0.25}, (0.0, 0.1), 1.0,
          ("pop", "pop2", "doowop", "minor_pop"), ("standard", "brush", "room"), "ballad", "roots", (33, 35),
          (Part("piano", 0, "arpeggio", 48), Part("strings", 48, "sustain", 55), Part("guitar", 25, "arpeggio", 48),
           Part("keyboard", 4, "sustain"), Part("other", 88, "sustain", 55)),
          (73, 40, 71), 0.45, ("emotional", "romantic", "melancholic", "tender", "calm")),
)}

# Drum grooves: per meter, instrument -> one bar of steps ('x' accent, 'o' normal, 'g' ghost, '.' rest).
# A bar of n steps spans beats_per_bar felt beats, so 16 steps in 4/4 are sixteenths.
GROOVES: dict[str, dict[str, list[dict[int, str]]]] = {
    "rock": {"4/4": [{KICK: "x.......x.x.....", SNARE: "....x.......x...", HAT: "o.o.o.o.o.o.o.o."},
                     {KICK: "x......ox.......", SNARE: "....x.......x..g", HAT: "o.o.o.o.o.o.o.o."}],
             "3/4": [{KICK: "x.....x.....", SNARE: "....x.......", HAT: "o.o.o.o.o.o."}],
             "6/8": [{KICK: "x.....", SNARE: "...x..", HAT: "ooo.oo"}]},
    "funk": {"4/4": [{KICK: "x..x..x...x..x..", SNARE: "....x..g.g..x..g", HAT: "xoxoxoxoxoxoxo.o",
                      OPEN: "..............o."},
                     {KICK: "x.x...x..x..x...", SNARE: "..g.x..g.g.gx...", HAT: "xoxoxoxoxoxoxoxo"}]},
    "disco": {"4/4": [{KICK: "x...x...x...x...", CLAP: "....x.......x...", HAT: "o.o.o.o.o.o.o.o.",
                       OPEN: "..o...o...o...o."}]},
    "hiphop": {"4/4": [{KICK: "x......x..x.....", SNARE: "....x.......x...", HAT: "o.o.o.o.o.o.o.o."},
                       {KICK: "x.x.......xx....", SNARE: "....x.......x..g", HAT: "ooooo.oooooooooo"}]},
    "reggae": {"4/4": [{KICK: "........x.......", SIDE: "........x.......", HAT: "o.o.o.o.o.o.o.o."},
                       {KICK: "x...x...x...x...", SIDE: "....x.......x...", HAT: "..o...o...o...o."}]},
    "jazz": {"4/4": [{RIDE: "o...o.o.o...o.o.", PEDAL: "....o.......o...", KICK: "g...g...g...g..."}],
             "3/4": [{RIDE: "o...o.o.o.o.", PEDAL: "....o...o...", KICK: "g...g...g..."}]},
    "bossa": {"4/4": [{KICK: "x..ox..ox..ox..o", SIDE: "x..x..x...x..x..", HAT: "oooooooooooooooo"}]},
    "metal": {"4/4": [{KICK: "xxxxxxxxxxxxxxxx", SNARE: "....x.......x...", CRASH: "o...o...o...o..."},
                      {KICK: "x.x.x.x.x.x.x.x.", SNARE: "....x.......x...", RIDE: "o.o.o.o.o.o.o.o."}],
              "6/8": [{KICK: "xxxxxx", SNARE: "...x..", RIDE: "o.oo.o"}]},
    "house": {"4/4": [{KICK: "x...x...x...x...", CLAP: "....x.......x...", OPEN: "..o...o...o...o.",
                       SHAKER: "gogogogogogogogo"}]},
    "ballad": {"4/4": [{KICK: "x.......x.......", SIDE: "....o.......o...", HAT: "g.g.g.g.g.g.g.g."},
                       {KICK: "x.....o.x.......", SNARE: "....o.......o...", HAT: "g.g.g.g.g.g.g.g."}],
               "3/4": [{KICK: "x...........", SIDE: "....o...o...", HAT: "g.g.g.g.g.g."}],
               "6/8": [{KICK: "x.....", SIDE: "...o..", HAT: "gggggg"}]},
}
GENERIC_GROOVES = {"3/4": GROOVES["rock"]["3/4"], "6/8": GROOVES["rock"]["6/8"]}
VELOCITY = {"x": 110, "o": 85, "g": 38}


@dataclass(frozen=True)
class Chord:
    start: float  # seconds (grid)
    end: float
    root: int  # pitch class
    quality: str

    @property
    def label(self) -> str:
        return f"{NOTE_NAMES[self.root]}:{self.quality}"

    @property
    def pitch_classes(self) -> list[int]:
        return [(self.root + i) % 12 for i in QUALITIES[self.quality]]

    def to_json(self) -> dict:
        return {"start": round(self.start, 6), "end": round(self.end, 6), "label": self.label,
                "root": self.root, "pitch_classes": self.pitch_classes}


@dataclass
class Score:
    """One song: per-stem instruments plus the ground truth for meta.json (times in seconds)."""

    seed: int
    index: int
    seconds: float
    genre: Genre
    tags: list[str]
    moods: list[str]
    bpm: float
    meter: str
    beats_per_bar: int
    swing: float
    tonic: int
    mode: str
    offset: float
    beats: list[float]
    downbeats: list[float]
    chords: list[Chord]
    drum_kit: str
    drum_breaks: list[list[float]]
    stems: dict[str, list[pretty_midi.Instrument]] = field(default_factory=dict)

    @property
    def caption(self) -> str:
        """The STAGE authors' caption style: "Genres: Funk, Soul. Moods: groovy, energetic." """
        return f"Genres: {', '.join(self.tags)}. Moods: {', '.join(self.moods)}."

    @property
    def key(self) -> str:
        return f"{NOTE_NAMES[self.tonic]} {self.mode}"

    @property
    def drum_onsets(self) -> list[float]:
        notes = [n.start for inst in self.stems.get("drums", []) for n in inst.notes]
        return sorted(round(t, 6) for t in notes)

    def instrument_names(self) -> dict[str, str]:
        out = {}
        for stem, insts in self.stems.items():
            if stem == "drums":
                out[stem] = f"{self.drum_kit} kit"
            else:
                out[stem] = ", ".join(pretty_midi.program_to_instrument_name(i.program) for i in insts)
        return out

    def to_midi(self) -> pretty_midi.PrettyMIDI:
        pm = pretty_midi.PrettyMIDI(initial_tempo=self.bpm * (1.5 if self.meter == "6/8" else 1.0))
        pm.instruments = [i for insts in self.stems.values() for i in insts]
        return pm


class _Clock:
    """Grid position in felt beats -> seconds, with swing (see the module docstring)."""

    def __init__(self, bpm: float, offset: float, swing: float, unit: float):
        self.spb, self.offset, self.swing, self.unit = 60.0 / bpm, offset, swing, unit

    def __call__(self, beat: float) -> float:
        if self.swing:
            k, f = divmod(beat / self.unit, 1.0)
            f = f * (1 + self.swing) if f <= 0.5 else (1 + self.swing) / 2 + (f - 0.5) * (1 - self.swing)
            beat = (k + f) * self.unit
        return self.offset + beat * self.spb


def compose_song(seed: int, index: int, seconds: float, genres: tuple[str, ...] | None = None) -> Score:
    """Draw song `index` of `seed`: genre (from `genres`, default all), tempo, meter, key, parts, notes."""
    rng = np.random.default_rng([int(seed), int(index)])
    names = tuple(genres) if genres else tuple(GENRES)
    genre = GENRES[names[int(rng.integers(len(names)))]]
    meters = list(genre.meters)
    meter = meters[int(rng.choice(len(meters), p=np.array(list(genre.meters.values())) / sum(genre.meters.values())))]
    lo, hi = genre.bpm
    if meter == "6/8":  # dotted-quarter felt beat: a slower pulse keeps the eighths playable
        lo, hi = max(60.0, lo / 1.6), max(64.0, hi / 1.5)
    bpm = float(np.exp(rng.uniform(np.log(lo), np.log(min(hi, 180.0)))))
    bpb = {"4/4": 4, "3/4": 3, "6/8": 2}[meter]
    swing = 0.0 if meter == "6/8" else float(rng.uniform(*genre.swing))
    spb = 60.0 / bpm
    offset = float(rng.uniform(0.0, min(bpb * spb, seconds / 4)))  # short songs still start early
    clock = _Clock(bpm, offset, swing, genre.swing_unit)
    n_bars = int(np.ceil((seconds - offset) / (bpb * spb))) + 1
    beats = [offset + b * spb for b in range(n_bars * bpb) if offset + b * spb < seconds]
    downbeats = beats[::bpb]

    prog_name = genre.progressions[int(rng.integers(len(genre.progressions)))]
    mode, prog = PROGRESSIONS[prog_name]
    tonic = int(rng.integers(12))
    bar_chords: list[tuple[int, str]] = []  # one (root pc, quality) per bar
    while len(bar_chords) < n_bars:
        for step, quality, bars in prog:
            bar_chords += [((tonic + step) % 12, quality)] * bars
    bar_chords = bar_chords[:n_bars]
    chords: list[Chord] = []
    for bar, (root, quality) in enumerate(bar_chords):
        start = offset + bar * bpb * spb
        if start >= seconds:
            break
        end = min(start + bpb * spb, seconds)
        if chords and chords[-1].root == root and chords[-1].quality == quality:
            chords[-1] = Chord(chords[-1].start, end, root, quality)
        else:
            chords.append(Chord(start, end, root, quality))

    n_tags = 1 + int(rng.integers(0, 3))
    extra = sorted(rng.choice(np.arange(1, len(genre.tags)), n_tags - 1, replace=False))
    tags = [genre.tags[0]] + [genre.tags[i] for i in extra]
    moods = [genre.moods[i] for i in sorted(rng.choice(len(genre.moods), int(rng.integers(1, 4)), replace=False))]
    kit = genre.kits[int(rng.integers(len(genre.kits)))]
    song = Score(seed=int(seed), index=int(index), seconds=float(seconds), genre=genre, tags=tags, moods=moods,
                 bpm=bpm, meter=meter, beats_per_bar=bpb, swing=swing, tonic=tonic, mode=mode, offset=offset,
                 beats=beats, downbeats=downbeats, chords=chords, drum_kit=kit, drum_breaks=[])
    ctx = _Context(rng, song, clock, n_bars, bar_chords)
    song.stems["drums"] = [ctx.drums()]
    song.stems["bass"] = [ctx.bass(genre.bass_programs[int(rng.integers(len(genre.bass_programs)))])]
    n_parts = int(rng.integers(1, min(3, len(genre.parts)) + 1))
    for i in sorted(rng.choice(len(genre.parts), n_parts, replace=False)):
        part = genre.parts[i]
        song.stems.setdefault(part.stem, []).append(ctx.comp(part))
    if genre.leads and rng.random() < genre.lead_p:
        program = genre.leads[int(rng.integers(len(genre.leads)))]
        stem = "guitar" if 24 <= program <= 31 else "other"
        song.stems.setdefault(stem, []).append(ctx.lead(program))
    for insts in song.stems.values():
        for inst in insts:
            inst.notes = _clip(inst.notes, seconds)
    song.stems = {s: v for s, v in song.stems.items() if any(i.notes for i in v)}
    return song


def _clip(notes: list[pretty_midi.Note], seconds: float) -> list[pretty_midi.Note]:
    out = []
    for n in sorted(notes, key=lambda n: (n.start, n.pitch)):
        n.start, n.end = _snap(n.start), _snap(n.end)
        if 0.0 <= n.start < seconds - 0.02:
            n.end = min(max(n.end, n.start + 0.03), seconds)
            out.append(n)
    return out


def _snap(t: float) -> float:
    return round(t * SAMPLE_RATE / BLOCK) * BLOCK / SAMPLE_RATE


class _Context:
    """Shared state while writing one song's parts: the rng, the clock and the bar grid."""

    def __init__(self, rng: np.random.Generator, song: Score, clock: _Clock, n_bars: int, bar_chords):
        self.rng, self.song, self.clock, self.n_bars, self.bar_chords = rng, song, clock, n_bars, bar_chords
        self.bpb = song.beats_per_bar
        self.sub = 3 if song.meter == "6/8" else 2  # eighths per felt beat

    def note(self, inst: pretty_midi.Instrument, pitch: int, beat: float, length: float, velocity: float,
             jitter: bool = True) -> None:
        """Add a note at grid position `beat` (felt beats from the first downbeat), humanised."""
        start = self.clock(beat)
        end = self.clock(beat + length)
        if jitter:
            start += float(np.clip(self.rng.normal(0.0, JITTER_S), -JITTER_MAX_S, JITTER_MAX_S))
        vel = int(np.clip(velocity + self.rng.normal(0.0, 6.0), 1, 127))
        if start >= 0.0:
            inst.notes.append(pretty_midi.Note(vel, int(pitch), start, max(end, start + 0.03)))

    # -- drums ---------------------------------------------------------------------------------

    def drums(self) -> pretty_midi.Instrument:
        rng, song, bpb = self.rng, self.song, self.bpb
        inst = pretty_midi.Instrument(program=DRUM_KITS[song.drum_kit], is_drum=True, name="drums")
        grooves = GROOVES[song.genre.groove].get(song.meter) or GENERIC_GROOVES[song.meter]
        section = int(rng.choice(SECTION_BARS))
        breaks = set()
        if self.n_bars > 4 and rng.random() < 0.4:  # a one-bar break now and then, never bar 0
            for _ in range(int(rng.integers(1, 3))):
                bar = int(rng.integers(2, self.n_bars))
                if bar - 1 not in breaks and bar + 1 not in breaks:
                    breaks.add(bar)
        groove_b = grooves[int(rng.integers(len(grooves)))]
        # pickup: a short fill into the first downbeat when there is room before it
        if song.offset > 0.6 * 60.0 / song.bpm and rng.random() < 0.5:
            for k in range(self.sub):
                self.note(inst, SNARE if k % 2 == 0 else TOMS[k % len(TOMS)], -1 + k / self.sub, 0.1, 70 + 15 * k)
        for bar in range(self.n_bars):
            if bar in breaks:
                start = self.clock(bar * bpb)
                if start < song.seconds:  # the last bar may begin after the song's end
                    song.drum_breaks.append([round(start, 6), round(min(self.clock((bar + 1) * bpb), song.seconds), 6)])
                continue
            groove = grooves[0] if (bar // section) % 2 == 0 else groove_b
            fill = (bar + 1) % section == 0 and bar + 1 not in breaks
            fill_beats = 1 if rng.random() < 0.6 else min(2, bpb)
            for drum, steps in groove.items():
                per_beat = len(steps) / bpb
                for i, ch in enumerate(steps):
                    if ch == "." or (drum == KICK and ch == "g" and rng.random() < 0.3):
                        continue
                    beat = i / per_beat
                    if fill and beat >= bpb - fill_beats:
                        continue
                    if ch == "g" and drum in (SNARE, SIDE) and rng.random() < 0.25:
                        continue  # ghost notes come and go
                    self.note(inst, drum, bar * bpb + beat, 0.1, VELOCITY[ch])
            if song.genre.groove == "jazz":  # comping snare/kick "chatter"
                for b in range(bpb * 2):
                    if rng.random() < 0.12:
                        self.note(inst, SNARE, bar * bpb + b / 2, 0.1, 45)
            if bar == 0 or bar % section == 0 or bar - 1 in breaks:
                self.note(inst, CRASH, bar * bpb, 1.0, 105)
                if not any(d == KICK for d in groove) or groove[KICK][0] == ".":
                    self.note(inst, KICK, bar * bpb, 0.1, 100)
            if fill:
                step = 1 / (2 * self.sub) if rng.random() < 0.6 else 1 / self.sub
                n = int(round(fill_beats / step))
                drums = [SNARE] * (n // 2) + list(TOMS[: n - n // 2]) if rng.random() < 0.6 else [SNARE] * n
                for k in range(n):
                    self.note(inst, drums[k], bar * bpb + bpb - fill_beats + k * step, 0.1, 75 + 35 * k / max(n - 1, 1))
        return inst

    # -- bass ----------------------------------------------------------------------------------

    def bass(self, program: int) -> pretty_midi.Instrument:
        rng, bpb, sub = self.rng, self.bpb, self.sub
        inst = pretty_midi.Instrument(program=program, name="bass")
        style = self.song.genre.bass
        pattern: list[tuple[float, int, float, int]]  # (beat in the bar, pitch, length in beats, velocity)
        for bar in range(self.n_bars):
            root, quality = self.bar_chords[bar]
            nxt = self.bar_chords[min(bar + 1, self.n_bars - 1)][0]
            r = 28 + (root - 4) % 12  # E1..Eb2
            fifth = r + 7 if 7 in QUALITIES[quality] else r + 6
            b0 = bar * bpb
            if self.song.meter == "6/8" or (bpb == 3 and style not in ("walking",)):
                pattern = [(0, r, 1.5, 100), (bpb - 1, fifth, 1.0, 85)] if bpb == 2 else \
                    [(0, r, 1.0, 100), (1, fifth, 0.9, 80), (2, r + 12 if rng.random() < 0.5 else fifth, 0.9, 80)]
                if bpb == 2:
                    pattern = [(0, r, 1.4, 100), (1, fifth, 0.6, 85), (1 + 2 / sub, r + 12, 0.3, 75)]
            elif style == "walking":
                ivs = QUALITIES[quality]
                tones = [r, r + ivs[1], fifth, r + ivs[-1] if len(ivs) > 3 else r + 12]
                line = [r] + [int(rng.choice(tones[1:])) for _ in range(bpb - 2)]
                target = 28 + (nxt - 4) % 12
                line.append(target + (1 if rng.random() < 0.5 else -1))  # chromatic approach
                pattern = [(b, p, 0.95, 90 + 8 * (b == 0)) for b, p in enumerate(line)]
            elif style == "funk":
                shapes = ["x..xo.x...x.xo..", "x.o..xx.o..x.x.o", "x..x.ox.x..o.x.."]
                s = shapes[int(rng.integers(len(shapes)))]
                pattern = [(i / 4, r + 12 * (ch == "o"), 0.2, 105 - 25 * (ch == "o"))
                           for i, ch in enumerate(s) if ch != "."]
            elif style == "octaves":
                pattern = [(i / 2, r + 12 * (i % 2), 0.4, 95 - 10 * (i % 2)) for i in range(bpb * 2)]
            elif style == "pedal":
                t = 28 + (self.song.tonic - 4) % 12
                pattern = [(i + 0.5, t, 0.35, 100) for i in range(bpb)]
            elif style == "sparse":
                pattern = [(0, r, 1.6, 105), (1.75, r, 0.5, 90), (2.5, fifth if rng.random() < 0.5 else r, 1.2, 95)]
            elif style == "reggae":
                pattern = [(0.5, r, 0.4, 95), (1, r, 0.9, 100), (2.5, fifth, 0.4, 90), (3, r + 12, 0.4, 85),
                           (3.5, fifth, 0.4, 85)]
            elif style == "bossa":
                pattern = [(0, r, 1.4, 100), (1.5, fifth - 12 if fifth - 12 >= 28 else fifth, 0.5, 90),
                           (2, fifth - 12 if fifth - 12 >= 28 else fifth, 1.4, 95), (3.5, r, 0.5, 90)]
            elif style == "metal":
                pattern = [(i / 4, r, 0.22, 100) for i in range(bpb * 4)] if rng.random() < 0.5 else \
                    [(i / 2, r, 0.45, 105) for i in range(bpb * 2)]
            elif style == "eighths":
                pattern = [(i / 2, r if i < 6 or rng.random() < 0.6 else fifth, 0.45, 100 - 10 * (i % 2))
                           for i in range(bpb * 2)]
            else:  # roots: root and fifth in half notes
                pattern = [(0, r, 1.9, 95), (2, fifth if rng.random() < 0.6 else r + 12, 1.9, 85)]
            for beat, pitch, length, vel in pattern:
                if beat < bpb:
                    self.note(inst, pitch, b0 + beat, min(length, bpb - beat), vel)
        return inst

    # -- comping -------------------------------------------------------------------------------

    def voicing(self, root: int, quality: str, low: int, shell: bool = False) -> list[int]:
        ivs = QUALITIES[quality]
        if shell and len(ivs) > 3:
            ivs = (ivs[1], ivs[3])
        pitches = sorted(low + ((root + i - low) % 12) for i in ivs)
        return pitches

    def comp(self, part: Part) -> pretty_midi.Instrument:
        rng, bpb, sub = self.rng, self.bpb, self.sub
        inst = pretty_midi.Instrument(program=part.program, name=part.style)
        for bar in range(self.n_bars):
            root, quality = self.bar_chords[bar]
            b0 = bar * bpb
            chord = self.voicing(root, quality, part.low)
            hits: list[tuple[float, float, float, list[int]]] = []  # (beat, length, velocity, pitches)
            style = part.style
            if style == "sustain":
                hits = [(0, bpb, 70, chord)]
            elif style == "block":
                hits = [(b, 0.9, 80 - 10 * (b % 2), chord) for b in range(bpb)]
            elif style == "power":
                p = [part.low + (root - part.low) % 12]
                p = [p[0], p[0] + 7, p[0] + 12]
                hits = [(i / sub, 1 / sub * 0.9, 100 - 12 * (i % sub != 0), p) for i in range(bpb * sub)]
            elif style == "strum":
                pat = [0, 1, 1.5, 2.5, 3, 3.5] if bpb == 4 else [i / sub for i in range(bpb * sub)]
                hits = [(t, 0.45, 85 - 15 * (t % 1 != 0), chord) for t in pat if t < bpb]
            elif style == "arpeggio":
                tones = chord + [chord[0] + 12]
                hits = [(i / sub, 1.5 / sub, 70, [tones[i % len(tones)]]) for i in range(bpb * sub)]
            elif style == "chicks":
                hits = [(i / 4, 0.12, 95 if i % 4 == 2 else 75, chord) for i in range(bpb * 4) if rng.random() < 0.45]
            elif style == "stabs":
                pos = [0.5, 1.5, 2.5, 3.5] if rng.random() < 0.5 else [0, 0.75, 1.5, 2.5, 3.25]
                hits = [(t, 0.2, 95, chord) for t in pos if t < bpb and rng.random() < 0.8]
            elif style == "offbeat":
                hits = [(b + 0.5, 0.3, 85, chord) for b in range(bpb)]
            elif style == "skank":
                hits = [(b + 0.5, 0.2, 90, chord) for b in range(bpb)] if rng.random() < 0.5 else \
                    [(b, 0.2, 90, chord) for b in range(1, bpb, 2)]
            elif style == "sparse":
                hits = [(0, 1.8, 75, chord)] + ([(2.5, 1.2, 65, chord)] if rng.random() < 0.5 else [])
            elif style == "jazzcomp":
                shell = self.voicing(root, quality, part.low, shell=True)
                hits = [(t, 0.4, 70 + 20 * rng.random(), shell) for t in np.arange(0, bpb, 0.5) if rng.random() < 0.3]
            elif style == "quarters":
                shell = self.voicing(root, quality, part.low, shell=True)
                hits = [(b, 0.7, 70 + 10 * (b % 2), shell) for b in range(bpb)]
            elif style == "bossa":
                hits = [(t, 0.4, 78, chord) for t in (0, 1.5, 2.5, 3.5) if t < bpb]
                hits.append((0, 0.9, 70, [chord[0] - 12]))
            for beat, length, vel, pitches in hits:
                spread = 0.012 if style == "strum" else 0.0
                for k, pitch in enumerate(pitches):
                    self.note(inst, pitch, b0 + beat + k * spread * self.song.bpm / 60, min(length, bpb - beat), vel)
        return inst

    def lead(self, program: int) -> pretty_midi.Instrument:
        """A simple melody: chord tones on strong beats, scale steps between, phrases with rests."""
        rng, bpb, sub = self.rng, self.bpb, self.sub
        inst = pretty_midi.Instrument(program=program, name="lead")
        scale = [(self.song.tonic + i) % 12 for i in SCALES[self.song.mode]]
        pitches = [p for p in range(60, 85) if p % 12 in scale]
        idx = len(pitches) // 2
        for bar in range(self.n_bars):
            if bar % 4 == 3 or rng.random() < 0.25:
                continue  # breathe
            root, quality = self.bar_chords[bar]
            tones = {(root + i) % 12 for i in QUALITIES[quality]}
            t = 0.0
            while t < bpb:
                length = float(rng.choice([1 / sub, 1 / sub, 1.0, 2 / sub]))
                idx = int(np.clip(idx + rng.integers(-2, 3), 0, len(pitches) - 1))
                if t % 1 == 0:  # land strong beats on a chord tone
                    near = [i for i in range(len(pitches)) if pitches[i] % 12 in tones]
                    idx = min(near, key=lambda i: abs(i - idx)) if near else idx
                if rng.random() < 0.85:
                    self.note(inst, pitches[idx], bar * bpb + t, min(length, bpb - t) * 0.95, 90)
                t += length
        return inst
