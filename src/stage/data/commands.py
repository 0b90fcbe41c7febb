"""`stage prepare`: scan a stem dataset and write its manifest (stems, durations, beats, captions)."""

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
