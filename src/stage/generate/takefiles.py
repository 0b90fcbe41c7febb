"""The files of a take: the JSON sidecar with its `reproduce` command line, and the
all-or-nothing write of a `TakeSet`.

A take is written as `<name>.wav` (the stem), `<name>_mix.wav` (the preview) and `<name>.json`
(the sidecar); the names come from naming.py.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from stage.audio import save_audio
from stage.data.beats import TRACK_MAX_BPM, TRACK_MIN_BPM
from stage.files import check_free, write_json
from stage.generate.naming import take_name, take_paths
from stage.generate.params import GenerationParams
from stage.generate.render import HEADROOM_DB, Take, TakeSet
from stage.generate.takes import TakeSettings

SIDECAR_FORMAT = "stage-take"


@dataclass
class WrittenTake:
    """Files of one take on disk."""

    name: str
    seed: int
    stem: Path
    mix: Path
    sidecar: Path


def reproduce_command(settings: TakeSettings, seed: int, model: str | None, mix: str | None, samples: int, sample_rate: int) -> str:
    """The `stage generate` command line that makes this take again (seed = the take's own seed)."""
    import shlex

    p = settings.params
    args = ["stage", "generate"]
    if settings.metronome_only:
        args += ["--metronome-only", "--sample-rate", str(sample_rate)]
    else:
        args.append(mix or "MIX")
    args += ["--stem", settings.stem, "--model", model or "MODEL", "--seed", str(seed)]
    if settings.prompt:
        args += ["--prompt", settings.prompt]
    if settings.seconds is not None or settings.metronome_only:
        args += ["--seconds", f"{samples / sample_rate:g}"]
    if settings.bpm is not None:
        args += ["--bpm", str(settings.bpm) if settings.bpm == "auto" else f"{float(settings.bpm):g}"]
        if settings.bpm == "auto" and (settings.min_bpm, settings.max_bpm) != (TRACK_MIN_BPM, TRACK_MAX_BPM):
            args += ["--min-bpm", f"{settings.min_bpm:g}", "--max-bpm", f"{settings.max_bpm:g}"]
    if settings.beats_per_bar is not None:
        args += ["--beats-per-bar", str(settings.beats_per_bar)]
    if settings.offset:
        args += ["--offset", f"{settings.offset:g}"]
    defaults = GenerationParams()
    for flag, value, default in (("--cfg", p.guidance, defaults.guidance), ("--temperature", p.temperature, defaults.temperature),
                                 ("--top-k", p.top_k, defaults.top_k), ("--top-p", p.top_p, defaults.top_p),
                                 ("--text-cfg", getattr(p, "text_guidance", None), None)):
        if value != default:
            args += [flag, f"{value:g}"]
    return " ".join(shlex.quote(a) for a in args)


def sidecar(takeset: TakeSet, take: Take, files: tuple[Path, Path, Path], extra: dict | None = None) -> dict:
    """The JSON written next to a take: enough to reproduce it and to know what the model heard.

    extra: more keys to record; `extra["model"]["source"]` and `extra["input"]["path"]`, when
    given, complete the `reproduce` command line."""
    s = takeset.settings
    from stage import __version__

    extra = extra or {}
    model = (extra.get("model") or {}).get("source")
    mix = (extra.get("input") or {}).get("path")
    return {
        "format": SIDECAR_FORMAT,
        "version": 1,
        "stage_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "stem": s.stem,
        "prompt": s.prompt,
        "seed": take.seed,
        "variation": take.index,
        "variations": s.variations,
        "base_seed": takeset.plan.base_seed,
        "params": {"cfg": s.params.guidance, "text_cfg": getattr(s.params, "text_guidance", None),
                   "temperature": s.params.temperature, "top_k": s.params.top_k, "top_p": s.params.top_p},
        "bpm": None if takeset.bpm is None else round(float(takeset.bpm), 3),
        "context": takeset.context.describe(),
        "output": {"stem": files[0].name, "mix": files[1].name, "sample_rate": takeset.sample_rate,
                   "channels": takeset.channels, "samples": takeset.samples, "seconds": round(takeset.seconds, 4),
                   "stem_gain": round(take.stem_gain, 6), "mix_gain": round(take.mix_gain, 6),
                   "headroom_db": HEADROOM_DB},
        "timings": {k: round(v, 3) for k, v in takeset.timings.items()},
        "reproduce": reproduce_command(s, take.seed, model, mix, takeset.samples, takeset.sample_rate),
        **extra,
    }


class StemStream:
    """Writes the stems of takes still being generated (`render_takes(on_partial=...)`): each
    call replaces every `<name>.wav` with the stems so far, atomically (temp file + rename, see
    `save_audio`), so a reader always finds a complete WAV. `remove()` deletes what it wrote."""

    def __init__(self, paths: list[Path], sample_rate: int):
        self.paths, self.sample_rate = list(paths), int(sample_rate)
        self.written: set[Path] = set()
        self.updates = 0

    def __call__(self, stems: np.ndarray) -> None:
        """stems: float32 [B, C, m] at `sample_rate`, one per path."""
        for path, stem in zip(self.paths, stems):
            save_audio(path, stem, self.sample_rate, overwrite=True)
            self.written.add(path)
        self.updates += 1

    def remove(self) -> None:
        for path in self.written:
            path.unlink(missing_ok=True)


def write_takes(takeset: TakeSet, out_dir: Path, prefix: str, force: bool = False, extra: dict | None = None,
                replace: Collection[Path] = ()) -> list[WrittenTake]:
    """Write every take (stem WAV, `_mix.wav` preview, JSON sidecar) into `out_dir`.

    All or nothing: if any write fails, the files this call wrote are removed again.
    replace: files this run wrote itself (a `StemStream`'s stems), replaced even without force.
    """
    out_dir = Path(out_dir)
    names = [take_name(prefix, takeset.settings.stem, takeset.bpm, t.seed) for t in takeset.takes]
    planned = [take_paths(out_dir, n) for n in names]
    replace = set(replace)
    check_free([p for group in planned for p in group if p not in replace], force)
    written: list[Path] = []
    out: list[WrittenTake] = []
    try:
        for take, name, (stem_path, mix_path, json_path) in zip(takeset.takes, names, planned):
            written.append(save_audio(stem_path, take.stem, takeset.sample_rate, overwrite=force or stem_path in replace))
            written.append(save_audio(mix_path, take.mix, takeset.sample_rate, overwrite=force))
            written.append(write_json(json_path, sidecar(takeset, take, (stem_path, mix_path, json_path), extra), overwrite=force))
            out.append(WrittenTake(name, take.seed, stem_path, mix_path, json_path))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return out
