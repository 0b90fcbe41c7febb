"""stage: accompaniment stems that listen (STAGE, Strano et al. 2025).

    import stage
    model = stage.load_model("tiny")            # or a checkpoint folder / file, or a hub id
    result = stage.generate_stems(model, mix, 44_100, stage.GenerationOptions(prompt="rock drums"))
    click = stage.render_metronome(bpm=120, beats_per_bar=4, seconds=10)   # the training click recipe
    grid = stage.track_beats(mix, 44_100)                                    # beats, downbeats, bpm

Names are imported on first use (PEP 562), so `import stage` and the `stage` command's `--help`
stay fast: torch and transformers load only when a model is needed.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "AudioError": "stage.errors",
    "CheckpointError": "stage.errors",
    "ConfigError": "stage.errors",
    "OfflineError": "stage.errors",
    "OptionError": "stage.errors",
    "StageError": "stage.errors",
    "BeatGrid": "stage.data.beats",
    "track_beats": "stage.data.beats",
    "render_clicks": "stage.data.metronome",
    "render_metronome": "stage.data.metronome",
    "GenerationOptions": "stage.generate.params",
    "GenerationParams": "stage.generate.params",
    "GenerationResult": "stage.generate.params",
    "WindowParams": "stage.generate.params",
    "generate_stems": "stage.generate.pipeline",
    "load_model": "stage.model.checkpoints",
    "save_checkpoint": "stage.model.checkpoints",
    "LMConfig": "stage.model.config",
    "StageConfig": "stage.model.config",
    "preset": "stage.model.config",
    "StageModel": "stage.model.stage_model",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'stage' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
