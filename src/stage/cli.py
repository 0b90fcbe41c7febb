"""The `stage` command. Each subcommand lives next to the code it drives and registers itself:
a module in COMMAND_MODULES defines `register(subparsers)`, which adds its parser(s) and sets
`func` to a function taking the parsed args and returning an exit code.

Heavy imports (torch, transformers, gradio) happen inside the command functions, so
`stage --help` is fast. User mistakes raise `StageError`: they print one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from stage.errors import StageError
from stage.threads import use_passive_wait

COMMAND_MODULES = [
    "stage.generate.commands",  # generate, metronome, session
    "stage.app.commands",  # studio
    "stage.train.commands",  # train
    "stage.data.commands",  # prepare
    "stage.eval.commands",  # eval
    "stage.model.commands",  # convert
]

EPILOG = """examples:
  stage convert facebook/musicgen-small --out checkpoints/musicgen-small
  stage convert stage-drums.safetensors --out checkpoints/stage-drums

run `stage COMMAND --help` for the options of each command."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stage",
        description="Accompaniment stems that listen: generate drums, bass, ... that fit your mix (STAGE).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from stage import __version__

    parser.add_argument("--version", action="version", version=f"stage {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Library chatter (config warnings, download bars) is not for end users of the CLI.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Idle OpenMP threads sleep instead of spinning (steady beside a busy process); read once
    # when torch loads, which no command has done yet (stage.threads).
    use_passive_wait()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except StageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
