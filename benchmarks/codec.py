"""Benchmark: how faithfully a codec resynthesises held-out band songs, against a floor codec.

For each song rendered by `stage synth` (folders with meta.json, from a seed never used in
training), the drums stem, the bass stem and the mix are encoded and decoded, and compared with
the originals:

- mel distance: L1 between log10 mel spectrograms at windows 512/1024/2048 (lower is better);
- SI-SNR in dB (scale-invariant SNR, Le Roux et al. 2019; higher is better);
- drums onset F1: librosa onsets of the reconstruction against those of the original drums,
  mir_eval with a 30 ms window;
- bass pitch agreement: librosa.pyin on both; the share of the original's voiced frames whose
  reconstructed pitch is voiced and within 50 cents;
- codebook usage: perplexity exp(H) of each codebook's code histogram over every encoded frame,
  as a share of the codebook size, and the share of codes used at least once.

Rows: each codec named (default `stage-mini-codec`), then the random `tiny` codec as the floor.

    python benchmarks/codec.py --songs data/band-heldout
    python benchmarks/codec.py --songs data/band-heldout --codec runs/codec/model --max-songs 6
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

SR = 32_000


def load_codec(source: str):
    """A codec folder (EnCodec save_pretrained), a bundled asset name, or "tiny"."""
    import json

    from stage.model.config import CodecConfig
    from stage.model.sources import build_codec, bundled_dir

    if source == "tiny":
        return build_codec(CodecConfig(source="tiny"))
    path = Path(source) if Path(source).is_dir() else bundled_dir(source)
    if path is None:
        raise SystemExit(f"no codec folder or bundled asset named {source!r}")
    size = json.loads((path / "config.json").read_text())["codebook_size"]
    return build_codec(CodecConfig(source=str(path), codebook_size=size))


def si_snr(y: np.ndarray, x: np.ndarray) -> float:
    x = x - x.mean()
    y = y - y.mean()
    s = (y @ x) / max(x @ x, 1e-12) * x
    return float(10 * np.log10(max(s @ s, 1e-12) / max((y - s) @ (y - s), 1e-12)))


def onset_f1(y: np.ndarray, x: np.ndarray) -> float:
    import librosa
    import mir_eval

    ref = librosa.onset.onset_detect(y=x, sr=SR, units="time", backtrack=False)
    est = librosa.onset.onset_detect(y=y, sr=SR, units="time", backtrack=False)
    if len(ref) == 0:
        return float("nan")
    return float(mir_eval.onset.f_measure(ref, est, window=0.03)[0])


def pitch_agreement(y: np.ndarray, x: np.ndarray) -> tuple[int, int]:
    """(agreeing frames, voiced frames of the original)."""
    import librosa

    kw = dict(fmin=30.0, fmax=500.0, sr=SR, frame_length=2048, hop_length=512)
    f_ref, v_ref, _ = librosa.pyin(x, **kw)
    f_est, v_est, _ = librosa.pyin(y, **kw)
    ok = v_ref & v_est & (np.abs(1200 * np.log2(np.where(v_est, f_est, 1) / np.where(v_ref, f_ref, 1))) < 50)
    return int(ok.sum()), int(v_ref.sum())


def evaluate(codec, songs: list[Path], seconds: float) -> dict:
    import soundfile as sf

    from stage.train.codec import mel_distance, perplexity

    K, size = codec.config.num_codebooks, codec.config.codebook_size
    usage = [torch.zeros(size) for _ in range(K)]
    rows = {"mel": [], "si_snr": [], "onset_f1": []}
    per_stem_mel = {"drums": [], "bass": [], "mix": []}
    agree = voiced = 0
    n = int(seconds * SR)
    for song in songs:
        meta = json.loads((song / "meta.json").read_text())
        for stem, file in (("drums", meta["stems"]["drums"]), ("bass", meta["stems"]["bass"]), ("mix", meta["mix"])):
            x, sr = sf.read(song / file, dtype="float32", frames=n)
            assert sr == SR, f"{song / file}: {sr} Hz"
            codes = codec.encode(torch.from_numpy(x)[None, None])
            for k in range(K):
                usage[k] += torch.bincount(codes[0, k], minlength=size).float()
            y = codec.decode(codes)[0, 0, : len(x)].numpy()
            d = mel_distance(torch.from_numpy(y), torch.from_numpy(x))
            rows["mel"].append(d)
            per_stem_mel[stem].append(d)
            rows["si_snr"].append(si_snr(y, x))
            if stem == "drums":
                rows["onset_f1"].append(onset_f1(y, x))
            if stem == "bass":
                a, v = pitch_agreement(y, x)
                agree, voiced = agree + a, voiced + v
    return {
        "mel": float(np.mean(rows["mel"])),
        **{f"mel_{s}": float(np.mean(v)) for s, v in per_stem_mel.items()},
        "si_snr": float(np.mean(rows["si_snr"])),
        "onset_f1": float(np.nanmean(rows["onset_f1"])),
        "pitch": agree / max(voiced, 1),
        "usage": [perplexity(u) / size for u in usage],
        "used": [float((u > 0).float().mean()) for u in usage],
        "frames": int(usage[0].sum()),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--songs", required=True, help="a `stage synth` folder of held-out songs")
    ap.add_argument("--codec", nargs="+", default=["stage-mini-codec"], help="codec folders or bundled names")
    ap.add_argument("--max-songs", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds of each song to code")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write the table as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    songs = sorted(p.parent for p in Path(args.songs).glob("*/meta.json"))[: args.max_songs]
    if not songs:
        raise SystemExit(f"no songs (folders with meta.json) under {args.songs}")
    results = {}
    for name in [*args.codec, "tiny"]:
        t = time.time()
        results[name] = evaluate(load_codec(name), songs, args.seconds)
        results[name]["seconds"] = time.time() - t
        print(f"{name}: done in {results[name]['seconds']:.0f} s", file=sys.stderr)
    print(f"\n{len(songs)} held-out songs x {args.seconds:g} s (drums, bass, mix each); "
          f"{results[args.codec[0]]['frames']} frames per codebook\n")
    print("| codec | mel distance (mix / drums / bass) | SI-SNR dB | drums onset F1 (30 ms) | bass pitch within 50 c | "
          "codebook perplexity / size (q0..q3) | codes used / size |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        usage = " / ".join(f"{u:.2f}" for u in r["usage"])
        used = " / ".join(f"{u:.2f}" for u in r["used"])
        print(f"| {name} | {r['mel']:.3f} ({r['mel_mix']:.3f} / {r['mel_drums']:.3f} / {r['mel_bass']:.3f}) | "
              f"{r['si_snr']:.1f} | {r['onset_f1']:.3f} | {r['pitch']:.3f} | {usage} | {used} |")
    floor = results["tiny"]

    def ratio(a, b):
        return f"{a / b:.2f}x" if b > 1e-6 else f"{a:.3f} vs 0"

    for name in args.codec:
        r = results[name]
        print(f"\n{name} vs the tiny floor: mel distance {ratio(r['mel'], floor['mel'])}, "
              f"onset F1 {ratio(r['onset_f1'], floor['onset_f1'])}, pitch agreement {ratio(r['pitch'], floor['pitch'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
