"""Run a training: build the model, the data and a Lightning Trainer from a `TrainConfig`.

    from stage.train.config import load_config
    from stage.train.run import train
    result = train(load_config("configs/drums.yaml", ["trainer.max_steps=10"]))

A run folder (`config.out`) holds:
    train.yaml               the resolved config (what `--resume` reuses)
    checkpoints/step-NNNNNNN stage checkpoints every `trainer.checkpoint_every` steps
                             (`stage.load_model(path)`; layout "stage")
    model/                   the final stage checkpoint, self-contained (EnCodec and T5 bundled)
                             when `trainer.bundle_final`
    frozen/{codec,text}      EnCodec / T5 written once, when they came from a local folder or
                             from inside the init checkpoint; step checkpoints reference them
                             (`../../frozen/...`) instead of copying ~670 MB each time. Hub ids and
                             "tiny" are referenced by name.
    lightning/               full Lightning resume checkpoints (trained tensors, optimizer, loops,
                             data position): `step-NNNNNNN.ckpt` and `last.ckpt`
    logs/version_N/          CSV metrics (or TensorBoard / W&B), one version per launch
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Literal, cast

import lightning as L
import torch

from stage.errors import ConfigError, StageError
from stage.files import atomic_write_text
from stage.train.config import TrainConfig

RUN_CONFIG = "train.yaml"
RUN_SUBDIRS = ("checkpoints", "lightning", "logs", "frozen", "model")

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """Where a run wrote its outputs. `final` is None when no final checkpoint was written."""

    out: Path
    global_step: int
    checkpoints: list[Path]
    final: Path | None
    metrics: dict[str, float]


# --------------------------------------------------------------------------- run folder


def process_rank() -> int:
    """This process's global rank from the launcher's environment (0 when not launched)."""
    for key in ("RANK", "SLURM_PROCID", "PMI_RANK", "OMPI_COMM_WORLD_RANK"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    local = os.environ.get("LOCAL_RANK", "0")
    node = os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", "0"))
    return int(local) + int(node) if local.isdigit() and node.isdigit() else 0


def prepare_out_dir(out: Path, resume: bool, force: bool) -> None:
    """Refuse a non-empty run folder unless resuming or forced. With --force only a stage run
    folder (one with train.yaml) is cleared, and only of what a run writes."""
    if out.exists() and not out.is_dir():
        raise StageError(f"--out {out}: exists and is not a folder")
    if not out.exists() or not any(out.iterdir()) or resume:
        return
    if not force:
        raise StageError(f"--out {out}: already exists and is not empty (use --resume to continue or --force to restart)")
    if not (out / RUN_CONFIG).exists():
        raise StageError(f"--out {out}: not empty and not a stage run folder (no {RUN_CONFIG}); refusing to clear it")
    for name in RUN_SUBDIRS:
        shutil.rmtree(out / name, ignore_errors=True)
    (out / RUN_CONFIG).unlink(missing_ok=True)


def resolve_resume(path: str | os.PathLike) -> tuple[Path, Path | None]:
    """A resume argument (a .ckpt file or a run folder) -> (checkpoint file, its run folder or None)."""
    p = Path(path)
    if p.is_dir():
        ckpt = p / "lightning" / "last.ckpt"
        if not ckpt.exists():
            raise StageError(f"--resume {p}: no lightning/last.ckpt in this folder")
        return ckpt, p
    if not p.exists():
        raise StageError(f"--resume {p}: no such checkpoint")
    if p.suffix != ".ckpt":
        raise StageError(f"--resume {p}: expected a Lightning .ckpt file or a run folder")
    run = p.parent.parent if p.parent.name == "lightning" else None
    return p, run


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


# --------------------------------------------------------------------------- stage checkpoints


def frozen_sources(model, init: str, out: Path) -> tuple[object, object]:
    """(codec config, text config) for step checkpoints: hub ids and "tiny" by name, anything
    local or embedded written once under out/frozen and referenced relative to a checkpoint."""
    from stage.model.sources import EMBEDDED, looks_like_hub_id, resolve_dir

    base = Path(init) if Path(init).is_dir() else None
    codec, text = model.config.codec, model.config.text

    def is_remote(source: str) -> bool:
        return source != EMBEDDED and resolve_dir(source, base) is None and (source == "tiny" or looks_like_hub_id(source))

    frozen = out / "frozen"
    if not is_remote(codec.source):
        if not (frozen / "codec").exists():
            model.codec.model.save_pretrained(str(frozen / "codec"))
        codec = dataclasses.replace(codec, source="../../frozen/codec")
    tokenizer_remote = is_remote(text.tokenizer)
    if not is_remote(text.source) or not tokenizer_remote:
        if not (frozen / "text").exists():
            model.text.encoder.save_pretrained(str(frozen / "text"))
            model.text.tokenizer.save_pretrained(str(frozen / "text"))
        source = text.source if is_remote(text.source) else "../../frozen/text"
        tokenizer = text.tokenizer if tokenizer_remote else "../../frozen/text"
        text = dataclasses.replace(text, source=source, tokenizer=tokenizer)
    return codec, text


def write_stage_checkpoint(model, config, lm_state: dict, proj_state: dict, folder: Path, bundle: bool) -> Path:
    """save_checkpoint for explicit tensors (works for sharded strategies too)."""
    from stage.model.checkpoints import save_checkpoint

    view = SimpleNamespace(
        config=config,
        lm=SimpleNamespace(state_dict=lambda: lm_state),
        text=SimpleNamespace(proj=SimpleNamespace(state_dict=lambda: proj_state), encoder=model.text.encoder,
                             tokenizer=model.text.tokenizer),
        codec=model.codec,
    )
    return save_checkpoint(view, folder, bundle=bundle, overwrite=True)


class StageCheckpoint(L.Callback):
    """Writes stage checkpoints (`stage.load_model`-loadable, layout "stage") every
    `trainer.checkpoint_every` optimizer steps and at the end; the final one is bundled
    (self-contained, `out/model`) when `trainer.bundle_final`.

    step_config: the StageConfig written into step checkpoints (frozen parts referenced; set
    before training starts); final_config: the one for the bundled final checkpoint.
    """

    def __init__(self, config: TrainConfig, out: Path, step_config, final_config):
        self.config, self.out = config, out
        self.step_config, self.final_config = step_config, final_config
        self.every = config.trainer.checkpoint_every
        self.last_step = -1
        self.written: list[Path] = []
        self.final: Path | None = None

    def _states(self, trainer, pl_module) -> tuple[dict, dict] | None:
        from lightning.pytorch.strategies import FSDPStrategy

        if isinstance(trainer.strategy, FSDPStrategy):  # a collective: every rank takes part
            state = trainer.strategy.lightning_module_state_dict()
        elif trainer.is_global_zero:
            state = pl_module.state_dict()
        else:
            return None
        if not trainer.is_global_zero:
            return None
        lm = {k[len("model.lm."):]: v for k, v in state.items() if k.startswith("model.lm.")}
        proj = {k[len("model.text.proj."):]: v for k, v in state.items() if k.startswith("model.text.proj.")}
        return lm, proj

    def _save(self, trainer, pl_module, folder: Path, cfg, bundle: bool) -> Path | None:
        states = self._states(trainer, pl_module)
        if states is None:
            return None
        return write_stage_checkpoint(pl_module.model, cfg, states[0], states[1], folder, bundle)

    def _save_step(self, trainer, pl_module, step: int) -> None:
        self.last_step = step
        path = self._save(trainer, pl_module, self.out / "checkpoints" / f"step-{step:07d}", self.step_config, False)
        if path is not None:
            self.written.append(path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every and step > 0 and step % self.every == 0 and step != self.last_step:
            self._save_step(trainer, pl_module, step)

    def on_train_end(self, trainer, pl_module) -> None:
        step = trainer.global_step
        if step > 0 and step != self.last_step:
            self._save_step(trainer, pl_module, step)
        if self.config.trainer.bundle_final and step > 0:
            self.final = self._save(trainer, pl_module, self.out / "model", self.final_config, True)


# --------------------------------------------------------------------------- trainer pieces


# trainer.precision's values other than "auto" (stage.train.config.PRECISIONS), as Lightning types them.
Precision = Literal["32-true", "16-mixed", "bf16-mixed", "bf16-true", "16-true", "64-true"]


def resolve_precision(config: TrainConfig) -> Precision:
    t = config.trainer
    if t.precision != "auto":
        return cast(Precision, t.precision)  # one of PRECISIONS (TrainConfig.validate)
    gpu = t.accelerator in ("gpu", "cuda") or (t.accelerator == "auto" and torch.cuda.is_available())
    return "16-mixed" if gpu else "32-true"  # the authors' fp16 AMP (§6.2); CPUs have no fp16 AMP


def make_logger(config: TrainConfig, out: Path):
    kind = config.trainer.logger
    if kind == "none":
        return False
    if kind == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=str(out), name="logs")
    if kind == "tensorboard":
        try:
            from lightning.pytorch.loggers import TensorBoardLogger

            return TensorBoardLogger(save_dir=str(out), name="logs")
        except ModuleNotFoundError:
            raise ConfigError("trainer.logger tensorboard needs `pip install tensorboard`") from None
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise ConfigError("trainer.logger wandb needs `pip install wandb`") from None
    from lightning.pytorch.loggers import WandbLogger

    return WandbLogger(save_dir=str(out), project=os.environ.get("WANDB_PROJECT", "stage"))


def make_strategy(config: TrainConfig, module):
    name = config.trainer.strategy
    if name != "fsdp":
        return name
    from lightning.pytorch.strategies import FSDPStrategy

    from stage.model.lm import Block

    # The frozen EnCodec and T5 are left out of the sharding (ignored_modules): they are small
    # next to the LM, never trained, and stay whole for encoding and for bundled checkpoints.
    return FSDPStrategy(
        auto_wrap_policy={Block},
        ignored_modules=[module.model.codec, module.model.text.encoder],
        use_orig_params=True,
    )


def build_trainer(config: TrainConfig, out: Path, module, callbacks: list, progress_bar: bool | None = None):
    """The Lightning Trainer for a config: one long epoch of max_steps x accumulate micro-batches
    (StepSampler), validation and resume checkpoints every N optimizer steps."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.callbacks import ModelCheckpoint

    t = config.trainer
    total = t.max_steps * t.accumulate  # micro-batches in the single long epoch
    resume_ckpt = ModelCheckpoint(
        dirpath=str(out / "lightning"),
        filename="step-{step:07d}",
        auto_insert_metric_name=False,
        every_n_train_steps=t.checkpoint_every or t.max_steps,
        save_top_k=t.keep_checkpoints,
        monitor="step",
        mode="max",
        save_last=True,
    )
    val = t.val_every > 0
    if t.matmul_precision and torch.cuda.is_available():
        torch.set_float32_matmul_precision(t.matmul_precision)  # the authors' "medium" (TF32 on GPUs)
    try:
        return L.Trainer(
            accelerator=t.accelerator,
            devices=t.devices,
            num_nodes=t.num_nodes,
            strategy=make_strategy(config, module),
            precision=resolve_precision(config),
            max_steps=t.max_steps,
            max_epochs=-1,
            accumulate_grad_batches=t.accumulate,
            gradient_clip_val=t.clip_value,
            gradient_clip_algorithm=t.clip_algorithm if t.clip_value is not None else None,
            val_check_interval=min(t.val_every * t.accumulate, total) if val else None,
            check_val_every_n_epoch=None,
            limit_val_batches=(t.val_batches if t.val_batches is not None else 1.0) if val else 0,
            num_sanity_val_steps=t.sanity_val_steps if val else 0,
            log_every_n_steps=t.log_every,
            logger=make_logger(config, out),
            callbacks=[resume_ckpt, *callbacks],
            enable_progress_bar=t.progress_bar if progress_bar is None else progress_bar,
            enable_model_summary=False,
            use_distributed_sampler=False,  # StepSampler shards by rank itself
            default_root_dir=str(out),
        )
    except MisconfigurationException as err:  # e.g. trainer.accelerator=gpu on a machine without one
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"trainer: {first}") from None


