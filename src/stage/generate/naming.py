"""What a take is called on disk: `<prefix>_<stem>[_<bpm>bpm]_s<seed>`, and the three files of
that name (stem, `_mix.wav` preview, JSON sidecar)."""

from __future__ import annotations

from pathlib import Path


def format_bpm(bpm: float) -> str:
    """120.0 -> "120", 93.456 -> "93.5" (for file names)."""
    text = f"{round(float(bpm), 1):.1f}"
    return text[:-2] if text.endswith(".0") else text


def numbered_take_id(number: int) -> str:
    """A session take's id: 3 -> "take003" (also the prefix of its file names)."""
    return f"take{number:03d}"


def take_name(prefix: str, stem: str, bpm: float | None, seed: int) -> str:
    """`<prefix>_<stem>[_<bpm>bpm]_s<seed>`: file names carry the stem, the BPM and the seed."""
    parts = [prefix, stem]
    if bpm is not None:
        parts.append(f"{format_bpm(bpm)}bpm")
    parts.append(f"s{seed}")
    return "_".join(p for p in parts if p)


def take_paths(out_dir: Path, name: str) -> tuple[Path, Path, Path]:
    return out_dir / f"{name}.wav", out_dir / f"{name}_mix.wav", out_dir / f"{name}.json"
