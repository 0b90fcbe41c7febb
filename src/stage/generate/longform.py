"""Whole-song accompaniment: sliding windows over the mix, each continuing the stem so far
(docs/method.md §3.4 "prompt", §3.5; §9 "long-form accompaniment").

STAGE was trained on 10 s windows whose context is the first 5-10 s of the *same* window (context
and stem start at the same sample, §3.5). A song longer than one window is generated as a chain
of windows of that shape:

    frames  0        hop      2 hop    ...                                  F
    win 0   [ctx 0 ......... ]
            [stem 0 ........ ]
    win 1            [ctx 1 .......... ]
                     [prompt | new ... ]      prompt = win 0's codes on the overlap
    win 2                     [prompt | new ...]
    last                                 [ prompt (longer) | new ]          ends exactly at F

- **Conditioning** (our documented choice, in line with §3.5): window w's context is the mix over
  the first `context_seconds` of the window itself, time-aligned with it (default: the whole
  10 s window, the top of the 5-10 s training range; training contexts were never longer than
  the target). Each slice is encoded on its own, as training encoded each context chunk.
- **Continuation**: window w > 0 is generated after the context token with the previous windows'
  codes over the overlap as the continuation prompt (the exact tokens, not re-encoded audio), so
  the stem continues what was played. All windows have the same length, hence the same number of
  interleaved steps: one `Generator` (one cache allocation, one compiled graph) serves them all.
  The last window is shifted to end exactly at the song's end (its prompt is longer).
- **Cost**: every stem frame is sampled exactly once, whatever the overlap, so the decode cost of
  a song is its length in frames; a longer prompt only adds prefill (context + prompt per
  window, computed once per window for all variations where they agree). The default prompt is
  half a window (5 s): the model sees as much of its own stem as of the mix ahead.
- **Joining**: each window is decoded on its own and the windows are joined with a short
  equal-power crossfade (gains cos / sin of a quarter period, so g_out^2 + g_in^2 = 1) centred in
  the overlap, where both windows decode the same codes, far from either window's decoder edge.
  Because both sides there are nearly the same signal, an equal-power fade sums them up to +3 dB
  at its middle for its 0.1 s; `crossfade_shape="linear"` (g_out + g_in = 1) keeps the level of
  identical signals exactly and is the option to pick when that bump is audible.
- The result is cut to exactly the input's length and stays sample-aligned: stem sample i
  belongs to the same time as mix sample i (frame f covers samples [f * hop, (f + 1) * hop)).

A metronome context (bpm) is rendered for the whole song and windowed in the same way, so every
window's clicks stay on one global grid.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from torch import Tensor

from stage.generate.params import WindowParams  # the long-form options, next to the other options


@dataclass(frozen=True)
class Window:
    """One generation window, in codec frames of the model.

    start: first frame (stem and context both start here, §3.5). frames: stem frames generated
    in it, prompt included. prompt: frames continued from earlier windows (0 for the first).
    context: mix frames used as its context, [start, start + context).
    """

    index: int
    start: int
    frames: int
    prompt: int
    context: int

    @property
    def end(self) -> int:
        return self.start + self.frames

    def context_samples(self, hop: int) -> tuple[int, int]:
        """Sample range [a, b) of the mix (at the model rate) that conditions this window."""
        return self.start * hop, (self.start + self.context) * hop


def plan_windows(
    total_frames: int, window: int, context: int, prompt: int, available: int | None = None, first_prompt: int = 0
) -> list[Window]:
    """Cover frames [0, total_frames) with windows of `window` frames and a hop of
    window - prompt; the last window ends at total_frames. A song that fits one window gets one
    window of exactly its length.

    context: context frames per window (clamped to the window). available: frames of mix there
    are (None = no mix): a window gets context only where the mix reaches, [start, available).
    first_prompt: frames of a caller's continuation that open the first window.
    """
    if total_frames < 1:
        raise ValueError(f"total_frames must be >= 1, got {total_frames}")
    if not 0 < prompt < window:
        raise ValueError(f"need 0 < prompt ({prompt}) < window ({window})")

    def ctx(start: int, frames: int) -> int:
        if available is None:
            return 0
        return max(0, min(context, frames, available - start))

    if total_frames <= window:
        return [Window(0, 0, total_frames, min(first_prompt, total_frames), ctx(0, total_frames))]
    if first_prompt >= window:
        raise ValueError(f"a continuation of {first_prompt} frames does not fit a window of {window}")
    hop = window - prompt
    starts = list(range(0, total_frames - window, hop))
    starts.append(total_frames - window)  # the last window ends at the song's end
    out: list[Window] = []
    for i, s in enumerate(starts):
        overlap = first_prompt if i == 0 else out[-1].end - s
        out.append(Window(i, s, window, overlap, ctx(s, window)))
    return out


def crossfade_gains(n: int, shape: str = "power") -> tuple[np.ndarray, np.ndarray]:
    """Fade-out and fade-in gains of n samples, evaluated at the sample centres. "power": cos and
    sin of a quarter period, out^2 + in^2 = 1 at every sample; "linear": out + in = 1.
    float64 [n] each."""
    u = (np.arange(n) + 0.5) / max(n, 1)
    if shape == "linear":
        return 1.0 - u, u
    return np.cos(0.5 * np.pi * u), np.sin(0.5 * np.pi * u)


def stitch(pieces: list[np.ndarray], windows: list[Window], hop: int, crossfade: int, shape: str = "power") -> np.ndarray:
    """Join decoded windows into one signal.

    pieces: per window float [..., window.frames * hop] (any leading dims, e.g. [B, 1] for B variations).
    crossfade: samples of the crossfade (`crossfade_gains` of `shape`), centred in each overlap
      (clamped to it).
    Returns [..., windows[-1].end * hop]: piece w placed at sample windows[w].start * hop.
    """
    joined = Stitcher(pieces[0].shape[:-1], windows, hop, crossfade, shape)
    for piece in pieces:
        joined.add(piece)
    return joined.out


class Stitcher:
    """`stitch`, one window at a time: `add` places the next window's piece; `final` is how many
    samples of `out` no later window changes (a window writes only from its crossfade on)."""

    def __init__(self, lead: tuple[int, ...], windows: list[Window], hop: int, crossfade: int, shape: str = "power"):
        self.windows, self.hop, self.crossfade, self.shape = windows, hop, crossfade, shape
        self.out = np.zeros((*lead, windows[-1].end * hop), dtype=np.float64)
        self.added = 0
        self.cut = 0  # first output sample not yet written

    def _fade_start(self, w: int) -> tuple[int, int]:
        """Window w's crossfade: (its first sample, its length), centred in the overlap."""
        a = self.windows[w].start * self.hop
        overlap = self.cut - a  # samples both windows cover (the prompt region)
        n = min(self.crossfade, overlap)
        return a + overlap // 2 - n // 2, n

    def add(self, piece: np.ndarray) -> None:
        w = self.added
        win = self.windows[w]
        if piece.shape[-1] != win.frames * self.hop:
            raise ValueError(f"window {w}: {piece.shape[-1]} samples, expected {win.frames * self.hop}")
        a, out = win.start * self.hop, self.out
        if w == 0:
            out[..., : piece.shape[-1]] = piece
        else:
            f0, n = self._fade_start(w)
            fade_out, fade_in = crossfade_gains(n, self.shape)
            out[..., f0 : f0 + n] = out[..., f0 : f0 + n] * fade_out + piece[..., f0 - a : f0 - a + n] * fade_in
            out[..., f0 + n : a + piece.shape[-1]] = piece[..., f0 + n - a :]
        self.cut = a + piece.shape[-1]
        self.added += 1

    @property
    def final(self) -> int:
        """Samples of `out` that are final: all once every window is in, else up to the next
        window's crossfade."""
        if self.added == len(self.windows):
            return self.out.shape[-1]
        return self._fade_start(self.added)[0] if self.added else 0


