"""Benchmark: generation idle against beside one busy process (issue 11, item 3).

Target: with one busy process on the machine, generation takes at most 2x its idle time, for the
tiny model and for musicgen-small shapes. Every measurement is a fresh child process (the OpenMP
wait policy is read once, when torch loads), run twice: idle, then with one busy-looping
subprocess (`while True: pass`, one core) started a second before and stopped after. Printed: the
median ms per sampling step and the generation's wall seconds, idle and busy, and busy / idle.

Shapes (random weights, 10 s windows, CFG 3, top-k 250, fp32, a context of --context-seconds):
    tiny    the tiny preset (1.1 M parameters)
    mini    STAGE-mini's shape (256 x 6, ~8 M; random weights)
    small   musicgen-small's decoder (1024 x 24, 420 M; tiny T5 and EnCodec, as benchmarks/generate.py)
    cli     `stage generate --model tiny` through stage.cli.main (the command's own settings);
            times from the take's sidecar

Configurations, POLICY:THREADS:
    POLICY  passive   stage's choice: stage.threads.use_passive_wait() before torch loads
            unset     OpenMP's default (libgomp spins ~300k iterations before sleeping)
            active    OMP_WAIT_POLICY=ACTIVE (spin until work arrives)
            (ignored for the cli shape: the command sets PASSIVE itself unless the variable is set)
    THREADS auto      stage's rule (stage.threads.default_threads: 1 below 50 M parameters, else
                      one per physical core but one); torch: torch's own default; N: that many

    python benchmarks/busy.py                                   # tiny, small, cli; stage's choice vs the old defaults
    python benchmarks/busy.py --shapes tiny,mini --seconds 1    # a quick run
    python benchmarks/busy.py --configs passive:auto,unset:torch,passive:2,unset:2
OMP_NUM_THREADS and OMP_WAIT_POLICY are removed from the children's environment (the
configuration sets them); the busy loop is a plain Python loop on one core.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "rock drums with a heavy kick and crashing cymbals"


# ----------------------------------------------------------------------------- child


def child(shape: str, policy: str, threads: str, seconds: float, context_seconds: float, repeats: int) -> dict:
    """One measurement in this (fresh) process; the caller's environment has no OMP_* set."""
    sys.path.insert(0, str(ROOT / "src"))
    if policy == "passive" or shape == "cli":
        from stage.threads import use_passive_wait

        use_passive_wait()  # before torch loads, as `stage` does
    elif policy == "active":
        os.environ["OMP_WAIT_POLICY"] = "ACTIVE"
    if shape == "cli":
        return _child_cli(threads, seconds, repeats)
    import numpy as np
    import torch

    import stage
    from stage.threads import generation_threads

    model = _build(shape)
    n = model.lm.num_parameters()
    rng = np.random.default_rng(0)
    mix = (0.1 * rng.standard_normal(int(context_seconds * model.sample_rate))).astype(np.float32)
    options = stage.GenerationOptions(guidance=3.0, top_k=250, temperature=1.0, seed=0, prompt=PROMPT, seconds=seconds)
    warm = stage.GenerationOptions(guidance=3.0, seed=0, prompt=PROMPT, seconds=min(seconds, 0.2))
    wanted = None if threads == "auto" else torch.get_num_threads() if threads == "torch" else int(threads)
    with generation_threads(wanted, n) as used:
        stage.generate_stems(model, mix, model.sample_rate, warm)
        steps, totals = [], []
        for _ in range(repeats):
            stamps: list[float] = []
            t = time.perf_counter()
            stage.generate_stems(model, mix, model.sample_rate, options,
                                 progress=lambda i, k, stamps=stamps: stamps.append(time.perf_counter()))
            totals.append(time.perf_counter() - t)
            steps.append(1000 * statistics.median(b - a for a, b in zip(stamps, stamps[1:])))
    return dict(step_ms=statistics.median(steps), total_s=statistics.median(totals), threads=used, parameters=n,
                wait_policy=os.environ.get("OMP_WAIT_POLICY", "unset"))


def _build(shape: str):
    import dataclasses

    import torch

    import stage
    from stage.model.checkpoints import build_tiny
    from stage.model.config import LMConfig, preset
    from stage.model.lm import StageLM
    from stage.model.stage_model import StageModel
    from stage.text import TextConditioner

    if shape == "tiny":
        return stage.load_model("tiny")
    lm_config = {"mini": preset("mini").lm,
                 "small": dataclasses.replace(LMConfig(dim=1024, num_layers=24, num_heads=16, ffn_dim=4096), layout="stage")}[shape]
    lm_config = dataclasses.replace(lm_config, codebook_size=2048, align_offset=None)  # the tiny codec's 2048 codes
    tiny = build_tiny()
    torch.manual_seed(0)
    lm = StageLM(lm_config)
    text = TextConditioner(tiny.text.encoder, tiny.text.tokenizer, lm_config.dim)
    return StageModel(preset("tiny").replace(lm=lm_config, name=shape), lm, tiny.codec, text).eval()


