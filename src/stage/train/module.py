"""The LightningModule that fine-tunes a StageModel (docs/method.md §6).

One training step (§6.6):
1. encode the target stems and the contexts with the frozen EnCodec on the training device (the
   pre-tokenised path skips this); contexts of different lengths are encoded one by one and
   left-padded with the pad id (§3.1 step 1);
2. per-sample dropouts (§5): the whole context -> pad ids (p = 0.1), the text -> the null
   condition (p = 0.5), each caption word (p = 0.3). They are drawn from generators seeded by
   (seed, global micro-batch number, rank), so a resumed run draws exactly the same ones;
3. lay out `[context | CONTEXT_ID | target]` with the joint delay (`build_training_layout`), run
   `StageLM.forward`, pick the target logits and take the per-codebook masked cross-entropy
   (§3.2), logged as `train/loss` and `train/ce_q{k}` (`val/...` in validation).

Trained: the LM (`model.lm`) and the T5 projection (`model.text.proj`); EnCodec and T5 are frozen
and stay in eval mode (§6.1). The Lightning checkpoint holds only the trained tensors (the frozen
ones are rebuilt from `model.init`), plus the optimizer and loop state.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from dataclasses import dataclass

import lightning as L
import torch
from torch import Tensor

from stage.errors import ConfigError
from stage.model.config import LMConfig
from stage.model.lm import StageLM
from stage.model.sources import check_tensors
from stage.text import TextCondition, word_dropout
from stage.tokens.layout import TrainingLayout, build_training_layout, left_pad, masked_cross_entropy, target_logits
from stage.train.config import ModelSection, TrainConfig

TRAINED_PREFIXES = ("model.lm.", "model.text.proj.", "beat_probe.")
FROZEN_PREFIXES = ("model.codec.", "model.text.encoder.")
CONFIG_KEY = "stage_train_config"
PROGRESS_KEY = "stage_micro_batches"


# --------------------------------------------------------------------------- batches


@dataclass
class TrainBatch:
    """A collated micro-batch.

    kind "tokens": target [B, K, Tt] int64 codes; context: B tensors [K, Tc_i].
    kind "audio": target [B, N] float32 at the codec rate; context: B tensors [Nc_i].
    captions: B strings ("" = no text). batch_no: the global micro-batch number on this rank's
    stream (seeds the dropouts; -1 in validation). beat_phase: [B, 4, Tc] float32 beat-phase
    targets of the left-padded context frames (stage.data.beats.phase_targets; NaN = unknown),
    or None when the examples carry no beats.
    """

    kind: str
    target: Tensor
    context: list[Tensor]
    captions: list[str]
    batch_no: int = -1
    beat_phase: Tensor | None = None

    def to(self, device, **kwargs) -> TrainBatch:
        return TrainBatch(
            self.kind,
            self.target.to(device, **kwargs),
            [c.to(device, **kwargs) for c in self.context],
            self.captions,
            self.batch_no,
            None if self.beat_phase is None else self.beat_phase.to(device),
        )

    def __len__(self) -> int:
        return len(self.captions)


@dataclass
class StepOutput:
    """loss: scalar; ce: K per-codebook losses; logits [B, K, Tt, V] of the target frames with
    valid [K, Tt]; target [B, K, Tt]; layout: the LM input. beat: the beat-phase auxiliary
    loss (`aux.beat_weight`), already inside `loss` with its weight, or None."""

    loss: Tensor
    ce: list[Tensor]
    logits: Tensor
    valid: Tensor
    target: Tensor
    layout: TrainingLayout
    beat: Tensor | None = None


def derive_seed(*parts: int) -> int:
    """A stable 63-bit seed from integers (independent of Python's hash randomisation)."""
    digest = hashlib.blake2b(",".join(str(int(p)) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


# --------------------------------------------------------------------------- model building


def build_model(section: ModelSection, seed: int = 0):
    """Load `section.init` (any `stage.load_model` source) and make it a trainable STAGE model.

    - `section.lm` overrides: a fresh, seeded random LM of that shape (layout "stage");
    - a base MusicGen (layout "musicgen"): rebuilt in the STAGE layout with the same weights,
      a zero pad row (`padding_idx`) and a Kaiming-normal context row (§2.3);
    - a STAGE model: used as is (continued fine-tuning).
    Returns the StageModel (EnCodec and T5 frozen).
    """
    from stage.model.checkpoints import load_model

    model = load_model(section.init, codec=section.codec, text=section.text, tokenizer=section.tokenizer)
    lm_config = model.config.lm
    overrides = section.lm.overrides()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, 1))
        if overrides:
            try:
                new = dataclasses.replace(lm_config, layout="stage", **overrides)
            except ConfigError as err:
                raise ConfigError(f"model.lm: {err}") from None
            model.lm = StageLM(new)
            if new.dim != lm_config.dim:
                model.text.proj = torch.nn.Linear(model.text.proj.in_features, new.dim)
            lm_config = new
        elif lm_config.layout == "musicgen":
            model.lm = to_stage_layout(model.lm)
            lm_config = model.lm.config
    model.config = model.config.replace(lm=lm_config, stem=section.stem if section.stem is not None else model.config.stem)
    return model


def to_stage_layout(lm: StageLM) -> StageLM:
    """A plain MusicGen LM -> the STAGE layout (§2.3): same weights, `padding_idx` on the pad row,
    which is zeroed, and a Kaiming-normal context row (drawn from the current torch RNG)."""
    config: LMConfig = dataclasses.replace(lm.config, layout="stage")
    with torch.device("meta"):
        out = StageLM(config)
    out.load_state_dict(lm.state_dict(), strict=True, assign=True)
    out.init_special_rows(context=True)
    return out


# --------------------------------------------------------------------------- the module


class StageTrainingModule(L.LightningModule):
    """Fine-tunes `model` (a StageModel) with the recipe in `config` (see the module docstring).

    model: an already-built StageModel (default: `build_model(config.model, config.seed)`).
    """

    def __init__(self, config: TrainConfig, model=None):
        super().__init__()
        self.config = config
        self.model = model if model is not None else build_model(config.model, config.seed)
        target = config.data.sample.target_stem if config.data.kind == "stems" and config.data.sample else None
        if config.model.stem is None and target:  # record what the model learns to generate
            self.model.config = self.model.config.replace(stem=target)
        # Frozen parts never train (§6.1); `train()` of Codec/TextConditioner keeps them in eval.
        self.model.codec.requires_grad_(False)
        self.model.text.encoder.requires_grad_(False)
        self.model.lm.requires_grad_(True)
        self.model.text.proj.requires_grad_(True)
        # The Lightning checkpoint stores only the trained tensors; `on_load_checkpoint` checks them.
        self.strict_loading = False
        self.micro_batches = 0  # micro-batches consumed on this rank (restored on resume)
        aux = config.aux
        self.beat_probe: torch.nn.Module | None = None
        if aux.beat_weight > 0:  # a training-only linear probe of the context's beat phase
            if not -self.lm.config.num_layers <= aux.beat_layer < self.lm.config.num_layers:
                raise ConfigError(f"aux.beat_layer {aux.beat_layer} is not a block of this "
                                  f"{self.lm.config.num_layers}-block model")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(config.seed, 3))
                D = self.lm.config.dim
                self.beat_probe = torch.nn.Sequential(torch.nn.LayerNorm(D, elementwise_affine=False),
                                                      torch.nn.Linear(D, 4))
        if aux.align_blocks:
            offset = self.lm.config.align_offset
            if offset is None:
                raise ConfigError("aux.align_blocks needs a model with lm.align_offset set (the context length)")
            bad = [b for b in aux.align_blocks if not 0 <= b < self.lm.config.num_layers]
            if bad:
                raise ConfigError(f"aux.align_blocks {bad} are not blocks of this {self.lm.config.num_layers}-block model")
            self.lm.init_alignment_heads(offset, blocks=list(aux.align_blocks))
        self._pending: list[Tensor] = []  # per-micro-batch losses of the current optimizer step

    # ------------------------------------------------------------------ pickling (ddp_spawn)

    def __getstate__(self) -> dict:
        """`ddp_spawn` pickles the module into its workers, but EnCodec's weight-norm
        parametrizations cannot be pickled: send the trained tensors and rebuild the rest
        (frozen, so identical) from `config.model` on the other side."""
        state = self.__dict__.copy()
        modules = dict(state["_modules"])
        model = modules.pop("model")
        state["_modules"] = modules
        state["_pickled_model"] = (
            model.config,
            {k: v for k, v in model.state_dict().items() if k.startswith(("lm.", "text.proj."))},
        )
        return state

    def __setstate__(self, state: dict) -> None:
        model_config, trained = state.pop("_pickled_model")
        super().__setstate__(state)
        model = build_model(self.config.model, self.config.seed)
        model.load_state_dict(trained, strict=False)
        model.config = model_config
        self.model = model

    # ------------------------------------------------------------------ helpers

    @property
    def lm(self) -> StageLM:
        return self.model.lm

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        probe = [] if self.beat_probe is None else list(self.beat_probe.parameters())
        return [p for p in self.model.lm.parameters()] + [p for p in self.model.text.proj.parameters()] + probe

    @torch.no_grad()
    def encode(self, batch: TrainBatch) -> tuple[Tensor, Tensor]:
        """Codes for a batch: (context [B, K, Tc] left-padded with the pad id, target [B, K, Tt])."""
        pad = self.lm.config.pad_id
        if batch.kind == "tokens":
            return left_pad([c.long() for c in batch.context], pad), batch.target.long()
        codec = self.model.codec
        device = batch.target.device
        # EnCodec is frozen and runs in fp32 outside autocast, so its codes do not depend on the
        # training precision.
        with torch.autocast(device.type, enabled=False):
            target = codec.encode(batch.target.float()[:, None])  # [B, K, Tt]
            contexts = []
            for c in batch.context:
                if c.shape[-1] < codec.hop_length:  # no context (or less than one frame of it)
                    contexts.append(target.new_zeros((target.shape[1], 0)))
                else:
                    contexts.append(codec.encode(c.float()[None, None])[0])  # [K, Tc_i], one by one (§3.1)
        return left_pad(contexts, pad), target

    def forward_batch(self, batch: TrainBatch, train: bool) -> StepOutput:
        """Encode, (in training) apply the dropouts, lay out, run the LM and take the loss."""
        context, target = self.encode(batch)
        captions = list(batch.captions)
        inputs = None
        if train:
            context, captions = self.apply_dropouts(context, captions, batch.batch_no)
            inputs = self.noisy_history(target, batch.batch_no)
        cond = self.model.text(captions)
        return self.teacher_forced(context, target, cond, inputs, batch.beat_phase)

    def teacher_forced(self, context: Tensor, target: Tensor, cond: TextCondition | None,
                       inputs: Tensor | None = None, beat_phase: Tensor | None = None) -> StepOutput:
        """`teacher_forced`, plus the beat-phase loss when the probe is on and the batch has beats."""
        if self.beat_probe is None or beat_phase is None:
            return teacher_forced(self.lm, context, target, cond, inputs)
        taps: list[Tensor] = []
        block = self.lm.layers()[self.config.aux.beat_layer]
        handle = block.register_forward_hook(lambda module, args, output: taps.append(output))
        try:
            out = teacher_forced(self.lm, context, target, cond, inputs)
        finally:
            handle.remove()
        kept = (context != self.lm.config.pad_id).any(dim=2).any(dim=1)  # [B]: rows whose context was not dropped
        beat = beat_phase_loss(self.beat_probe, taps[0], beat_phase, kept, self.lm.config.delays[0])
        return dataclasses.replace(out, loss=out.loss + self.config.aux.beat_weight * beat, beat=beat)

    def noisy_history(self, target: Tensor, batch_no: int) -> Tensor | None:
        """The stem as the LM reads it in teacher forcing: with `dropout.stem_tokens` = p > 0, each
        sample draws a share r ~ U(0, p), and that share of its frames (all codebooks of a frame
        together) hold random codes instead; the loss still targets `target`. Samples with r near
        1 must be predicted from the context alone. Seeded by (seed, batch_no, rank)."""
        p = self.config.dropout.stem_tokens
        if p <= 0:
            return None
        g = torch.Generator().manual_seed(derive_seed(self.config.seed, batch_no, self.global_rank, 11))
        B, K, T = target.shape
        rate = torch.rand(B, 1, 1, generator=g) * p  # [B, 1, 1]
        hit = torch.rand(B, 1, T, generator=g) < rate  # [B, 1, Tt]
        noise = torch.randint(0, self.lm.config.codebook_size, (B, K, T), generator=g)
        return torch.where(hit.to(target.device), noise.to(target.device), target)

    def apply_dropouts(self, context: Tensor, captions: list[str], batch_no: int) -> tuple[Tensor, list[str]]:
        """Per-sample context / text / word dropout (§5, §6), seeded by (seed, batch_no, rank)."""
        p = self.config.dropout
        B = context.shape[0]
        key = derive_seed(self.config.seed, batch_no, self.global_rank)
        g = torch.Generator().manual_seed(key)
        drop_context = torch.rand(B, generator=g) < p.context  # [B]
        drop_text = torch.rand(B, generator=g) < p.text  # [B]
        rng = random.Random(key)
        words = [word_dropout(c, p.word, rng) for c in captions]
        captions = ["" if drop_text[i] else words[i] for i in range(B)]
        if bool(drop_context.any()):
            context = context.masked_fill(drop_context.to(context.device)[:, None, None], self.lm.config.pad_id)
        return context, captions

    # ------------------------------------------------------------------ Lightning hooks

    def training_step(self, batch: TrainBatch, batch_idx: int) -> Tensor:
        if self.lm.config.dropout > 0:  # residual dropout (off in the authors' recipe) uses the global RNG
            torch.manual_seed(derive_seed(self.config.seed, batch.batch_no, self.global_rank, 7))
        out = self.forward_batch(batch, train=True)
        self.micro_batches = batch.batch_no + 1
        # Log once per optimizer step: the mean over its accumulated micro-batches (what the
        # step optimises), so `train/loss` at step n does not depend on the accumulation.
        self._pending.append(torch.stack([out.loss.detach(), *[c.detach() for c in out.ce]]))
        if self.micro_batches % self.config.trainer.accumulate == 0:
            values = torch.stack(self._pending).mean(0)
            self._pending = []
            self.log("train/loss", values[0], prog_bar=True)
            if out.beat is not None:
                self.log("train/beat_loss", out.beat.detach())
            for k in range(len(out.ce)):
                self.log(f"train/ce_q{k}", values[k + 1])
        return out.loss

    def validation_step(self, batch: TrainBatch, batch_idx: int) -> None:
        context, target = self.encode(batch)
        cond = self.model.text(list(batch.captions))
        out = self.teacher_forced(context, target, cond, beat_phase=batch.beat_phase)
        B = len(batch)
        if out.beat is not None:
            self.log("val/beat_loss", out.beat, batch_size=B, sync_dist=True)
            out = dataclasses.replace(out, loss=out.loss - self.config.aux.beat_weight * out.beat)
        self.log("val/loss", out.loss, prog_bar=True, batch_size=B, sync_dist=True)
        for k, ce in enumerate(out.ce):
            self.log(f"val/ce_q{k}", ce, batch_size=B, sync_dist=True)
        self.log("val/acc", token_accuracy(out), batch_size=B, sync_dist=True)
        # The control at the loss level: the same batch with every context dropped (all pad, as
        # context dropout does). context_gain > 0 means the model uses its context.
        control = teacher_forced(self.lm, torch.full_like(context, self.lm.config.pad_id), target, cond)
        self.log("val/loss_no_context", control.loss, batch_size=B, sync_dist=True)
        self.log("val/context_gain", control.loss - out.loss, batch_size=B, sync_dist=True)

    def configure_optimizers(self):
        o = self.config.optim
        params = [p for p in self.trainable_parameters() if p.requires_grad]
        beta1, beta2 = o.betas  # two numbers (TrainConfig.validate)
        optimizer = torch.optim.AdamW(params, lr=o.lr, betas=(beta1, beta2), weight_decay=o.weight_decay, eps=o.eps)
        if o.warmup_steps <= 0:
            return optimizer  # constant lr (§6.2)
        warmup = o.warmup_steps
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith(FROZEN_PREFIXES)]:
            del state[key]
        checkpoint[CONFIG_KEY] = self.config.to_dict()
        checkpoint[PROGRESS_KEY] = int(self.micro_batches)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("state_dict", {})
        trained = {k: v.shape for k, v in self.state_dict().items() if k.startswith(TRAINED_PREFIXES)}
        check_tensors(state, trained, "resume checkpoint (of a different model?)")
        self.micro_batches = int(checkpoint.get(PROGRESS_KEY, 0))


