"""Generation options and results as dataclasses (docs/method.md §5 defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stage.errors import ConfigError


@dataclass(frozen=True)
class GenerationParams:
    """Sampling options. Defaults are the authors': joint CFG 3.0, top-k 250, temperature 1, no top-p.

    guidance: classifier-free guidance scale s in `uncond + s * (cond - uncond)`; the
      unconditional branch drops both the context (all pad) and the text (§5). 1.0 = off.
    text_guidance: optional separate text scale (§9 asks for separate scales; the authors have
      one joint scale). When set, a third branch runs with the context kept and the text dropped
      (`ctx`), `guidance` becomes the context scale and the logits are
      `uncond + guidance * (ctx - uncond) + text_guidance * (cond - ctx)`; with equal scales this
      is the joint formula. None (default) = the joint scale only.
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
    text_guidance: float | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not np.isfinite(self.guidance) or self.guidance < 0:
            raise ConfigError(f"guidance must be a finite number >= 0, got {self.guidance}")
        if self.text_guidance is not None and (not np.isfinite(self.text_guidance) or self.text_guidance < 0):
            raise ConfigError(f"text_guidance must be a finite number >= 0 or None, got {self.text_guidance}")
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
        return self.guidance != 1.0 or (self.text_guidance is not None and self.text_guidance != 1.0)

    @property
    def branches(self) -> int:
        """LM rows per variation: 1 (no guidance), 2 (joint CFG: cond, uncond) or 3 (separate
        scales: cond, uncond, ctx)."""
        if not self.uses_cfg:
            return 1
        return 2 if self.text_guidance is None else 3


@dataclass
class GenerationResult:
    """What `StageModel.generate` returns.

    stems: float32 [V, C, N] at `sample_rate` (V variations, C channels of the input mix).
    codes: int64 [V, K, T] EnCodec codes of the stems.
    seeds: the seed of each variation. timings: seconds spent per phase ("encode": text and
    context encoding, "lm": language model, of which "prefill", "decode": EnCodec decoding and
    resampling, "total"), "decode_steps" and "step_ms" (mean LM decode step), "windows" (1, or
    more for whole-song generation), "real_time_factor" (total / audio seconds) and
    "x_real_time" (audio seconds / total).
    """

    stems: np.ndarray
    sample_rate: int
    codes: object
    seeds: list[int]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.stems.shape[-1] / self.sample_rate
