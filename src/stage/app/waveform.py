"""Waveform pictures for the studio's lanes: a min/max envelope of [C, N] audio with the beat grid
(grey beats, orange downbeats) and a seconds axis, as a PNG."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

WAVE_WIDTH, WAVE_HEIGHT = 1000, 150
COLORS = {"wave": (52, 101, 164), "beat": (150, 150, 150), "downbeat": (220, 80, 30), "axis": (200, 200, 200),
          "text": (90, 90, 90), "background": (255, 255, 255)}


def render_waveform(audio: np.ndarray, sample_rate: int, path: Path, beats=None, downbeats=None, title: str = "",
                    width: int = WAVE_WIDTH, height: int = WAVE_HEIGHT) -> Path:
    """Draw [C, N] audio as a min/max envelope with the beat grid (grey beats, orange downbeats)
    and a seconds axis; write a PNG to `path`."""
    from PIL import Image, ImageDraw

    x = np.asarray(audio, np.float32)
    x = x.mean(axis=0) if x.ndim == 2 else x
    n = len(x)
    seconds = n / sample_rate
    img = Image.new("RGB", (width, height), COLORS["background"])
    draw = ImageDraw.Draw(img)
    top, bottom = 18, height - 14
    mid, half = (top + bottom) / 2, (bottom - top) / 2
    peak = max(float(np.max(np.abs(x))) if n else 0.0, 1e-6)
    scale = half / max(peak, 0.05)  # normalised for display; very quiet audio stays small

    def px(t: float) -> int:
        return int(round(t / seconds * (width - 1))) if seconds > 0 else 0

    step = _tick_step(seconds)
    for t in np.arange(0.0, seconds + 1e-9, step):
        draw.line([(px(t), bottom), (px(t), bottom + 3)], fill=COLORS["axis"])
        draw.text((px(t) + 2, bottom + 1), f"{t:g}s", fill=COLORS["text"])
    draw.line([(0, mid), (width, mid)], fill=COLORS["axis"])
    if n:
        edges = np.linspace(0, n, width + 1).astype(int)
        for col in range(width):
            seg = x[edges[col]:max(edges[col + 1], edges[col] + 1)]
            lo, hi = float(seg.min()), float(seg.max())
            draw.line([(col, mid - hi * scale), (col, mid - lo * scale)], fill=COLORS["wave"])
    # The grid goes over the waveform so it stays visible; downbeats get a marker on top.
    for t in beats if beats is not None else ():
        draw.line([(px(t), top), (px(t), bottom)], fill=COLORS["beat"], width=1)
    for t in downbeats if downbeats is not None else ():
        draw.line([(px(t), top), (px(t), bottom)], fill=COLORS["downbeat"], width=2)
        draw.polygon([(px(t) - 4, top - 5), (px(t) + 4, top - 5), (px(t), top)], fill=COLORS["downbeat"])
    if title:
        draw.text((4, 2), title, fill=COLORS["text"])
    # Written next to the target, then renamed over it: a page reading the picture never sees half of it.
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{id(img)}.part")
    img.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def _tick_step(seconds: float) -> float:
    for step in (0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300):
        if seconds / step <= 12:
            return float(step)
    return 600.0
