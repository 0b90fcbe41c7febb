"""`evaluate(EvalConfig) -> EvalReport`: the whole of `stage eval`, callable from Python.

Inputs are folders of audio files (not recursive; hidden files ignored; WAV, FLAC, OGG, MP3,
AIFF, M4A, OPUS):

- generated: the stems to judge (files matching an `exclude` pattern, by default `*_mix.*`, the
  mix previews `stage generate` writes next to its stems, are left out);
- reference: real stems, the target distribution for FAD/KAD (any names, never paired);
- contexts (optional): the mixes (or click tracks) the stems were generated for.

**Pairing rule.** A generated file `NAME.ext` pairs with the context file of the same name
(any extension); failing that, with the context whose name is the longest prefix of NAME that is
followed by "_", "-" or "." (so `song_drums_seed3.wav` and `song-take2.wav` both pair with
`song.wav`). A generated file without a context is an error when contexts are needed; a context
that no generated file uses is only noted. The same rule maps generated files to the entries of
a per-file beats JSON.

**Reference grid for the beat metrics**, in order of precedence:
1. `bpm` (+ `beats_per_bar`, `offset`): a metronome over the stem's length, as generated with
   `--bpm` (`stage.data.metronome.metronome_times`);
2. `beats_file`: a JSON `{"beats": [...], "downbeats": [...]}` for every file, a JSON object
   mapping names to such objects, or JSON lines (a manifest) whose rows carry `beats`,
   `downbeats` and a `name` or `song` field;
3. contexts: the beats and downbeats tracked in each context (`stage.data.beats.track_beats`).
Reference onsets are the grid's beats for 1-2 and the onsets detected in the context for 3.
Only the part of a stem that has a reference (its overlap with the context) is scored.

Length: about 570 lines on purpose: pairing, loading and every metric's driver share one
`_Run` state and one pass over the files; splitting them would pass that state between modules.
"""

