"""Mute and solo for the studio's lanes: the current mix taken apart into the lanes it was built
from (the starting mix and each accepted stem), and any selection of them summed back, server-side.

Every accepted take made a mix version `v_k = g_k * (v_base + a_k * stem_k)`, where `a_k` is the
take's gain (`gain_db`) and `g_k` the headroom scaling recorded with the version (`mix_gain`). So
the current mix is `prod(g) * start + sum_k a_k * prod(g_k..) * stem_k`, and each lane enters it
with a known factor (`lane_factors`). Summing the audible lanes with those factors plays exactly
what the mix holds of them: all lanes on gives back the current mix (to the WAV files' 16-bit
rounding), and a muted lane is missing from it and nothing else changes level.

The page plays the lanes in the browser with these factors (stage.app.multitrack: each lane's
gain is its factor when heard, 0 when not), and "Bounce" writes the same selection with
`render_lanes`, so what you hear and what you export agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stage.audio import db_to_gain
from stage.errors import StageError
from stage.generate.session import Session

SONG = "song"


@dataclass(frozen=True)
class LaneSource:
    """One lane of the current mix: its label on the page ("song", "drums take001"), its WAV
    (relative to the session folder), the factor it enters the current mix with, and the take it
    is (None for the starting mix)."""

    label: str
    file: str
    factor: float
    take: str | None = None


def lane_factors(session: Session) -> list[LaneSource]:
    """The starting mix and each accepted stem of the current mix version, with the factor each
    is scaled by in it (see the module docstring)."""
    chain = session.chain()  # starting mix first
    gains = [float(m.mix_gain) for m in chain]
    after = [float(np.prod(gains[i:])) for i in range(len(chain))]  # the scaling from version i on
    lanes = [LaneSource(SONG, chain[0].file, float(np.prod(gains[1:])))]
    for i, version in enumerate(chain[1:], start=1):
        assert version.take is not None  # every version after the start adds a take
        take = session.find_take(version.take)
        lanes.append(LaneSource(f"{take.stem} {take.id}", take.file, db_to_gain(version.gain_db) * after[i],
                                take.id))
    return lanes


def audible(labels: list[str], muted: list[str] | None, soloed: list[str] | None) -> list[str]:
    """The lanes heard: the soloed ones when any are soloed, else all; less the muted ones.
    Labels not among `labels` (a stale page, a forged request) are refused."""
    muted, soloed = list(muted or []), list(soloed or [])
    unknown = [x for x in muted + soloed if x not in labels]
    if unknown:
        raise StageError(f"no lane {unknown[0]!r} in this mix (lanes: {', '.join(labels)}); reopen the session")
    heard = [x for x in labels if x in soloed] if soloed else list(labels)
    return [x for x in heard if x not in muted]


def mix_lanes(session: Session, muted: list[str] | None = None, soloed: list[str] | None = None) -> np.ndarray:
    """The current mix with only the audible lanes (see `audible`): float32 [C, N] at the
    session's rate and length. No lane heard: silence."""
    from stage.audio import fit_length, load_audio

    lanes = lane_factors(session)
    heard = set(audible([lane.label for lane in lanes], muted, soloed))
    s = session.state
    total = np.zeros((s.channels, s.samples), np.float64)
    for lane in lanes:
        if lane.label in heard:
            audio, sr = load_audio(session.folder / lane.file)
            if sr != s.sample_rate or audio.shape[0] != s.channels:
                raise StageError(f"{lane.file}: does not match the session ({sr} Hz, {audio.shape[0]} ch)")
            total += lane.factor * fit_length(audio, s.samples)
    return total.astype(np.float32)


def render_lanes(session: Session, out: Path, muted: list[str] | None = None, soloed: list[str] | None = None) -> Path:
    """Write `mix_lanes` to `out` (a WAV at the session's rate; written whole, then renamed)."""
    from stage.audio import save_audio

    return save_audio(out, mix_lanes(session, muted, soloed), session.state.sample_rate, overwrite=True)
