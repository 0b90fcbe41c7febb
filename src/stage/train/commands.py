"""`stage train` (fine-tune a STAGE model with Lightning) and `stage tokenize` (pre-tokenise a
stem dataset into uint16 code shards for the fast path)."""

from __future__ import annotations

import argparse

TRAIN_HELP = """Fine-tune MusicGen (or a STAGE model) to generate one stem that fits a mix, with the
authors' recipe as the default (AdamW 1e-5, batch 2 x 4, fp16 on GPU, value clipping 1.0,
context/text/word dropout 0.1/0.5/0.3; EnCodec and T5 frozen). Everything is set in a YAML
config (see configs/drums.yaml) and can be overridden with dotted key=value pairs.

The run folder (--out, or `out:` in the config) gets train.yaml (the resolved config),
checkpoints/step-N (stage checkpoints, `stage generate --model` loads them), model/ (the final,
self-contained checkpoint), lightning/ (resume state) and logs/ (CSV metrics: train/loss,
train/ce_q0..3, val/loss, val/acc).

Multi-GPU and multi-node: trainer.devices, trainer.num_nodes and trainer.strategy (ddp, fsdp);
under SLURM or torchrun the usual environment variables are read by Lightning.

examples:
  stage prepare ~/data/moisesdb --format moisesdb --out data/moisesdb
  stage train --config configs/drums.yaml --out runs/drums
  stage train --config configs/drums.yaml --out runs/drums trainer.devices=4 trainer.strategy=ddp
  stage train --config configs/bass.yaml optim.lr=2e-5 trainer.batch_size=4 trainer.accumulate=2
  stage train --resume runs/drums                   # continue from runs/drums/lightning/last.ckpt
  stage train --resume runs/drums --max-steps 60000 # ... and train for longer
  stage train --config configs/tiny.yaml model.init=tiny data.kind=tokens data.train=data/tokens"""

TOKENIZE_HELP = """Pre-tokenise training examples: cut them from a `stage prepare` manifest exactly as
`stage train` would (data.sample options), encode target and context with the model's EnCodec
and write uint16 code shards that `stage train` reads with data.kind=tokens (no EnCodec in the
training loop). Each example is one fixed (context, target, caption) draw.

examples:
  stage tokenize data/moisesdb --model musicgen-small --stem drums --examples 20000 --out data/drums-tokens
  stage tokenize data/moisesdb --model tiny --stem bass --examples 100 --split valid --out data/bass-val
  stage tokenize data/band-train --model stage-mini-drums --stem drums --per-song 64 \
      --sample window_seconds=5 metronome_prob=0.5 --out data/mini-drums-tokens"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add this package's subcommands to the `stage` parser."""
    p = sub.add_parser("train", help="fine-tune a STAGE model (Lightning)", description=TRAIN_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="FILE", help="YAML config (default with --resume: the run's train.yaml)")
    p.add_argument("--max-steps", type=int, metavar="N", help="optimizer steps to train (overrides trainer.max_steps)")
    p.add_argument("--resume", metavar="CKPT", help="a Lightning .ckpt or a run folder (uses its lightning/last.ckpt)")
    p.add_argument("--out", metavar="DIR", help="run folder (overrides `out`; default with --resume: the checkpoint's run)")
    p.add_argument("--force", action="store_true", help="clear an existing run folder and start again")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    # REMAINDER (re-parsed in run_train) so that options may follow the overrides.
    p.add_argument("overrides", nargs=argparse.REMAINDER, metavar="KEY=VALUE",
                   help="config overrides, e.g. trainer.max_steps=100 optim.lr=2e-5")
    p.set_defaults(func=run_train, train_parser=p)

    c = sub.add_parser("train-codec", help="train a small EnCodec on your audio (Lightning)", description=CODEC_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--data", nargs="+", metavar="DIR", help="folders of 32 kHz .wav/.flac files (searched recursively)")
    c.add_argument("--out", metavar="DIR", help="run folder (default runs/codec)")
    c.add_argument("--config", metavar="FILE", help="YAML of CodecTrainConfig options (see stage/train/codec.py)")
    c.add_argument("--max-steps", type=int, metavar="N", help="optimizer steps (default 3000)")
    c.add_argument("--batch-size", type=int, metavar="N", help="crops per step (default 8)")
    c.add_argument("--segment-seconds", type=float, metavar="S", help="crop length (default 1.0)")
    c.add_argument("--seed", type=int, help="seed of the model, the k-means and the crop stream (default 0)")
    c.add_argument("--threads", type=int, metavar="N", help="torch threads (default: torch's choice)")
    c.add_argument("--precision", choices=["32-true", "bf16-mixed"], help="default 32-true (faster than bf16 here)")
    c.add_argument("--resume", metavar="RUN", help="continue the run in this folder from its lightning/last.ckpt")
    c.add_argument("--force", action="store_true", help="clear an existing run folder and start again")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=run_train_codec)

    t = sub.add_parser("tokenize", help="pre-tokenise a stem dataset into code shards", description=TOKENIZE_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("manifest", metavar="MANIFEST", help="a manifest written by `stage prepare` (file or folder)")
    t.add_argument("--out", required=True, metavar="DIR", help="token folder to write")
    t.add_argument("--model", default="musicgen-small", help="whose EnCodec encodes the audio (any load_model source)")
    t.add_argument("--stem", required=True, help="the target stem (drums, bass, ...)")
    t.add_argument("--examples", type=int, metavar="N", help="examples to draw")
    t.add_argument("--per-song", type=int, metavar="N",
                   help="instead of --examples: encode each song's target, mix-minus-target (and click "
                        "track) once and cut N aligned windows per song from the codes (fast on a CPU; "
                        "context = target length = window_seconds; see stage/train/song_tokens.py)")
    t.add_argument("--split", default="train", help="manifest split: train, valid, test or all (default train)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--sample", nargs="*", default=[], metavar="KEY=VALUE",
                   help="SampleConfig options, e.g. metronome_prob=0.5 window_seconds=10")
    t.add_argument("--device", default=None, help="device for EnCodec (default: cuda when available)")
    t.add_argument("--force", action="store_true", help="replace an existing token folder")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=run_tokenize)


