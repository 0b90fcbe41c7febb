"""stage: accompaniment stems that listen (STAGE, Strano et al. 2025).

    import stage
    model = stage.load_model("tiny")            # or a checkpoint folder / file, or a hub id
    result = model.generate(context=mix, sample_rate=44_100, prompt="rock drums")
"""

from stage.errors import AudioError, CheckpointError, ConfigError, OfflineError, StageError
from stage.generate.params import GenerationParams, GenerationResult
from stage.model.checkpoints import load_model, save_checkpoint
from stage.model.config import LMConfig, StageConfig, preset
from stage.model.stage_model import StageModel

__version__ = "0.1.0"

__all__ = [
    "AudioError",
    "CheckpointError",
    "ConfigError",
    "GenerationParams",
    "GenerationResult",
    "LMConfig",
    "OfflineError",
    "StageConfig",
    "StageError",
    "StageModel",
    "load_model",
    "preset",
    "save_checkpoint",
]
