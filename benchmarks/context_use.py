"""Benchmark: does a trained STAGE model read its context, and does it read it *in time*?

Teacher-forced loss on held-out token windows (`stage tokenize ... --split valid`) with
- the true context (what training saw),
- the same context shifted in time (rolled by `--shift` frames: same sounds, wrong moments),
- the context dropped (all pad: the control).

A model that ignores the context scores the three alike; one that uses only its global content
(genre, density) beats "dropped" but not "shifted"; one that locks to the context beats both. The
loss of the first `--head` frames (where the stem's own history says little) is shown apart.

    python benchmarks/context_use.py runs/mini-drums/checkpoints/step-0001200 data/mini-drums-val
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def scores(lm, context, target, cond, head: int) -> tuple[float, float]:
    from stage.train.module import teacher_forced

    out = teacher_forced(lm, context, target, cond)
    logp = torch.log_softmax(out.logits.float(), -1)  # [B, K, T, V]
    ce = -logp.gather(-1, target[..., None])[..., 0]  # [B, K, T]
    valid = out.valid[None].expand_as(ce)
    first = valid.clone()
    first[..., head:] = False
    return out.loss.item(), (ce[first].mean()).item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a stage checkpoint folder or model name")
    ap.add_argument("tokens", help="a `stage tokenize` folder of held-out windows")
    ap.add_argument("--shift", type=int, default=12, help="frames to roll the context by (default 12 = 0.24 s)")
    ap.add_argument("--head", type=int, default=50, help="frames counted as the window's start (default 50 = 1 s)")
    ap.add_argument("--max", type=int, default=32, help="windows per context kind")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from stage.model.checkpoints import load_model
    from stage.train.tokens import TokenDataset

    model = load_model(args.model)
    lm = model.lm
    data = TokenDataset(args.tokens)
    examples = [data[i] for i in range(len(data))]
    print(f"{args.model} on {args.tokens}: teacher-forced loss (nats/token); shift {args.shift} frames")
    print("| context kind | windows | true | shifted | dropped | shifted - true | dropped - true | first 1 s: true / shifted / dropped |")
    print("|---|---|---|---|---|---|---|---|")
    for kind in ("metronome", "mix"):
        chosen = [e for e in examples if e.context_kind == kind][: args.max]
        if not chosen:
            continue
        context = torch.stack([torch.as_tensor(e.context).long() for e in chosen])
        target = torch.stack([torch.as_tensor(e.target).long() for e in chosen])
        with torch.no_grad():
            cond = model.text([e.caption for e in chosen])
            row = {name: scores(lm, c, target, cond, args.head) for name, c in (
                ("true", context), ("shifted", torch.roll(context, args.shift, -1)),
                ("dropped", torch.full_like(context, lm.config.pad_id)))}
        t, s, d = (row[k][0] for k in ("true", "shifted", "dropped"))
        heads = " / ".join(f"{row[k][1]:.3f}" for k in ("true", "shifted", "dropped"))
        print(f"| {kind} | {len(chosen)} | {t:.3f} | {s:.3f} | {d:.3f} | {s - t:+.3f} | {d - t:+.3f} | {heads} |")


if __name__ == "__main__":
    main()