from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from stage.errors import StageError
from stage.eval.adapters import AdapterOptions, AdapterUnavailable, ClapTextScorer, CocolaScorer, build_embedder
from stage.eval.beat import BEAT_WINDOW, ONSET_WINDOW, detect_onsets, onset_scores, score_stem
from stage.eval.cache import EmbeddingCache, default_cache_path
from stage.eval.distribution import POOLINGS, frechet_distance, kernel_audio_distance, pool_embeddings

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff", ".m4a", ".opus")
METRICS = ("beat", "onset", "fad", "kad", "cocola", "clap", "chords")
DEFAULT_METRICS = ("beat", "onset", "fad", "kad")
DEFAULT_EXCLUDE = ("*_mix.*",)
SEPARATORS = "_-."
HIST_BINS = 30


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how. `metrics=None` means the defaults (beat, onset, fad, kad),
    each skipped with a note when its inputs are missing; metrics named explicitly must run."""

    generated: str
    reference: str | None = None
    contexts: str | None = None
    metrics: tuple[str, ...] | None = None
    embedders: tuple[str, ...] = ("logmel",)
    pooling: str = "frames"
    bpm: float | None = None
    beats_per_bar: int = 4
    offset: float = 0.0
    beats_file: str | None = None
    tracker: str = "auto"
    trim: bool = False
    beat_window: float = BEAT_WINDOW
    onset_window: float = ONSET_WINDOW
    prompt: str | None = None
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    cache: str | None = "auto"  # "auto": per-user cache dir; a path; or None to disable
    adapters: AdapterOptions = field(default_factory=AdapterOptions)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.metrics is not None:
            unknown = [m for m in self.metrics if m not in METRICS]
            if unknown or not self.metrics:
                raise StageError(f"unknown metric {', '.join(unknown) or '(none)'} (choose from {', '.join(METRICS)})")
        if not self.embedders:
            raise StageError("give at least one embedder")
        if self.pooling not in POOLINGS:
            raise StageError(f"unknown pooling {self.pooling!r} (choose from {', '.join(POOLINGS)})")
        if self.tracker not in ("auto", "madmom", "librosa"):
            raise StageError(f"unknown beat tracker {self.tracker!r} (choose from auto, madmom, librosa)")
        if self.bpm is not None:
            from stage.data.metronome import validate_tempo

            validate_tempo(self.bpm, self.beats_per_bar)
        if not 0 < self.beat_window <= 1 or not 0 < self.onset_window <= 1:
            raise StageError("matching windows must be in (0, 1] seconds")


@dataclass
class FileResult:
    """Per generated file: its scores (None when not computed) and what the plots need."""

    name: str
    path: str
    seconds: float
    context: str | None = None
    beat: dict | None = None
    onset: dict | None = None
    cocola: float | None = None
    clap: float | None = None
    chords: dict | None = None  # bass coherence: chord-tone share and where the chords came from
    prompt: str | None = None
    grid: dict | None = None  # reference and detected beats/downbeats, span
    notes: list[str] = field(default_factory=list)


@dataclass
class EvalReport:
    """Everything `stage eval` writes. summary: namespaced means (`eval/beat_f1`, ...)."""

    summary: dict
    files: list[FileResult]
    distributions: dict
    skipped: list[str]
    notes: list[str]
    config: dict

    def to_dict(self) -> dict:
        return {"summary": self.summary, "distributions": self.distributions, "skipped": self.skipped,
                "notes": self.notes, "config": self.config, "files": [asdict(f) for f in self.files]}


# --------------------------------------------------------------------------- files


def list_audio(folder: str | os.PathLike, what: str, exclude: tuple[str, ...] = ()) -> list[Path]:
    """Audio files directly in `folder`, sorted by name; StageError when there are none."""
    d = Path(folder)
    if not d.exists():
        raise StageError(f"{what} folder {d} does not exist")
    if not d.is_dir():
        raise StageError(f"{what} {d} is not a folder")
    files = sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith(".")
                   and p.suffix.lower() in AUDIO_EXTENSIONS and not any(fnmatch.fnmatch(p.name, pat) for pat in exclude))
    if not files:
        raise StageError(f"no audio files in {what} folder {d} ({', '.join(AUDIO_EXTENSIONS)})")
    return files


def match_name(name: str, candidates) -> str | None:
    """The pairing rule (module docstring): exact name, else the longest candidate that is a
    prefix of `name` followed by one of "_", "-", "."."""
    if name in candidates:
        return name
    best = None
    for c in candidates:
        if len(name) > len(c) and name.startswith(c) and name[len(c)] in SEPARATORS and (best is None or len(c) > len(best)):
            best = c
    return best


def pair_contexts(generated: list[Path], contexts: list[Path]) -> tuple[dict[Path, Path], list[Path]]:
    """Map each generated file to its context; returns (pairs, unused contexts)."""
    by_name: dict[str, Path] = {}
    for c in contexts:
        if c.stem in by_name:
            raise StageError(f"two contexts share the name {c.stem!r}: {by_name[c.stem].name} and {c.name}")
        by_name[c.stem] = c
    pairs, missing = {}, []
    for g in generated:
        key = match_name(g.stem, by_name)
        if key is None:
            missing.append(g.name)
        else:
            pairs[g] = by_name[key]
    if missing:
        raise StageError(f"{len(missing)} generated file(s) have no context (first: {missing[0]}); a file NAME.wav "
                         f"pairs with context NAME.* or PREFIX.* where NAME = PREFIX + '_'/'-'/'.' + anything")
    used = set(pairs.values())
    return pairs, [c for c in contexts if c not in used]


def _grid_from(obj, where: str):
    from stage.data.beats import BeatGrid
    from stage.eval.beat import bpm_of

    if not isinstance(obj, dict) or "beats" not in obj:
        raise StageError(f"{where}: expected an object with a 'beats' list")
    try:
        beats = np.sort(np.asarray(obj["beats"], dtype=np.float64).reshape(-1))
        downbeats = np.sort(np.asarray(obj.get("downbeats", []), dtype=np.float64).reshape(-1))
    except (TypeError, ValueError):
        raise StageError(f"{where}: beats and downbeats must be lists of seconds") from None
    if not (np.isfinite(beats).all() and np.isfinite(downbeats).all()) or (beats < 0).any() or (downbeats < 0).any():
        raise StageError(f"{where}: beat times must be finite and >= 0")
    if beats.size < 2:
        raise StageError(f"{where}: needs at least two beats")
    meter = obj.get("beats_per_bar", 4)
    return BeatGrid(beats, downbeats, bpm_of(beats) or 0.0, int(meter) if isinstance(meter, int) else 4, "file")


def load_entries(path: str | os.PathLike) -> dict:
    """Read a beats JSON / JSON-lines file -> {name or "*": its JSON object} (see the module
    docstring); each object carries `beats` and maybe `downbeats`, `beats_per_bar`, `chords`."""
    p = Path(path)
    if not p.is_file():
        raise StageError(f"beats file {p} does not exist")
    text = p.read_text(encoding="utf-8", errors="replace")
    try:
        obj = json.loads(text)
        rows = None
    except json.JSONDecodeError:
        try:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as err:
            raise StageError(f"{p}: not JSON or JSON lines (line {err.lineno}: {err.msg})") from None
    if rows is None and isinstance(obj, dict) and "beats" in obj:
        return {"*": obj}
    if rows is None and isinstance(obj, dict):
        return {_entry_name(k): v for k, v in obj.items()}
    rows = rows if rows is not None else obj
    if not isinstance(rows, list) or not rows:
        raise StageError(f"{p}: expected beats, a name -> beats object, or JSON lines with name/song and beats")
    entries = {}
    for i, row in enumerate(rows):
        name = row.get("name") or row.get("song") if isinstance(row, dict) else None
        if not name:
            raise StageError(f"{p}: row {i + 1} has no 'name' or 'song'")
        entries[_entry_name(name)] = row
    return entries


def load_beats_file(path: str | os.PathLike) -> dict:
    """Read a beats JSON / JSON-lines file -> {name or "*": BeatGrid} (see the module docstring)."""
    return {k: _grid_from(v, f"{path}: {k}" if k != "*" else str(path)) for k, v in load_entries(path).items()}


def _entry_name(name) -> str:
    """A beats-file key as a file name stem: "song.wav" and "dir/song.wav" -> "song"."""
    p = Path(str(name))
    return p.stem if p.suffix.lower() in AUDIO_EXTENSIONS else p.name


# --------------------------------------------------------------------------- evaluation


def _progress(items, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="file", disable=None if enabled else True, leave=False)


def _mean(values) -> float | None:
    v = [float(x) for x in values if x is not None]
    return float(np.mean(v)) if v else None


def _median(values) -> float | None:
    v = [float(x) for x in values if x is not None]
    return float(np.median(v)) if v else None


def _round_times(t) -> list[float]:
    return [round(float(x), 4) for x in t]


class _Run:
    """State of one evaluation (kept out of module globals)."""

    def __init__(self, config: EvalConfig, progress: bool):
        self.c = config
        self.progress = progress
        self.skipped: list[str] = []
        self.notes: list[str] = []
        self.explicit = config.metrics is not None
        self.metrics = list(DEFAULT_METRICS if config.metrics is None else config.metrics)

    def load(self, path: Path):
        """Read a file each time it is needed (audio is not kept: sets can be large)."""
        from stage.audio import load_audio

        return load_audio(path)

    def drop(self, metric: str, message: str) -> None:
        """A metric cannot run: an error when it was asked for by name, else a skip note."""
        if self.explicit:
            raise StageError(message)
        self.metrics.remove(metric)
        self.skipped.append(f"skipped: {metric}: {message}")

    def skip(self, metric: str, message: str) -> None:
        """An optional model is missing: always a skip message, never an error."""
        if metric in self.metrics:
            self.metrics.remove(metric)
        self.skipped.append(message if message.startswith("skipped:") else f"skipped: {metric}: {message}")


def evaluate(config: EvalConfig, progress: bool = True) -> EvalReport:
    """Run the configured metrics. Raises StageError on bad input (one line)."""
    run = _Run(config, progress)
    c = config
    generated = list_audio(c.generated, "generated", c.exclude)
    contexts = list_audio(c.contexts, "contexts") if c.contexts else None
    pairs: dict[Path, Path] = {}
    if contexts is not None:
        pairs, unused = pair_contexts(generated, contexts)
        if unused:
            run.notes.append(f"{len(unused)} context(s) have no generated file (first: {unused[0].name})")
    grids = load_beats_file(c.beats_file) if c.beats_file else None

    has_grid = c.bpm is not None or grids is not None or contexts is not None
    for metric in ("beat", "onset"):
        if metric in run.metrics and not has_grid:
            run.drop(metric, "needs a reference grid: pass --contexts DIR, --bpm N or --beats FILE")
    for metric in ("fad", "kad"):
        if metric in run.metrics and not c.reference:
            run.drop(metric, "needs --reference DIR (real stems)")
    if "cocola" in run.metrics and contexts is None:
        run.drop("cocola", "needs --contexts DIR (the mixes the stems were generated for)")

    files = [FileResult(g.stem, str(g), 0.0, context=str(pairs[g]) if g in pairs else None) for g in generated]
    for f, g in zip(files, generated):  # read every generated file once up front: fail fast on a bad one
        audio, sr = run.load(g)
        f.seconds = round(audio.shape[1] / sr, 4)

    if "beat" in run.metrics or "onset" in run.metrics:
        _rhythm(run, generated, files, pairs, grids)
    if "cocola" in run.metrics:
        _cocola(run, generated, files, pairs)
    if "clap" in run.metrics:
        _clap(run, generated, files)
    if "chords" in run.metrics:
        _chords(run, generated, files, pairs)
    distributions = _distributions(run, generated) if {"fad", "kad"} & set(run.metrics) else {}

    summary = _summary(files, distributions)
    cfg = {k: v for k, v in asdict(c).items() if k != "adapters"}
    cfg["adapters"] = {k: v for k, v in asdict(c.adapters).items() if v is not None}
    cfg["metrics_run"] = run.metrics
    return EvalReport(summary, files, distributions, run.skipped, run.notes, cfg)


def _reference_for(run: _Run, g: Path, f: FileResult, pairs, grids, context_cache):
    """(BeatGrid, reference onsets, span, exact reference bpm or None) for one generated file."""
    from stage.data.beats import BeatGrid
    from stage.data.metronome import metronome_times
    from stage.eval.beat import quiet_track

    c = run.c
    if c.bpm is not None:
        beats, downbeats = metronome_times(c.bpm, c.beats_per_bar, f.seconds, c.offset)
        return BeatGrid(beats, downbeats, float(c.bpm), c.beats_per_bar, "metronome"), beats, f.seconds, float(c.bpm)
    if grids is not None:
        key = "*" if "*" in grids else match_name(g.stem, grids)
        if key is None:
            raise StageError(f"beats file {c.beats_file} has no entry for {g.name} (same pairing rule as contexts)")
        grid = grids[key]
        return grid, grid.beats, f.seconds, None
    ctx = pairs[g]
    if ctx not in context_cache:
        audio, sr = run.load(ctx)
        try:
            grid = quiet_track(audio, sr, c.tracker)
        except StageError as err:
            raise StageError(f"{ctx}: {err}") from None
        context_cache[ctx] = (grid, detect_onsets(audio, sr), audio.shape[1] / sr)
    grid, onsets, ctx_seconds = context_cache[ctx]
    return grid, onsets, min(ctx_seconds, f.seconds), None


def _rhythm(run: _Run, generated, files, pairs, grids) -> None:
    c = run.c
    context_cache: dict = {}
    for g, f in _progress(list(zip(generated, files)), "beats", run.progress):
        ref, ref_onsets, span, ref_bpm = _reference_for(run, g, f, pairs, grids, context_cache)
        audio, sr = run.load(g)
        f.grid = {"source": ref.source, "span": round(span, 4), "reference_beats": _round_times(ref.beats),
                  "reference_downbeats": _round_times(ref.downbeats)}
        if "beat" in run.metrics:
            scores, tracked = score_stem(audio, sr, ref, method=c.tracker, window=c.beat_window, trim=c.trim,
                                         span=span, reference_bpm=ref_bpm)
            f.beat = scores.to_dict()
            f.grid.update(detected_beats=_round_times(tracked.beats), detected_downbeats=_round_times(tracked.downbeats))
            if tracked.beats.size == 0:
                f.notes.append("no beats detected in the generated stem")
        if "onset" in run.metrics:
            onsets = detect_onsets(audio, sr)
            f.onset = onset_scores(ref_onsets, onsets, window=c.onset_window, span=span).to_dict()
            f.grid["detected_onsets"] = _round_times(onsets[onsets < span])


def _cocola(run: _Run, generated, files, pairs) -> None:
    try:
        scorer = CocolaScorer(run.c.adapters.cocola_checkpoint)
    except AdapterUnavailable as err:
        return run.skip("cocola", str(err))
    for g, f in _progress(list(zip(generated, files)), "cocola", run.progress):
        ctx_audio, ctx_sr = run.load(pairs[g])
        audio, sr = run.load(g)
        f.cocola = scorer.score(ctx_audio, ctx_sr, audio, sr)


def _chords(run: _Run, generated, files, pairs) -> None:
    """Chord-tone share of each (bass) stem. Chords come from the beats file's entry when it has
    `chords` (a `stage synth` meta.json has them), else from madmom's chord recogniser run on
    the paired context; without either the metric is skipped with a note."""
    from stage.eval.harmony import chord_spans, chord_tone_share, recognise_chords

    entries = load_entries(run.c.beats_file) if run.c.beats_file else {}
    cache: dict = {}
    for g, f in _progress(list(zip(generated, files)), "chords", run.progress):
        name = match_name(g.stem, [k for k in entries if k != "*"]) or ("*" if "*" in entries else None)
        chords, source = None, None
        if name is not None and entries[name].get("chords"):
            chords, source = chord_spans(entries[name]["chords"]), "file"
        elif g in pairs:
            if pairs[g] not in cache:
                audio, sr = run.load(pairs[g])
                try:
                    cache[pairs[g]] = recognise_chords(audio.mean(axis=0), sr)
                except StageError as err:
                    return run.skip("chords", f"skipped: chords: {err}")
            chords, source = cache[pairs[g]], "madmom"
        if chords is None:
            return run.skip("chords", "skipped: chords: needs chords in --beats FILE or --contexts DIR with madmom")
        audio, sr = run.load(g)
        h = chord_tone_share(audio.mean(axis=0), sr, chords)
        f.chords = {"chord_tone_share": None if h.voiced_frames == 0 else h.chord_tone_share,
                    "voiced_frames": h.voiced_frames, "source": source}


def _prompt_for(run: _Run, g: Path) -> str | None:
    side = g.with_suffix(".txt")
    if side.is_file():
        return side.read_text(encoding="utf-8", errors="replace").strip() or None
    return run.c.prompt


def _clap(run: _Run, generated, files) -> None:
    prompts = {g: _prompt_for(run, g) for g in generated}
    if not any(prompts.values()):
        return run.skip("clap", "skipped: clap needs prompts (pass --prompt TEXT or put NAME.txt next to each generated file)")
    try:
        scorer = ClapTextScorer(run.c.adapters.clap_checkpoint, run.c.adapters.clap_model)
    except AdapterUnavailable as err:
        return run.skip("clap", str(err))
    for g, f in _progress(list(zip(generated, files)), "clap", run.progress):
        f.prompt = prompts[g]
        if f.prompt is None:
            f.notes.append("no prompt: CLAP score not computed")
            continue
        audio, sr = run.load(g)
        f.clap = scorer.score(audio, sr, f.prompt)


def _embed_set(run: _Run, embedder, paths: list[Path], cache: EmbeddingCache, desc: str) -> list[np.ndarray]:
    out = []
    for p in _progress(paths, desc, run.progress):
        e = cache.get(embedder.key, p)
        if e is None:
            audio, sr = run.load(p)
            try:
                e = embedder.embed(audio, sr)
            except StageError as err:
                raise StageError(f"{p}: {err}") from None
            cache.put(embedder.key, p, e)
        out.append(e)
    return out


def _histogram(gen: np.ndarray, ref: np.ndarray) -> dict:
    """Densities of both sets projected on the first principal axis of their union."""
    both = np.concatenate([gen, ref])
    centred = both - both.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    axis = vt[0]
    pg, pr = (gen - both.mean(axis=0)) @ axis, (ref - both.mean(axis=0)) @ axis
    lo, hi = float(min(pg.min(), pr.min())), float(max(pg.max(), pr.max()))
    if hi <= lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, HIST_BINS + 1)
    hg, _ = np.histogram(pg, edges, density=True)
    hr, _ = np.histogram(pr, edges, density=True)
    return {"axis": "first principal component", "edges": [round(float(e), 5) for e in edges],
            "generated": [round(float(v), 6) for v in hg], "reference": [round(float(v), 6) for v in hr]}


def _distributions(run: _Run, generated: list[Path]) -> dict:
    c = run.c
    assert c.reference is not None  # evaluate drops fad and kad without --reference
    reference = list_audio(c.reference, "reference")
    for what, files in (("generated", generated), ("reference", reference)):
        if len(files) < 2:
            raise StageError(
                f"FAD/KAD need at least 2 {what} files, found {len(files)} in {c.generated if what == 'generated' else c.reference}"
            )
    model = None
    results = {}
    for name in c.embedders:
        try:
            if name == "encodec" and model is None and c.adapters.model:
                import stage

                model = stage.load_model(c.adapters.model)
            embedder = build_embedder(name, c.adapters, model=model if name == "encodec" else None)
        except AdapterUnavailable as err:
            run.skipped.append(f"{err} [fad/kad with {name} embeddings]")
            continue
        cache_path = None
        if c.cache == "auto":
            cache_path = default_cache_path(embedder.key, c.reference)
        elif c.cache:  # a folder (one file per embedder inside) or one file shared by all embedders
            cache_path = Path(c.cache)
            if cache_path.is_dir():
                cache_path = cache_path / default_cache_path(embedder.key, c.reference).name
        ref_cache = EmbeddingCache(cache_path)
        if ref_cache.note:
            run.notes.append(ref_cache.note)
        gen_items = _embed_set(run, embedder, generated, EmbeddingCache(None), f"embed generated [{name}]")
        ref_items = _embed_set(run, embedder, reference, ref_cache, f"embed reference [{name}]")
        ref_cache.save()
        gen_rows, ref_rows = pool_embeddings(gen_items, c.pooling), pool_embeddings(ref_items, c.pooling)
        entry = {"embedder": embedder.key, "pooling": c.pooling, "generated_rows": int(gen_rows.shape[0]),
                 "reference_rows": int(ref_rows.shape[0]), "dim": int(gen_rows.shape[1]),
                 "cache": {"path": str(cache_path) if cache_path else None, "hits": ref_cache.hits, "misses": ref_cache.misses}}
        if gen_rows.shape[0] < 2 or ref_rows.shape[0] < 2:
            raise StageError(f"{name}: FAD/KAD need at least 2 embeddings per set")
        if "fad" in run.metrics:
            entry["fad"] = frechet_distance(gen_rows, ref_rows).to_dict()
            if gen_rows.shape[0] <= gen_rows.shape[1] or ref_rows.shape[0] <= ref_rows.shape[1]:
                run.notes.append(f"fad/{name}: fewer embeddings than dimensions ({gen_rows.shape[0]}/{ref_rows.shape[0]} "
                                 f"rows, dim {gen_rows.shape[1]}): the covariances are singular and FAD is biased upwards")
        if "kad" in run.metrics:
            entry["kad"] = kernel_audio_distance(gen_rows, ref_rows).to_dict()
        entry["histogram"] = _histogram(gen_rows, ref_rows)
        results[name] = entry
    if not results:
        run.skipped.append("skipped: fad/kad: no embedder could run")
    return results


def _summary(files: list[FileResult], distributions: dict) -> dict:
    s: dict = {}
    beats = [f.beat for f in files if f.beat]
    if beats:
        for part in ("beat", "downbeat"):
            for k in ("f1", "precision", "recall"):
                s[f"eval/{part}_{k}"] = _mean(b[part][k] for b in beats)
        s["eval/tempo_ratio_median"] = _median(b["tempo"]["ratio"] for b in beats)
        s["eval/tempo_acc1"] = _mean(b["tempo"]["acc1"] for b in beats)
        s["eval/tempo_acc2"] = _mean(b["tempo"]["acc2"] for b in beats)
    onsets = [f.onset for f in files if f.onset]
    if onsets:
        for k in ("f1", "precision", "recall"):
            s[f"eval/onset_{k}"] = _mean(o[k] for o in onsets)
    if any(f.cocola is not None for f in files):
        s["eval/cocola"] = _mean(f.cocola for f in files)
    if any(f.clap is not None for f in files):
        s["eval/clap_text"] = _mean(f.clap for f in files)
    if any(f.chords for f in files):
        s["eval/chord_tone_share"] = _mean(f.chords["chord_tone_share"] for f in files if f.chords)
    for name, entry in distributions.items():
        if "fad" in entry:
            s[f"eval/fad_{name}"] = entry["fad"]["value"]
        if "kad" in entry:
            s[f"eval/kad_{name}"] = entry["kad"]["value"]
    return s
