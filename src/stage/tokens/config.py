"""Where the frozen EnCodec comes from and what it produces (`CodecConfig`).

It lives with the tokens, not the model: the codec wrapper (stage.tokens.codec) needs it, and the
tokens layer must not import the model layer. `stage.model.config` re-exports it.
"""

from __future__ import annotations

from dataclasses import dataclass

from stage.errors import ConfigError

ENCODEC_32KHZ = "facebook/encodec_32khz"


@dataclass(frozen=True)
class CodecConfig:
    """Where the frozen EnCodec comes from and what it produces.

    source: "tiny" (seeded random, for tests), a hub id, or a directory written by
    `EncodecModel.save_pretrained`. A relative directory is resolved against the checkpoint.
    """

    source: str = ENCODEC_32KHZ
    sample_rate: int = 32_000
    frame_rate: int = 50
    num_codebooks: int = 4
    codebook_size: int = 2048

    def __post_init__(self) -> None:
        self.validate()

    @property
    def hop_length(self) -> int:
        return self.sample_rate // self.frame_rate

    def validate(self) -> None:
        if not isinstance(self.source, str) or not self.source:
            raise ConfigError(f"codec.source must be a non-empty string, got {self.source!r}")
        for name in ("sample_rate", "frame_rate", "num_codebooks", "codebook_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"codec.{name} must be a positive integer, got {value!r}")
        if self.sample_rate % self.frame_rate:
            raise ConfigError(
                f"codec.sample_rate ({self.sample_rate}) must be a multiple of codec.frame_rate ({self.frame_rate})"
            )
