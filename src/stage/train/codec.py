"""Train a small EnCodec (transformers' `EncodecModel`) on Lightning: `stage train-codec`.

transformers ships EnCodec's architecture and inference but no training code, and in particular
nothing that learns its quantizer. This module owns that, following EnCodec (Défossez et al.,
"High Fidelity Neural Audio Compression", 2022, arXiv:2210.13438):

- reconstruction: time-domain L1 (EnCodec §3.4, weight lambda_t = 0.1) and a multi-scale mel-spectrogram
  loss (EnCodec §3.4: L1 + L2 over mel spectrograms at windows 2^i, hop 2^i / 4, 64 bins, weight
  lambda_f = 1). We add an L1 on log-mel at the same scales, as descript-audio-codec does
  (Kumar et al., 2023, DAC §3.4): without it the quiet partials of a bass note carry no gradient;
- a commitment loss ||z - sg(q)||^2 between the encoder output and its quantized value (EnCodec §3.3),
  with a straight-through estimator for the decoder's gradient. Its weight is VQ-VAE's 0.25
  (van den Oord et al., 2017) rather than EnCodec's 1: without EnCodec's loss balancer, weight 1
  let it outweigh the mel loss and pull the latents onto a few codes in our short runs;
- residual vector quantization whose codebooks are not trained by the optimizer but by an
  exponential moving average of the assigned vectors (decay 0.99, Laplace smoothing 1e-5),
  initialised by k-means on the first batch, with dead codes (EMA usage below a threshold)
  replaced by random vectors of the current batch (EnCodec §3.3, "threshold_ema_dead_code = 2" in the
  authors' release; we make it relative to our much smaller batches, see `CodecTrainConfig`);
- no adversarial loss: within the CPU budget the discriminator did not pay for itself.

The codebook state lives in the HF buffers (`embed`, `embed_avg`, `cluster_size`), so the trained
model saves with `save_pretrained` and loads unchanged through `stage.tokens.codec.Codec`.

Shapes: audio [B, 1, N]; latents z [B, D, T] with T = N / hop; codes [K, B, T].

Length: about 600 lines on purpose: the crops, the losses, the quantizer's k-means/EMA updates,
the Lightning module and its config are one training recipe, read top to bottom.
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from stage import configs
from stage.audio import db_to_gain
from stage.errors import ConfigError, StageError

if TYPE_CHECKING:
    from transformers import EncodecModel
    from transformers.models.encodec.modeling_encodec import EncodecConv1d, EncodecResidualVectorQuantizer

    from stage.train.run import Precision

AUDIO_EXTENSIONS = (".wav", ".flac")


@dataclass(frozen=True)
class CodecTrainConfig:
    """Everything `stage train-codec` needs; saved as `train-codec.json` in the run folder.

    Architecture: the 32 kHz EnCodec strides (hop 640, 50 Hz) with narrow SEANet widths.
    dead_fraction: a code is dead when its EMA count falls below this fraction of the mean count
    per code (frames per batch / codebook size). EnCodec's absolute threshold of 2 counts, with
    its batches of 64 x 1 s at 75 Hz over 1024 codes (4.7 per code), is a fraction of about 0.4;
    ours hold hundreds of frames, so the threshold is relative.
    """

    data: tuple[str, ...] = ()
    out: str = "runs/codec"
    seed: int = 0
    max_steps: int = 3000
    batch_size: int = 8
    segment_seconds: float = 1.0
    lr: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.9)  # EnCodec §4.2
    sample_rate: int = 32_000
    num_filters: int = 16
    hidden_size: int = 128
    num_lstm_layers: int = 2
    num_codebooks: int = 4
    codebook_size: int = 1024
    l1_weight: float = 0.1
    mel_weight: float = 1.0
    commit_weight: float = 0.25
    mel_windows: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
    # Extra scales whose mel filters stop at low_mel_fmax: the full-band scales give the bass
    # (40-250 Hz) two or three of their 64 bands, so a codec trained on them alone drops it.
    low_mel_windows: tuple[int, ...] = ()
    low_mel_fmax: float = 500.0
    low_mel_bins: int = 24
    # Linear-frequency STFT scales over 0..stft_fmax (L1 on log magnitude): fine enough (3.9 Hz bins
    # at 8192) to see the gaps between a bass note's harmonics, which no mel scale resolves.
    stft_windows: tuple[int, ...] = ()
    stft_fmax: float = 1000.0
    stft_weight: float = 1.0
    # Start from a trained codec (a save_pretrained folder or a bundled name such as
    # "stage-mini-codec") instead of k-means on random init.
    init_from: str = ""
    # Train the decoder only: the encoder and the codebooks stay frozen, so every input keeps
    # exactly the codes it had and language models trained on those codes stay valid.
    decoder_only: bool = False
    ema_decay: float = 0.99
    kmeans_iters: int = 10
    kmeans_batches: int = 8
    dead_fraction: float = 0.4
    silence_db: float = -50.0
    precision: str = "32-true"
    threads: int = 0  # 0: torch's default
    log_every: int = 25
    checkpoint_every: int = 500

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", tuple(str(d) for d in self.data))
        object.__setattr__(self, "mel_windows", tuple(int(w) for w in self.mel_windows))
        object.__setattr__(self, "low_mel_windows", tuple(int(w) for w in self.low_mel_windows))
        object.__setattr__(self, "stft_windows", tuple(int(w) for w in self.stft_windows))
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        self.validate()

    @property
    def hop_length(self) -> int:
        return 640

    @property
    def segment_samples(self) -> int:
        frames = max(1, round(self.segment_seconds * self.sample_rate / self.hop_length))
        return frames * self.hop_length

    def validate(self) -> None:
        """Raise ConfigError naming the first bad value."""
        for name in ("max_steps", "batch_size", "num_filters", "hidden_size", "num_codebooks",
                     "codebook_size", "kmeans_batches", "log_every", "checkpoint_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.codebook_size & (self.codebook_size - 1):
            raise ConfigError(f"codebook_size must be a power of two, got {self.codebook_size}")
        if self.sample_rate != 32_000:
            raise ConfigError("only 32 kHz codecs are supported (the STAGE layout assumes 50 Hz frames)")
        if not 0.02 <= self.segment_seconds <= 30:
            raise ConfigError(f"segment_seconds must be in [0.02, 30], got {self.segment_seconds}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if not 0 < self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if not self.mel_windows or any(w < 16 for w in self.mel_windows + self.low_mel_windows):
            raise ConfigError("mel_windows needs at least one window, and every window must be >= 16 samples")
        if self.low_mel_windows and not (0 < self.low_mel_fmax <= self.sample_rate / 2):
            raise ConfigError(f"low_mel_fmax must be in (0, {self.sample_rate // 2}] Hz, got {self.low_mel_fmax}")
        if self.low_mel_windows and (not isinstance(self.low_mel_bins, int) or self.low_mel_bins < 1):
            raise ConfigError(f"low_mel_bins must be a positive integer, got {self.low_mel_bins!r}")
        if any(w < 16 for w in self.stft_windows):
            raise ConfigError("every stft_windows entry must be >= 16 samples")
        if self.stft_windows and not (0 < self.stft_fmax <= self.sample_rate / 2):
            raise ConfigError(f"stft_fmax must be in (0, {self.sample_rate // 2}] Hz, got {self.stft_fmax}")
        if self.decoder_only and not self.init_from:
            raise ConfigError("decoder_only needs init_from: a trained codec whose encoder and codebooks to keep")
        if self.precision not in ("32-true", "bf16-mixed"):
            raise ConfigError(f"precision must be 32-true or bf16-mixed, got {self.precision!r}")

    def encodec_config(self):
        from stage.tokens.codec import encodec_config

        bits = int(math.log2(self.codebook_size))
        return encodec_config(
            num_filters=self.num_filters, hidden_size=self.hidden_size, codebook_dim=self.hidden_size,
            codebook_size=self.codebook_size, num_lstm_layers=self.num_lstm_layers,
            target_bandwidths=[self.num_codebooks * bits * 50 / 1000.0],
        )

    def to_dict(self) -> dict[str, Any]:
        return configs.to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CodecTrainConfig:
        """Build from a mapping (a YAML file, train-codec.json); unknown keys and wrong types are
        refused by name (`stage.configs.from_dict`)."""
        return configs.from_dict(cls, data, what="codec training")


# --------------------------------------------------------------------------- data


def find_audio(folders) -> list[Path]:
    """Every audio file under `folders` (stems and mixes alike: STAGE encodes both), sorted."""
    files: list[Path] = []
    for folder in folders:
        root = Path(folder)
        if not root.is_dir():
            raise StageError(f"--data {folder}: no such folder")
        files += sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
    if not files:
        raise StageError(f"no .wav/.flac files under {', '.join(map(str, folders))}")
    return files


class AudioCrops(torch.utils.data.IterableDataset):
    """Endless random mono crops [1, N] from audio files, seeded: crop i of a run is a pure
    function of (seed, i), so a resumed or re-run training sees the same data.

    Crops quieter than `silence_db` (RMS, dBFS) are redrawn: breaks and tails would otherwise
    teach the codec silence. Files must be at `sample_rate`.
    """

    def __init__(self, files: list[Path], num_samples: int, sample_rate: int, seed: int,
                 silence_db: float = -50.0, start: int = 0):
        import soundfile as sf

        self.files = [str(f) for f in files]
        self.num_samples = num_samples
        self.seed = seed
        self.silence = db_to_gain(silence_db)
        self.start = start
        self.frames = []
        for f in self.files:
            info = sf.info(f)
            if info.samplerate != sample_rate:
                raise StageError(f"{f}: {info.samplerate} Hz, the codec trains on {sample_rate} Hz audio")
            self.frames.append(info.frames)
        if max(self.frames) < num_samples:
            raise StageError(f"every file is shorter than one {num_samples / sample_rate:.2f} s segment")

    def crop(self, index: int) -> Tensor:
        import soundfile as sf

        rng = np.random.default_rng([self.seed, index])
        x = None
        for _ in range(20):
            i = int(rng.integers(len(self.files)))
            if self.frames[i] < self.num_samples:
                continue
            start = int(rng.integers(self.frames[i] - self.num_samples + 1))
            x, _ = sf.read(self.files[i], start=start, frames=self.num_samples, dtype="float32", always_2d=True)
            x = x.mean(axis=1)
            if np.sqrt(np.mean(x**2)) >= self.silence:
                break
        return torch.from_numpy(np.ascontiguousarray(x))[None]  # [1, N]

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        i = self.start + worker
        while True:
            yield self.crop(i)
            i += workers


# --------------------------------------------------------------------------- losses


class MultiScaleMel(torch.nn.Module):
    """EnCodec's multi-scale mel loss (EnCodec §3.4) plus a log-mel L1 (DAC §3.4).

    For each window w: STFT (Hann, hop w / 4), mel with min(64, w / 8) bins (fewer would leave empty
    low filters; librosa's Slaney filters); loss = L1(mel) + L2(mel) + L1(log10 mel), averaged over
    scales. `low_windows` add scales of the same form whose `low_bins` filters span 0..`low_fmax`
    only, so the low end gets a share of the loss of its own (our addition; see CodecTrainConfig).
    """

    def __init__(self, sample_rate: int, windows: tuple[int, ...], low_windows: tuple[int, ...] = (),
                 low_fmax: float = 500.0, low_bins: int = 24):
        super().__init__()
        import librosa

        self.scales: list[str] = []
        bands: list[tuple[int, int, float | None]] = [(w, min(64, w // 8), None) for w in windows]
        bands += [(w, low_bins, float(low_fmax)) for w in low_windows]
        for w, n_mels, fmax in bands:
            name = f"{w}" if fmax is None else f"{w}low"
            fb = librosa.filters.mel(sr=sample_rate, n_fft=w, n_mels=n_mels, fmax=fmax)
            self.register_buffer(f"fb{name}", torch.from_numpy(fb).float(), persistent=False)
            self.register_buffer(f"win{name}", torch.hann_window(w), persistent=False)
            self.scales.append(name)
        self.windows = tuple(windows)

    def mel(self, x: Tensor, w: int | str) -> Tensor:
        """x: [B, N] -> [B, mels, frames]. w: a window length, or a scale name ("4096low")."""
        window = getattr(self, f"win{w}")
        n = window.numel()
        spec = torch.stft(x.float(), n_fft=n, hop_length=n // 4, window=window, return_complex=True).abs()
        return getattr(self, f"fb{w}") @ spec

    def forward(self, y: Tensor, x: Tensor) -> Tensor:
        """y (reconstruction), x (target): [B, 1, N] -> scalar."""
        total: Tensor | float = 0.0
        for name in self.scales:
            my, mx = self.mel(y[:, 0], name), self.mel(x[:, 0], name)
            total = total + F.l1_loss(my, mx) + F.mse_loss(my, mx).sqrt()
            total = total + F.l1_loss(torch.log10(my.clamp_min(1e-5)), torch.log10(mx.clamp_min(1e-5)))
        assert isinstance(total, Tensor)  # there is at least one scale
        return total / len(self.scales)


class LowStft(torch.nn.Module):
    """L1 between log10 STFT magnitudes over 0..fmax, at each of `windows` (Hann, hop w / 4).

    Our addition for the low end. A bass note's harmonics sit 40-100 Hz apart; every mel scale
    (even the 4096-sample low-band ones, ~20 Hz filters) averages across them, so a decoder that
    fills the gaps with noise loses nothing there and pyin then finds no steady pitch. On a linear
    axis with 3.9-7.8 Hz bins the gaps are bins of their own, and the log makes noise in them cost
    as much as a missing harmonic (the log-magnitude STFT term of Yamamoto et al., 2020,
    Parallel WaveGAN §2.3, restricted to the low band).
    """

    def __init__(self, sample_rate: int, windows: tuple[int, ...], fmax: float):
        super().__init__()
        self.windows = tuple(windows)
        self.bins = {w: int(fmax * w / sample_rate) + 1 for w in windows}
        for w in windows:
            self.register_buffer(f"win{w}", torch.hann_window(w), persistent=False)

    def forward(self, y: Tensor, x: Tensor) -> Tensor:
        """y (reconstruction), x (target): [B, 1, N] -> scalar."""
        total = y.new_zeros(())
        for w in self.windows:
            window = getattr(self, f"win{w}")
            sy, sx = (torch.stft(a[:, 0].float(), n_fft=w, hop_length=w // 4, window=window,
                                 return_complex=True).abs()[:, : self.bins[w]] for a in (y, x))
            total = total + F.l1_loss(torch.log10(sy.clamp_min(1e-5)), torch.log10(sx.clamp_min(1e-5)))
        return total / max(len(self.windows), 1)


@functools.lru_cache(maxsize=4)
def _distance_mel(sample_rate: int) -> MultiScaleMel:
    return MultiScaleMel(sample_rate, (512, 1024, 2048))


def mel_distance(y: Tensor, x: Tensor, sample_rate: int = 32_000) -> float:
    """The benchmark's multi-scale mel distance: L1 between log10 mel spectrograms, averaged over
    windows 512/1024/2048 (lower is better). y, x: [N] float."""
    loss = _distance_mel(sample_rate)
    total = 0.0
    for w in loss.windows:
        my, mx = loss.mel(y[None], w), loss.mel(x[None], w)
        total += float(F.l1_loss(torch.log10(my.clamp_min(1e-5)), torch.log10(mx.clamp_min(1e-5))))
    return total / len(loss.windows)


# --------------------------------------------------------------------------- quantizer


@torch.no_grad()
def kmeans(x: Tensor, k: int, iters: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means on x [M, D] -> (centroids [k, D], counts [k]). Empty clusters keep their
    previous centre. With M < k, centres are drawn with replacement (and jittered)."""
    pick = torch.randint(0, x.shape[0], (k,), generator=generator) if x.shape[0] < k else \
        torch.randperm(x.shape[0], generator=generator)[:k]
    centres = x[pick].clone()
    if x.shape[0] < k:
        centres += torch.randn(centres.shape, generator=generator) * x.std(dim=0) * 0.01
    counts = torch.zeros(k)
    for _ in range(iters):
        nearest = torch.cdist(x, centres).argmin(dim=1)
        counts = torch.bincount(nearest, minlength=k).float()
        sums = torch.zeros_like(centres).index_add_(0, nearest, x)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
    return centres, counts


class EmaRVQ:
    """Training-time residual VQ over the codebooks of a transformers EnCodec quantizer.

    `quantize(z)` returns the straight-through quantized latents, the codes and the commitment
    loss, and (in training) updates each codebook by EMA and replaces its dead codes.
    """

    def __init__(self, quantizer: EncodecResidualVectorQuantizer, num_codebooks: int, decay: float, dead_fraction: float,
                 seed: int):
        # EncodecEuclideanCodebooks; their embed, embed_avg and cluster_size are buffers (untyped attributes).
        self.layers: list[Any] = [layer.codebook for layer in quantizer.layers[:num_codebooks]]
        self.decay = decay
        self.dead_fraction = dead_fraction
        self.eps = 1e-5
        self.generator = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def initialise(self, z: Tensor, iters: int, batch_frames: int) -> None:
        """k-means on the residuals of latents z [B, D, T], codebook after codebook. The counts
        are rescaled to `batch_frames` (frames per training batch), the scale of the EMA."""
        residual = z.transpose(1, 2).reshape(-1, z.shape[1]).float()  # [B*T, D]
        for cb in self.layers:
            centres, counts = kmeans(residual, cb.embed.shape[0], iters, self.generator)
            counts = counts * (batch_frames / residual.shape[0])
            cb.embed.copy_(centres)
            cb.embed_avg.copy_(centres * counts[:, None])
            cb.cluster_size.copy_(counts)
            residual = residual - centres[torch.cdist(residual, centres).argmin(dim=1)]

    def quantize(self, z: Tensor, training: bool) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
        """z [B, D, T] -> (quantized [B, D, T] straight-through, codes [K, B, T], commitment loss,
        per-codebook code counts of this batch)."""
        B, D, T = z.shape
        flat = z.transpose(1, 2).reshape(-1, D)  # [B*T, D]
        residual = flat
        quantized = torch.zeros_like(flat)
        codes, counts = [], []
        commit = flat.new_zeros(())
        for cb in self.layers:
            embed = cb.embed
            dist = torch.cdist(residual.detach().float(), embed)  # [B*T, codes]
            idx = dist.argmin(dim=1)
            q = embed[idx].to(flat.dtype)
            commit = commit + F.mse_loss(residual, q.detach())
            count = torch.bincount(idx, minlength=embed.shape[0]).float()
            if training:
                self._ema_update(cb, residual.detach().float(), idx, count)
            quantized = quantized + q
            residual = residual - q.detach()
            codes.append(idx.view(B, T))
            counts.append(count)
        out = flat + (quantized - flat).detach()  # straight-through
        return out.view(B, T, D).transpose(1, 2), torch.stack(codes), commit, counts

    @torch.no_grad()
    def _ema_update(self, cb, x: Tensor, idx: Tensor, count: Tensor) -> None:
        d = self.decay
        cb.cluster_size.mul_(d).add_(count, alpha=1 - d)
        sums = torch.zeros_like(cb.embed).index_add_(0, idx, x)
        cb.embed_avg.mul_(d).add_(sums, alpha=1 - d)
        n = cb.cluster_size.sum()
        smoothed = (cb.cluster_size + self.eps) / (n + cb.embed.shape[0] * self.eps) * n  # Laplace
        cb.embed.copy_(cb.embed_avg / smoothed[:, None])
        # Dead codes: restart them on random vectors of this batch (EnCodec §3.3).
        expected = x.shape[0] / cb.embed.shape[0]
        dead = cb.cluster_size < self.dead_fraction * expected
        n_dead = int(dead.sum())
        if n_dead:
            pick = torch.randint(0, x.shape[0], (n_dead,), generator=self.generator)
            cb.embed[dead] = x[pick]
            cb.embed_avg[dead] = x[pick] * expected
            cb.cluster_size[dead] = expected


def perplexity(counts: Tensor) -> float:
    """exp(entropy) of a code-usage histogram: the effective number of codes in use."""
    p = counts.float() / counts.sum().clamp_min(1)
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


# --------------------------------------------------------------------------- Lightning


@torch.no_grad()
def init_seanet(model: EncodecModel, generator: torch.Generator) -> None:
    """Kaiming-normal weights (ReLU gain, fan-in) and zero biases for every convolution.

    transformers' EnCodec is built for loading weights, not for training from scratch: its
    `_init_weights` writes to the weight-normed convolutions' computed `weight`, which leaves
    PyTorch's default (variance-shrinking) init in place. Through the ~15 convolutions of the
    SEANet encoder the signal then fades below the biases, so every frame encodes to nearly the
    same latent (measured: per-dimension std over frames 0.0018 against 0.036 across dimensions)
    and k-means has nothing to cluster. Assigning `weight` through the weight-norm
    parametrization sets its magnitude and direction together.
    """
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
            w = torch.empty(module.weight.shape)
            fan_in = w.shape[1] * w.shape[2]
            w.normal_(0.0, math.sqrt(2.0 / fan_in), generator=generator)
            module.weight = w
            if module.bias is not None:
                module.bias.zero_()
    # The decoder's last convolution starts small, so the first reconstructions are near silence
    # rather than 30 dB above the input.
    last = cast("EncodecConv1d", model.decoder.layers[-1]).conv
    last.weight = last.weight * 0.01


class CodecModule(L.LightningModule):
    """EnCodec + EMA residual VQ + losses, for `lightning.Trainer`.

    Logged keys: train/loss, train/l1, train/mel, vq/commit, vq/perplexity_q{k}.
    """

    initialised: Tensor  # a buffer: whether k-means has set the codebooks (kept in checkpoints)

    def __init__(self, config: CodecTrainConfig, init_batch: Tensor | None = None):
        super().__init__()
        from transformers import EncodecModel

        self.config = config
        torch.manual_seed(config.seed)
        if config.init_from:
            self.model = load_init_codec(config)
        else:
            self.model = EncodecModel(config.encodec_config())
            init_seanet(self.model, torch.Generator().manual_seed(config.seed))
        if config.decoder_only:
            self.model.encoder.requires_grad_(False)
        self.mel = MultiScaleMel(config.sample_rate, config.mel_windows, config.low_mel_windows,
                                 config.low_mel_fmax, config.low_mel_bins)
        self.stft = LowStft(config.sample_rate, config.stft_windows, config.stft_fmax)
        self.rvq = EmaRVQ(self.model.quantizer, config.num_codebooks, config.ema_decay, config.dead_fraction,
                          config.seed + 1)
        self.init_batch = init_batch
        self.register_buffer("initialised", torch.tensor(bool(config.init_from)))
        self.usage = [torch.zeros(config.codebook_size) for _ in range(config.num_codebooks)]

    def configure_optimizers(self):
        # The codebooks are buffers: only the encoder and decoder are optimised (the decoder alone
        # with decoder_only, whose encoder is frozen in __init__).
        params = [p for p in [*self.model.encoder.parameters(), *self.model.decoder.parameters()] if p.requires_grad]
        return torch.optim.Adam(params, lr=self.config.lr, betas=self.config.betas)

    def on_train_start(self) -> None:
        if not bool(self.initialised) and self.init_batch is not None:
            with torch.no_grad():
                c = self.config
                frames = c.batch_size * c.segment_samples // c.hop_length
                self.rvq.initialise(self.model.encoder(self.init_batch.to(self.device)), c.kmeans_iters, frames)
            self.initialised.fill_(True)
        self.init_batch = None

    def reconstruct(self, x: Tensor, training: bool = False):
        """x [B, 1, N] -> (y [B, 1, N], codes [K, B, T], commitment loss, counts)."""
        z = self.model.encoder(x)
        # decoder_only: the frozen codebooks get no EMA updates and no dead-code restarts, so the
        # codes of x stay those of the init codec.
        q, codes, commit, counts = self.rvq.quantize(z, training and not self.config.decoder_only)
        y = self.model.decoder(q)[..., : x.shape[-1]]
        return y, codes, commit, counts

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        c = self.config
        y, _, commit, counts = self.reconstruct(batch, training=True)
        l1 = F.l1_loss(y.float(), batch)
        mel = self.mel(y.float(), batch)
        loss = c.l1_weight * l1 + c.mel_weight * mel + c.commit_weight * commit.float()
        extra = {}
        if c.stft_windows:
            extra["train/stft"] = stft = self.stft(y.float(), batch)
            loss = loss + c.stft_weight * stft
        logs = {"train/loss": loss, "train/l1": l1, "train/mel": mel, "vq/commit": commit, **extra}
        for k, count in enumerate(counts):
            self.usage[k] += count.cpu()
        if (self.global_step + 1) % c.log_every == 0:
            for k, usage in enumerate(self.usage):
                logs[f"vq/perplexity_q{k}"] = perplexity(usage)
                usage.zero_()
        self.log_dict(logs, prog_bar=False, on_step=True, batch_size=batch.shape[0])
        return loss


def load_init_codec(config: CodecTrainConfig) -> EncodecModel:
    """The trained EnCodec named by `config.init_from` (a save_pretrained folder or a bundled
    name), in fp32. Its architecture must be the one `config` describes."""
    from transformers import EncodecModel

    from stage.model.sources import bundled_dir

    source = config.init_from
    path = Path(source) if Path(source).is_dir() else bundled_dir(source)
    if path is None or not (path / "config.json").is_file():
        raise ConfigError(f"init_from {source!r}: not a codec folder (save_pretrained) or a bundled codec name")
    model = EncodecModel.from_pretrained(str(path)).float()
    want = config.encodec_config()
    for name in ("num_filters", "hidden_size", "codebook_size", "num_lstm_layers", "upsampling_ratios"):
        if getattr(model.config, name) != getattr(want, name):
            raise ConfigError(f"init_from {source!r}: {name} is {getattr(model.config, name)}, "
                              f"the config says {getattr(want, name)}")
    return model


class _CodecCheckpoint(L.Callback):
    """Every `checkpoint_every` steps and at the end: the EnCodec as a `save_pretrained` folder
    (fp32, under `checkpoints/step-N`, and the final one under `model/`), written to a temp folder
    and renamed so an interrupted save never leaves a half folder."""

    def __init__(self, out: Path, every: int):
        self.out, self.every = out, every

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every == 0:
            save_codec(pl_module.model, self.out / "checkpoints" / f"step-{step}")

    def on_train_end(self, trainer, pl_module) -> None:
        save_codec(pl_module.model, self.out / "model")


def save_codec(model, folder: Path, dtype: torch.dtype | None = None) -> Path:
    """`model.save_pretrained(folder)` (safetensors), atomically replacing any older folder."""
    import copy
    import shutil

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    m = model if dtype is None else copy.deepcopy(model).to(dtype)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    m.save_pretrained(str(tmp), safe_serialization=True)
    from stage.model.checkpoints import plain_permissions

    plain_permissions(tmp)  # readable by every user of an install, like the package's other files
    if folder.exists():
        old = folder.with_name(folder.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old)
    else:
        tmp.rename(folder)
    return folder


@dataclass
class CodecTrainResult:
    """Where `train_codec` left its model, and its last logged losses."""

    model_dir: Path
    steps: int
    metrics: dict[str, float] = field(default_factory=dict)


def train_codec(config: CodecTrainConfig, resume: bool = False, force: bool = False,
                progress_bar: bool = True) -> CodecTrainResult:
    """Train the codec described by `config`; the run folder gets train-codec.json, logs/version_N/
    metrics.csv (one per start or resume), lightning/last.ckpt (resume state), checkpoints/step-N
    and model/."""
    import shutil

    from stage.train.run import quiet_lightning

    quiet_lightning()
    # Check the data before touching the run folder: a bad --data leaves nothing behind.
    files = find_audio(config.data)
    n = config.segment_samples
    data = AudioCrops(files, n, config.sample_rate, config.seed, config.silence_db)
    out = Path(config.out)
    ckpt = out / "lightning" / "last.ckpt"
    if out.exists() and not out.is_dir():  # --force replaces a run folder, never a file
        raise StageError(f"--out {out}: exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not resume:
        if not force:
            raise StageError(f"{out} already holds a run: pass --resume to continue it or --force to start again")
        shutil.rmtree(out)
    if resume and not ckpt.exists():
        raise StageError(f"--resume: no {ckpt} to continue from")
    out.mkdir(parents=True, exist_ok=True)
    (out / "train-codec.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    if config.threads:
        torch.set_num_threads(config.threads)

    init_batch = None  # resumed, or started from a trained codec: no k-means
    if not (resume or config.init_from):
        # k-means sees crops of its own seed, not the first training batches.
        init_data = AudioCrops(files, n, config.sample_rate, config.seed + 7919, config.silence_db)
        init_batch = torch.stack([init_data.crop(i) for i in range(config.batch_size * config.kmeans_batches)])
    module = CodecModule(config, init_batch=init_batch)
    loader = torch.utils.data.DataLoader(data, batch_size=config.batch_size, num_workers=0)

    # One version folder per (re)start: Lightning would wipe a reused folder's metrics on resume.
    logger = L.pytorch.loggers.CSVLogger(str(out), name="logs")
    checkpoints = L.pytorch.callbacks.ModelCheckpoint(dirpath=str(out / "lightning"), save_last=True,
                                                     every_n_train_steps=config.checkpoint_every, save_top_k=0)
    trainer = L.Trainer(
        max_steps=config.max_steps, accelerator="cpu" if not torch.cuda.is_available() else "auto", devices=1,
        precision=cast("Precision", config.precision), logger=logger, log_every_n_steps=config.log_every,
        callbacks=[checkpoints, _CodecCheckpoint(out, config.checkpoint_every)],
        enable_progress_bar=progress_bar, enable_model_summary=False, num_sanity_val_steps=0,
        deterministic=False,
    )
    if resume:
        # Continue the crop stream where the checkpoint left it.
        state = torch.load(str(ckpt), map_location="cpu", weights_only=True)
        data.start = int(state.get("global_step", 0)) * config.batch_size
    trainer.fit(module, loader, ckpt_path=str(ckpt) if resume else None)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return CodecTrainResult(model_dir=out / "model", steps=trainer.global_step, metrics=metrics)


def load_codec_config(path: str | os.PathLike | None, overrides: dict[str, Any]) -> CodecTrainConfig:
    """A `CodecTrainConfig` from a YAML/JSON file (or the defaults) with `overrides` applied."""
    from stage.train.config import read_yaml

    data: dict[str, Any] = read_yaml(path) if path else {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    return CodecTrainConfig.from_dict(data)
