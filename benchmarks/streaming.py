"""Benchmark: streaming generation (`generate_stems(on_chunk=...)`, `stage generate --stream`).

For each model (default: `tiny`, random, and the bundled `stage-mini-drums` with stage-mini-codec)
one take over a synthetic drum loop is generated twice with the same seed, in the same process:
offline (decode once at the end) and streamed (1 s chunks through `tokens.stream.StreamingDecoder`,
which carries the decoder's LSTM state across chunks).
It prints
- whether the codes are bit-identical (they must be);
- the seam error: max abs and rms difference of the stitched stream from the offline decode of
  the same codes, relative to the signal's rms;
- time to first audio and the streamed total, as ratios of the offline total;
- the decoder's receptive field measured on the generated codes: how far a cut reaches to the
  right (frames), and the seam error of the generic `WindowedDecoder` (each chunk re-decoded
  with L frames of left context, the LSTM restarting cold) for several L: the LSTM's memory,
  which is why StreamingDecoder carries its state instead.

    python benchmarks/streaming.py                       # tiny and stage-mini-drums, 5 s takes
    python benchmarks/streaming.py --models tiny --seconds 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def right_reach(decode, codes: torch.Tensor, hop: int, cut: int, rel: float = 1e-5) -> float:
    """Frames before a cut at frame `cut` where decoding codes[:cut] differs from the full decode
    by more than `rel` of the signal rms (the right receptive field, in frames)."""
    full = np.asarray(decode(codes))[0, 0]
    part = np.asarray(decode(codes[:, :, :cut]))[0, 0]
    rms = np.sqrt(np.mean(full**2))
    bad = np.nonzero(np.abs(part - full[: cut * hop]) > rel * rms)[0]
    return 0.0 if len(bad) == 0 else (cut * hop - bad[0]) / hop


def left_sweep(decode, codes: torch.Tensor, hop: int, lefts, chunk: int, right: int) -> dict[int, dict]:
    """Seam error of the streamed decode (chunks of `chunk` frames) for each left context."""
    from stage.tokens.stream import WindowedDecoder, seam_error

    offline = np.asarray(decode(codes))
    out = {}
    for L in lefts:
        dec = WindowedDecoder(decode, hop, left=L, right=right)
        for piece in torch.split(codes, chunk, dim=-1):
            dec.push(piece)
        dec.flush()
        out[L] = {**seam_error(dec.audio(), offline), "cost": dec.decoded_frames / codes.shape[-1]}
    return out


def run(name: str, seconds: float, seed: int, chunk_seconds: float) -> None:
    import stage
    from helpers import drum_loop
    from stage.generate.params import GenerationOptions
    from stage.generate.pipeline import generate_stems
    from stage.tokens.stream import HOLD_FRAMES, seam_error

    model = stage.load_model(name)
    sr = model.sample_rate
    mix = drum_loop(110.0, seconds, sr, 0.05)  # [1, N] at the model rate
    options = GenerationOptions(prompt="Genres: Funk. Moods: groovy.", seconds=seconds, seed=seed)
    generate_stems(model, mix, sr, GenerationOptions(seconds=0.2, seed=seed))  # warm-up (caches, kernels)

    t0 = time.perf_counter()
    offline = generate_stems(model, mix, sr, options)
    t_offline = time.perf_counter() - t0
    chunks = []
    t0 = time.perf_counter()
    streamed = generate_stems(model, mix, sr, options, on_chunk=chunks.append, chunk_seconds=chunk_seconds)
    t_stream = time.perf_counter() - t0
    first = chunks[0].seconds
    same = torch.equal(offline.codes, streamed.codes)
    err = seam_error(streamed.stems, offline.stems)
    print(f"\n== {name}: {seconds:g} s take, {streamed.codes.shape[-1]} frames, chunks of {chunk_seconds:g} s "
          f"(LSTM state carried, {HOLD_FRAMES} frames held back)")
    print(f"codes bit-identical: {same}")
    print(f"seam error vs offline decode: max {err['max_rel']:.2e}, rms {err['rms_rel']:.2e} (of signal rms {err['signal_rms']:.3f})")
    print(f"offline total {t_offline:.2f} s (codec decode {offline.timings['decode']:.2f} s); streamed total "
          f"{t_stream:.2f} s = {t_stream / t_offline:.2f}x offline (codec {streamed.timings['decode']:.2f} s); "
          f"first audio after {first:.2f} s = {first / t_offline:.2f}x the offline total, "
          f"{len(chunks)} chunks")

    decode, hop, codes = model.decode_model_audio, model.codec.hop_length, offline.codes[:1]
    cut = codes.shape[-1] // 2
    print(f"right receptive field (err > 1e-5 rms before a cut): {right_reach(decode, codes, hop, cut):.2f} frames")
    chunk = max(1, int(round(chunk_seconds * model.frame_rate)))
    sweep = left_sweep(decode, codes, hop, (0, 8, 16, 24, 32, 48, 64, 96, 128), chunk, 4)
    print("WindowedDecoder, left context L (frames): seam max / rms error, decoder frames per output frame")
    for L, e in sweep.items():
        print(f"  L = {L:3d}: {e['max_rel']:.2e} / {e['rms_rel']:.2e}, cost {e['cost']:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tiny,stage-mini-drums", help="comma-separated model names")
    ap.add_argument("--seconds", type=float, default=5.0, help="take length (at most one window)")
    ap.add_argument("--chunk-seconds", type=float, default=1.0, help="streaming chunk (default 1 s)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in args.models.split(","):
        run(name.strip(), args.seconds, args.seed, args.chunk_seconds)


if __name__ == "__main__":
    main()
