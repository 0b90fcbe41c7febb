"""`stage convert`: write any supported checkpoint as a stage checkpoint folder."""

from __future__ import annotations

import argparse

DTYPES = {"float32": None, "float16": "float16", "bfloat16": "bfloat16"}

HELP = """Convert a checkpoint to stage's format (a folder with stage.json + model.safetensors,
plus the frozen EnCodec and T5 unless --no-bundle).

SRC may be:
  tiny                               the seeded random tiny model (tests, demos)
  musicgen-small|medium|large        facebook/musicgen-* from the Hugging Face hub
  facebook/musicgen-small            any hub id of a transformers MusicGen model
  path/to/hf-folder                  a transformers MusicGen save_pretrained folder
  stage-drums.safetensors            the STAGE authors' released checkpoints
  musicgen/state_dict.bin            an audiocraft MusicGen export
  path/to/stage-checkpoint           a stage checkpoint (re-bundle, change dtype)

examples:
  stage convert stage-drums.safetensors --out checkpoints/stage-drums --stem drums
  stage convert musicgen-small --out checkpoints/musicgen-small --dtype float16"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a checkpoint to stage's format", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="SRC", help="checkpoint file, folder, hub id or 'tiny'")
    p.add_argument("--out", required=True, help="output folder (must not exist or be empty, unless --force)")
    p.add_argument("--no-bundle", action="store_true",
                   help="do not copy EnCodec and T5 into the folder; record their hub ids instead")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="precision of the stored LM weights")
    p.add_argument("--stem", help="record the instrument the model generates (e.g. drums, bass)")
    p.add_argument("--codec", help="EnCodec source for files without one (folder or hub id)")
    p.add_argument("--text", help="T5 encoder source for files without one (folder or hub id)")
    p.add_argument("--tokenizer", help="T5 tokenizer source (folder or hub id)")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from stage.model.checkpoints import check_output_dir, load_model, save_checkpoint

    check_output_dir(args.out, args.force)
    model = load_model(args.source, codec=args.codec, text=args.text, tokenizer=args.tokenizer, stem=args.stem)
    dtype_name = DTYPES[args.dtype]
    dtype = getattr(torch, dtype_name) if dtype_name else None
    out = save_checkpoint(model, args.out, bundle=not args.no_bundle, overwrite=args.force, dtype=dtype)
    lm = model.config.lm
    print(f"wrote {out} ({model.config.name}: {lm.num_layers} layers x {lm.dim}, layout {lm.layout}, "
          f"{model.lm.num_parameters() / 1e6:.1f}M LM parameters)")
    return 0
