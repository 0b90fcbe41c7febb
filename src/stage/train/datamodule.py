"""The training data as a LightningDataModule: stems cut on the fly, or pre-tokenised shards.

`data.kind: stems` reads a `stage prepare` manifest through `stage.data.samples.StemDataset`
(32 kHz audio; the LightningModule encodes it with EnCodec on the training device).
`data.kind: tokens` reads `stage.train.tokens.TokenDataset` folders (codes, no EnCodec).

Resumable by construction: the micro-batch number i of a rank's stream fixes its examples,
independently of the DataLoader workers and of where a run was stopped. `StepSampler` yields
the batches i = start, start + 1, ...; on resume `start` is the number of micro-batches the
checkpoint had consumed, so the run continues with exactly the batches it would have seen
(Lightning re-creates a map-style loader from its first batch, it does not fast-forward it).
Stream position p (example p of the concatenated epochs of rank-interleaved batches) maps to
epoch p // L and the example at (p mod L) of that epoch's seeded permutation of the L examples;
stems datasets also draw fresh windows per epoch (`StemDataset.set_epoch`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from stage.data.beats import phase_targets
from stage.errors import ConfigError, StageError
from stage.train.config import TrainConfig
from stage.train.module import TrainBatch, derive_seed


class StepSampler(Sampler):
    """Batch sampler over a map-style dataset of `length` examples, as a pure function of
    (seed, micro-batch number, rank).

    Micro-batch i of rank r holds stream positions (i * world + r) * batch_size + j for j in
    0..batch_size-1. Yields lists of (i, index, epoch). `total` is the number of micro-batches in
    the (single, long) Lightning epoch; iteration starts at `start`.
    """

    def __init__(self, length: int, batch_size: int, seed: int, total: int, start: int = 0, rank: int = 0, world: int = 1):
        if length < 1:
            raise StageError("the training dataset is empty")
        self.length, self.batch_size, self.seed = length, batch_size, seed
        self.total, self.start, self.rank, self.world = total, start, rank, world
        self._perm_epoch = -1
        self._perm: np.ndarray | None = None  # the permutation of epoch _perm_epoch

    def __len__(self) -> int:
        return self.total

    def position(self, i: int, j: int) -> int:
        return (i * self.world + self.rank) * self.batch_size + j

    def lookup(self, position: int) -> tuple[int, int]:
        """Stream position -> (dataset index, epoch)."""
        epoch, offset = divmod(position, self.length)
        if epoch != self._perm_epoch:
            rng = np.random.default_rng(derive_seed(self.seed, epoch, 11))
            self._perm, self._perm_epoch = rng.permutation(self.length), epoch
        assert self._perm is not None
        return int(self._perm[offset]), epoch

    def batch(self, i: int) -> list[tuple[int, int, int]]:
        out = []
        for j in range(self.batch_size):
            index, epoch = self.lookup(self.position(i, j))
            out.append((i, index, epoch))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        for i in range(self.start, self.total):
            yield self.batch(i)


class NumberedDataset(Dataset):
    """Wraps a dataset so that items are requested as (batch number, index, epoch) and come back
    with their batch number (which seeds the dropouts of that micro-batch)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int, int]):
        i, index, epoch = item
        if hasattr(self.dataset, "set_epoch") and getattr(self.dataset, "epoch", None) != epoch:
            self.dataset.set_epoch(epoch)  # fresh random windows per pass (stems)
        return i, self.dataset[index]


def collate(examples: Sequence, batch_no: int = -1) -> TrainBatch:
    """AudioExample or TokenExample list -> TrainBatch (targets stacked, contexts kept as a list)."""
    from stage.data.example import AudioExample, TokenExample

    first = examples[0]
    captions = [str(e.caption or "") for e in examples]
    if isinstance(first, TokenExample):
        lengths = {e.target.shape[-1] for e in examples}
        if len(lengths) > 1:
            raise StageError(
                f"pre-tokenised targets in one batch have different lengths {sorted(lengths)}; "
                "tokenise with a fixed window length"
            )
        target = torch.stack([torch.as_tensor(np.asarray(e.target, np.int64)) for e in examples])  # [B, K, Tt]
        context = [torch.as_tensor(np.asarray(e.context, np.int64)) for e in examples]  # [K, Tc_i]
        phases = None
        if any(e.beats is not None for e in examples):  # the beat-phase targets of each context frame
            phases = torch.stack(left_pad_phases([phase_targets(e.beats, e.downbeats, e.context.shape[-1])
                                                  for e in examples]))  # [B, 4, max Tc_i]
        return TrainBatch("tokens", target, context, captions, batch_no, phases)
    if isinstance(first, AudioExample):
        lengths = {len(e.target) for e in examples}
        if len(lengths) > 1:
            raise StageError(f"target stems in one batch have different lengths {sorted(lengths)}")
        target = torch.stack([torch.as_tensor(np.asarray(e.target, np.float32)) for e in examples])  # [B, N]
        context = [torch.as_tensor(np.asarray(e.context, np.float32)) for e in examples]  # [Nc_i]
        return TrainBatch("audio", target, context, captions, batch_no)
    raise TypeError(f"cannot collate {type(first).__name__}")


