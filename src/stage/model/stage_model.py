"""StageModel: the codec, the text conditioner and the LM, with the audio <-> codes helpers.

    model = stage.load_model("tiny")
    result = stage.generate_stems(model, mix, 44_100, stage.GenerationOptions(prompt="funky drums", seconds=10))

Generation lives in stage.generate (`generate_stems` in generate/pipeline.py, with one
`GenerationOptions`); this module imports nothing from it, so the model layer stays below the
generation layer. The LM works on 32 kHz mono EnCodec codes; the helpers here move audio at any
rate and channel count to and from the model's codes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from stage.audio import fit_length, prepare, resample
from stage.errors import StageError
from stage.model.config import StageConfig
from stage.model.lm import StageLM
from stage.text import TextConditioner
from stage.tokens.codec import Codec


class StageModel(nn.Module):
    """codec (frozen EnCodec), text (frozen T5 + trained projection) and lm (StageLM)."""

    def __init__(self, config: StageConfig, lm: StageLM, codec: Codec, text: TextConditioner):
        super().__init__()
        self.config = config
        self.lm = lm
        self.codec = codec
        self.text = text
        # What generation keeps between calls (stage.generate.pipeline: converted LMs, the last
        # Generator), each entry keyed on `weights_key()`; a plain dict, so never in state_dict.
        self.generation_cache: dict[str, tuple] = {}

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    @property
    def frame_rate(self) -> int:
        return self.codec.frame_rate

    @property
    def device(self) -> torch.device:
        return self.lm.norm.weight.device

    def save(self, out_dir, bundle: bool = True, overwrite: bool = False, dtype: torch.dtype | None = None) -> Path:
        """Write a stage checkpoint folder (see `stage.model.saving.save_checkpoint`)."""
        from stage.model.saving import save_checkpoint

        return save_checkpoint(self, out_dir, bundle=bundle, overwrite=overwrite, dtype=dtype)

    # ------------------------------------------------------------------ audio <-> codes

    def to_model_audio(self, audio, sample_rate: int, what: str = "audio") -> np.ndarray:
        """[C, N] or [N] audio at `sample_rate` -> float32 [1, N'] mono at the model's rate.

        Refuses NaN/inf, empty input and audio shorter than one codec frame."""
        x = prepare(audio, sample_rate, self.sample_rate, what)
        if x.shape[-1] < self.codec.hop_length:
            raise StageError(
                f"{what} is {x.shape[-1] / self.sample_rate * 1000:.1f} ms long; it must cover at least one "
                f"codec frame ({1000 / self.frame_rate:.0f} ms)"
            )
        return x

    def encode_model_audio(self, x: np.ndarray) -> Tensor:
        """[1, N] mono float at the model's rate -> codes [1, K, ceil(N / hop)]."""
        wav = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None].to(self.device)  # [1, 1, N]
        return self.codec.encode(wav)  # [1, K, T]

    def encode_audio(self, audio, sample_rate: int, what: str = "audio") -> Tensor:
        """[C, N] or [N] audio at `sample_rate` -> codes [1, K, T] (down-mixed, resampled to 32 kHz)."""
        return self.encode_model_audio(self.to_model_audio(audio, sample_rate, what))

    def decode_model_audio(self, codes: Tensor) -> np.ndarray:
        """codes [V, K, T] -> float32 [V, 1, T * hop] at the model's rate."""
        return self.codec.decode(codes.to(self.device)).cpu().numpy()

    def finish_audio(self, audio: np.ndarray, num_samples: int, sample_rate: int, channels: int) -> np.ndarray:
        """[V, 1, N] at the model rate -> float32 [V, C, num_samples] at `sample_rate` (resampled,
        cut or zero-padded to the exact length, mono copied to C channels)."""
        out = np.stack([resample(np.asarray(a, np.float32), self.sample_rate, sample_rate) for a in audio])
        out = fit_length(out, num_samples)
        return np.repeat(out, channels, axis=1).astype(np.float32)

    def weights_key(self) -> tuple:
        """Changes whenever an LM parameter is replaced, moved or modified in place (what
        `generation_cache` entries are keyed on)."""
        return tuple((p.data_ptr(), p._version, p.device.type) for p in self.lm.parameters())
