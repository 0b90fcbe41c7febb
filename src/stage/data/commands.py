"""`stage prepare`: scan a stem dataset and write its manifest (stems, durations, beats, captions).
`stage synth`: render a procedural band's songs as a stem dataset with exact beats (see data/band.py)."""

from __future__ import annotations

import argparse

HELP = """Scan a multitrack stem dataset and write DIR/manifest.jsonl: one JSON line per song with
its stems (file paths relative to ROOT, durations, sample rates), the beats and downbeats of its
full mix, and a caption from the dataset's metadata. `stage train` reads this manifest.

Formats:
  moisesdb   ROOT/<song-id>/data.json + stem folders (drums/, bass/, other_keys/, ...)
  musdb      MUSDB18-HQ: ROOT/{train,test}/<song>/{bass,drums,other,vocals}.wav
  slakh      Slakh2100: ROOT/[train|validation|test/]TrackXXXXX/{metadata.yaml,stems/SXX.flac}
  folder     ROOT/<song>/<stem>.{wav,flac,ogg,mp3}; names map to stems with --stem-map
             (unmapped: the name if it is a stem such as drums or bass, else other;
             mixture/mix files are ignored; ROOT/<song>/caption.txt gives a caption)

Stems: drums bass guitar keyboard piano strings vocals percussion wind other_plucked other.

Safe to interrupt: re-run the same command to continue where it stopped.

examples:
  stage prepare ~/data/moisesdb --format moisesdb --out data/moisesdb
  stage prepare ~/data/musdb18hq --format musdb --out data/musdb --beats librosa
  stage prepare ~/data/slakh2100 --format slakh --out data/slakh --workers 8
  stage prepare ~/multitracks --format folder --stem-map kick=drums,snare=drums,bass_di=bass --out data/mine"""


SYNTH_HELP = """Render N procedural songs as a stem dataset: random MIDI scores in 10 genres (rock,
funk, disco, hiphop, reggae, jazz, bossa, metal, house, ballad; 4/4, 3/4 and 6/8) played by
FluidSynth with a General MIDI soundfont. Each song is DIR/song-NNNNN/ with one 32 kHz mono WAV
per stem (drums, bass, guitar, keyboard, piano, strings, other), mix.wav, score.mid and meta.json:
exact beats, downbeats, chords, drum onsets and a caption ("Genres: Funk. Moods: groovy.").
`stage prepare DIR --format folder` takes beats and captions from meta.json.

Songs are deterministic per (--seed, song index): the same command gives bit-identical audio.
Safe to interrupt: re-run the same command to continue; finished songs are never rewritten.

Soundfont: --soundfont PATH, else $STAGE_SOUNDFONT, else FluidR3_GM.sf2 or TimGM6mb.sf2 from
/usr/share/sounds/sf2 (apt-get install libfluidsynth3 fluid-soundfont-gm timgm6mb-soundfont;
pip install 'stage-music[band]').

examples:
  stage synth --songs 1000 --seconds 30 --out data/band
  stage synth --songs 50 --seed 1 --out data/band-valid
  stage synth --songs 20 --genres jazz,bossa --seconds 12 --soundfont /usr/share/sounds/sf2/TimGM6mb.sf2 --out /tmp/jazz
  stage prepare data/band --format folder --out data/band"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add this package's subcommands to the `stage` parser."""
    p = sub.add_parser("prepare", help="index a stem dataset (stems, beats, captions) for training",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", metavar="ROOT", help="the dataset's root folder")
    p.add_argument("--format", required=True, choices=["moisesdb", "musdb", "slakh", "folder"],
                   help="the dataset's layout")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for manifest.jsonl (created if missing)")
    p.add_argument("--beats", default="auto", choices=["auto", "madmom", "librosa", "none"],
                   help="beat/downbeat tracker for metronome contexts (auto: madmom when installed, else librosa)")
    p.add_argument("--stem-map", metavar="NAME=STEM,...",
                   help="folder format: file name -> stem, e.g. kick=drums,snare=drums,click=skip")
    p.add_argument("--valid-songs", type=int, default=24, metavar="N",
                   help="when the dataset has no validation split, the last min(N, max(1, songs/10)) "
                        "training songs by id become the validation split (default 24, as the STAGE "
                        "authors; 0 = none)")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="songs analysed in parallel (processes)")
    p.add_argument("--force", action="store_true", help="rebuild from scratch, replacing an existing manifest")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)

    p = sub.add_parser("synth", help="render a procedural band's songs as stems with exact beats",
                       description=SYNTH_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--songs", type=int, required=True, metavar="N", help="number of songs")
    p.add_argument("--seconds", type=float, default=30.0, metavar="S", help="length of each song (default 30)")
    p.add_argument("--seed", type=int, default=0, metavar="K",
                   help="corpus seed (default 0); use another for held-out sets")
    p.add_argument("--start", type=int, default=0, metavar="N", help="index of the first song (default 0)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--genres", metavar="A,B", help="only these genres (default: all)")
    p.add_argument("--soundfont", metavar="PATH",
                   help="a General MIDI .sf2 (default: $STAGE_SOUNDFONT, else FluidR3_GM or TimGM6mb)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_synth)


def run_synth(args: argparse.Namespace) -> int:
    import sys

    from tqdm import tqdm

    from stage.data.band import synth_songs

    genres = [g.strip() for g in args.genres.split(",") if g.strip()] if args.genres else None
    result = synth_songs(args.songs, args.seconds, args.out, seed=args.seed, start=args.start, genres=genres,
                         soundfont=args.soundfont, progress=not args.quiet,
                         report=lambda line: tqdm.write(line, file=sys.stderr))
    speed = f" at {result.speed:.0f}x real time, {result.cpu_speed:.0f}x per CPU second" if result.rendered else ""
    resumed = f", {result.resumed} already there" if result.resumed else ""
    print(f"wrote {result.rendered} songs to {result.out}{resumed} ({result.soundfont.name}{speed})")
    return 0


def run(args: argparse.Namespace) -> int:
    import sys

    from tqdm import tqdm

    from stage.data.datasets import parse_stem_map
    from stage.data.manifest import prepare_manifest

    result = prepare_manifest(
        args.root, args.format, args.out, beats=args.beats, stem_map=parse_stem_map(args.stem_map),
        valid_songs=args.valid_songs, workers=args.workers, force=args.force, progress=not args.quiet,
        report=lambda line: tqdm.write(line, file=sys.stderr),
    )
    resumed = f", {result.resumed} from an earlier run" if result.resumed else ""
    skipped = f"; skipped {len(result.skipped)} (reasons above and in the header)" if result.skipped else ""
    print(f"wrote {result.path}: {result.songs} songs{resumed}{skipped}")
    return 0