def left_pad_phases(phases: list[np.ndarray]) -> list[Tensor]:
    """[4, Tc_i] phase targets -> [4, max Tc_i] tensors, NaN on the left, as `left_pad` lays the
    contexts out."""
    width = max(p.shape[-1] for p in phases)
    out = []
    for p in phases:
        row = torch.full((p.shape[0], width), float("nan"))
        if p.shape[-1]:
            row[:, width - p.shape[-1]:] = torch.from_numpy(p)
        out.append(row)
    return out


def collate_numbered(items: Sequence[tuple[int, object]]) -> TrainBatch:
    numbers = {i for i, _ in items}
    return collate([e for _, e in items], batch_no=items[0][0] if len(numbers) == 1 else -1)


class StageDataModule(L.LightningDataModule):
    """Train/val loaders for a TrainConfig (see the module docstring).

    codebook_size / num_codebooks: what the model expects (token folders are checked against it).
    """

    def __init__(self, config: TrainConfig, num_codebooks: int | None = None, codebook_size: int | None = None,
                 sample_rate: int | None = None):
        super().__init__()
        self.config = config
        self.num_codebooks, self.codebook_size, self.sample_rate = num_codebooks, codebook_size, sample_rate
        # A TokenDataset or a StemDataset once `build` ran (TokenDataset is a map-style dataset
        # by duck typing, not a torch Dataset).
        self.train_set: Any = None
        self.val_set: Any = None

    # ------------------------------------------------------------------ datasets

    def build(self) -> None:
        """Open the datasets (cheap; also used by the CLI to fail fast before building the model)."""
        if self.train_set is not None:
            return
        d = self.config.data
        if not d.train:
            raise ConfigError("data.train is not set (a manifest for kind 'stems', a token folder for kind 'tokens')")
        if d.kind == "tokens":
            self.train_set = self._tokens(d.train, "data.train")
            self.val_set = self._tokens(d.val, "data.val") if d.val else None
        else:
            self.train_set = self._stems(d.train, "train", d.train_samples)
            val_source = d.val or d.train
            split = None if d.val else "valid"
            self.val_set = None
            if d.val_samples > 0:
                try:
                    self.val_set = self._stems(val_source, split, d.val_samples)
                except StageError as err:
                    if d.val:  # an explicit validation manifest must work
                        raise
                    # No song in the manifest's validation split: train without validation.
                    import logging

                    logging.getLogger(__name__).warning("no validation set: %s", err)
        if len(self.train_set) == 0:
            raise StageError(f"the training dataset {d.train} is empty")

    def _tokens(self, folder: str, what: str):
        from stage.train.tokens import TokenDataset

        ds = TokenDataset(folder)
        info = ds.info
        if len(ds) == 0:
            raise StageError(f"{what}: token folder {folder} has no examples")
        if self.num_codebooks is not None and info.num_codebooks != self.num_codebooks:
            raise StageError(f"{what}: {folder} has {info.num_codebooks} codebooks, the model {self.num_codebooks}")
        if self.codebook_size is not None and info.codebook_size > self.codebook_size:
            raise StageError(f"{what}: {folder} has codebook size {info.codebook_size}, the model {self.codebook_size}")
        return ds

    def _stems(self, manifest: str, split: str | None, length: int):
        from stage.data.samples import SampleConfig, StemDataset

        path = Path(manifest)
        if not path.exists():
            raise StageError(f"manifest {manifest!r} not found (write one with `stage prepare`)")
        sample_config = self.config.data.sample
        if sample_config is None:  # no options: the authors' defaults for model.stem
            if not self.config.model.stem:
                raise ConfigError("data.sample needs target_stem (or set model.stem)")
            try:
                sample_config = SampleConfig(target_stem=self.config.model.stem)
            except ConfigError as err:
                raise ConfigError(f"model.stem: {err}") from None
        if self.sample_rate is not None and sample_config.sample_rate != self.sample_rate:
            raise ConfigError(
                f"data.sample.sample_rate is {sample_config.sample_rate} but the codec runs at {self.sample_rate} Hz"
            )
        return StemDataset(manifest, sample_config, length=length, seed=self.config.seed, split=split)

    # ------------------------------------------------------------------ loaders

    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def train_dataloader(self) -> DataLoader:
        self.build()
        t = self.config.trainer
        rank, world = self._rank_world()
        start = 0
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.lightning_module is not None:
            start = int(getattr(trainer.lightning_module, "micro_batches", 0))
        sampler = StepSampler(
            len(self.train_set), t.batch_size, self.config.seed, total=t.max_steps * t.accumulate,
            start=start, rank=rank, world=world,
        )
        workers = self.config.data.num_workers
        return DataLoader(
            NumberedDataset(self.train_set),
            batch_sampler=sampler,
            collate_fn=collate_numbered,
            num_workers=workers,
            persistent_workers=False,
            pin_memory=torch.cuda.is_available(),
        )

    def val_dataloader(self) -> DataLoader | list:
        self.build()
        if self.val_set is None or self.config.trainer.val_every == 0:
            return []
        rank, world = self._rank_world()
        sampler: torch.utils.data.DistributedSampler | None = None
        if world > 1:
            sampler = torch.utils.data.DistributedSampler(self.val_set, num_replicas=world, rank=rank, shuffle=False)
        return DataLoader(
            self.val_set,
            batch_size=self.config.trainer.batch_size,
            sampler=sampler,
            collate_fn=collate,
            num_workers=self.config.data.num_workers,
            pin_memory=torch.cuda.is_available(),
        )
