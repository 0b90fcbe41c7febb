"""Built-in audio embedders for FAD/KAD that need no downloads.

An embedder maps one audio clip ([C, N] or [N] float at any rate) to frame embeddings [F, D]
(float32). Both built-ins pool over fixed windows of `window_seconds` (default 1 s, close to
VGGish's 0.96 s examples that FAD was defined on), so a 10 s clip gives 10 rows; a clip shorter
than one window gives one row from all its frames, and a trailing partial window is dropped.

- `LogMelEmbedder` ("logmel"): mean and standard deviation of 64 log-mel bands per window,
  [F, 128]. Fixed signal processing, no weights: deterministic on every machine, cheap, and a
  sanity baseline that any learned embedding should beat.
- `EncodecEmbedder` ("encodec"): the EnCodec encoder's continuous output **before** the
  residual quantizer (the latents MusicGen's tokens are quantized from), mean-pooled per window,
  [F, D] with D = 128 for the real 32 kHz EnCodec. Pass the codec of a loaded model
  (`stage.load_model(PATH).codec`); with the tiny random model (tests) it runs but its numbers
  mean nothing.

`Embedder.key` identifies the embedder and its exact configuration (and, for EnCodec, a
fingerprint of the weights); the embedding cache is keyed by it, so a cache written by another
embedder or another codec is never used by mistake.
"""

from __future__ import annotations

import hashlib

import numpy as np

from stage.audio import as_channels_first, check_rate, resample, to_mono
from stage.errors import StageError

WINDOW_SECONDS = 1.0


class Embedder:
    """Base class: `embed(audio, sample_rate) -> float32 [F, D]`.

    name: short name used in metric keys ("logmel"); key: full identity for the cache.
    """

    name: str = "embedder"
    key: str = "embedder"

    def embed(self, audio, sample_rate: int) -> np.ndarray:
        raise NotImplementedError

    def _prepare(self, audio, sample_rate: int, target_rate: int) -> np.ndarray:
        """[C, N] any rate -> mono float32 [N] at target_rate."""
        check_rate(sample_rate, "audio")
        return resample(to_mono(as_channels_first(audio, "audio")), sample_rate, target_rate)[0]


def window_pool(frames: np.ndarray, frames_per_window: int, stats: str = "mean") -> np.ndarray:
    """[T, D] frame features -> [F, D] ("mean") or [F, 2D] ("mean_std") per window of
    `frames_per_window` frames. Fewer frames than one window -> a single window of all of them;
    a trailing partial window is dropped."""
    t = frames.shape[0]
    if t == 0:
        raise StageError("audio too short to embed (no frames)")
    w = max(1, min(int(frames_per_window), t))
    count = t // w
    blocks = frames[: count * w].reshape(count, w, frames.shape[1])  # [F, w, D]
    out = blocks.mean(axis=1)
    if stats == "mean_std":
        out = np.concatenate([out, blocks.std(axis=1)], axis=1)
    return out.astype(np.float32)


class LogMelEmbedder(Embedder):
    """Mean and std of log-mel bands per window -> [F, 2 * n_mels].

    Audio is down-mixed and resampled to 32 kHz (the model's rate) so the embedding does not
    depend on the file's rate; power mel spectrogram (n_fft 2048, hop 512, Hann, 0-16 kHz,
    librosa's Slaney mel scale), in dB relative to a fixed reference of 1.0 (not the clip's peak,
    so loudness differences count), floor -100 dB.
    """

    name = "logmel"

    def __init__(self, sample_rate: int = 32_000, n_mels: int = 64, n_fft: int = 2048, hop_length: int = 512,
                 window_seconds: float = WINDOW_SECONDS):
        if n_mels < 1 or n_fft < 16 or hop_length < 1 or not window_seconds > 0:
            raise StageError("log-mel embedder: n_mels, n_fft, hop_length and window_seconds must be positive")
        self.sample_rate, self.n_mels, self.n_fft, self.hop_length = int(sample_rate), int(n_mels), int(n_fft), int(hop_length)
        self.window_seconds = float(window_seconds)
        self.key = f"logmel|sr={sample_rate}|mels={n_mels}|fft={n_fft}|hop={hop_length}|win={window_seconds}|v1"

    def embed(self, audio, sample_rate: int) -> np.ndarray:
        import librosa

        y = self._prepare(audio, sample_rate, self.sample_rate)
        mel = librosa.feature.melspectrogram(y=y, sr=self.sample_rate, n_fft=self.n_fft, hop_length=self.hop_length,
                                             n_mels=self.n_mels, fmin=0.0, fmax=self.sample_rate / 2, power=2.0)
        db = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)  # [n_mels, T]
        per_window = round(self.window_seconds * self.sample_rate / self.hop_length)
        return window_pool(db.T, per_window, stats="mean_std")


def fingerprint(module) -> str:
    """sha1 over a module's state_dict (names, shapes, dtypes and bytes), 12 hex digits."""
    import torch

    h = hashlib.sha1()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:12]


class EncodecEmbedder(Embedder):
    """Pre-quantizer EnCodec encoder output, mean-pooled per window -> [F, D].

    codec: a `stage.tokens.codec.Codec` (e.g. `stage.load_model(...).codec`). source: a label for
    reports (the model path or "tiny"). Long clips are encoded in chunks of `chunk_seconds`
    (whole windows) to bound memory; each chunk is encoded as its own clip.
    """

    name = "encodec"

    def __init__(self, codec, source: str = "model", window_seconds: float = WINDOW_SECONDS, chunk_seconds: float = 30.0):
        if not window_seconds > 0 or not chunk_seconds >= window_seconds:
            raise StageError("encodec embedder: need 0 < window_seconds <= chunk_seconds")
        self.codec = codec
        self.source = source
        self.window_seconds = float(window_seconds)
        self.chunk_seconds = float(chunk_seconds)
        self.key = f"encodec|{fingerprint(codec.model)}|win={window_seconds}|chunk={chunk_seconds}|v1"

    def latents(self, audio, sample_rate: int) -> np.ndarray:
        """[C, N] audio -> encoder frames [T, D] at the codec's frame rate (50 Hz), before the RVQ."""
        import torch

        y = self._prepare(audio, sample_rate, self.codec.sample_rate)
        hop = self.codec.hop_length
        if y.shape[0] < hop:
            raise StageError(f"audio is shorter than one codec frame ({1000 * hop / self.codec.sample_rate:.0f} ms)")
        frames_per_window = round(self.window_seconds * self.codec.frame_rate)
        chunk = max(1, int(self.chunk_seconds // self.window_seconds)) * frames_per_window * hop
        encoder = self.codec.model.encoder
        dtype = next(self.codec.model.parameters()).dtype
        device = next(self.codec.model.parameters()).device
        parts: list[np.ndarray] = []
        with torch.no_grad():
            for start in range(0, y.shape[0], chunk):
                piece = y[start:start + chunk]
                if piece.shape[0] < hop and parts:
                    break  # a tail shorter than one frame adds nothing
                wav = torch.from_numpy(np.ascontiguousarray(piece))[None, None].to(device=device, dtype=dtype)  # [1, 1, N]
                parts.append(encoder(wav)[0].T.float().cpu().numpy())  # [T, D]
        return np.concatenate(parts, axis=0)

    def embed(self, audio, sample_rate: int) -> np.ndarray:
        return window_pool(self.latents(audio, sample_rate), round(self.window_seconds * self.codec.frame_rate))


BUILTIN = ("logmel", "encodec")
