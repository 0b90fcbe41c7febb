"""`stage studio`: start the browser studio (stage.app.studio)."""

from __future__ import annotations

import argparse

HELP = """Start the stage studio in your browser: a workspace that builds a song stem by stem.

Create a session from an uploaded mix, or open one in the sessions folder (--sessions; the same
folders as `stage session`, so `stage session show stage-sessions/NAME` works on a studio
session and the studio opens a `stage session new` one). The song and every accepted stem show
as lanes with a waveform, the beat grid and a player; mute and solo lanes to hear any of them
together. Generate takes of a stem (prompt, tempo:
auto = follow the mix's beats, a BPM = a metronome, off = the mix itself is the context; the
number of takes, sampling; a progress bar follows the takes, the first one streams into a
player as it is generated, Cancel stops them and writes nothing), listen to each alone or over
the mix, accept one (it joins the mix as a new mix version), reject it, or regenerate with the same or a new seed; go back to an earlier mix
version; export every stem and the mix as WAVs (the song's rate and length) in a zip with the
session's sidecars.

Jobs go through a queue (--concurrency jobs at once, --queue-size waiting; each model serves one
at a time); uploads are capped by --max-upload-mb and --max-seconds. The page offers the --model
model, tiny and the known models installed here. The server listens on --host (default
127.0.0.1: this machine only; use 0.0.0.0 to serve your network).

examples:
  stage studio                         # the best installed drums model (stage-drums, else stage-mini-drums)
  stage studio --model stage-mini-bass
  stage studio --model checkpoints/stage-bass --port 8080 --max-upload-mb 20
  stage studio --model tiny --sessions /tmp/songs   # random tiny model: try the UI with no downloads"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add `studio` to the `stage` parser."""
    p = sub.add_parser("studio", help="start the browser studio", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model name or path (default: the best installed drums model: the authors' "
                   "stage-drums if found, else the bundled stage-mini-drums)")
    p.add_argument("--sessions", default="stage-sessions",
                   help="the sessions folder, created if needed (default ./stage-sessions)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--max-upload-mb", type=float, default=200.0, help="largest accepted upload in MB (default 200)")
    p.add_argument("--max-seconds", type=float, default=600.0, help="longest accepted mix in seconds (default 600: ten minutes)")
    p.add_argument("--concurrency", type=int, default=1, help="jobs the queue runs at once (default 1)")
    p.add_argument("--queue-size", type=int, default=64, help="requests that may wait in the queue (default 64)")
    p.add_argument("--device", default="auto", help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--work-dir", help="keep the waveform pictures and exports here (default: a temporary folder, removed on exit)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from stage.app.studio import Studio, StudioConfig
    from stage.model.registry import default_model

    if args.model is None:
        choice = default_model("drums")
        assert choice is not None  # known models generate drums
        args.model = choice.name
        print(choice.note, file=sys.stderr)
    config = StudioConfig(model=args.model, sessions=args.sessions, host=args.host, port=args.port,
                          max_upload_mb=args.max_upload_mb, max_seconds=args.max_seconds, concurrency=args.concurrency,
                          queue_size=args.queue_size, device=args.device, work_dir=args.work_dir)
    print(f"loading model {args.model} ...")
    studio = Studio.create(config)
    print(f"stage studio on http://{config.host}:{config.port}, sessions in {studio.workspace.root} (Ctrl+C to stop)")
    try:
        studio.launch(block=True)
    finally:
        studio.close()
    return 0
