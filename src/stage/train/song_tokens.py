"""Song-level tokenisation: encode each song's arrays once, then cut many examples from the codes.

`stage tokenize` (stage.train.tokens) encodes every example's audio with EnCodec, one draw at a
time: right for a big codec on a GPU with a few draws per song, but on a CPU it re-encodes the
same seconds of a song for every example that overlaps them. For small corpora trained for many
steps (STAGE-mini), this path encodes, once per song:

- the target stem;
- the context mix: the song's mix minus the target stem (the sum of every other stem);
- with `metronome_prob` > 0, the click track of the song's own beats and downbeats (§4: it
  REPLACES the mix as context, it is never mixed in);
- with `click_mix_prob` > 0, the context mix PLUS that click track at a gain drawn once per song,
  uniform in dB in `click_mix_gain_db` (a "click scaffold", context_kind "mix+click"; see
  stage.data.samples: there the gain is drawn per window, here per song, so that every song is
  still encoded a fixed number of times);

and then cuts `examples_per_song` aligned windows out of the codes: context and target start at
the same frame, each `window_seconds` long (a fixed context length, so the target frame t always
sits a fixed distance after its context frame t). One uniform u per window picks the context:
the click when u < metronome_prob, the mix plus click when u < metronome_prob + click_mix_prob,
else the mix (drawn only when the song has beats and one of the two is > 0). Windows whose target is silent (absolute audio
peak below `silence_threshold`) are redrawn. Codes of a window cut from a whole-song encoding
differ from an encoding of the window alone only within EnCodec's receptive field at the edges.

Determinism: example j of song i depends only on (seed, i, j) and the data (the song's click
gain on (seed, i, CLICK_GAIN_STREAM)); with click_mix_prob 0 nothing more is drawn, so the
examples of earlier runs do not change.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from stage.audio import db_to_gain, prepare
from stage.data.example import TokenExample
from stage.data.manifest import Manifest, SongRecord
from stage.data.metronome import render_clicks
from stage.errors import StageError

# The random stream of a song's click gain, [seed, song, CLICK_GAIN_STREAM]: apart from the windows'
# [seed, song, j] (j < examples_per_song).
CLICK_GAIN_STREAM = 2**31 - 1


def load_stem(manifest: Manifest, song: SongRecord, stem: str, sample_rate: int, num_samples: int) -> np.ndarray:
    """The summed, mono, `sample_rate` audio of one stem of a song, padded/cut to num_samples."""
    import soundfile as sf

    total = np.zeros(num_samples, np.float32)
    for file in song.stems.get(stem, ()):
        x, sr = sf.read(manifest.resolve(file), dtype="float32", always_2d=True)  # [n, C]
        x = prepare(x.T, sr, sample_rate, str(file.path))[0]
        n = min(num_samples, len(x))
        total[:n] += x[:n]
    return total


def song_examples(manifest: Manifest, codec, target_stem: str, examples_per_song: int, window_seconds: float,
                  metronome_prob: float = 0.0, seed: int = 0, split: str | None = "train",
                  silence_threshold: float = 0.01, max_tries: int = 20,
                  progress=None, click_mix_prob: float = 0.0,
                  click_mix_gain_db: tuple[float, float] = (-30.0, 0.0)) -> Iterator[TokenExample]:
    """Yield `examples_per_song` TokenExamples per song of `split` (see the module docstring).

    codec: a stage `Codec` (its encode maps [1, 1, N] -> [1, K, T]). progress: called once per
    song with its id (e.g. a tqdm update)."""
    sr, hop = codec.sample_rate, codec.hop_length
    window = int(round(window_seconds * codec.frame_rate))  # frames
    if not (0 <= metronome_prob and 0 <= click_mix_prob and metronome_prob + click_mix_prob <= 1):
        raise StageError(f"need metronome_prob, click_mix_prob >= 0 with a sum <= 1, got {metronome_prob}, "
                         f"{click_mix_prob}")
    if window < 1:
        raise StageError(f"window_seconds {window_seconds} is shorter than one codec frame")
    songs = manifest.select(split)
    if not songs:
        raise StageError(f"the manifest has no {split or 'any'} songs")
    for i, song in enumerate(songs):
        if target_stem not in song.stems:
            if progress:
                progress(song.id)
            continue
        n = int(round(song.seconds * sr))
        frames = -(-n // hop)
        if frames < window:
            if progress:
                progress(song.id)
            continue
        target = load_stem(manifest, song, target_stem, sr, n)
        others = [s for s in song.stems if s != target_stem]
        context = sum((load_stem(manifest, song, s, sr, n) for s in others), np.zeros(n, np.float32))
        codes = {"target": encode(codec, target), "mix": encode(codec, context)}
        if (metronome_prob > 0 or click_mix_prob > 0) and len(song.beats):
            clicks = render_clicks(np.asarray(song.beats), np.asarray(song.downbeats), song.seconds, sr)[:n]
            if metronome_prob > 0:
                codes["metronome"] = encode(codec, clicks)
            if click_mix_prob > 0:
                gain_db = float(np.random.default_rng([seed, i, CLICK_GAIN_STREAM]).uniform(*click_mix_gain_db))
                codes["mix+click"] = encode(codec, context + np.float32(db_to_gain(gain_db)) * clicks)
        for j in range(examples_per_song):
            rng = np.random.default_rng([seed, i, j])
            start = None
            for _ in range(max_tries):
                s = int(rng.integers(frames - window + 1))
                if np.abs(target[s * hop:(s + window) * hop]).max() >= silence_threshold:
                    start = s
                    break
            if start is None:
                continue
            kind = "mix"
            if "metronome" in codes or "mix+click" in codes:  # (a song without beats draws nothing)
                u = rng.random()
                kind = ("metronome" if u < metronome_prob else
                        "mix+click" if u < metronome_prob + click_mix_prob else "mix")
            beats, downbeats = window_beats(song, start, window, codec.frame_rate)
            yield TokenExample(
                target=codes["target"][:, start:start + window],
                context=codes[kind][:, start:start + window],
                caption=song.caption, song=song.id, context_kind=kind,
                beats=beats, downbeats=downbeats,
            )
        if progress:
            progress(song.id)


def window_beats(song: SongRecord, start: int, window: int, frame_rate: float,
                 margin_seconds: float = 2.0) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The song's beats and downbeats within `margin_seconds` of a window of `window` frames from
    frame `start`, in frames from the window's first frame (None for a song without beats)."""
    if not len(song.beats):
        return None, None
    lo, hi = start / frame_rate - margin_seconds, (start + window) / frame_rate + margin_seconds

    def cut(times) -> np.ndarray:
        t = np.asarray(times, np.float64)
        t = t[(t >= lo) & (t <= hi)]
        return np.round(t * frame_rate - start, 2).astype(np.float32)

    return cut(song.beats), cut(song.downbeats)


@torch.no_grad()
def encode(codec, audio: np.ndarray) -> np.ndarray:
    """float32 [N] -> int codes [K, ceil(N / hop)]."""
    device = next(codec.parameters()).device
    return codec.encode(torch.from_numpy(np.ascontiguousarray(audio))[None, None].to(device))[0].cpu().numpy()