def _child_cli(threads: str, seconds: float, repeats: int) -> dict:
    import numpy as np
    import soundfile as sf

    from stage.cli import main
    from stage.model.checkpoints import load_model
    from stage.threads import default_threads, physical_cores

    with tempfile.TemporaryDirectory() as tmp:
        mix = Path(tmp) / "loop.wav"
        sf.write(str(mix), (0.1 * np.random.default_rng(0).standard_normal(int(seconds * 32_000))).astype(np.float32), 32_000)
        if threads == "torch":  # torch's default is one thread per physical core
            threads = str(physical_cores())
        extra = [] if threads == "auto" else ["--threads", threads]
        steps, totals = [], []
        for i in range(repeats + 1):  # the first call warms up
            out = Path(tmp) / f"out{i}"
            t = time.perf_counter()
            rc = main(["generate", str(mix), "--model", "tiny", "--stem", "drums", "--seconds", str(seconds), "--seed", "0", "--quiet",
                       "--out", str(out), *extra])
            total = time.perf_counter() - t
            if rc != 0:
                raise SystemExit(f"stage generate exited {rc}")
            sidecar = json.loads(next(out.glob("*.json")).read_text())
            if i:
                steps.append(sidecar["timings"]["model/step_ms"])
                totals.append(total)
    used = default_threads(load_model("tiny").lm.num_parameters()) if threads == "auto" else int(threads)
    return dict(step_ms=statistics.median(steps), total_s=statistics.median(totals), threads=used,
                wait_policy=os.environ.get("OMP_WAIT_POLICY", "unset"))


# ----------------------------------------------------------------------------- parent


def measure(shape: str, config: str, args, busy: bool) -> dict:
    policy, _, threads = config.partition(":")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", shape, "--policy", policy, "--threads", threads or "auto",
           "--seconds", str(args.seconds), "--context-seconds", str(args.context_seconds), "--repeats", str(args.repeats)]
    hog = None
    if busy:
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"], env=env)
        time.sleep(1.0)  # let it take its core
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    finally:
        if hog is not None:
            hog.terminate()
            hog.wait()
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
        raise RuntimeError(f"{shape} {config}: child exited {done.returncode}: {tail[0]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("--shapes", default="tiny,small,cli", help="comma list of tiny, mini, small, cli (default tiny,small,cli)")
    ap.add_argument("--configs", default="passive:auto,unset:torch",
                    help="comma list of POLICY:THREADS (default passive:auto = stage's choice, unset:torch = the old defaults)")
    ap.add_argument("--seconds", type=float, default=2.0, help="stem seconds per generation (default 2)")
    ap.add_argument("--context-seconds", type=float, default=2.0, help="context seconds (default 2)")
    ap.add_argument("--repeats", type=int, default=2, help="timed generations per measurement, after a warm-up (default 2)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per child (default 900)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--policy", default="passive", help=argparse.SUPPRESS)
    ap.add_argument("--threads", default="auto", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.policy, args.threads, args.seconds, args.context_seconds, args.repeats)))
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # (`timeout`): still stop the busy loop in `measure`
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f} before the run (other jobs distort the ratios)")
    print(f"{'shape':>6} {'config':>14} {'threads':>7}  {'idle step':>9} {'busy step':>9} {'ratio':>6}  "
          f"{'idle s':>7} {'busy s':>7} {'ratio':>6}", flush=True)
    rows = []
    for shape in args.shapes.split(","):
        for config in args.configs.split(","):
            config = config if shape != "cli" else f"cli:{config.partition(':')[2] or 'auto'}"
            if any(r["shape"] == shape and r["config"] == config for r in rows):
                continue  # the cli shape ignores the policy: one row per thread setting
            try:
                idle = measure(shape, config, args, busy=False)
                busy = measure(shape, config, args, busy=True)
            except (RuntimeError, subprocess.TimeoutExpired) as err:
                print(f"{shape:>6} {config:>14} failed: {err}", flush=True)
                continue
            row = dict(shape=shape, config=config, idle=idle, busy=busy, step_ratio=busy["step_ms"] / idle["step_ms"],
                       total_ratio=busy["total_s"] / idle["total_s"])
            rows.append(row)
            print(f"{shape:>6} {config:>14} {idle['threads']:>7}  {idle['step_ms']:7.1f}ms {busy['step_ms']:7.1f}ms "
                  f"{row['step_ratio']:5.2f}x  {idle['total_s']:7.2f} {busy['total_s']:7.2f} {row['total_ratio']:5.2f}x", flush=True)
    print("target: busy / idle <= 2x (generation wall time)")
    if args.json:
        args.json.write_text(json.dumps(dict(load_before=os.getloadavg()[0], rows=rows), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