# --------------------------------------------------------------------------- entry


def quiet_lightning() -> None:
    """Silence Lightning messages that are expected here and only confuse users."""
    import warnings

    # EnCodec and T5 are frozen and kept in eval mode on purpose (§6.1).
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
    # The data position is restored by StepSampler (see datamodule.py), not by Lightning.
    warnings.filterwarnings("ignore", message=r".*resuming from a checkpoint that ended before the epoch ended.*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers which may be a bottleneck.*")
    # The run folder was checked by prepare_out_dir: a non-empty lightning/ means --resume.
    warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty.*")
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropAdverts) for f in rank_zero.filters):
        rank_zero.addFilter(_DropAdverts())


class _DropAdverts(logging.Filter):
    """Drops Lightning's "Tip: try installing litlogger" banner."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.msg)


def train(config: TrainConfig, resume: str | os.PathLike | None = None, force: bool = False,
          progress_bar: bool | None = None, echo=print) -> TrainResult:
    """Train a STAGE model as configured; `resume` continues a run bit for bit (a .ckpt or a run
    folder). Returns where the outputs are. User mistakes raise StageError."""
    from stage.train.datamodule import StageDataModule
    from stage.train.module import StageTrainingModule

    quiet_lightning()
    ckpt = None
    if resume is not None:
        ckpt, _ = resolve_resume(resume)
    out = Path(config.out)
    rank = process_rank()
    if rank == 0:
        prepare_out_dir(out, resume=ckpt is not None, force=force)
    # Open the datasets before loading the model: a wrong path fails in a second, not a minute.
    data = StageDataModule(config)
    data.build()
    L.seed_everything(config.seed, verbose=False)
    module = StageTrainingModule(config)
    lm = module.model.config.lm
    data.num_codebooks, data.codebook_size = lm.num_codebooks, lm.codebook_size
    data.sample_rate = module.model.codec.sample_rate
    data.train_set = None
    data.build()  # re-check the data against the model (codebooks, sample rate)
    stage_ckpt = StageCheckpoint(config, out, None, module.model.config)
    trainer = build_trainer(config, out, module, [stage_ckpt], progress_bar=progress_bar)
    # Nothing is written before here: a configuration error leaves no half-made run folder.
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / RUN_CONFIG, config.to_yaml())
        codec_cfg, text_cfg = frozen_sources(module.model, config.model.init, out)
        stage_ckpt.step_config = module.model.config.replace(codec=codec_cfg, text=text_cfg)
        echo(f"writing to {out}/ (stage checkpoints in {out / 'checkpoints'}, resume state in {out / 'lightning'}, "
             f"logs in {out / 'logs'})")
    trainer.fit(module, datamodule=data, ckpt_path=str(ckpt) if ckpt else None, weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
    checkpoints, final, step = list(stage_ckpt.written), stage_ckpt.final, trainer.global_step
    if not checkpoints and rank == 0:  # ddp_spawn trained in child processes: read what they wrote
        checkpoints = sorted((out / "checkpoints").glob("step-*"))
        step = max([step] + [int(p.name.split("-")[1]) for p in checkpoints])
        final = out / "model" if config.trainer.bundle_final and (out / "model").is_dir() else None
    return TrainResult(out=out, global_step=step, checkpoints=checkpoints, final=final, metrics=metrics)
