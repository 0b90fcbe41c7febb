"""Streaming EnCodec decode: codes arriving a chunk at a time -> audio a chunk at a time, stitched
so that the stream equals the offline decode of the same codes within a measured tolerance.

EnCodec's decoder (transformers' `EncodecDecoder`, SEANet) is non-causal convolutions around an
LSTM: a finite receptive field to the right, and to the left a recurrent memory that fades. Each
chunk therefore decodes a window of codes with `left` frames of already-emitted context and emits
only the new samples, holding back the last `right` frames until their right context has arrived:

    frames   0 ............ e ............ n              (n received, [0, e) emitted)
    window          [e - left | new ......| right ]       decoded; only [e, n - right) emitted
    next            [ .................. e' - left | new ... ]

`flush()` decodes the held-back tail against the true end (the same edge as the offline decode),
and the first window starts at the true start (frame 0, the same LSTM state and reflect padding).

Measured on random and drum codes (benchmarks/streaming.py, benchmarks/README.md "Streaming"):
- right: a cut changes the output only within 3.75 frames (2,400 samples) of it, for the tiny
  codec and stage-mini-codec alike (the transposed convolutions and the 7-tap convolutions), so
  RIGHT_FRAMES = 4 is exact up to float rounding;
- left: the LSTM forgets a cold start to float-rounding level (~1e-6 of the signal rms) within
  24 frames for the tiny codec and ~48 frames for stage-mini-codec on drum codes (random codes:
  ~1e-4 at 128 frames); LEFT_FRAMES = 64 (1.28 s at 50 Hz).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

LEFT_FRAMES = 64  # left context per chunk (the LSTM's memory, measured above)
RIGHT_FRAMES = 4  # frames held back until their right context arrives (receptive field 3.75 frames)


class StreamingDecoder:
    """Decode codes that arrive in order, `push` by `push`, into audio chunks.

    decode(codes [B, K, n]) -> audio [B, 1, n * hop] (array or tensor; e.g. `Codec.decode` or
    `StageModel.decode_model_audio`). push(codes [B, K, m]) returns the newly final audio
    float32 [B, 1, samples] (possibly 0 samples); `flush()` returns the rest. The chunks joined
    are `audio()` ([B, 1, frames * hop]), the offline decode of all the codes within the
    tolerance in the module docstring. left / right: context frames (see the module docstring).
    """

    def __init__(self, decode: Callable[[Tensor], object], hop: int, left: int = LEFT_FRAMES, right: int = RIGHT_FRAMES):
        if left < 0 or right < 0 or hop < 1:
            raise ValueError(f"bad StreamingDecoder sizes: hop={hop}, left={left}, right={right}")
        self.decode, self.hop, self.left, self.right = decode, int(hop), int(left), int(right)
        self.codes: Tensor | None = None  # [B, K, n] received so far
        self.emitted = 0  # frames whose audio has been returned
        self.chunks: list[np.ndarray] = []
        self.decoded_frames = 0  # frames run through the decoder, overlap included (the cost)

    @property
    def received(self) -> int:
        return 0 if self.codes is None else self.codes.shape[-1]

    def push(self, codes: Tensor) -> np.ndarray:
        """Append codes [B, K, m]; return the audio that is final now, [B, 1, samples]."""
        codes = codes.detach()
        self.codes = codes if self.codes is None else torch.cat([self.codes, codes.to(self.codes.device)], dim=-1)
        return self._emit(self.received - self.right)

    def flush(self) -> np.ndarray:
        """The audio of every frame not yet returned (decoded against the true end)."""
        return self._emit(self.received)

    def audio(self) -> np.ndarray:
        """Every chunk returned so far, joined: float32 [B, 1, emitted * hop]."""
        if not self.chunks:
            raise ValueError("nothing decoded yet")
        return np.concatenate(self.chunks, axis=-1)

    def _emit(self, upto: int) -> np.ndarray:
        assert self.codes is not None
        B = self.codes.shape[0]
        if upto <= self.emitted:
            return np.zeros((B, 1, 0), np.float32)
        a = max(0, self.emitted - self.left)  # window [a, received): left context + new + right context
        window = self.codes[:, :, a:]  # [B, K, received - a]
        audio = self.decode(window)
        audio = audio.detach().cpu().numpy() if isinstance(audio, Tensor) else np.asarray(audio)
        self.decoded_frames += window.shape[-1]
        out = np.ascontiguousarray(audio[..., (self.emitted - a) * self.hop : (upto - a) * self.hop], dtype=np.float32)
        self.emitted = upto
        self.chunks.append(out)
        return out  # [B, 1, (upto - emitted) * hop]


def seam_error(stream: np.ndarray, offline: np.ndarray) -> dict[str, float]:
    """How far a stitched stream is from the offline decode: max abs and rms difference, each
    relative to the offline signal's rms (0 for a silent signal with no difference)."""
    if stream.shape != offline.shape:
        raise ValueError(f"stream {stream.shape} and offline {offline.shape} differ in shape")
    d = stream.astype(np.float64) - offline.astype(np.float64)
    rms = float(np.sqrt(np.mean(offline.astype(np.float64) ** 2)))
    scale = rms if rms > 0 else 1.0
    return {"max_rel": float(np.max(np.abs(d))) / scale, "rms_rel": float(np.sqrt(np.mean(d**2))) / scale,
            "signal_rms": rms}
