"""Uploads: a file from the browser is checked for size and type *before* any decoder sees it,
then decoded with the studio's length cap. Every refusal is a one-line StageError."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from stage.errors import AudioError, StageError

AUDIO_SUFFIXES = (".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".m4a")
KINDS = "WAV, FLAC, OGG, MP3, AIFF or M4A"


def sniff_audio(head: bytes) -> str | None:
    """The container named by a file's first bytes ("wav", "flac", ...), or None when they are
    not one of the audio formats the studio reads."""
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[4:8] == b"ftyp":
        return "m4a"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):  # MPEG frame sync
        return "mp3"
    return None


def check_upload(path: str | os.PathLike | None, max_mb: float) -> Path:
    """The uploaded file, after checking that it arrived, is at most `max_mb` MB and looks like
    audio (its name and its first bytes). Nothing is decoded here."""
    if path is None or str(path) == "":
        raise StageError(f"upload a mix first ({KINDS})")
    path = Path(path)
    if not path.is_file():
        raise StageError("the upload did not arrive; try again")
    size_mb = path.stat().st_size / 2**20
    if size_mb > max_mb:
        raise StageError(f"the file is {size_mb:.1f} MB; this studio accepts up to {max_mb:g} MB "
                         "(use `stage session new DIR --mix FILE` for bigger files)")
    with open(path, "rb") as f:
        head = f.read(12)
    if path.suffix.lower() not in AUDIO_SUFFIXES or sniff_audio(head) is None:
        raise StageError(f"{path.name} is not an audio file (upload {KINDS})")
    return path


def load_upload(path: str | os.PathLike | None, max_mb: float, max_seconds: float) -> tuple[np.ndarray, int, Path]:
    """Check, then decode an upload -> (float32 [C, N], sample_rate, path). Decoder messages name
    the file, not the server's temporary folder."""
    from stage.audio import load_audio

    path = check_upload(path, max_mb)
    try:
        mix, sr = load_audio(path, max_seconds=max_seconds)
    except AudioError as err:
        raise AudioError(str(err).replace(str(path), path.name)) from None
    return mix, sr, path
