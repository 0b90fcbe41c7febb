"""The studio's generate form: its choices, and the parsing of its values into `TakeSettings`
(stage.generate.takes), which validates them the way `stage generate` does."""

from __future__ import annotations

import numpy as np

from stage.errors import StageError
from stage.generate.params import MAX_TAKE_VARIATIONS

# The studio's takes slider: a UI limit (a few takes to audition side by side, each a lane of
# waveforms), kept within the CLI's cap for one call (stage.generate.params.MAX_TAKE_VARIATIONS).
MAX_TAKES = 4
assert MAX_TAKES <= MAX_TAKE_VARIATIONS
BPM_MODES = {
    "auto: follow the mix's beats": "auto",
    "number: a metronome at this BPM": "number",
    "off: the mix is the context": "off",
}


def form_defaults() -> dict:
    """The form's starting values, keyed like `take_settings`: `GenerationOptions`' defaults
    (stage.generate.params), the ones `stage generate` has."""
    from stage.generate.params import GenerationOptions

    d = GenerationOptions()
    return dict(prompt=d.prompt or "", beats_per_bar=d.beats_per_bar, offset=d.offset, takes=d.variations,
                cfg=d.guidance, temperature=d.temperature, top_k=d.top_k, top_p=d.top_p)


def take_settings(stem: str, prompt: str = "", bpm_mode: str = "off", bpm: float | None = 120.0,
                  beats_per_bar: int | None = None, offset: float | None = None, takes: int | None = None,
                  cfg: float | None = None, temperature: float | None = None, top_k: int | None = None,
                  top_p: float | None = None, seed: int | None = None):
    """The page's form -> TakeSettings (validated; StageError names the bad value).
    bpm_mode: a BPM_MODES label or its value; bpm, beats_per_bar and offset count in "number"
    mode only; seed None or < 0: a fresh random seed; any other value left None (or empty):
    its `form_defaults()` value."""
    from stage.generate.params import GenerationParams
    from stage.generate.takes import TakeSettings

    d = form_defaults()
    mode = BPM_MODES.get(bpm_mode, bpm_mode)
    if mode not in ("auto", "number", "off"):
        raise StageError(f"unknown BPM mode {bpm_mode!r}")
    if mode == "number" and (bpm is None or not np.isfinite(float(bpm))):
        raise StageError("type a BPM, or choose 'auto' or 'off'")
    takes = int(takes or d["takes"])
    if not 1 <= takes <= MAX_TAKES:
        raise StageError(f"takes must be between 1 and {MAX_TAKES}, got {takes}")
    seed_value = None if seed is None or (isinstance(seed, float) and not np.isfinite(seed)) or int(seed) < 0 else int(seed)
    params = GenerationParams(guidance=float(d["cfg"] if cfg is None else cfg),
                              temperature=float(d["temperature"] if temperature is None else temperature),
                              top_k=int(d["top_k"] if top_k is None else top_k),
                              top_p=float(d["top_p"] if top_p is None else top_p), seed=seed_value)
    return TakeSettings(
        stem=stem, prompt=prompt or "", variations=takes, params=params,
        bpm="auto" if mode == "auto" else (float(bpm or 0) if mode == "number" else None),
        beats_per_bar=int(beats_per_bar or d["beats_per_bar"]) if mode == "number" else None,
        offset=float(d["offset"] if offset is None else offset) if mode == "number" else 0.0,
    )