CODEC_HELP = """Train a small EnCodec (transformers' EncodecModel: 32 kHz mono, hop 640 = 50 Hz frames, so
every STAGE layout rule holds) on the audio files under --data, on Lightning. Losses follow EnCodec
(Défossez et al., 2022): time-domain L1, multi-scale mel, commitment; the codebooks learn by EMA with
k-means initialisation and dead-code replacement (see stage/train/codec.py).

The run folder (--out) gets train-codec.json (the resolved options), logs/version_N/metrics.csv (train/loss,
train/l1, train/mel, vq/commit, vq/perplexity_q0..3), checkpoints/step-N and model/: EnCodec
save_pretrained folders that `codec.source` (and so every stage checkpoint) can name.

examples:
  stage synth --songs 200 --seconds 30 --seed 1 --out data/band
  stage train-codec --data data/band --out runs/codec --max-steps 3000
  stage train-codec --resume runs/codec --max-steps 4000       # carry an interrupted run on
  stage train-codec --data data/band --out runs/codec --config configs/mini-codec.yaml
  stage train-codec --config configs/mini-codec-decoder.yaml --out runs/decoder   # the decoder alone

A config with init_from (a codec folder or a bundled name) starts from that codec instead of k-means;
decoder_only: true then trains only its decoder, so every input keeps its codes and language models
trained on them stay valid."""


def run_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from stage.errors import StageError
    from stage.train.config import load_config
    from stage.train.run import RUN_CONFIG, resolve_resume, train

    overrides = split_overrides(args)
    config_path = args.config
    run_dir = None
    if args.resume:
        _, run_dir = resolve_resume(args.resume)
        if config_path is None:
            if run_dir is None or not (run_dir / RUN_CONFIG).exists():
                raise StageError(f"--resume {args.resume}: cannot find the run's {RUN_CONFIG}; pass --config")
            config_path = str(run_dir / RUN_CONFIG)
    elif config_path is None:
        raise StageError("--config FILE is required (or --resume a run)")
    if args.max_steps is not None:
        if args.max_steps < 1:
            raise StageError(f"--max-steps must be >= 1, got {args.max_steps}")
        overrides.append(f"trainer.max_steps={args.max_steps}")
    if args.out:
        overrides.append(f"out={args.out}")
    elif run_dir is not None:
        overrides.append(f"out={run_dir}")
    config = load_config(config_path, overrides)
    result = train(config, resume=args.resume, force=args.force, progress_bar=False if args.quiet else None)
    if result.global_step == 0:
        return 0
    where = result.final or (result.checkpoints[-1] if result.checkpoints else Path(config.out))
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in sorted(result.metrics.items()) if k.endswith("loss"))
    print(f"done: {result.global_step} steps{'; ' + metrics if metrics else ''}; model in {where}")
    return 0


