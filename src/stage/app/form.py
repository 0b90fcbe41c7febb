"""The studio's generate form: its choices, and the parsing of its values into `TakeSettings`
(stage.generate.takes), which validates them the way `stage generate` does."""

from __future__ import annotations

import numpy as np

from stage.errors import StageError

MAX_TAKES = 4
BPM_MODES = {
    "auto: follow the mix's beats": "auto",
    "number: a metronome at this BPM": "number",
    "off: the mix is the context": "off",
}


def take_settings(stem: str, prompt: str = "", bpm_mode: str = "off", bpm: float | None = 120.0,
                  beats_per_bar: int | None = 4, offset: float | None = 0.0, takes: int = 1, cfg: float = 3.0,
                  temperature: float = 1.0, top_k: int = 250, top_p: float = 0.0, seed: int | None = None):
    """The page's form -> TakeSettings (validated; StageError names the bad value).
    bpm_mode: a BPM_MODES label or its value; bpm, beats_per_bar and offset count in "number"
    mode only; seed None or < 0: a fresh random seed."""
    from stage.generate.params import GenerationParams
    from stage.generate.takes import TakeSettings

    mode = BPM_MODES.get(bpm_mode, bpm_mode)
    if mode not in ("auto", "number", "off"):
        raise StageError(f"unknown BPM mode {bpm_mode!r}")
    if mode == "number" and (bpm is None or not np.isfinite(float(bpm))):
        raise StageError("type a BPM, or choose 'auto' or 'off'")
    takes = int(takes or 1)
    if not 1 <= takes <= MAX_TAKES:
        raise StageError(f"takes must be between 1 and {MAX_TAKES}, got {takes}")
    seed_value = None if seed is None or (isinstance(seed, float) and not np.isfinite(seed)) or int(seed) < 0 else int(seed)
    params = GenerationParams(guidance=float(cfg), temperature=float(temperature), top_k=int(top_k),
                              top_p=float(top_p), seed=seed_value)
    return TakeSettings(
        stem=stem, prompt=prompt or "", variations=takes, params=params,
        bpm="auto" if mode == "auto" else (float(bpm or 0) if mode == "number" else None),
        beats_per_bar=int(beats_per_bar or 4) if mode == "number" else None,
        offset=float(offset or 0.0) if mode == "number" else 0.0,
    )
