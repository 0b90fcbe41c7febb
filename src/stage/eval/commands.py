"""`stage eval`: beat alignment, onset, FAD/KAD, COCOLA and CLAP scores of generated stems."""

from __future__ import annotations

import argparse
import sys

HELP = """Evaluate generated stems: rhythm against a reference grid, distribution distance to real
stems, and optional model-based scores. Writes report.json plus report.md and report.html
(tables, beat-grid plots and embedding histograms).

metrics (--metrics, comma separated; default beat,onset,fad,kad, each skipped with a note when
its inputs are missing; metrics you name must run):
  beat     beat and downbeat F-measure (mir_eval matching, +-70 ms) of the beats tracked in each
           stem against the reference grid, and the tempo ratio generated/reference.
           All beats count: mir_eval's habit of dropping the first 5 s is off (--trim turns it on).
  onset    onset F-measure (+-50 ms) of librosa onsets in the stem against the reference onsets
           (the grid's beats, or the onsets detected in the context)
  fad      Frechet Audio Distance to --reference (Kilgour et al. 2019), per --embedder
  kad      Kernel Audio Distance x100 to --reference (Chung et al. 2025), per --embedder
  cocola   COCOLA context/stem coherence (needs --contexts and --cocola-checkpoint)
  clap     CLAP text-audio similarity (needs --clap-checkpoint and prompts: --prompt TEXT or a
           NAME.txt next to each generated NAME.wav)
  chords   bass coherence: the share of the stem's voiced pyin frames whose pitch class is a tone
           of the chord of the moment; chords from --beats FILE entries that carry "chords" (a
           `stage synth` meta.json does), else madmom's chord recogniser on --contexts (skipped
           with a note when madmom is not installed)

reference grid for beat/onset, first that applies: --bpm N (a metronome, as with
`stage generate --bpm N`), --beats FILE (JSON {"beats": [...], "downbeats": [...]}, a
name -> beats object, or JSON lines with name/song + beats), or the beats tracked in --contexts.

pairing: generated NAME.wav uses context NAME.* or, failing that, the context whose name is the
longest prefix of NAME followed by _ - or . (song_drums_seed3.wav -> song.wav).

embedders (--embedder, comma separated): logmel (built in, deterministic), encodec (EnCodec
latents before quantization; needs --model), clap, vggish, mert (need their package and a local
checkpoint; without them the metric is skipped with a message). Reference embeddings are cached
(~/.cache/stage/eval; --cache PATH or --no-cache).

examples:
  stage eval --generated out/drums --reference data/real_drums --bpm 120 --out eval/report.json
  stage eval --generated out/drums --reference data/real_drums --contexts data/mixes \\
      --embedder logmel,encodec --model checkpoints/stage-drums --out eval/report.json
  stage eval --generated out/drums --contexts data/mixes --metrics beat,onset --tracker librosa \\
      --out eval/rhythm.json
  stage eval --generated out --reference real --metrics fad,kad,clap --embedder clap \\
      --clap-checkpoint ckpt/music_audioset_epoch_15_esc_90.14.pt --prompt "funky drums" --out r.json"""