@dataclass
class LongformOutput:
    """codes: [B, K, T] the whole stem's codes (B variations); audio: [B, 1, T * hop] at the model rate;
    windows: the plan; prefill / decode seconds and decode steps summed over the windows."""

    codes: Tensor
    audio: np.ndarray
    windows: list[Window]
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    steps: int = 0
    encode_seconds: float = 0.0
    codec_decode_seconds: float = 0.0

    @property
    def step_ms(self) -> float:
        """The mean LM decode step, in milliseconds."""
        return 1000.0 * self.decode_seconds / max(1, self.steps)


class WindowResult(Protocol):
    """What `generate_longform`'s `run` returns for one window (prefill_seconds, decode_seconds
    and steps are read when present)."""

    @property
    def codes(self) -> Tensor: ...  # [B, K, num_frames]


def generate_longform(
    run: Callable[[Tensor | None, Tensor | None, int, Callable[[int, int], None] | None], WindowResult],
    encode: Callable[[np.ndarray], Tensor],
    decode: Callable[[Tensor], np.ndarray],
    mix: np.ndarray | None,
    total_frames: int,
    params: WindowParams,
    frame_rate: int,
    hop: int,
    progress: Callable[[int, int], None] | None = None,
    on_window: Callable[[Window, Tensor | None], None] | None = None,
    extra_steps: int = 0,
    first_prompt: int = 0,
    on_audio: Callable[[np.ndarray, int, bool], None] | None = None,
) -> LongformOutput:
    """Generate a stem of `total_frames` frames window by window (see the module docstring).

    run(context_codes [1, K, Tc] | None, prompt_codes [B, K, P] | None, num_frames, progress)
      -> an object with `.codes` [B, K, num_frames] (and optionally prefill_seconds,
      decode_seconds, steps): one window of generation (the cached Generator or the reference).
    encode(audio [1, N] at the model rate) -> codes [1, K, T]. decode(codes [B, K, T]) ->
      audio [B, 1, T * hop] at the model rate.
    mix: [1, N] mono at the model rate, or None. Windows past its end get a shorter context or
      none (`plan_windows`).
    on_window(window, context_codes): called before each window (for progress displays and tests).
    extra_steps: sampling iterations per window beyond its new frames (the largest codebook
      delay, §3.4), so that `progress(step, total)` counts every iteration of every window.
    first_prompt: frames of the caller's continuation; `run` gets prompt=None for the first window
      and must supply those codes itself.
    on_audio(audio [B, 1, n], first_sample, last): streaming, called after each window with the
      stem's audio that has become final (up to the next window's crossfade, in whole frames;
      everything left after the last window); the pieces joined are `audio` exactly.
    """
    window, context, prompt = params.frames(frame_rate)
    available = None if mix is None else -(-mix.shape[-1] // hop)
    plan = plan_windows(total_frames, window, context, prompt, available, first_prompt)
    steps_per = [w.frames - w.prompt + extra_steps for w in plan]
    done = 0
    codes: Tensor | None = None
    joined: Stitcher | None = None
    sent = 0  # samples handed to on_audio
    crossfade = int(round(params.crossfade_seconds * frame_rate * hop))
    out = LongformOutput(codes=None, audio=None, windows=plan)  # type: ignore[arg-type]
    for win, n_steps in zip(plan, steps_per):
        t0 = time.perf_counter()
        ctx = None
        if mix is not None and win.context > 0:
            a, b = win.context_samples(hop)
            ctx = encode(mix[:, a : min(b, mix.shape[-1])])  # [1, K, Tc]
        out.encode_seconds += time.perf_counter() - t0
        if on_window is not None:
            on_window(win, ctx)
        prm = None if win.prompt == 0 or codes is None else codes[:, :, win.start : win.start + win.prompt]  # [B, K, P]

        def window_progress(i: int, total: int, base: int = done) -> None:
            if progress is not None:
                progress(base + i, sum(steps_per))

        result = run(ctx, prm, win.frames, window_progress)
        new = result.codes  # [B, K, frames]
        if codes is None:
            codes = new.new_zeros((new.shape[0], new.shape[1], total_frames))
        codes[:, :, win.start : win.end] = new
        out.prefill_seconds += getattr(result, "prefill_seconds", 0.0)
        out.decode_seconds += getattr(result, "decode_seconds", 0.0)
        out.steps += getattr(result, "steps", 0)
        t1 = time.perf_counter()
        piece = decode(new)  # [B, 1, frames * hop]
        out.codec_decode_seconds += time.perf_counter() - t1
        if joined is None:
            joined = Stitcher(piece.shape[:-1], plan, hop, crossfade, params.crossfade_shape)
        joined.add(piece)
        done += n_steps
        last = joined.added == len(plan)
        ready = joined.final if last else joined.final // hop * hop
        if on_audio is not None and (ready > sent or last):
            on_audio(joined.out[..., sent:ready].astype(np.float32), sent, last)
            sent = ready
    assert codes is not None and joined is not None  # plan_windows gives at least one window
    out.codes = codes
    out.audio = joined.out.astype(np.float32)
    return out
