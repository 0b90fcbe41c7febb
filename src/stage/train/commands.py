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
  stage tokenize data/moisesdb --model tiny --stem bass --examples 100 --split valid --out data/bass-val"""


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

    t = sub.add_parser("tokenize", help="pre-tokenise a stem dataset into code shards", description=TOKENIZE_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("manifest", metavar="MANIFEST", help="a manifest written by `stage prepare` (file or folder)")
    t.add_argument("--out", required=True, metavar="DIR", help="token folder to write")
    t.add_argument("--model", default="musicgen-small", help="whose EnCodec encodes the audio (any load_model source)")
    t.add_argument("--stem", required=True, help="the target stem (drums, bass, ...)")
    t.add_argument("--examples", type=int, required=True, metavar="N", help="examples to draw")
    t.add_argument("--split", default="train", help="manifest split: train, valid, test or all (default train)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--sample", nargs="*", default=[], metavar="KEY=VALUE",
                   help="SampleConfig options, e.g. metronome_prob=0.5 window_seconds=10")
    t.add_argument("--device", default=None, help="device for EnCodec (default: cuda when available)")
    t.add_argument("--force", action="store_true", help="replace an existing token folder")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=run_tokenize)


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

    import torch
    from tqdm import tqdm

    from stage.data.samples import SampleConfig, StemDataset
    from stage.errors import StageError
    from stage.model.checkpoints import load_model
    from stage.train.config import apply_overrides
    from stage.train.tokens import TokenWriter, encode_examples

    if args.examples < 1:
        raise StageError(f"--examples must be >= 1, got {args.examples}")
    sample = apply_overrides({}, args.sample)
    sample.setdefault("target_stem", args.stem)
    config = SampleConfig.from_dict(sample)
    split = None if args.split == "all" else args.split
    dataset = StemDataset(args.manifest, config, length=args.examples, seed=args.seed, split=split)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(args.model, device=device)
    codec = model.codec
    if config.sample_rate != codec.sample_rate:
        raise StageError(f"sample_rate {config.sample_rate} differs from the codec's {codec.sample_rate} Hz")
    writer = TokenWriter(args.out, codec.config.num_codebooks, codec.config.codebook_size, codec.frame_rate,
                         overwrite=args.force)
    bar = tqdm(total=len(dataset), desc="tokenize", unit="ex", disable=args.quiet, file=sys.stderr)
    with writer:
        for example in encode_examples(codec, (dataset[i] for i in range(len(dataset)))):
            writer.add(example)
            bar.update(1)
    bar.close()
    print(f"wrote {writer.examples} examples to {args.out}")
    return 0
