"""On-disk cache of per-file embeddings (a reference set is embedded once, reused by later evals).

One `.npz` file holds many entries. An entry's name is a hash of (embedder key, absolute file
path, modification time in ns, size in bytes), so an edited or replaced file, or a different
embedder (another name, configuration or set of weights: see `Embedder.key`), never hits a stale
entry; the embedder key is also stored next to each entry and checked on read. The file is
rewritten atomically (temporary file + rename); an unreadable cache is ignored and replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from stage.files import atomic_write

FORMAT = "stage-embedding-cache"
VERSION = 1
META = "__meta__"


def default_cache_path(embedder_key: str, reference_dir: str | os.PathLike) -> Path:
    """~/.cache/stage/eval/<embedder name>-<hash of embedder key + reference folder>.npz
    (XDG_CACHE_HOME is honoured)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stage" / "eval"
    digest = hashlib.sha1(f"{embedder_key}|{Path(reference_dir).resolve()}".encode()).hexdigest()[:12]
    return base / f"{embedder_key.split('|')[0]}-{digest}.npz"


class EmbeddingCache:
    """Embeddings [F, D] keyed by (embedder key, file identity). `path=None` disables caching."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path is not None else None
        self.entries: dict[str, np.ndarray] = {}
        self.meta: dict[str, dict] = {}
        self.hits = 0
        self.misses = 0
        self.dirty = False
        self.note: str | None = None
        if self.path is not None and self.path.exists():
            self._read()

    def _read(self) -> None:
        assert self.path is not None  # only called for a cache with a file
        try:
            data = np.load(self.path, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("a single array, not an .npz archive")
            with data:
                header = json.loads(str(data[META]))
                if not isinstance(header, dict) or header.get("format") != FORMAT or header.get("version") != VERSION:
                    raise ValueError("unknown cache format")
                if not isinstance(header.get("entries"), dict):
                    raise ValueError("no entry table")
                self.meta = header["entries"]
                self.entries = {k: np.asarray(data[k]) for k in self.meta if k in data.files}
        # A corrupt or foreign file: start afresh, say so. np.load raises ValueError (not an archive,
        # pickled data), EOFError (empty), BadZipFile or zlib.error (damaged); a missing META is a KeyError.
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as err:
            self.entries, self.meta = {}, {}
            self.note = f"ignored unreadable embedding cache {self.path} ({type(err).__name__})"

    @staticmethod
    def entry_name(embedder_key: str, file: str | os.PathLike) -> str:
        p = Path(file).resolve()
        st = p.stat()
        return "e" + hashlib.sha1(f"{embedder_key}|{p}|{st.st_mtime_ns}|{st.st_size}".encode()).hexdigest()

    def get(self, embedder_key: str, file) -> np.ndarray | None:
        if self.path is None:
            return None
        name = self.entry_name(embedder_key, file)
        if name in self.entries and self.meta.get(name, {}).get("embedder") == embedder_key:
            self.hits += 1
            return self.entries[name]
        self.misses += 1
        return None

    def put(self, embedder_key: str, file, embedding: np.ndarray) -> None:
        if self.path is None:
            return
        name = self.entry_name(embedder_key, file)
        self.entries[name] = np.asarray(embedding, dtype=np.float32)
        self.meta[name] = {"embedder": embedder_key, "path": str(Path(file).resolve())}
        self.dirty = True

    def save(self) -> None:
        """Write the cache if anything was added (atomic)."""
        if self.path is None or not self.dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        header = json.dumps({"format": FORMAT, "version": VERSION, "entries": self.meta})
        # mypy matches **entries against savez's `allow_pickle: bool` too; the keys are "e" + sha1 names.
        atomic_write(self.path, lambda f: np.savez(f, **{META: np.asarray(header)}, **self.entries), binary=True)  # type: ignore[arg-type]
        self.dirty = False
