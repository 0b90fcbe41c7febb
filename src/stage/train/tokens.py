"""Pre-tokenised training data: EnCodec codes cached as uint16 shards (the fixed-mix fast path).

Encoding audio is the most expensive part of a STAGE training step on small GPUs (EnCodec on
10 s of target plus up to 10 s of context, §6.6). For datasets whose examples are fixed (one
mix per example), the codes can be computed once (`stage tokenize`) and read back here.

On-disk layout of a token folder (format "stage-tokens", version 1):

    index.json            {"format", "version", "num_codebooks", "codebook_size", "frame_rate",
                           "shards": [{"codes": "shard-00000.npy", "meta": "shard-00000.jsonl",
                                       "examples": n, "frames": f}, ...], "examples": total}
    shard-00000.npy       uint16 [K, f]: every example's context frames then its target frames,
                          one example after another along time
    shard-00000.jsonl     one line per example: {"offset", "context", "target", "caption", "song",
                          "context_kind"} (offset into the shard's frame axis; frame counts)

`index.json` is written last (atomically), so a folder without it is an interrupted write and is
refused. Readers refuse an unknown format name or a newer version with a clear message.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stage.data.example import CONTEXT_KINDS, TokenExample
from stage.errors import StageError
from stage.files import atomic_write, atomic_write_text
from stage.formats import check_header

FORMAT_NAME = "stage-tokens"
FORMAT_VERSION = 1
INDEX_FILE = "index.json"
MAX_CODEBOOK_SIZE = 1 << 16  # uint16 storage


@dataclass(frozen=True)
class TokenInfo:
    """The header of a token folder."""

    num_codebooks: int
    codebook_size: int
    frame_rate: int
    examples: int


class TokenWriter:
    """Write `TokenExample`s into a token folder, shard by shard.

        with TokenWriter("data/tokens", num_codebooks=4, codebook_size=2048, frame_rate=50) as w:
            for example in examples:
                w.add(example)

    The folder must not exist or be empty (unless `overwrite`). Shards are written atomically
    when they reach `shard_frames` frames; `index.json` is written by `close()` (or on leaving the
    `with` block without an exception), so an interrupted write leaves no index and is refused
    by readers.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        num_codebooks: int,
        codebook_size: int,
        frame_rate: int,
        shard_frames: int = 1 << 22,
        overwrite: bool = False,
    ):
        if not 1 <= codebook_size <= MAX_CODEBOOK_SIZE:
            raise StageError(f"codebook_size {codebook_size} does not fit uint16 shards")
        if num_codebooks < 1 or frame_rate < 1 or shard_frames < 1:
            raise StageError("num_codebooks, frame_rate and shard_frames must be positive")
        self.folder = Path(folder)
        if self.folder.exists():
            if not self.folder.is_dir():
                raise StageError(f"{self.folder}: exists and is not a folder")
            if any(self.folder.iterdir()):
                if not overwrite:
                    raise StageError(f"{self.folder}: already exists and is not empty (use --force to replace it)")
                if not (self.folder / INDEX_FILE).exists() and not any(self.folder.glob("shard-*.npy")):
                    raise StageError(f"{self.folder}: not a token folder; refusing to replace it")
                shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.num_codebooks = num_codebooks
        self.codebook_size = codebook_size
        self.frame_rate = frame_rate
        self.shard_frames = shard_frames
        self._codes: list[np.ndarray] = []
        self._meta: list[dict] = []
        self._frames = 0
        self._shards: list[dict] = []
        self._closed = False

    def __enter__(self) -> TokenWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()

    @property
    def examples(self) -> int:
        return sum(s["examples"] for s in self._shards) + len(self._meta)

    def add(self, example: TokenExample) -> None:
        """Append one example (codes [K, Tc] context and [K, Tt] target, Tt >= 1)."""
        if self._closed:
            raise StageError("this TokenWriter is closed")
        context = self._check(example.context, "context")
        target = self._check(example.target, "target")
        if target.shape[1] == 0:
            raise StageError(f"example {example.song!r}: the target has no frames")
        if example.context_kind not in CONTEXT_KINDS:
            raise StageError(f"example {example.song!r}: unknown context_kind {example.context_kind!r}")
        self._meta.append(
            {
                "offset": self._frames,
                "context": int(context.shape[1]),
                "target": int(target.shape[1]),
                "caption": str(example.caption),
                "song": str(example.song),
                "context_kind": example.context_kind,
            }
        )
        for name in ("beats", "downbeats"):
            times = getattr(example, name)
            if times is not None:
                self._meta[-1][name] = [round(float(t), 2) for t in np.asarray(times).ravel()]
        self._codes.append(np.concatenate([context, target], axis=1))
        self._frames += context.shape[1] + target.shape[1]
        if self._frames >= self.shard_frames:
            self._flush()

    def add_all(self, examples: Iterable[TokenExample]) -> None:
        for example in examples:
            self.add(example)

    def _check(self, codes, what: str) -> np.ndarray:
        a = np.asarray(codes)
        if a.ndim != 2 or a.shape[0] != self.num_codebooks:
            raise StageError(f"{what} codes must have shape [{self.num_codebooks}, T], got {list(a.shape)}")
        if a.size and (not np.issubdtype(a.dtype, np.integer) or a.min() < 0 or a.max() >= self.codebook_size):
            raise StageError(f"{what} codes must be integers in [0, {self.codebook_size})")
        return a.astype(np.uint16)

    def _flush(self) -> None:
        if not self._meta:
            return
        name = f"shard-{len(self._shards):05d}"
        codes = np.concatenate(self._codes, axis=1) if self._codes else np.zeros((self.num_codebooks, 0), np.uint16)
        atomic_write(self.folder / f"{name}.npy", lambda f: np.save(f, codes, allow_pickle=False), binary=True)
        text = "".join(json.dumps(m) + "\n" for m in self._meta)
        atomic_write_text(self.folder / f"{name}.jsonl", text)
        self._shards.append({"codes": f"{name}.npy", "meta": f"{name}.jsonl", "examples": len(self._meta), "frames": self._frames})
        self._codes, self._meta, self._frames = [], [], 0

    def close(self) -> Path:
        """Flush the last shard and write `index.json`. Returns the folder."""
        if self._closed:
            return self.folder
        self._flush()
        index = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "num_codebooks": self.num_codebooks,
            "codebook_size": self.codebook_size,
            "frame_rate": self.frame_rate,
            "examples": sum(s["examples"] for s in self._shards),
            "shards": self._shards,
        }
        atomic_write_text(self.folder / INDEX_FILE, json.dumps(index, indent=1) + "\n")
        self._closed = True
        return self.folder


