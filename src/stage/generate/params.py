"""Generation options and results as dataclasses (STAGE_METHOD.md §5 defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stage.errors import ConfigError


@dataclass(frozen=True)
class GenerationParams:
    """Sampling options. Defaults are the authors': joint CFG 3.0, top-k 250, temperature 1, no top-p.

    guidance: classifier-free guidance scale s in `uncond + s * (cond - uncond)`; the
      unconditional branch drops both the context (all pad) and the text (§5). 1.0 = off.
    temperature: softmax temperature; 0 = greedy.
    top_k: keep the k most likely codes (0 = no limit, 1 = greedy).
    top_p: nucleus sampling mass in (0, 1]; 0 or 1 = off.
    seed: base seed; variation v uses seed + v. None = a fresh random seed (reported back).
    """

    guidance: float = 3.0
    temperature: float = 1.0
    top_k: int = 250
    top_p: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not np.isfinite(self.guidance) or self.guidance < 0:
            raise ConfigError(f"guidance must be a finite number >= 0, got {self.guidance}")
        if not np.isfinite(self.temperature) or self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")
        if not isinstance(self.top_k, (int, np.integer)) or self.top_k < 0:
            raise ConfigError(f"top_k must be an integer >= 0, got {self.top_k!r}")
        if not 0.0 <= self.top_p <= 1.0:
            raise ConfigError(f"top_p must be in [0, 1], got {self.top_p}")
        if self.seed is not None and (not isinstance(self.seed, (int, np.integer)) or not 0 <= self.seed < 2**63):
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")

    @property
    def uses_cfg(self) -> bool:
        return self.guidance != 1.0


@dataclass
class GenerationResult:
    """What `StageModel.generate` returns.

    stems: float32 [V, C, N] at `sample_rate` (V variations, C channels of the input mix).
    codes: int64 [V, K, T] EnCodec codes of the stems.
    seeds: the seed of each variation. timings: seconds spent per phase ("encode", "lm",
    "decode", "total"), plus "real_time_factor" (total / audio seconds).
    """

    stems: np.ndarray
    sample_rate: int
    codes: "object"
    seeds: list[int]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.stems.shape[-1] / self.sample_rate
