"""Evaluation of generated stems (the authors' repository has none, docs/method.md §8-9).

    from stage.eval import beat_scores, frechet_distance, kernel_audio_distance
    from stage.eval import EvalConfig, evaluate, write_report

- `beat`: beat/downbeat F-measure (mir_eval, +-70 ms, no 5 s trimming by default), tempo
  ratio, onset F-measure; pure functions on event times.
- `distribution`: FAD (Kilgour et al. 2019) and KAD (Chung et al. 2025) on [num_items, dim]
  embeddings.
- `embedders`: built-in log-mel statistics and EnCodec latents; `adapters`: optional CLAP,
  VGGish, MERT and COCOLA models from user-supplied checkpoints.
- `pipeline`: `evaluate(EvalConfig)` runs everything on folders; `report` writes JSON,
  Markdown and HTML; `commands`: `stage eval`.
"""

from stage.eval.beat import BeatScores, EventScores, TempoScores, beat_scores, event_scores, onset_scores, tempo_scores
from stage.eval.distribution import FADResult, KADResult, frechet_distance, kernel_audio_distance, pool_embeddings
from stage.eval.embedders import EncodecEmbedder, LogMelEmbedder
from stage.eval.pipeline import EvalConfig, EvalReport, evaluate
from stage.eval.report import write_report

__all__ = [
    "BeatScores",
    "EncodecEmbedder",
    "EvalConfig",
    "EvalReport",
    "EventScores",
    "FADResult",
    "KADResult",
    "LogMelEmbedder",
    "TempoScores",
    "beat_scores",
    "evaluate",
    "event_scores",
    "frechet_distance",
    "kernel_audio_distance",
    "onset_scores",
    "pool_embeddings",
    "tempo_scores",
    "write_report",
]
