"""Writing stage checkpoint folders: `stage.json` (format, version, config) + `model.safetensors`
(the LM and the T5 projection), optionally with the frozen EnCodec (`codec/`) and T5 (`text/`).
Reading them is `stage.model.checkpoints.load_stage_checkpoint` (docs/method.md §7.5).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import Tensor

from stage.errors import CheckpointError
from stage.files import probe_writable
from stage.model.sources import EMBEDDED

FORMAT_NAME = "stage-checkpoint"
FORMAT_VERSION = 1
CONFIG_FILE = "stage.json"
WEIGHTS_FILE = "model.safetensors"


def check_output_dir(out_dir: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse (before any work) an output folder that exists and is not empty, or cannot be written."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():  # --force replaces a folder, never a file
        raise CheckpointError(f"{out}: exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise CheckpointError(f"{out}: already exists and is not empty (use --force to replace it)")
    parent = out.parent if str(out.parent) else Path(".")
    existing = parent
    while not existing.exists():
        existing = existing.parent
    try:
        probe_writable(existing)
    except OSError as err:
        raise CheckpointError(f"{existing}: not writable ({err.strerror or err})") from None
    return out


def save_checkpoint(
    model, out_dir: str | os.PathLike, bundle: bool = True, overwrite: bool = False, dtype: torch.dtype | None = None
) -> Path:
    """Write `model` as a stage checkpoint folder, atomically.

    bundle: also write the frozen EnCodec (`codec/`) and T5 + tokenizer (`text/`), so the folder
    loads with no network. Otherwise the config names their sources (hub ids or folders). Parts
    that are package assets (`sources.BUNDLED`: STAGE-mini's codec and T5) are named either way:
    every install has them, and a copy would turn a later `--no-bundle` conversion of this folder
    into one that points at `codec/` / `text/` it does not have.
    dtype: store the LM in another precision (e.g. torch.float16 halves the size).
    """
    from safetensors.torch import save_file

    from stage.model.sources import BUNDLED

    out = check_output_dir(out_dir, overwrite)
    parent = out.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".part", dir=parent))
    try:
        config = model.config
        if not bundle and EMBEDDED in (config.codec.source, config.text.source):
            raise CheckpointError("the codec/T5 weights came from inside the source file; save with bundling on")
        if bundle:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            if config.codec.source not in BUNDLED:
                model.codec.model.save_pretrained(str(tmp / "codec"))
                config = config.replace(codec=dataclasses.replace(config.codec, source="codec"))
            if config.text.source not in BUNDLED or config.text.tokenizer not in BUNDLED:
                model.text.encoder.save_pretrained(str(tmp / "text"))
                model.text.tokenizer.save_pretrained(str(tmp / "text"))
                config = config.replace(text=dataclasses.replace(config.text, source="text", tokenizer="text"))
        tensors = {f"lm.{k}": _store(v, dtype) for k, v in model.lm.state_dict().items()}
        tensors.update({f"text_proj.{k}": _store(v, None) for k, v in model.text.proj.state_dict().items()})
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "config": config.to_dict()}
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        plain_permissions(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def plain_permissions(folder: Path) -> None:
    """Give a folder made with mkdtemp (0700) and files written by safetensors (0600) the modes a
    plain mkdir / open() would: checkpoints are shared, and the bundled ones ship in the package."""
    from stage.files import default_mode

    file_mode = default_mode()
    dir_mode = file_mode | ((file_mode & 0o444) >> 2)  # x wherever r
    for path in [folder, *folder.rglob("*")]:
        os.chmod(path, dir_mode if path.is_dir() else file_mode)


def _store(t: Tensor, dtype: torch.dtype | None) -> Tensor:
    t = t.detach().cpu()
    if dtype is not None and t.is_floating_point():
        t = t.to(dtype)
    return t.contiguous().clone()
