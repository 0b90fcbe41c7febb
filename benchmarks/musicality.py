"""Benchmark: does STAGE-mini listen? Musical metrics on held-out band songs, each against a
control run of the same model with the context dropped (text only).

Rows (issue 10):
1. drums, mix as context: beat / downbeat F1 of the generated drums against the song's true
   beats (madmom tracker, mir_eval matching, 70 ms, no 5 s trim) and the tempo error;
   drums, --bpm auto: the README's main command; a click on the beats tracked in the whole song,
   the drums scored against the true beats (beside the tracked click's own F1);
2. drums, click as context (the authors' test protocol): BPM ~ U(100, 179), first beat offset
   ~ U(0, 0.3) s, 10 s clips; beat F1 against the click grid;
3. bass, mix as context: chord-tone share (pyin pitch class in the chord of the moment) and the
   share of onsets on the song's eighth-note grid (+-35 ms);
4. audio quality: FAD and KAD (stage eval's log-mel embedder) of generated stems against the
   real held-out stems; the codec's resynthesis of the real stems is the floor, the control the
   ceiling;
5. text adherence: a genre classifier (logistic regression on log-mel statistics) trained on real
   band drum stems from training songs, applied to drums generated (text only) with each genre's
   prompt; chance is 1 / genres;
6. whole songs: 60 s takes through the long-form windows; beat F1 per 5 s window against the
   song's true beats.

The beat tracker (madmom when installed, as stage eval) runs the same way on every row.

    python benchmarks/musicality.py --songs data/band-heldout --long-songs data/band-long \
        --train-songs data/band-train
    python benchmarks/musicality.py --quick ...     # fewer clips, a smoke run
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


def read_song(folder: Path, seconds: float | None = None, start: float = 0.0) -> dict:
    """meta.json plus the stems as float32 mono arrays (a slice of `seconds` from `start`)."""
    import soundfile as sf

    meta = json.loads((folder / "meta.json").read_text())
    a = int(round(start * SR))
    n = None if seconds is None else int(round(seconds * SR))
    stems = {}
    for stem, file in meta["stems"].items():
        x, sr = sf.read(folder / file, dtype="float32", start=a, frames=-1 if n is None else n)
        assert sr == SR
        stems[stem] = x if n is None else np.pad(x, (0, max(0, n - len(x))))
    return {"meta": meta, "stems": stems, "start": start}


def window_start(meta: dict, seconds: float) -> float:
    """The first downbeat (the music has started), moved back if the window would overrun."""
    first = float(meta["downbeats"][0]) if meta["downbeats"] else 0.0
    return max(0.0, min(first, float(meta["seconds"]) - seconds))


def in_window(times, start: float, seconds: float) -> np.ndarray:
    t = np.asarray(times, dtype=np.float64) - start
    return t[(t >= 0) & (t < seconds)]


def generate(model, context, prompt: str, seconds: float, seed: int, bpm=None, offset=0.0, beats_per_bar=4):
    from stage.generate.params import GenerationOptions
    from stage.generate.pipeline import generate_stems

    options = GenerationOptions(prompt=prompt, seconds=seconds, seed=seed, bpm=bpm, offset=offset, beats_per_bar=beats_per_bar)
    result = generate_stems(model, context, SR if context is not None else None, options)
    return result.stems[0].mean(axis=0)  # [N]


def f1_against(audio, beats, downbeats, seconds: float, bpm: float):
    from stage.data.beats import BeatGrid
    from stage.eval.beat import score_stem

    ref = BeatGrid(np.asarray(beats), np.asarray(downbeats), bpm, 4, "truth")
    scores, _ = score_stem(audio, SR, ref, span=seconds, reference_bpm=bpm)
    return scores


def mean(values) -> float:
    v = [x for x in values if x is not None and np.isfinite(x)]
    return float(np.mean(v)) if v else float("nan")


# --------------------------------------------------------------------------- rows


def drums_with_mix(model, songs, seconds, seed):
    rows = {"listen": [], "control": []}
    audio = {"listen": [], "control": [], "real": []}
    for i, folder in enumerate(songs):
        meta = json.loads((folder / "meta.json").read_text())
        start = window_start(meta, seconds)
        song = read_song(folder, seconds, start)
        context = sum(x for s, x in song["stems"].items() if s != "drums")
        beats, downbeats = in_window(meta["beats"], start, seconds), in_window(meta["downbeats"], start, seconds)
        audio["real"].append(song["stems"]["drums"])
        for kind, ctx in (("listen", context), ("control", None)):
            y = generate(model, ctx, meta["caption"], seconds, seed + i)
            audio[kind].append(y)
            s = f1_against(y, beats, downbeats, seconds, meta["bpm"])
            rows[kind].append((s.beat.f1, s.downbeat.f1,
                               abs(s.tempo.ratio - 1) if s.tempo.ratio else float("nan")))
    return {k: tuple(mean(c) for c in zip(*v)) for k, v in rows.items()}, audio


def drums_with_tracked_click(model, songs, seconds, seed):
    """The README's main command (`stage generate song.wav --stem drums --bpm auto`): the beats
    tracked in the whole song (mix minus drums, as a user would give it) become a click, and the
    drums made on it are scored against the song's true beats. The tracker's F1 against the truth
    is reported beside it: the model cannot beat the beats it was given."""
    from stage.data.beats import track_beats
    from stage.data.metronome import render_clicks

    rows: dict = {"listen": [], "tracker": []}
    for i, folder in enumerate(songs):
        meta = json.loads((folder / "meta.json").read_text())
        start = window_start(meta, seconds)
        whole = read_song(folder)
        mix = sum(x for s, x in whole["stems"].items() if s != "drums")
        grid = track_beats(mix, SR)
        tb, td = in_window(grid.beats, start, seconds), in_window(grid.downbeats, start, seconds)
        beats, downbeats = in_window(meta["beats"], start, seconds), in_window(meta["downbeats"], start, seconds)
        click = render_clicks(tb, td, seconds, SR)
        y = generate(model, click, meta["caption"], seconds, seed + i)
        rows["listen"].append(f1_against(y, beats, downbeats, seconds, meta["bpm"]).beat.f1)
        rows["tracker"].append(f1_against(click, beats, downbeats, seconds, meta["bpm"]).beat.f1)
    return {k: mean(v) for k, v in rows.items()}


def drums_with_click(model, clips, seconds, seed):
    from stage.data.metronome import metronome_times

    rng = np.random.default_rng(seed)
    rows = {"listen": [], "control": []}
    for i in range(clips):
        bpm = float(rng.uniform(100, 179))
        offset = float(rng.uniform(0, 0.3))
        beats, downbeats = metronome_times(bpm, 4, seconds, offset)
        for kind in ("listen", "control"):
            if kind == "listen":
                y = generate(model, None, "", seconds, seed + i, bpm=bpm, offset=offset)
            else:
                y = generate(model, None, "", seconds, seed + i)
            s = f1_against(y, beats, downbeats, seconds, bpm)
            rows[kind].append(s.beat.f1)
    return {k: mean(v) for k, v in rows.items()}


def bass_with_mix(model, songs, seconds, seed):
    from stage.eval.beat import detect_onsets
    from stage.eval.harmony import chord_tone_share, grid_alignment

    rows = {"listen": [], "control": [], "real": [], "codec": []}
    audio = {"listen": [], "control": [], "real": []}
    for i, folder in enumerate(songs):
        meta = json.loads((folder / "meta.json").read_text())
        start = window_start(meta, seconds)
        song = read_song(folder, seconds, start)
        context = sum(x for s, x in song["stems"].items() if s != "bass")
        beats = in_window(meta["beats"], start, seconds)
        for kind in ("listen", "control", "real", "codec"):
            if kind == "real":
                y = song["stems"]["bass"]
            elif kind == "codec":  # what the codec lets through: a model's reachable best
                x = song["stems"]["bass"]
                y = np.asarray(model.decode_model_audio(model.encode_model_audio(x[None]))[0]).reshape(-1)[: len(x)]
            else:
                y = generate(model, context if kind == "listen" else None, meta["caption"], seconds, seed + i)
            if kind in audio:
                audio[kind].append(y)
            share = chord_tone_share(y, SR, meta["chords"], offset=start).chord_tone_share
            rows[kind].append((share, grid_alignment(detect_onsets(y, SR), beats)))
    return {k: tuple(mean(c) for c in zip(*v)) for k, v in rows.items()}, audio


def quality(model, audio: dict) -> dict:
    """FAD / KAD (log-mel) of each set against the real stems; the codec resynthesis as floor."""
    from stage.eval.distribution import frechet_distance, kernel_audio_distance, pool_embeddings
    from stage.eval.embedders import LogMelEmbedder

    emb = LogMelEmbedder()
    real = pool_embeddings([emb.embed(x, SR) for x in audio["real"]])
    codec = [model.decode_model_audio(model.encode_model_audio(x[None]))[0][: len(x)] for x in audio["real"]]
    out = {}
    for name, items in (("codec resynthesis (floor)", codec), ("generated", audio["listen"]),
                        ("control (ceiling)", audio["control"])):
        e = pool_embeddings([emb.embed(np.asarray(x).reshape(-1), SR) for x in items])
        out[name] = (frechet_distance(e, real).value, kernel_audio_distance(e, real).value)
    return out


def genre_features(x: np.ndarray) -> np.ndarray:
    import librosa

    mel = librosa.power_to_db(librosa.feature.melspectrogram(y=x, sr=SR, n_mels=40, hop_length=512), ref=1.0,
                              amin=1e-10, top_db=None)
    onset = librosa.onset.onset_strength(y=x, sr=SR, hop_length=512)
    tempo_profile = np.abs(np.fft.rfft(onset - onset.mean(), n=512))[:64]
    return np.concatenate([mel.mean(1), mel.std(1), np.log1p(tempo_profile)])


def train_classifier(features: np.ndarray, labels: np.ndarray, classes: int, steps: int = 500):
    """Multinomial logistic regression (L2 1e-3) with L-BFGS on standardised features."""
    mu, sd = features.mean(0), features.std(0) + 1e-6
    x = torch.tensor((features - mu) / sd, dtype=torch.float64)
    y = torch.tensor(labels)
    w = torch.zeros(x.shape[1], classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + 1e-3 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lambda f: ((torch.tensor((f - mu) / sd, dtype=torch.float64) @ w + b).argmax(-1)).numpy()


def text_adherence(model, train_songs, per_genre, seconds, seed):
    metas = [(f, json.loads((f / "meta.json").read_text())) for f in train_songs]
    genres = sorted({m["genre"] for _, m in metas})
    feats, labels = [], []
    for folder, meta in metas:
        for k in range(2):  # two windows per song
            start = min(float(meta["seconds"]) - seconds, window_start(meta, seconds) + k * seconds)
            x = read_song(folder, seconds, max(0.0, start))["stems"]["drums"]
            feats.append(genre_features(x))
            labels.append(genres.index(meta["genre"]))
    classify = train_classifier(np.stack(feats), np.array(labels), len(genres))
    captions = {m["genre"]: m["caption"].split(" Moods:")[0] for _, m in metas}  # "Genres: Funk, ..."
    hits = total = 0
    for g, genre in enumerate(genres):
        for j in range(per_genre):
            y = generate(model, None, captions[genre], seconds, seed + 100 * g + j)
            hits += int(classify(genre_features(y)[None])[0] == g)
            total += 1
    return hits / total, 1 / len(genres), len(genres)


LONG_KINDS = ("mix", "click", "control")


def long_form(model, songs, seconds, window):
    """Whole-song takes through the long-form windows, scored per window against the song's true
    beats, with three contexts: the mix (minus drums), a click on the song's true beats (what
    `--bpm` gives), and none (the control). The first window is made exactly as a single-window
    take, so the later windows against the first show whether the seams drift.
    Returns {kind: [per-window F1 list per song]}."""
    from stage.data.metronome import render_clicks

    out: dict = {kind: [] for kind in LONG_KINDS}
    for i, folder in enumerate(songs):
        song = read_song(folder, seconds)
        meta = song["meta"]
        contexts = {"mix": sum(x for s, x in song["stems"].items() if s != "drums"),
                    "click": render_clicks(meta["beats"], meta["downbeats"], seconds, SR),  # keeps [0, seconds)
                    "control": None}
        for kind, context in contexts.items():
            y = generate(model, context, meta["caption"], seconds, 1000 + i)
            per_window = []
            for w0 in np.arange(0, seconds - window + 1e-6, window):
                beats = in_window(meta["beats"], w0, window)
                downbeats = in_window(meta["downbeats"], w0, window)
                if len(beats) < 2:
                    continue
                seg = y[int(w0 * SR): int((w0 + window) * SR)]
                per_window.append(f1_against(seg, beats, downbeats, window, meta["bpm"]).beat.f1)
            out[kind].append(per_window)
    return out


ROWS = ("drums_mix", "drums_auto", "drums_click", "text", "long", "bass_mix")


def run_rows(args, rows) -> dict:
    from stage.model.checkpoints import load_model

    songs = sorted(p.parent for p in Path(args.songs).glob("*/meta.json"))[: args.max_songs]
    if not songs:
        raise SystemExit(f"no songs under {args.songs}")
    t0 = time.time()
    results: dict = {"songs": len(songs), "clips": args.clips}

    def done(name):
        print(f"  {name} done ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)

    if {"drums_mix", "drums_auto", "drums_click", "text", "long"} & set(rows):
        drums = load_model(args.drums).eval()
        seconds = args.seconds or float(drums.config.window_seconds)
        results["window"] = seconds
        if "drums_mix" in rows:
            results["drums_mix"], audio = drums_with_mix(drums, songs, seconds, args.seed)
            results["drums_quality"] = quality(drums, audio)
            done("drums/mix")
        if "drums_auto" in rows:
            results["drums_auto"] = drums_with_tracked_click(drums, songs, seconds, args.seed)
            done("drums/auto")
        if "drums_click" in rows:
            results["drums_click"] = drums_with_click(drums, args.clips, 10.0, args.seed)
            done("drums/click")
        if "text" in rows and args.train_songs:
            train = sorted(p.parent for p in Path(args.train_songs).glob("*/meta.json"))
            results["text"] = text_adherence(drums, train, args.per_genre, seconds, args.seed)
            done("text adherence")
        if "long" in rows and args.long_songs:
            long_songs = sorted(p.parent for p in Path(args.long_songs).glob("*/meta.json"))[: args.long_count]
            results["long"] = long_form(drums, long_songs, 60.0, seconds)
            done("long-form")
    if "bass_mix" in rows:
        bass = load_model(args.bass).eval()
        seconds = args.seconds or float(bass.config.window_seconds)
        results["window"] = seconds
        results["bass_mix"], audio = bass_with_mix(bass, songs, seconds, args.seed)
        results["bass_quality"] = quality(bass, audio)
        done("bass/mix")
    results["seconds"] = time.time() - t0
    return results


def codec_note(bm: dict, column: int) -> str:
    """The codec-resynthesis figure of a bass row (absent in JSON from before it was measured)."""
    return f", codec resynthesis {bm['codec'][column]:.3f}" if "codec" in bm else ""


def print_table(results: dict) -> None:
    r = results
    print(f"\nSTAGE-mini on {r['songs']} held-out band songs ({r['window']:g} s clips), {r['clips']} click clips "
          f"(10 s, 100-179 BPM); control = the same model with the context dropped.\n")
    print("| row | metric | with context | control (context dropped) | target |")
    print("|---|---|---|---|---|")
    if "drums_mix" in r:
        dm = r["drums_mix"]
        print(f"| drums, mix | beat F1 | {dm['listen'][0]:.3f} | {dm['control'][0]:.3f} | >= 0.8 vs <= 0.35 |")
        print(f"| drums, mix | downbeat F1 | {dm['listen'][1]:.3f} | {dm['control'][1]:.3f} | |")
        print(f"| drums, mix | tempo error, mean abs(ratio - 1) | {dm['listen'][2]:.3f} | {dm['control'][2]:.3f} | |")
    if "drums_auto" in r:
        da = r["drums_auto"]
        control = f"{r['drums_mix']['control'][0]:.3f}" if "drums_mix" in r else "(run drums_mix)"
        print(f"| drums, --bpm auto (click on the tracked beats) | beat F1 vs the true beats | {da['listen']:.3f} "
              f"(the click itself {da['tracker']:.3f}) | {control} | the README's main command |")
    if "drums_click" in r:
        dc = r["drums_click"]
        print(f"| drums, click | beat F1 vs the click grid | {dc['listen']:.3f} | {dc['control']:.3f} | >= 0.85 vs <= 0.35 |")
    if "bass_mix" in r:
        bm = r["bass_mix"]
        for column, metric, target in ((0, "chord-tone share", ">= 0.7, above control"),
                                       (1, "onsets on the eighth grid (+-35 ms)", "above control")):
            print(f"| bass, mix | {metric} | {bm['listen'][column]:.3f} | {bm['control'][column]:.3f} "
                  f"(real bass {bm['real'][column]:.3f}{codec_note(bm, column)}) | {target} |")
    for stem in ("drums", "bass"):
        if f"{stem}_quality" in r:
            q = r[f"{stem}_quality"]
            cells = "; ".join(f"{name} {fad:.2f} / {kad:.2f}" for name, (fad, kad) in q.items())
            print(f"| {stem}, quality | FAD / KAD x100 (log-mel) vs real stems | {cells} | | floor < generated < ceiling |")
    if "text" in r:
        acc, chance, n = r["text"]
        print(f"| drums, text only | genre accuracy ({n} genres) | {acc:.3f} | chance {chance:.3f} | >= 2x chance |")
    if "long" in r:
        long = r["long"] if isinstance(r["long"], dict) else {"mix": r["long"]}  # older JSON: the mix only
        control = long.get("control")
        for kind in ("mix", "click"):
            if kind not in long:
                continue
            per = long[kind]
            flat = [f for song in per for f in song]
            later = [f for song in per for f in song[1:]]
            first = mean([s[0] for s in per if s])
            ctrl = f"{mean([f for song in control for f in song]):.3f}" if control else "(not run)"
            print(f"| drums, 60 s long-form, {kind} context | beat F1 per {r['window']:g} s window: mean (first / "
                  f"later / last) | {mean(flat):.3f} ({first:.3f} / {mean(later):.3f} / "
                  f"{mean([s[-1] for s in per if s]):.3f}) | {ctrl} | later windows within 0.05 of the first |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--songs", help="held-out `stage synth` songs (a seed never trained on)")
    ap.add_argument("--long-songs", help="held-out songs of >= 60 s for the whole-song row")
    ap.add_argument("--long-count", type=int, default=4)
    ap.add_argument("--train-songs", help="training songs for the genre classifier")
    ap.add_argument("--drums", default="stage-mini-drums")
    ap.add_argument("--bass", default="stage-mini-bass")
    ap.add_argument("--max-songs", type=int, default=24)
    ap.add_argument("--clips", type=int, default=40, help="click-context clips (the authors' protocol)")
    ap.add_argument("--seconds", type=float, default=None, help="clip length for the mix rows (default: the model's window)")
    ap.add_argument("--per-genre", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    ap.add_argument("--quick", action="store_true", help="6 songs, 8 clips, 2 per genre, 2 long songs: a smoke run")
    ap.add_argument("--json", help="write every number here")
    ap.add_argument("--table", nargs="+", metavar="JSON", help="only print the table of earlier --json runs (merged)")
    args = ap.parse_args(argv)
    if args.table:
        merged: dict = {}
        for path in args.table:
            merged.update(json.loads(Path(path).read_text()))
        print_table(merged)
        return 0
    if not args.songs:
        ap.error("--songs is required")
    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        ap.error(f"unknown row {unknown[0]!r} (choose from {', '.join(ROWS)})")
    torch.set_num_threads(args.threads)
    if args.quick:
        args.max_songs, args.clips, args.per_genre, args.long_count = 6, 8, 2, 2
    results = run_rows(args, rows)
    print_table(results)
    print(f"\n({results['seconds']:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
