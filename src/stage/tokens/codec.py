"""EnCodec wrapper: audio <-> codes, always frozen and in eval mode (docs/method.md §2.2).

Thin layer over transformers' `EncodecModel`. The 32 kHz model has 4 codebooks of 2048 codes at
50 Hz (hop 640). `encode` maps [B, 1, N] float audio at `sample_rate` to [B, K, T] codes with
T = ceil(N / hop); `decode` maps [B, K, T] codes back to [B, 1, T * hop] audio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor, nn

from stage.errors import CheckpointError
from stage.tokens.config import CodecConfig

if TYPE_CHECKING:
    from transformers import EncodecModel
    from transformers.models.encodec.modeling_encodec import EncodecDecoderOutput, EncodecEncoderOutput

# transformers' config for facebook/encodec_32khz (its public config.json), so that EnCodec
# weights found inside a checkpoint (the authors' STAGE files) load with no download.
ENCODEC_32KHZ_CONFIG = dict(
    sampling_rate=32_000,
    audio_channels=1,
    num_filters=64,
    hidden_size=128,
    upsampling_ratios=[8, 5, 4, 4],
    codebook_size=2048,
    codebook_dim=128,
    target_bandwidths=[2.2],
    normalize=False,
    use_causal_conv=False,
    pad_mode="reflect",
    norm_type="weight_norm",
    num_lstm_layers=2,
    num_residual_layers=1,
    residual_kernel_size=3,
    dilation_growth_rate=2,
    kernel_size=7,
    last_kernel_size=7,
    compress=2,
    trim_right_ratio=1.0,
    chunk_length_s=None,
    overlap=None,
    use_conv_shortcut=False,
)

# Same strides (hop 640 at 32 kHz, so 50 Hz) and codebook size; tiny widths.
TINY_ENCODEC_CONFIG = dict(ENCODEC_32KHZ_CONFIG, num_filters=4, hidden_size=16, codebook_dim=16, num_lstm_layers=1)


def encodec_config(**overrides):
    from transformers import EncodecConfig

    return EncodecConfig(**{**ENCODEC_32KHZ_CONFIG, **overrides})


class Codec(nn.Module):
    """Frozen EnCodec: `encode` audio -> codes, `decode` codes -> audio.

    model: a transformers `EncodecModel`. config: the `CodecConfig` it must agree with; a model
    that does not (another rate, codebook size or number of codebooks) raises `CheckpointError`.
    """

    def __init__(self, model: EncodecModel, config: CodecConfig):
        super().__init__()
        self.model = model
        self.config = config
        hf = model.config
        if hf.sampling_rate != config.sample_rate or int(hf.frame_rate) != config.frame_rate:
            raise CheckpointError(
                f"EnCodec runs at {hf.sampling_rate} Hz / {hf.frame_rate} Hz frames, config says "
                f"{config.sample_rate} / {config.frame_rate}"
            )
        if hf.codebook_size != config.codebook_size or hf.audio_channels != 1:
            raise CheckpointError("only mono EnCodec models with the configured codebook size are supported")
        # HF picks the number of quantizers from a bandwidth among `target_bandwidths`.
        self.bandwidth: float | None = None
        for bw in hf.target_bandwidths:
            if model.quantizer.get_num_quantizers_for_bandwidth(bw) == config.num_codebooks:
                self.bandwidth = bw
        if self.bandwidth is None:
            raise CheckpointError(f"no EnCodec bandwidth gives {config.num_codebooks} codebooks ({hf.target_bandwidths})")
        self.model.requires_grad_(False)
        self.model.eval()

    def train(self, mode: bool = True) -> Codec:
        super().train(mode)
        self.model.eval()  # frozen: its codebook buffers must never be EMA-updated
        return self

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def frame_rate(self) -> int:
        return self.config.frame_rate

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    def num_frames(self, num_samples: int) -> int:
        return -(-num_samples // self.hop_length)

    @torch.no_grad()
    def encode(self, audio: Tensor) -> Tensor:
        """audio: [B, 1, N] float at `sample_rate` -> codes [B, K, ceil(N / hop)] int64."""
        if audio.dim() != 3 or audio.shape[1] != 1:
            raise ValueError(f"expected mono audio [B, 1, N], got {tuple(audio.shape)}")
        dtype = next(self.model.parameters()).dtype
        # return_dict=True: an output object, never the tuple transformers' annotation also allows
        out = cast("EncodecEncoderOutput", self.model.encode(audio.to(dtype), bandwidth=self.bandwidth, return_dict=True))
        codes = out.audio_codes  # [chunks=1, B, K, T]
        assert codes is not None  # transformers types every output field Optional
        if codes.shape[0] != 1:
            raise CheckpointError("chunked EnCodec models are not supported")
        return codes[0].long()

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """codes: [B, K, T] -> audio [B, 1, T * hop] float32 (not trimmed, §2.2)."""
        if codes.dim() != 3 or codes.shape[1] != self.config.num_codebooks:
            raise ValueError(f"expected codes [B, {self.config.num_codebooks}, T], got {tuple(codes.shape)}")
        # transformers annotates audio_scales as a Tensor, yet its own encode returns a list of None
        # scales for an unnormalised model, and decode takes that list back.
        out = cast("EncodecDecoderOutput", self.model.decode(codes[None], [None], return_dict=True))  # type: ignore[arg-type]
        assert out.audio_values is not None
        return out.audio_values.float()


@torch.no_grad()
def init_random_codebooks(model: EncodecModel, seed: int) -> None:
    """Give a randomly initialised transformers EnCodec usable codebooks.

    transformers creates the codebook buffers as zeros (real weights overwrite them), so a random
    EnCodec would quantise every frame to code 0 and decode every code to the same sound; tests on
    it could not tell two mixes apart. Like EnCodec's k-means initialisation, each residual
    codebook here is drawn from the residual latent frames of varied seeded signals (noise at
    several levels, tones, clicks), plus a little jitter, so codes follow the input.
    The statistics are computed in float64 and the vectors rounded to a 2^-12 grid, so the result
    does not depend on the thread count or the CPU's vector width.
    """
    import copy

    dim = model.config.codebook_dim
    assert dim is not None  # EncodecConfig fills it in (hidden_size) when not given
    g = torch.Generator().manual_seed(seed)
    sr = model.config.sampling_rate
    t = torch.arange(sr, dtype=torch.float64) / sr
    signals = [torch.randn(sr, generator=g, dtype=torch.float64) * a for a in (0.01, 0.05, 0.2, 0.6)]
    signals += [0.5 * torch.sin(2 * torch.pi * f * t) for f in (55.0, 220.0, 880.0, 3520.0)]
    signals += [(torch.rand(sr, generator=g, dtype=torch.float64) < 0.002).double() * 0.8]
    audio = torch.stack(signals)[:, None]  # [len(signals), 1, N]
    encoder = copy.deepcopy(model.encoder).double()
    residual = encoder(audio).transpose(1, 2).reshape(-1, dim)  # [frames, D]
    for layer in model.quantizer.layers:
        cb: Any = layer.codebook  # its embed, embed_avg, cluster_size are buffers: untyped attributes
        pick = torch.randint(0, residual.shape[0], (cb.embed.shape[0],), generator=g)
        jitter = torch.randn(cb.embed.shape, generator=g, dtype=torch.float64) * residual.std(dim=0, keepdim=True) * 0.1
        embed = torch.round((residual[pick] + jitter) * 4096) / 4096  # [codebook_size, D]
        cb.embed.copy_(embed)
        cb.embed_avg.copy_(cb.embed)
        cb.cluster_size.fill_(1.0)
        nearest = torch.cdist(residual, embed).argmin(dim=1)
        residual = residual - embed[nearest]


def encodec_config_from_state(state, sample_rate: int = 32_000):
    """Infer an EnCodec config from its tensors (transformers names), for weights embedded in a
    checkpoint. Widths, codebooks, LSTM depth and shortcut convs come from the shapes; the
    strides come from the downsampling kernels (kernel = 2 x stride, as in SEANet); the rest are
    the 32 kHz model's values."""
    import re

    def weight(prefix):
        for suffix in ("parametrizations.weight.original1", "weight_v", "weight"):
            if f"{prefix}.{suffix}" in state:
                return state[f"{prefix}.{suffix}"]
        raise KeyError(prefix)

    convs = sorted({int(m.group(1)) for k in state if (m := re.match(r"encoder\.layers\.(\d+)\.conv\.", k))})
    if len(convs) < 3 or "quantizer.layers.0.codebook.embed" not in state:
        raise CheckpointError("not an EnCodec state dict")
    first, last, down = convs[0], convs[-1], convs[1:-1]
    ratios = [weight(f"encoder.layers.{i}.conv").shape[-1] // 2 for i in down]
    lstm = [k for k in state if re.match(r"encoder\.layers\.\d+\.lstm\.weight_ih_l\d+$", k)]
    embed = state["quantizer.layers.0.codebook.embed"]
    n_q = len({k.split(".")[2] for k in state if k.startswith("quantizer.layers.")})
    hop = 1
    for r in ratios:
        hop *= r
    frame_rate = sample_rate / hop
    bandwidth = round(n_q * (embed.shape[0].bit_length() - 1) * frame_rate / 1000.0, 6)
    return encodec_config(
        sampling_rate=sample_rate,
        num_filters=weight(f"encoder.layers.{first}.conv").shape[0],
        hidden_size=weight(f"encoder.layers.{last}.conv").shape[0],
        upsampling_ratios=list(reversed(ratios)),
        codebook_size=embed.shape[0],
        codebook_dim=embed.shape[1],
        num_lstm_layers=len(lstm),
        use_conv_shortcut=any(".shortcut." in k for k in state),
        target_bandwidths=[bandwidth],
    )