# --------------------------------------------------------------------------- pure helpers


def teacher_forced(lm: StageLM, context: Tensor, target: Tensor, cond: TextCondition | None,
                   inputs: Tensor | None = None) -> StepOutput:
    """One teacher-forced pass: context [B, K, Tc] (left-padded, pad rows = dropped), target
    [B, K, Tt] -> loss, per-codebook CE and the target logits (§3.1-§3.2). inputs: what the LM
    reads as the stem (default: `target` itself; see `noisy_history`)."""
    c = lm.config
    layout = build_training_layout(context, target if inputs is None else inputs, c.delays, c.pad_id, c.context_id)
    logits = lm(layout.codes, cond, layout.attended, layout.positions)  # [B, K, S, V]
    tl, valid = target_logits(logits, layout, c.delays)  # [B, K, Tt, V], [K, Tt]
    loss, ce = masked_cross_entropy(tl, target, valid)
    return StepOutput(loss, ce, tl, valid, target, layout)


def beat_phase_loss(probe: torch.nn.Module, hidden: Tensor, beat_phase: Tensor, kept: Tensor,
                    delay: int = 0) -> Tensor:
    """The mean squared error of `probe` on the context steps: hidden [B, S, D] (one block's
    output), beat_phase [B, 4, Tc] targets of the left-padded context frames (NaN = unknown),
    kept [B] rows whose context was not dropped, delay: codebook 0's delay. Context frame f of
    codebook 0 sits at step f + 1 + delay (the layout's leading step); the step that has just read
    it is supervised with frame f's phase. 0 when nothing is known."""
    Tc = beat_phase.shape[-1]
    steps = hidden[:, 1 + delay:1 + delay + Tc]  # [B, Tc, D]
    pred = probe(steps).transpose(1, 2)  # [B, 4, Tc]
    known = ~torch.isnan(beat_phase) & kept[:, None, None]
    if not bool(known.any()):
        return pred.sum() * 0.0
    diff = (pred - torch.nan_to_num(beat_phase)) ** 2
    return diff[known].mean()


def token_accuracy(out: StepOutput) -> Tensor:
    """Greedy (argmax) teacher-forced accuracy over the valid target tokens."""
    pred = out.logits.argmax(-1)  # [B, K, Tt]
    mask = out.valid[None].expand_as(pred)
    hits = (pred == out.target) & mask
    return hits.sum().float() / mask.sum().clamp(min=1).float()