def split_overrides(args: argparse.Namespace) -> list[str]:
    """The KEY=VALUE overrides. Options given after the first override (`a=b --out DIR`) land in
    the REMAINDER list too; they are parsed here and set on `args`."""
    items = [a for a in args.overrides if not a.startswith("-") and "=" in a]
    rest = [a for a in args.overrides if a not in items]
    if not rest:
        return items
    parser = args.train_parser
    if not rest[0].startswith("-"):
        parser.error(f"unrecognized argument {rest[0]!r} (overrides are KEY=VALUE)")
    extra = parser.parse_args(rest)
    if extra.overrides:
        parser.error(f"unrecognized argument {extra.overrides[0]!r} (overrides are KEY=VALUE)")
    for action in parser._actions:
        if action.dest in ("overrides", "help", "func", "train_parser"):
            continue
        value = getattr(extra, action.dest, None)
        if value != action.default:
            setattr(args, action.dest, value)
    return items


def run_tokenize(args: argparse.Namespace) -> int:
    import sys

    from tqdm import tqdm

    from stage.data.samples import SampleConfig, StemDataset
    from stage.devices import resolve_device
    from stage.errors import StageError
    from stage.model.checkpoints import load_model
    from stage.train.config import apply_overrides
    from stage.train.tokens import TokenWriter, encode_examples

    if (args.examples is None) == (args.per_song is None):
        raise StageError("give one of --examples N or --per-song N")
    count = args.examples if args.examples is not None else args.per_song
    if count < 1:
        raise StageError(f"--{'examples' if args.examples is not None else 'per-song'} must be >= 1, got {count}")
    sample = apply_overrides({}, args.sample)
    sample.setdefault("target_stem", args.stem)
    window = sample.get("window_seconds", SampleConfig.window_seconds)
    if args.per_song is not None and isinstance(window, (int, float)):  # the context is always the whole window
        sample.setdefault("min_context_seconds", window)  # (a bad window_seconds is named by from_dict)
        sample.setdefault("max_context_seconds", window)
    config = SampleConfig.from_dict(sample)
    split = None if args.split == "all" else args.split
    if args.per_song is None:
        dataset = StemDataset(args.manifest, config, length=args.examples, seed=args.seed, split=split)
    else:
        from stage.data.manifest import load_manifest

        manifest = load_manifest(args.manifest)
    device = resolve_device(args.device)
    model = load_model(args.model, device=device)
    codec = model.codec
    if config.sample_rate != codec.sample_rate:
        raise StageError(f"sample_rate {config.sample_rate} differs from the codec's {codec.sample_rate} Hz")
    writer = TokenWriter(args.out, codec.config.num_codebooks, codec.config.codebook_size, codec.frame_rate,
                         overwrite=args.force)
    if args.per_song is None:
        bar = tqdm(total=len(dataset), desc="tokenize", unit="ex", disable=args.quiet, file=sys.stderr)
        examples = encode_examples(codec, (dataset[i] for i in range(len(dataset))))
        step = lambda: bar.update(1)  # noqa: E731
    else:
        from stage.train.song_tokens import song_examples

        bar = tqdm(total=len(manifest.select(split)), desc="tokenize", unit="song", disable=args.quiet,
                   file=sys.stderr)
        examples = song_examples(manifest, codec, config.target_stem, args.per_song, config.window_seconds,
                                 metronome_prob=config.metronome_prob, seed=args.seed, split=split,
                                 silence_threshold=config.silence_threshold, max_tries=config.max_tries,
                                 progress=lambda _: bar.update(1), click_mix_prob=config.click_mix_prob,
                                 click_mix_gain_db=config.click_mix_gain_db)
        step = lambda: None  # noqa: E731
    with writer:
        for example in examples:
            writer.add(example)
            step()
    bar.close()
    print(f"wrote {writer.examples} examples to {args.out}")
    return 0


def run_train_codec(args: argparse.Namespace) -> int:
    from pathlib import Path

    from stage.errors import StageError
    from stage.train.codec import load_codec_config, train_codec

    config_path = args.config
    out = args.out
    if args.resume:
        saved = Path(args.resume) / "train-codec.json"
        if not saved.exists():
            raise StageError(f"--resume {args.resume}: no train-codec.json there")
        config_path = config_path or str(saved)
        out = out or args.resume
    elif not args.data and not config_path:
        raise StageError("--data DIR is required (or --config FILE, or --resume RUN)")
    for name in ("max_steps", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise StageError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    overrides = {"data": args.data, "out": out, "max_steps": args.max_steps, "batch_size": args.batch_size,
                 "segment_seconds": args.segment_seconds, "seed": args.seed, "threads": args.threads,
                 "precision": args.precision}
    config = load_codec_config(config_path, overrides)
    result = train_codec(config, resume=bool(args.resume), force=args.force, progress_bar=not args.quiet)
    losses = ", ".join(f"{k} {v:.4f}" for k, v in sorted(result.metrics.items()) if k.startswith("train/"))
    print(f"done: {result.steps} steps; {losses}; codec in {result.model_dir}")
    return 0
