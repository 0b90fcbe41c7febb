"""The unit of training data: one (context, target stem, caption) example (docs/method.md §6.5).

Audio examples hold 32 kHz mono float32 waveforms, encoded by the trainer on its device. Token
examples (the pre-tokenised path) hold EnCodec codes directly. Context and target start at the
same audio time; the context is usually shorter (5-10 s of a 10 s window).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CONTEXT_KINDS = ("mix", "metronome", "mix+click", "none")


@dataclass
class AudioExample:
    """target: float32 [N] stem; context: float32 [Nc] mix of other stems or click track
    (Nc <= N, 0 = no context); caption: text prompt ("" = none); song: source id.

    Provenance (for debugging and tests): start: window start in the song, seconds; speed /
    semitones: the augmentation applied (1.0 / 0 = none; see stage.data.augment); click_gain_db:
    the click's gain in a "mix+click" context (None otherwise; see stage.data.samples)."""

    target: np.ndarray
    context: np.ndarray
    caption: str
    song: str
    context_kind: str = "mix"
    start: float = 0.0
    speed: float = 1.0
    semitones: int = 0
    click_gain_db: float | None = None


@dataclass
class TokenExample:
    """target: int [K, Tt] codes; context: int [K, Tc] codes (Tc may be 0).

    beats / downbeats: the song's beat and downbeat times around the window, in codec frames from
    the window's first frame (float; may be negative or past the end), or None when unknown. They
    feed the optional beat-phase auxiliary loss (stage.train.module, `aux.beat_weight`)."""

    target: np.ndarray
    context: np.ndarray
    caption: str
    song: str = ""
    context_kind: str = "mix"
    beats: np.ndarray | None = None
    downbeats: np.ndarray | None = None
