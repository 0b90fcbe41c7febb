"""Typed, frozen, validated model configuration, saved inside every stage checkpoint.

A `StageConfig` names everything needed to rebuild a model with no other file:
- `lm`: the decoder's shape and its token layout (`LMConfig`);
- `codec`: where the EnCodec weights come from (`CodecConfig`);
- `text`: where the T5 encoder and tokenizer come from (`TextConfig`).

Presets follow the public MusicGen configs (audiocraft `config/model/lm/model_scale`, and the HF
`facebook/musicgen-*` decoder configs): small 1024x24 (16 heads), medium 1536x48 (24 heads),
large 2048x48 (32 heads), all with FFN width 4 x dim, 4 codebooks of 2048 codes and T5-base text.
`tiny` is a seeded random model for tests, CI and UI smoke runs; it needs no downloads.
`mini` is STAGE-mini, the small model trained on CPU and shipped inside the package: a 256x6
decoder over a 32 kHz, 50 Hz, 4 x 1024-code EnCodec trained for it (`stage-mini-codec`) and a
frozen seeded-random 128-wide T5 (`stage-mini-text`), both bundled in `stage/assets`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from stage import configs
from stage.errors import ConfigError
from stage.tokens.config import ENCODEC_32KHZ, CodecConfig  # noqa: F401 (re-exported: model configs hold one)

LAYOUTS = ("stage", "musicgen")

# Hub ids of the frozen parts every released MusicGen/STAGE model uses.
T5_BASE = "google-t5/t5-base"


@dataclass(frozen=True)
class LMConfig:
    """Shape and token layout of the MusicGen decoder (`StageLM`).

    layout:
      - "stage": docs/method.md §2.3/§3. The pad row (id = codebook_size) is a zero, frozen
        embedding (`padding_idx`); conditioning pads are masked out of attention; positions restart
        at the first attended step; the context id (codebook_size + 1) is a trained row.
      - "musicgen": plain MusicGen. The pad id doubles as the learned BOS/"special" token, nothing
        is masked, positions start at 0. A base MusicGen checkpoint reproduces MusicGen exactly.
    """

    dim: int = 1024
    num_layers: int = 24
    num_heads: int = 16
    ffn_dim: int = 4096
    num_codebooks: int = 4
    codebook_size: int = 2048
    delays: tuple[int, ...] = ()  # empty means MusicGen's (0, 1, ..., K-1)
    layout: str = "stage"
    norm_eps: float = 1e-5
    dropout: float = 0.0  # residual dropout in training; the authors use none (§2.3)
    # std of the random code embeddings (None: HF MusicGen's 0.02). Only a model trained from
    # scratch cares: at 0.02 the summed code rows (norm ~0.6 at 256 wide) are ~20x smaller than
    # the sinusoid (norm sqrt(D/2)), so what the tokens say barely survives the first LayerNorm.
    embedding_std: float | None = None
    # From scratch only: head 0 of the first two layers starts out attending `align_offset` steps
    # back through the sinusoidal positions (StageLM.init_alignment_heads), i.e. from stem frame
    # t to context frame t when the context is `align_offset` frames long. None: random heads.
    align_offset: int | None = None

    def __post_init__(self) -> None:
        if not self.delays:
            object.__setattr__(self, "delays", tuple(range(self.num_codebooks)))
        else:
            object.__setattr__(self, "delays", tuple(int(d) for d in self.delays))
        self.validate()

    # Ids, derived so they can never disagree with the vocabulary.
    @property
    def pad_id(self) -> int:
        return self.codebook_size

    @property
    def context_id(self) -> int:
        return self.codebook_size + 1

    @property
    def input_vocab(self) -> int:
        """Rows of each input embedding table: the codes, the pad id and the context id."""
        return self.codebook_size + 2

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    def validate(self) -> None:
        """Raise ConfigError naming the first bad value."""
        for name in ("dim", "num_layers", "num_heads", "ffn_dim", "num_codebooks", "codebook_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"lm.{name} must be a positive integer, got {value!r}")
        if self.dim % self.num_heads:
            raise ConfigError(f"lm.dim ({self.dim}) must be divisible by lm.num_heads ({self.num_heads})")
        if self.head_dim % 2:
            raise ConfigError(f"lm.dim / lm.num_heads must be even, got {self.head_dim}")
        if self.dim % 2:
            raise ConfigError(f"lm.dim must be even (sinusoidal positions), got {self.dim}")
        if len(self.delays) != self.num_codebooks:
            raise ConfigError(f"lm.delays has {len(self.delays)} entries for {self.num_codebooks} codebooks")
        if any(d < 0 for d in self.delays) or self.delays[0] != 0:
            raise ConfigError(f"lm.delays must be non-negative and start at 0, got {list(self.delays)}")
        if self.layout not in LAYOUTS:
            raise ConfigError(f"lm.layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.align_offset is not None and not (isinstance(self.align_offset, int) and self.align_offset > 0):
            raise ConfigError(f"lm.align_offset must be a positive integer or null, got {self.align_offset!r}")
        if self.embedding_std is not None and not (isinstance(self.embedding_std, (int, float)) and self.embedding_std > 0):
            raise ConfigError(f"lm.embedding_std must be a number > 0 or null, got {self.embedding_std!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lm.dropout must be in [0, 1), got {self.dropout}")
        if not self.norm_eps > 0:
            raise ConfigError(f"lm.norm_eps must be > 0, got {self.norm_eps}")


@dataclass(frozen=True)
class TextConfig:
    """Where the frozen T5 encoder and its tokenizer come from.

    source / tokenizer: "tiny", a hub id, or a directory (`T5EncoderModel.save_pretrained` and
    `tokenizer.save_pretrained`). `tokenizer` defaults to `source`. `dim` is T5's width (768 for
    t5-base); the trained projection to the LM width belongs to the model, not to T5.
    """

    source: str = T5_BASE
    tokenizer: str = ""
    dim: int = 768
    max_tokens: int = 512  # prompts longer than this are refused, not silently cut

    def __post_init__(self) -> None:
        if not self.tokenizer:
            object.__setattr__(self, "tokenizer", self.source)
        self.validate()

    def validate(self) -> None:
        if not isinstance(self.source, str) or not self.source:
            raise ConfigError(f"text.source must be a non-empty string, got {self.source!r}")
        if not isinstance(self.dim, int) or self.dim < 1:
            raise ConfigError(f"text.dim must be a positive integer, got {self.dim!r}")
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ConfigError(f"text.max_tokens must be a positive integer, got {self.max_tokens!r}")


@dataclass(frozen=True)
class StageConfig:
    """Everything needed to rebuild a `StageModel`: decoder, codec and text sources.

    stem: the instrument the model generates ("drums", "bass", ...) or None for a base MusicGen.
    window_seconds: the window it was trained on (10 s for the authors' models, §6.5; 5 s for
    STAGE-mini); generation uses it as its default window (`default_window` in
    stage.generate.pipeline), so the decoder never runs at positions it has not seen.
    """

    lm: LMConfig = field(default_factory=LMConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)
    text: TextConfig = field(default_factory=TextConfig)
    name: str = "custom"
    stem: str | None = None
    window_seconds: float = 10.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        self.lm.validate()
        self.codec.validate()
        self.text.validate()
        w = self.window_seconds
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 < w <= 3600:
            raise ConfigError(f"window_seconds must be a number in (0, 3600], got {w!r}")
        if self.lm.num_codebooks != self.codec.num_codebooks:
            raise ConfigError(
                f"lm.num_codebooks ({self.lm.num_codebooks}) != codec.num_codebooks ({self.codec.num_codebooks})"
            )
        if self.lm.codebook_size != self.codec.codebook_size:
            raise ConfigError(
                f"lm.codebook_size ({self.lm.codebook_size}) != codec.codebook_size ({self.codec.codebook_size})"
            )

    def replace(self, **changes: Any) -> StageConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return configs.to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageConfig:
        """Build from a dict (e.g. a checkpoint's JSON). Unknown keys and wrong types are refused by
        name (`stage.configs.from_dict`). Each section is built on its own, under its name ("unknown
        config key lm.'x'"): its validate() already names its keys ("lm.dim must be ...")."""
        if not isinstance(data, dict):
            raise ConfigError(f"config must be a mapping, got {type(data).__name__}")
        sections = {"lm": LMConfig, "codec": CodecConfig, "text": TextConfig}
        built: dict[str, Any] = {k: configs.from_dict(sections[k], v, where=f"{k}.") for k, v in data.items() if k in sections}
        return configs.from_dict(cls, {**data, **built})


def _musicgen(dim: int, layers: int, heads: int, name: str) -> StageConfig:
    return StageConfig(
        lm=LMConfig(dim=dim, num_layers=layers, num_heads=heads, ffn_dim=4 * dim, layout="musicgen"),
        codec=CodecConfig(source=ENCODEC_32KHZ),
        text=TextConfig(source=T5_BASE),
        name=name,
    )


TINY_TEXT_DIM = 32

# STAGE-mini's frozen parts: package assets, named like hub ids but resolved to
# `stage/assets/<name>` (model/sources.py `BUNDLED`), so a thin checkpoint needs no download.
MINI_CODEC = "stage-mini-codec"
MINI_TEXT = "stage-mini-text"
MINI_TEXT_DIM = 128

PRESETS: dict[str, StageConfig] = {
    "musicgen-small": _musicgen(1024, 24, 16, "musicgen-small"),
    "musicgen-medium": _musicgen(1536, 48, 24, "musicgen-medium"),
    "musicgen-large": _musicgen(2048, 48, 32, "musicgen-large"),
    # Tiny: real architecture, tiny widths. 2048 codes so the special ids equal the real ones.
    "tiny": StageConfig(
        lm=LMConfig(dim=64, num_layers=2, num_heads=4, ffn_dim=128, layout="stage"),
        codec=CodecConfig(source="tiny"),
        text=TextConfig(source="tiny", dim=TINY_TEXT_DIM),
        name="tiny",
    ),
    # STAGE-mini (see the module docstring): 256 wide, 6 layers of 4 x 64-dim heads, FFN 4 x dim,
    # 4 codebooks of 1024 codes (so pad id 1024, context id 1025), about 8 M trained parameters.
    "mini": StageConfig(
        lm=LMConfig(dim=256, num_layers=6, num_heads=4, ffn_dim=1024, num_codebooks=4, codebook_size=1024, layout="stage",
                    embedding_std=0.35,  # 4 summed rows of norm ~0.35 * 16 = 5.6: as loud as the sinusoid (11.3)
                    align_offset=250),  # 5 s contexts at 50 Hz: two heads start out looking from stem frame t to context frame t
        codec=CodecConfig(source=MINI_CODEC, sample_rate=32_000, frame_rate=50, num_codebooks=4, codebook_size=1024),
        text=TextConfig(source=MINI_TEXT, dim=MINI_TEXT_DIM),
        name="mini",
        window_seconds=5.0,  # trained on 5 s windows and contexts (configs/mini-*.yaml), for the CPU budget
    ),
}


def preset(name: str) -> StageConfig:
    """Return a preset config by name (musicgen-small, musicgen-medium, musicgen-large, tiny, mini)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