def _csv(value: str) -> tuple[str, ...]:
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score generated stems (beat F1, FAD, KAD, ...)", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generated", required=True, metavar="DIR", help="folder of generated stems")
    p.add_argument("--reference", metavar="DIR", help="folder of real stems (FAD/KAD target set)")
    p.add_argument("--contexts", metavar="DIR", help="folder of the contexts (mixes) the stems were generated for")
    p.add_argument("--out", required=True, metavar="FILE.json", help="report path; .md and .html are written next to it")
    p.add_argument("--force", action="store_true", help="replace existing report files")
    p.add_argument("--metrics", type=_csv, metavar="LIST", help="beat,onset,fad,kad,cocola,clap,chords (default beat,onset,fad,kad)")
    p.add_argument("--embedder", type=_csv, default=("logmel",), metavar="LIST",
                   help="embeddings for FAD/KAD: logmel,encodec,clap,vggish,mert (default logmel)")
    p.add_argument("--pooling", choices=("frames", "mean"), default="frames",
                   help="FAD/KAD rows: every 1 s frame embedding (default) or one mean per file")
    p.add_argument("--model", metavar="tiny|PATH", help="stage model whose EnCodec the encodec embedder uses")
    g = p.add_argument_group("reference grid")
    g.add_argument("--bpm", type=float, help="score against a metronome at this tempo")
    g.add_argument("--beats-per-bar", type=int, default=4, help="metronome meter (default 4)")
    g.add_argument("--offset", type=float, default=0.0, help="metronome: first downbeat at this time in seconds")
    g.add_argument("--beats", metavar="FILE", help="reference beats JSON / JSON lines")
    g.add_argument("--tracker", choices=("auto", "madmom", "librosa"), default="auto",
                   help="beat tracker for stems and contexts (auto: madmom when installed)")
    g.add_argument("--trim", action="store_true", help="drop beats before 5 s, as mir_eval.beat.evaluate does (off by default)")
    g.add_argument("--beat-window", type=float, default=0.07, help="beat matching tolerance in seconds (default 0.07)")
    g.add_argument("--onset-window", type=float, default=0.05, help="onset matching tolerance in seconds (default 0.05)")
    o = p.add_argument_group("optional models (never downloaded)")
    o.add_argument("--clap-checkpoint", metavar="PATH",
                   help="LAION-CLAP checkpoint: a release .pt file (needs laion-clap) or a transformers ClapModel folder")
    o.add_argument("--clap-model", default="HTSAT-base", help="CLAP audio model of that checkpoint (default HTSAT-base)")
    o.add_argument("--vggish-checkpoint", metavar="PATH", help="torchvggish state dict (vggish-10086976.pth)")
    o.add_argument("--mert-checkpoint", metavar="DIR", help="local MERT model folder (runs its remote code)")
    o.add_argument("--mert-layer", type=int, default=-1, help="MERT hidden layer to use (default -1, the last)")
    o.add_argument("--cocola-checkpoint", metavar="PATH", help="COCOLA Lightning checkpoint (.ckpt)")
    p.add_argument("--prompt", help="text prompt of every generated stem (for clap; NAME.txt files take precedence)")
    p.add_argument("--exclude", action="append", metavar="GLOB",
                   help="skip generated files matching GLOB (repeatable; default '*_mix.*', the mix previews)")
    c = p.add_argument_group("cache")
    c.add_argument("--cache", metavar="PATH", help="embedding cache file or folder (default ~/.cache/stage/eval)")
    c.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from stage.eval.adapters import AdapterOptions
    from stage.eval.pipeline import DEFAULT_EXCLUDE, EvalConfig, evaluate
    from stage.eval.report import check_outputs, write_report

    check_outputs(args.out, args.force)
    config = EvalConfig(
        generated=args.generated, reference=args.reference, contexts=args.contexts, metrics=args.metrics,
        embedders=args.embedder, pooling=args.pooling, bpm=args.bpm, beats_per_bar=args.beats_per_bar,
        offset=args.offset, beats_file=args.beats, tracker=args.tracker, trim=args.trim,
        beat_window=args.beat_window, onset_window=args.onset_window, prompt=args.prompt,
        exclude=tuple(args.exclude) if args.exclude else DEFAULT_EXCLUDE,
        cache=None if args.no_cache else (args.cache or "auto"),
        adapters=AdapterOptions(model=args.model, clap_checkpoint=args.clap_checkpoint, clap_model=args.clap_model,
                                vggish_checkpoint=args.vggish_checkpoint, mert_checkpoint=args.mert_checkpoint,
                                mert_layer=args.mert_layer, cocola_checkpoint=args.cocola_checkpoint),
    )
    report = evaluate(config, progress=True)
    for line in report.skipped:
        print(line, file=sys.stderr)
    json_path, md_path, html_path = write_report(report, args.out, overwrite=args.force)
    for key, value in report.summary.items():
        print(f"{key:28s} {'-' if value is None else f'{value:.4f}'}")
    print(f"wrote {json_path}, {md_path.name}, {html_path.name} ({len(report.files)} generated files)")
    return 0
