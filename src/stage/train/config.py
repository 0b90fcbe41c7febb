"""Typed, frozen, validated training configuration (`stage train --config FILE key=value ...`).

A `TrainConfig` is read from a YAML file, then `key=value` overrides with dotted keys are applied
(`trainer.max_steps=100`, `optim.lr=3e-5`, `model.init=tiny`); values are parsed as YAML
scalars/lists. Every key is checked: an unknown key or a value of the wrong type raises a
one-line `ConfigError` that names it (and suggests the closest known key).

The defaults are the authors' recipe (docs/method.md §6): AdamW lr 1e-5, betas (0.9, 0.95),
weight decay 1e-3, constant lr, gradient clipping by value at 1.0, batch 2 x accumulation 4
(effective 8), fp16 mixed precision on GPU, context dropout 0.1, text dropout 0.5, T5 word
dropout 0.3, EnCodec and T5 frozen, the LM and the T5 projection trained.

Sections (see configs/drums.yaml for a commented example):
  seed, out
  model:    init, codec, text, tokenizer, stem, lm {dim, num_layers, num_heads, ffn_dim, dropout}
  data:     kind (stems|tokens), train, val, sample {...}, train_samples, val_samples, num_workers
  dropout:  context, text, word, stem_tokens
  aux:      beat_weight, beat_layer, align_blocks
  optim:    lr, betas, weight_decay, eps, warmup_steps
  trainer:  max_steps, batch_size, accumulate, precision, clip_value, clip_algorithm, accelerator,
            devices, num_nodes, strategy, val_every, val_batches, checkpoint_every, keep_checkpoints,
            bundle_final, log_every, logger, progress_bar, sanity_val_steps, matmul_precision
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stage import configs
from stage.data.samples import SampleConfig
from stage.errors import ConfigError

DATA_KINDS = ("stems", "tokens")
PRECISIONS = ("auto", "32-true", "16-mixed", "bf16-mixed", "bf16-true", "16-true", "64-true")
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "fsdp", "single_device")
LOGGERS = ("csv", "tensorboard", "wandb", "none")
CLIP_ALGORITHMS = ("value", "norm")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
MATMUL_PRECISIONS = ("highest", "high", "medium")


@dataclass(frozen=True)
class LMShape:
    """Optional decoder shape overrides (`model.lm`). When any is set, the LM is rebuilt with a
    fresh seeded random init of that shape instead of the weights of `model.init` (tests and toy
    runs); the codec and T5 still come from `model.init`."""

    dim: int | None = None
    num_layers: int | None = None
    num_heads: int | None = None
    ffn_dim: int | None = None
    dropout: float | None = None

    def overrides(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class ModelSection:
    """Where the model starts (any source `stage.load_model` accepts) and what it generates.

    A base MusicGen (layout "musicgen") is converted to the STAGE layout before training (§2.3):
    zero pad row, Kaiming-normal context row.
    """

    init: str = "musicgen-small"
    codec: str | None = None  # override the EnCodec source (folder or hub id)
    text: str | None = None  # override the T5 source
    tokenizer: str | None = None  # override the T5 tokenizer source
    stem: str | None = None  # recorded in the checkpoints ("drums", "bass", ...)
    lm: LMShape = field(default_factory=LMShape)


@dataclass(frozen=True)
class DataSection:
    """Training data.

    kind "stems": `train` is a manifest written by `stage prepare`; examples are cut on the fly
      (§6.5) with the `sample` options (a `stage.data.samples.SampleConfig`; in a file, a mapping
      of its fields whose target_stem defaults to model.stem) and encoded by EnCodec on the
      training device. `val` is another manifest, or None for the manifest's own validation split.
    kind "tokens": `train` / `val` are folders of pre-tokenised shards (`stage tokenize`,
      `stage.train.tokens`); `val` None means no validation.
    train_samples: examples per pass over a stems dataset (the authors draw 10 000 per epoch);
      ignored for tokens (the shard count). val_samples: fixed validation examples (24 songs in
      the authors' split, §6.4).
    """

    kind: str = "stems"
    train: str = ""
    val: str | None = None
    sample: SampleConfig | None = None
    train_samples: int = 10_000
    val_samples: int = 24
    num_workers: int = 2


@dataclass(frozen=True)
class DropoutSection:
    """Per-sample training dropouts (§5, §6): the context becomes all pad, the text becomes the
    null condition; each word of a caption is dropped independently.

    stem_tokens (ours, not the authors'; 0 = off): the largest share of the stem's *input* frames
    replaced by random codes in teacher forcing (each sample draws its share in [0, stem_tokens];
    the loss still targets the true codes). With clean
    history a model trained from scratch can read tempo and phase off its own past and ignore the
    context; noisy history makes the context the reliable source (docs/method.md §12)."""

    context: float = 0.1
    text: float = 0.5
    word: float = 0.3
    stem_tokens: float = 0.0


@dataclass(frozen=True)
class AuxSection:
    """An auxiliary beat-phase loss on the context (ours, not the authors'; docs/method.md §12).

    beat_weight (0 = off): the weight, next to the stem's cross-entropy, of a mean squared error
    between a linear probe of the hidden state after block `beat_layer` (-1 = the last) at each
    context step and the (cos, sin) of the song's beat phase and bar phase at the context frame
    that step reads. It needs token examples that carry beats (`stage tokenize --per-song`
    writes them) and trains the decoder to track the beat *inside the prefix*, which the stem's
    cross-entropy alone rewards too weakly to learn from a bare mix at STAGE-mini's scale.
    The probe is a training-only head: it is not part of the saved model. With the probe on,
    `train/loss` is what the step optimises (cross-entropy + beat_weight x `train/beat_loss`);
    `val/loss` stays the cross-entropy alone, next to `val/beat_loss`.

    align_blocks: blocks whose attention head 0 is set, before training, to look `lm.align_offset`
    steps back (StageLM.init_alignment_heads): from the step predicting stem frame t to the step
    of context frame t, so that blocks after `beat_layer` can read the beat it tracked there."""

    beat_weight: float = 0.0
    beat_layer: int = -1
    align_blocks: tuple[int, ...] = ()


@dataclass(frozen=True)
class OptimSection:
    """AdamW (§6.2). warmup_steps > 0 adds a linear warm-up (the authors use none)."""

    lr: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 1e-3
    eps: float = 1e-8
    warmup_steps: int = 0


@dataclass(frozen=True)
class TrainerSection:
    """Lightning Trainer settings. Step counts are optimizer steps (one step = batch_size x
    accumulate examples per device).

    precision "auto": "16-mixed" on a GPU (the authors' fp16 AMP), "32-true" on CPU.
    val_every / checkpoint_every: every N optimizer steps (0 = never). keep_checkpoints: how many
    Lightning resume checkpoints to keep besides `last.ckpt` (-1 = all). Stage checkpoints
    (loadable with `stage.load_model`) are written at every `checkpoint_every` step and kept.
    bundle_final: write a self-contained stage checkpoint (EnCodec and T5 included) at the end.
    """

    max_steps: int = 100_000
    batch_size: int = 2
    accumulate: int = 4
    precision: str = "auto"
    clip_value: float | None = 1.0
    clip_algorithm: str = "value"
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    val_every: int = 1250
    val_batches: int | None = None
    checkpoint_every: int = 1250
    keep_checkpoints: int = 3
    bundle_final: bool = True
    log_every: int = 10
    logger: str = "csv"
    progress_bar: bool = True
    sanity_val_steps: int = 2
    matmul_precision: str | None = "medium"  # the authors' `torch.set_float32_matmul_precision`


@dataclass(frozen=True)
class TrainConfig:
    """The whole training run. `out` is the run folder (checkpoints, logs, the resolved config)."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    dropout: DropoutSection = field(default_factory=DropoutSection)
    aux: AuxSection = field(default_factory=AuxSection)
    optim: OptimSection = field(default_factory=OptimSection)
    trainer: TrainerSection = field(default_factory=TrainerSection)
    seed: int = 0
    out: str = "runs/stage"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first bad value."""
        m, d, p, o, t = self.model, self.data, self.dropout, self.optim, self.trainer
        if not self.aux.beat_weight >= 0:
            raise ConfigError(f"aux.beat_weight must be >= 0, got {self.aux.beat_weight}")
        _nonempty("model.init", m.init)
        for name in ("dim", "num_layers", "num_heads", "ffn_dim"):
            v = getattr(m.lm, name)
            if v is not None and v < 1:
                raise ConfigError(f"model.lm.{name} must be a positive integer, got {v!r}")
        if m.lm.dropout is not None and not 0.0 <= m.lm.dropout < 1.0:
            raise ConfigError(f"model.lm.dropout must be in [0, 1), got {m.lm.dropout}")
        _choice("data.kind", d.kind, DATA_KINDS)
        if d.train_samples < 1:
            raise ConfigError(f"data.train_samples must be >= 1, got {d.train_samples}")
        if d.val_samples < 0:
            raise ConfigError(f"data.val_samples must be >= 0, got {d.val_samples}")
        if d.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {d.num_workers}")
        target = d.sample.target_stem if d.sample is not None else None
        if m.stem and target and m.stem != target:
            raise ConfigError(f"model.stem is {m.stem!r} but data.sample.target_stem is {target!r}")
        if d.sample is not None and d.kind != "stems":
            raise ConfigError("data.sample applies to data.kind 'stems' only (set data.kind=stems)")
        for name in ("context", "text", "word", "stem_tokens"):
            v = getattr(p, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"dropout.{name} must be in [0, 1], got {v}")
        if not o.lr > 0:
            raise ConfigError(f"optim.lr must be > 0, got {o.lr}")
        if len(o.betas) != 2 or not all(0.0 <= b < 1.0 for b in o.betas):
            raise ConfigError(f"optim.betas must be two numbers in [0, 1), got {list(o.betas)}")
        if o.weight_decay < 0:
            raise ConfigError(f"optim.weight_decay must be >= 0, got {o.weight_decay}")
        if not o.eps > 0:
            raise ConfigError(f"optim.eps must be > 0, got {o.eps}")
        if o.warmup_steps < 0:
            raise ConfigError(f"optim.warmup_steps must be >= 0, got {o.warmup_steps}")
        for name in ("max_steps", "batch_size", "accumulate", "num_nodes", "log_every"):
            v = getattr(t, name)
            if v < 1:
                raise ConfigError(f"trainer.{name} must be >= 1, got {v}")
        for name in ("val_every", "checkpoint_every"):
            v = getattr(t, name)
            if v < 0:
                raise ConfigError(f"trainer.{name} must be >= 0 (0 = never), got {v}")
        if t.val_batches is not None and t.val_batches < 1:
            raise ConfigError(f"trainer.val_batches must be >= 1 or null, got {t.val_batches}")
        if t.keep_checkpoints < -1 or t.keep_checkpoints == 0:
            raise ConfigError(f"trainer.keep_checkpoints must be >= 1 or -1 (all), got {t.keep_checkpoints}")
        if t.sanity_val_steps < -1:
            raise ConfigError(f"trainer.sanity_val_steps must be >= -1, got {t.sanity_val_steps}")
        _choice("trainer.precision", t.precision, PRECISIONS)
        _choice("trainer.strategy", t.strategy, STRATEGIES)
        _choice("trainer.logger", t.logger, LOGGERS)
        _choice("trainer.clip_algorithm", t.clip_algorithm, CLIP_ALGORITHMS)
        _choice("trainer.accelerator", t.accelerator, ACCELERATORS)
        if t.matmul_precision is not None:
            _choice("trainer.matmul_precision", t.matmul_precision, MATMUL_PRECISIONS)
        if t.clip_value is not None and not t.clip_value > 0:
            raise ConfigError(f"trainer.clip_value must be > 0 or null, got {t.clip_value}")
        if isinstance(t.devices, str):
            if t.devices != "auto" and not _is_device_list(t.devices):
                raise ConfigError(f"trainer.devices must be 'auto', a count, -1 or a list like '0,1', got {t.devices!r}")
        elif t.devices == 0 or t.devices < -1:
            raise ConfigError(f"trainer.devices must be >= 1, -1 (all) or 'auto', got {t.devices}")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        _nonempty("out", self.out)

    # ------------------------------------------------------------------ (de)serialisation

    def to_dict(self) -> dict[str, Any]:
        return configs.to_dict(self)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: Any) -> TrainConfig:
        """Build from nested mappings; unknown keys and wrong types are refused by name
        (`stage.configs.from_dict`). A `data.sample` mapping without target_stem takes model.stem;
        an empty one (what runs of kind tokens wrote before it was typed) means none."""
        section = data.get("data") if isinstance(data, dict) else None
        if isinstance(section, dict) and isinstance(section.get("sample"), dict):
            sample = dict(section["sample"])
            model = data.get("model")
            stem = model.get("stem") if isinstance(model, dict) else None
            if sample and stem:
                sample.setdefault("target_stem", stem)
            data = {**data, "data": {**section, "sample": sample or None}}
        return configs.from_dict(cls, data)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------- loading


def load_config(path: str | Path | None, overrides: typing.Sequence[str] = ()) -> TrainConfig:
    """Read a YAML config (None = all defaults) and apply `key=value` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        data = read_yaml(path)
    return TrainConfig.from_dict(apply_overrides(data, overrides))


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file {str(p)!r} not found")
    if not p.is_file():
        raise ConfigError(f"config {str(p)!r} is not a file")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{p}: invalid YAML{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{p}: cannot read ({err})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: typing.Sequence[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` strings to nested dicts (a copy). Values are YAML (`1e-4`, `[0.9, 0.99]`,
    `null`, `true`). Keys are checked later, when the config is built."""
    import copy

    import yaml

    out = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. trainer.max_steps=100)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {'.'.join(parts[: i + 1])!r} is not a section")
            node = child
        node[parts[-1]] = value
    return out


# --------------------------------------------------------------------------- checks


def _choice(name: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ConfigError(f"{name} must be one of {', '.join(options)}; got {value!r}")


def _nonempty(name: str, value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name} must be a non-empty string")


def _is_device_list(text: str) -> bool:
    parts = [p.strip() for p in text.strip("[]").split(",") if p.strip()]
    return bool(parts) and all(p.lstrip("-").isdigit() for p in parts)
