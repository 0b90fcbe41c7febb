"""Streaming EnCodec decode: codes arriving a chunk at a time -> audio a chunk at a time, stitched
so that the stream equals the offline decode of the same codes within a measured tolerance.

EnCodec's decoder (transformers' `EncodecDecoder`, SEANet) is

    embeddings [B, D, T] -> conv (kernel 7) -> LSTM (+ skip) -> 4 x (ELU, transposed conv, resblock) -> ELU, conv

so everything has a finite receptive field except the LSTM, whose memory reaches back to frame 0.
Measured (benchmarks/streaming.py, benchmarks/README.md "Streaming"): a cut changes the output
only within 3.75 frames (2,400 samples) before it, for the tiny codec and stage-mini-codec alike;
to the left, decoding from a cold start recovers the offline output to float rounding within
~24 frames for the tiny codec, but stage-mini-codec's LSTM on generated drum codes still misses by
17 % of the signal rms after 64 frames and 3 % after 96.

`StreamingDecoder` therefore carries the LSTM's state from chunk to chunk (exact: the LSTM is
causal) and overlaps only the convolutions: the first conv is run with PRE_FRAMES of context on
each side, the layers after the LSTM with POST_LEFT frames of left context, and the last
PRE_FRAMES + POST_RIGHT frames are held back until their right context has arrived:

    frames   0 ............ e ............ n                 (n received, [0, e) emitted)
    conv            [ ... l - 3 | new LSTM inputs | 3 ]      LSTM run on [l, n - 3), state kept
    post        [e - POST_LEFT | new | POST_RIGHT]           audio of [e, n - 3 - POST_RIGHT) emitted

The first chunk starts at frame 0 and `flush()` ends at the true end, so the edges (reflect
padding, the LSTM's zero state) are the offline decode's. The stream equals the offline decode to
float rounding (~1e-6 of the signal rms; tests/test_streaming.py holds it to SEAM_TOLERANCE).

`WindowedDecoder` is the generic alternative for any decode function (each chunk re-decodes
`left` frames of context, the LSTM restarting cold): cheaper to write, exact only where the
decoder forgets within `left` frames; the benchmark uses it to measure that memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

PRE_FRAMES = 3  # the first conv's half width (kernel 7 at the frame rate)
POST_LEFT = 4  # left context of the layers after the LSTM (they reach < 1 frame; margin)
POST_RIGHT = 1  # right context of those layers: 3.75 - PRE_FRAMES = 0.75 frames, rounded up
SEAM_TOLERANCE = 1e-4  # max |stream - offline| / rms(offline) promised (measured ~1e-6)
HOLD_FRAMES = PRE_FRAMES + POST_RIGHT  # frames held back at the end of each chunk


class _Chunked:
    """What both streaming decoders keep: the codes received, the chunks returned, the cost."""

    def __init__(self) -> None:
        self.codes: Tensor | None = None  # [B, K, n] received so far (kept: the caller may compare)
        self.emitted = 0  # frames whose audio has been returned
        self.chunks: list[np.ndarray] = []
        self.decoded_frames = 0  # frames decoded (StreamingDecoder: after its LSTM), overlap included: the cost

    @property
    def received(self) -> int:
        return 0 if self.codes is None else self.codes.shape[-1]

    def audio(self) -> np.ndarray:
        """Every chunk returned so far, joined: float32 [B, 1, emitted * hop]."""
        if not self.chunks:
            raise ValueError("nothing decoded yet")
        return np.concatenate(self.chunks, axis=-1)


class StreamingDecoder(_Chunked):
    """Decode codes that arrive in order, `push` by `push`, into audio chunks, for a `Codec`
    (tokens/codec.py) whose EnCodec decoder is conv -> LSTM -> convolutions (see the module
    docstring).

    push(codes [B, K, m]) returns the newly final audio float32 [B, 1, samples] (possibly 0
    samples); `flush()` returns the rest. The chunks joined are `audio()` ([B, 1, frames * hop]),
    the offline `codec.decode` of all the codes to float rounding.
    """

    def __init__(self, codec: Any):
        super().__init__()
        model = codec.model
        layers = list(model.decoder.layers)
        if type(layers[1]).__name__ != "EncodecLSTM" or layers[0].conv.kernel_size[0] != 2 * PRE_FRAMES + 1:
            raise ValueError("StreamingDecoder needs an EnCodec decoder of the shape conv(7) -> LSTM -> ...")
        self.quantizer, self.pre, self.lstm, self.post = model.quantizer, layers[0], layers[1].lstm, layers[2:]
        self.hop = codec.hop_length
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.embeddings: Tensor | None = None  # [B, D, n]
        self.hidden: Tensor | None = None  # [B, D', l] LSTM outputs (+ skip) so far
        self.state: tuple[Tensor, Tensor] | None = None  # the LSTM's (h, c) after frame l - 1

    @torch.no_grad()
    def push(self, codes: Tensor) -> np.ndarray:
        """Append codes [B, K, m]; return the audio that is final now, [B, 1, samples]."""
        codes = codes.detach().to(self.device)
        emb = self.quantizer.decode(codes.transpose(0, 1)).to(self.dtype)  # [B, D, m]: per frame, exact on slices
        self.codes = codes if self.codes is None else torch.cat([self.codes, codes], dim=-1)
        self.embeddings = emb if self.embeddings is None else torch.cat([self.embeddings, emb], dim=-1)
        return self._emit(final=False)

    @torch.no_grad()
    def flush(self) -> np.ndarray:
        """The audio of every frame not yet returned (decoded against the true end)."""
        return self._emit(final=True)

    def _emit(self, final: bool) -> np.ndarray:
        assert self.embeddings is not None
        n, B = self.received, self.embeddings.shape[0]
        done = 0 if self.hidden is None else self.hidden.shape[-1]  # frames through the LSTM
        upto = n if final else n - PRE_FRAMES  # the first conv is exact up to here
        if upto > done:
            a = max(0, done - PRE_FRAMES)
            x = self.pre(self.embeddings[:, :, a:])[:, :, done - a : upto - a]  # [B, D', upto - done]
            x = x.permute(2, 0, 1)  # [frames, B, D'] (nn.LSTM's layout, as EncodecLSTM)
            y, self.state = self.lstm(x, self.state)
            y = (y + x).permute(1, 2, 0)  # [B, D', frames]
            self.hidden = y if self.hidden is None else torch.cat([self.hidden, y], dim=-1)
            done = upto
        stop = done if final else done - POST_RIGHT  # audio of frames [emitted, stop) is final
        if stop <= self.emitted:
            return np.zeros((B, 1, 0), np.float32)
        assert self.hidden is not None
        a = max(0, self.emitted - POST_LEFT)
        h = self.hidden[:, :, a:done]
        for layer in self.post:
            h = layer(h)  # [B, 1, (done - a) * hop] at the end
        self.decoded_frames += done - a
        out = h[..., (self.emitted - a) * self.hop : (stop - a) * self.hop].float().cpu().numpy()
        self.emitted = stop
        self.chunks.append(np.ascontiguousarray(out, dtype=np.float32))
        return self.chunks[-1]


class WindowedDecoder(_Chunked):
    """The generic streaming decode: each chunk decodes a window of codes with `left` frames of
    already-emitted context and emits only the new samples, holding back the last `right` frames.
    Exact only where the decoder forgets its start within `left` frames (the LSTM may not, see
    the module docstring). decode(codes [B, K, n]) -> audio [B, 1, n * hop] (array or tensor);
    push / flush / audio as `StreamingDecoder`."""

    def __init__(self, decode: Callable[[Tensor], object], hop: int, left: int = 64, right: int = 4):
        if left < 0 or right < 0 or hop < 1:
            raise ValueError(f"bad WindowedDecoder sizes: hop={hop}, left={left}, right={right}")
        super().__init__()
        self.decode, self.hop, self.left, self.right = decode, int(hop), int(left), int(right)

    def push(self, codes: Tensor) -> np.ndarray:
        codes = codes.detach()
        self.codes = codes if self.codes is None else torch.cat([self.codes, codes.to(self.codes.device)], dim=-1)
        return self._emit(self.received - self.right)

    def flush(self) -> np.ndarray:
        return self._emit(self.received)

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