def read_index(folder: str | os.PathLike) -> dict:
    """Read and check `index.json` of a token folder (format, version, header types)."""
    folder = Path(folder)
    if not folder.exists():
        raise StageError(f"token folder {str(folder)!r} not found")
    if not folder.is_dir():
        raise StageError(f"{folder}: not a token folder (expected a directory with {INDEX_FILE})")
    path = folder / INDEX_FILE
    if not path.exists():
        if any(folder.glob("shard-*.npy")):
            raise StageError(f"{folder}: incomplete token folder (no {INDEX_FILE}; the write was interrupted?)")
        raise StageError(f"{folder}: not a token folder (no {INDEX_FILE})")
    try:
        index = json.loads(path.read_text())
    except (ValueError, OSError) as err:
        raise StageError(f"{path}: unreadable ({err})") from None
    check_header(index, expected=FORMAT_NAME, version=FORMAT_VERSION, where=path, what="stage token index")
    for key in ("num_codebooks", "codebook_size", "frame_rate", "examples"):
        if not isinstance(index.get(key), int) or index[key] < 0:
            raise StageError(f"{path}: missing or bad {key!r}")
    if not isinstance(index.get("shards"), list):
        raise StageError(f"{path}: missing 'shards'")
    return index


class TokenDataset:
    """Map-style dataset over a token folder: `dataset[i]` -> `TokenExample` (int64 codes).

    The shards are memory-mapped lazily (per process, so DataLoader workers each open their own
    maps). `info` holds the header (codebooks, codebook size, frame rate, example count).
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        index = read_index(self.folder)
        self.info = TokenInfo(index["num_codebooks"], index["codebook_size"], index["frame_rate"], index["examples"])
        self._files: list[Path] = []
        self._items: list[tuple[int, dict]] = []
        for s, shard in enumerate(index["shards"]):
            try:
                codes, meta = self.folder / shard["codes"], self.folder / shard["meta"]
            except (KeyError, TypeError):
                raise StageError(f"{self.folder / INDEX_FILE}: malformed shard entry {s}") from None
            if not codes.exists() or not meta.exists():
                raise StageError(f"{self.folder}: shard file {codes.name if not codes.exists() else meta.name} is missing")
            self._files.append(codes)
            lines = [line for line in meta.read_text().splitlines() if line.strip()]
            if len(lines) != shard.get("examples"):
                raise StageError(f"{meta}: {len(lines)} examples, the index says {shard.get('examples')}")
            for line in lines:
                self._items.append((s, json.loads(line)))
        if len(self._items) != self.info.examples:
            raise StageError(f"{self.folder}: {len(self._items)} examples in the shards, the index says {self.info.examples}")
        self._maps: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._items)

    def _shard(self, s: int) -> np.ndarray:
        if s not in self._maps:
            codes = np.load(self._files[s], mmap_mode="r", allow_pickle=False)
            if codes.dtype != np.uint16 or codes.ndim != 2 or codes.shape[0] != self.info.num_codebooks:
                raise StageError(
                    f"{self._files[s]}: expected uint16 codes [{self.info.num_codebooks}, T], got {codes.dtype} {list(codes.shape)}"
                )
            self._maps[s] = codes
        return self._maps[s]

    def __getitem__(self, index: int) -> TokenExample:
        if not 0 <= index < len(self._items):
            raise IndexError(index)
        s, meta = self._items[index]
        codes = self._shard(s)
        start, tc, tt = meta["offset"], meta["context"], meta["target"]
        block = np.asarray(codes[:, start : start + tc + tt], dtype=np.int64)  # [K, Tc + Tt]
        return TokenExample(
            target=block[:, tc:],
            context=block[:, :tc],
            caption=meta.get("caption", ""),
            song=meta.get("song", ""),
            context_kind=meta.get("context_kind", "mix"),
            beats=np.asarray(meta["beats"], np.float32) if "beats" in meta else None,
            downbeats=np.asarray(meta["downbeats"], np.float32) if "downbeats" in meta else None,
        )

    def __getstate__(self):  # DataLoader workers: do not pickle open memory maps
        state = dict(self.__dict__)
        state["_maps"] = {}
        return state


def encode_examples(codec, examples: Iterable) -> Iterable[TokenExample]:
    """AudioExamples -> TokenExamples with a frozen `Codec` (target and context encoded
    separately, like the training step; a context shorter than one codec frame -> 0 frames)."""
    import torch

    device = next(codec.parameters()).device
    for example in examples:
        target = torch.as_tensor(np.asarray(example.target, np.float32), device=device)[None, None]  # [1, 1, N]
        codes = codec.encode(target)[0].cpu().numpy()  # [K, Tt]
        ctx = np.asarray(example.context, np.float32)
        if ctx.shape[-1] < codec.hop_length:
            context = np.zeros((codes.shape[0], 0), np.int64)
        else:
            context = codec.encode(torch.as_tensor(ctx, device=device)[None, None])[0].cpu().numpy()  # [K, Tc]
        yield TokenExample(target=codes, context=context, caption=example.caption, song=example.song,
                           context_kind=example.context_kind)
