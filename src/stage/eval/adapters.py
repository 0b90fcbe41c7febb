"""Optional adapters to pretrained evaluation models: LAION-CLAP, VGGish, MERT and COCOLA.

None of these packages is a dependency of stage and no weights are ever downloaded: the user
installs the package and passes a local checkpoint. When either is missing, constructing the
adapter raises `AdapterUnavailable` whose message is one line starting with "skipped:" and
naming the flag to pass; `stage eval` prints it and skips that metric, it never crashes.

These adapters are deliberately thin and follow each project's public documentation only. The
real weights cannot be had on the build machines: the transformers CLAP path and the VGGish path
were run with random weights in the real classes (tests / a manual check with torchvggish 0.2);
the laion_clap, MERT and COCOLA paths are untested beyond their skip messages. Treat their
numbers with the usual care and report the versions you used.

- **LAION-CLAP**, either as a transformers folder (`ClapModel`, transformers' port of LAION-CLAP,
  e.g. a local copy of laion/larger_clap_music; this path needs no extra package and is tested
  with a tiny random `ClapModel`), or as a release `.pt` file through `pip install laion-clap`
  (README of github.com/LAION-AI/CLAP):
  `laion_clap.CLAP_Module(enable_fusion=False, amodel=...)`, `load_ckpt(PATH)`,
  `get_audio_embedding_from_data(x=[B, N] float at 48 kHz, use_tensor=False)` and
  `get_text_embedding([str, ...], use_tensor=False)`, both 512-d. The music checkpoints
  (`music_audioset_epoch_15_esc_90.14.pt`, ...) use `amodel="HTSAT-base"`. Note: the module
  loads the `roberta-base` tokenizer through transformers, which must be in the local HF cache.
  CLAP sees 10 s; we cut clips into 10 s windows ourselves (without fusion CLAP would crop a
  random 10 s of a longer clip, which is not reproducible).
- **VGGish** (`pip install torchvggish`, github.com/harritaylor/torchvggish; Hershey et al.
  2017): its `VGG(make_layers())` network (PyPI 0.2 or the repository layout) with the released state dict
  (`vggish-10086976.pth`, loaded with `torch.load(weights_only=True)`) and its
  `vggish_input.waveform_to_examples` front end at 16 kHz: one 128-d embedding per 0.96 s
  example, without the PCA/quantisation post-processing (as FAD implementations use it).
- **MERT** (model card of m-a-p/MERT-v1-95M): a local folder of the hub model loaded with
  transformers `AutoModel.from_pretrained(PATH, trust_remote_code=True)` and
  `Wav2Vec2FeatureExtractor`; 24 kHz input, hidden states at 75 Hz. **trust_remote_code runs
  the Python files inside that folder**: only point it at a copy you trust. We take one layer
  (`layer`, default the last) and mean-pool it per 1 s window.
- **COCOLA** (README of github.com/gladia-research-group/cocola; Ciranni et al. 2024): the
  repository's `contrastive_model` package must be importable (clone it, add it to PYTHONPATH).
  `CoCola.load_from_checkpoint(PATH)` then `model.score(x, y)` on [B, 1, 5 s at 16 kHz]
  pairs; we score each aligned 5 s chunk of (context, stem) and average. The checkpoint is
  loaded with Lightning's `weights_only=True`, allowing only COCOLA's own enums as globals.
"""

from __future__ import annotations

import enum
import importlib
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stage.audio import prepare
from stage.errors import StageError
from stage.eval.embedders import Embedder, EncodecEmbedder, LogMelEmbedder, window_pool

CLAP_RATE = 48_000
CLAP_SECONDS = 10.0
VGGISH_RATE = 16_000
MERT_RATE = 24_000
COCOLA_RATE = 16_000
COCOLA_SECONDS = 5.0


class AdapterUnavailable(StageError):
    """An optional metric cannot run (package not installed, checkpoint not given or not
    loadable). The message is one line starting with "skipped:"."""


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:160]


def require_checkpoint(path, flag: str, what: str) -> Path:
    """The user's checkpoint path, or AdapterUnavailable with the flag to pass."""
    if not path:
        raise AdapterUnavailable(f"skipped: {what} needs a local checkpoint (pass {flag} PATH)")
    p = Path(os.path.expanduser(str(path)))
    if not p.exists():
        raise AdapterUnavailable(f"skipped: {what} checkpoint {p} does not exist (pass {flag} PATH)")
    return p


def require_module(name: str, install: str, what: str):
    """Import an optional package lazily, or AdapterUnavailable with how to install it."""
    try:
        return importlib.import_module(name)
    except Exception as err:  # ImportError, or a broken install raising anything at import
        raise AdapterUnavailable(f"skipped: {what} needs the `{name}` package ({install}): {_first_line(err)}") from None


def _mono(audio, sample_rate: int, target: int) -> np.ndarray:
    return prepare(audio, sample_rate, target)[0]


def _windows(y: np.ndarray, length: int, min_tail: int) -> tuple[np.ndarray, np.ndarray | None]:
    """[N] -> (full windows [W, length], tail [n] or None). The tail (the samples after the last
    full window) is kept when it is at least `min_tail` long or when there is no full window."""
    count = y.shape[0] // length
    full = y[: count * length].reshape(count, length).astype(np.float32)
    tail = y[count * length:]
    keep = tail.shape[0] > 0 and (tail.shape[0] >= min_tail or count == 0)
    return full, (tail.astype(np.float32) if keep else None)


# --------------------------------------------------------------------------- CLAP


class ClapEmbedder(Embedder):
    """CLAP audio embeddings, one row per 10 s window (512-d for the released models); also
    embeds text. Two ways to load the same LAION-CLAP weights:

    - a checkpoint **file** (`*.pt` from the LAION-CLAP releases): through the `laion_clap`
      package; `amodel` must match the checkpoint (HTSAT-base for the music checkpoints);
    - a **folder** written by transformers (`ClapModel` + its feature extractor and tokenizer,
      e.g. a local copy of laion/larger_clap_music): through transformers' port of LAION-CLAP,
      `ClapModel.get_audio_features` / `get_text_features`, which needs no extra package.
    """

    name = "clap"

    def __init__(self, checkpoint, amodel: str = "HTSAT-base", enable_fusion: bool = False):
        path = require_checkpoint(checkpoint, "--clap-checkpoint", "CLAP")
        self.path = path
        self.tokenizer: Any = None  # transformers' tokenizer, loaded by load_text
        if path.is_dir():
            self.backend = "transformers"
            from stage.model.sources import load_errors

            try:
                from transformers import ClapFeatureExtractor, ClapModel

                self.model = ClapModel.from_pretrained(str(path), local_files_only=True).eval()
                self.features = ClapFeatureExtractor.from_pretrained(str(path), local_files_only=True)
            except load_errors() as err:  # what transformers raises for a folder it cannot load
                raise AdapterUnavailable(f"skipped: could not load CLAP from {path} ({_first_line(err)})") from None
            self.rate = int(self.features.sampling_rate)
            self.window = int(self.features.nb_max_samples)
            stamp = max((f.stat().st_mtime_ns for f in path.iterdir() if f.is_file()), default=0)
            self.key = f"clap|hf|{path.resolve()}|{stamp}|v1"
        else:
            self.backend = "laion_clap"
            laion_clap = require_module("laion_clap", "pip install laion-clap", "CLAP")
            try:
                self.model = laion_clap.CLAP_Module(enable_fusion=enable_fusion, amodel=amodel)
                self.model.load_ckpt(str(path))
                self.model.eval()
            except Exception as err:  # broad on purpose: laion_clap's own constructor and loader, untested here, may raise anything
                raise AdapterUnavailable(f"skipped: could not load CLAP from {path} ({_first_line(err)})") from None
            self.rate, self.window = CLAP_RATE, int(CLAP_SECONDS * CLAP_RATE)
            self.key = f"clap|{path.resolve()}|{path.stat().st_size}|{path.stat().st_mtime_ns}|{amodel}|fusion={enable_fusion}|v1"

    def _audio_rows(self, batch: np.ndarray) -> np.ndarray:
        """[W, n] float32 at self.rate -> [W, dim] embeddings."""
        if self.backend == "laion_clap":
            return np.asarray(self.model.get_audio_embedding_from_data(x=batch, use_tensor=False))
        import torch

        inputs = self.features(list(batch), sampling_rate=self.rate, return_tensors="pt")
        with torch.no_grad():
            out = self.model.get_audio_features(**inputs)
        out = getattr(out, "pooler_output", out)  # transformers 5 returns an output object
        return out.float().numpy()

    def embed(self, audio, sample_rate: int) -> np.ndarray:
        y = np.clip(_mono(audio, sample_rate, self.rate), -1.0, 1.0)
        if self.backend == "laion_clap":  # its README round-trips audio through int16 first
            y = (np.round(y * 32767.0) / 32767.0).astype(np.float32)
        # Whole 10 s windows in one batch; a tail of >= 1 s (or a clip under 10 s) on its own,
        # so that CLAP pads it its own way ("repeatpad") rather than with our zeros.
        full, tail = _windows(y, self.window, min_tail=self.rate)
        rows = []
        if full.shape[0]:
            rows.append(self._audio_rows(full))
        if tail is not None:
            rows.append(self._audio_rows(tail[None]))
        return np.concatenate(rows, axis=0).astype(np.float32)

    def load_text(self) -> None:
        """Make text embedding possible (the transformers backend loads its tokenizer here)."""
        if self.backend == "transformers" and self.tokenizer is None:
            from stage.model.sources import load_errors

            try:
                from transformers import AutoTokenizer

                self.tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
            except load_errors() as err:  # what transformers raises for a folder it cannot load
                raise AdapterUnavailable(f"skipped: no CLAP tokenizer in {self.path} ({_first_line(err)})") from None

    def embed_text(self, prompts: list[str]) -> np.ndarray:
        if self.backend == "laion_clap":
            return np.asarray(self.model.get_text_embedding(list(prompts), use_tensor=False), dtype=np.float32)
        import torch

        self.load_text()
        tokens = self.tokenizer(list(prompts), padding=True, return_tensors="pt")
        with torch.no_grad():
            out = self.model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        return getattr(out, "pooler_output", out).float().numpy()


class ClapTextScorer:
    """CLAP text-audio score: cosine similarity between a clip's CLAP embedding (mean over its
    10 s windows) and its prompt's text embedding, in [-1, 1]."""

    def __init__(self, checkpoint, amodel: str = "HTSAT-base", embedder: ClapEmbedder | None = None):
        self.embedder = embedder or ClapEmbedder(checkpoint, amodel)
        self.embedder.load_text()

    def score(self, audio, sample_rate: int, prompt: str) -> float:
        a = self.embedder.embed(audio, sample_rate).mean(axis=0)
        t = self.embedder.embed_text([prompt])[0]
        return float(a @ t / (np.linalg.norm(a) * np.linalg.norm(t) + 1e-12))


# --------------------------------------------------------------------------- VGGish


class VggishEmbedder(Embedder):
    """VGGish (torchvggish) embeddings, one 128-d row per 0.96 s example."""

    name = "vggish"

    def __init__(self, checkpoint):
        path = require_checkpoint(checkpoint, "--vggish-checkpoint", "VGGish")
        package = require_module("torchvggish", "pip install torchvggish", "VGGish")
        self._input = require_module("torchvggish.vggish_input", "pip install torchvggish", "VGGish")
        # The PyPI release (0.2) defines VGG(features, postprocess) in torchvggish/torchvggish.py;
        # the repository's later layout has VGG(features) in torchvggish/vggish.py.
        try:
            network = importlib.import_module("torchvggish.vggish")
        except ImportError:
            network = package
        import inspect

        import torch

        try:
            takes_postprocess = "postprocess" in inspect.signature(network.VGG.__init__).parameters
            self.model = network.VGG(network.make_layers(), False) if takes_postprocess else network.VGG(network.make_layers())
            state = torch.load(str(path), map_location="cpu", weights_only=True)
            self.model.load_state_dict(state)
            self.model.eval()
        # AttributeError/TypeError/ValueError: a torchvggish without VGG(make_layers()) or with another
        # signature, or a state that is not a dict; UnpicklingError/EOFError/RuntimeError: torch.load
        # refusing, an empty or a damaged file; RuntimeError also for missing or misshapen tensors.
        except (AttributeError, TypeError, ValueError, RuntimeError, OSError, EOFError, pickle.UnpicklingError) as err:
            raise AdapterUnavailable(f"skipped: could not load VGGish weights from {path} ({_first_line(err)})") from None
        self.key = f"vggish|{path.resolve()}|{path.stat().st_size}|{path.stat().st_mtime_ns}|v1"

    def embed(self, audio, sample_rate: int) -> np.ndarray:
        import torch

        y = _mono(audio, sample_rate, VGGISH_RATE)
        examples = torch.as_tensor(np.asarray(self._input.waveform_to_examples(y, VGGISH_RATE, return_tensor=False)))
        if examples.shape[0] == 0:
            raise StageError("audio is shorter than one VGGish example (0.96 s)")
        with torch.no_grad():
            out = self.model(examples[:, None].float())  # [examples, 128]
        return out.numpy().astype(np.float32)


# --------------------------------------------------------------------------- MERT


class MertEmbedder(Embedder):
    """MERT hidden states of one layer, mean-pooled per 1 s window -> [F, hidden]."""

    name = "mert"

    def __init__(self, checkpoint, layer: int = -1, window_seconds: float = 1.0, chunk_seconds: float = 10.0):
        path = require_checkpoint(checkpoint, "--mert-checkpoint", "MERT")
        if not path.is_dir():
            raise AdapterUnavailable(f"skipped: MERT needs a model folder (config.json + weights), got the file {path}")
        try:
            from transformers import AutoModel, Wav2Vec2FeatureExtractor

            self.processor = Wav2Vec2FeatureExtractor.from_pretrained(str(path), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(path), trust_remote_code=True, local_files_only=True).eval()
        except Exception as err:  # broad on purpose: trust_remote_code runs the folder's own Python, which may raise anything
            raise AdapterUnavailable(f"skipped: could not load MERT from {path} ({_first_line(err)})") from None
        self.layer, self.window_seconds, self.chunk_seconds = int(layer), float(window_seconds), float(chunk_seconds)
        self.rate = int(getattr(self.processor, "sampling_rate", MERT_RATE))
        self.key = f"mert|{path.resolve()}|layer={layer}|win={window_seconds}|chunk={chunk_seconds}|v1"

    def embed(self, audio, sample_rate: int) -> np.ndarray:
        import torch

        y = _mono(audio, sample_rate, self.rate)
        chunk = int(self.chunk_seconds * self.rate)
        parts: list[np.ndarray] = []
        with torch.no_grad():
            for start in range(0, y.shape[0], chunk):
                piece = y[start:start + chunk]
                if piece.shape[0] < self.rate // 10 and parts:
                    break  # a tail under 0.1 s adds almost no frames
                inputs = self.processor(piece, sampling_rate=self.rate, return_tensors="pt")
                hidden = self.model(**inputs, output_hidden_states=True).hidden_states[self.layer]  # [1, MERT frames, hidden]
                parts.append(hidden[0].float().numpy())
        frames = np.concatenate(parts, axis=0)
        per_second = frames.shape[0] / (y.shape[0] / self.rate)
        return window_pool(frames, round(self.window_seconds * per_second))


# --------------------------------------------------------------------------- COCOLA


class CocolaScorer:
    """COCOLA coherence between a context (mix) and a generated stem: the mean of
    `CoCola.score` over their aligned whole 5 s chunks at 16 kHz (COCOLA's training length) over
    the overlap of the two; a trailing partial chunk is left out; pairs shorter than 5 s are
    zero-padded to one chunk."""

    def __init__(self, checkpoint):
        path = require_checkpoint(checkpoint, "--cocola-checkpoint", "COCOLA")
        module = require_module("contrastive_model.contrastive_model",
                                "clone github.com/gladia-research-group/cocola and add it to PYTHONPATH", "COCOLA")
        import torch

        try:
            constants = importlib.import_module("contrastive_model.constants")
            safe: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = [
                v for v in vars(constants).values() if isinstance(v, type) and issubclass(v, enum.Enum)
            ]
            with torch.serialization.safe_globals(safe):
                self.model = module.CoCola.load_from_checkpoint(str(path), map_location="cpu", weights_only=True)
            self.model.eval()
        except Exception as err:  # broad on purpose: COCOLA's own constructor (via Lightning), untested here, may raise anything
            raise AdapterUnavailable(f"skipped: could not load COCOLA from {path} ({_first_line(err)})") from None
        if not hasattr(self.model, "score"):
            raise AdapterUnavailable("skipped: the installed COCOLA code has no CoCola.score (update the repository)")

    def score(self, context, context_rate: int, stem, stem_rate: int) -> float:
        import torch

        x, y = _mono(context, context_rate, COCOLA_RATE), _mono(stem, stem_rate, COCOLA_RATE)
        n = min(x.shape[0], y.shape[0])
        length = int(COCOLA_SECONDS * COCOLA_RATE)
        xs, _ = _windows(x[:n], length, min_tail=length)
        ys, _ = _windows(y[:n], length, min_tail=length)
        if xs.shape[0] == 0:  # shorter than one chunk: zero-pad the only chunk of each
            xs, ys = np.zeros((1, length), np.float32), np.zeros((1, length), np.float32)
            xs[0, :n], ys[0, :n] = x[:n], y[:n]
        with torch.no_grad():
            scores = self.model.score(torch.from_numpy(xs)[:, None], torch.from_numpy(ys)[:, None])  # [W]
        return float(torch.as_tensor(scores).float().mean())


# --------------------------------------------------------------------------- factory


@dataclass(frozen=True)
class AdapterOptions:
    """Where optional models live (all None by default: nothing is loaded or downloaded).

    model: stage model source for the EnCodec embedder ("tiny" or a checkpoint path).
    """

    model: str | None = None
    clap_checkpoint: str | None = None
    clap_model: str = "HTSAT-base"
    vggish_checkpoint: str | None = None
    mert_checkpoint: str | None = None
    mert_layer: int = -1
    cocola_checkpoint: str | None = None


EMBEDDERS = ("logmel", "encodec", "clap", "vggish", "mert")


def build_embedder(name: str, options: AdapterOptions = AdapterOptions(), model=None) -> Embedder:
    """An embedder by name. `model`: an already loaded StageModel to take the codec from.
    Raises StageError for an unknown name and AdapterUnavailable for a missing optional part."""
    if name == "logmel":
        return LogMelEmbedder()
    if name == "encodec":
        if model is None:
            if not options.model:
                raise StageError("the encodec embedder needs a model: pass --model PATH (a stage checkpoint with "
                                 "EnCodec weights) or --model tiny (random weights, for tests only)")
            import stage

            model = stage.load_model(options.model)
        return EncodecEmbedder(model.codec, source=str(options.model or "model"))
    if name == "clap":
        return ClapEmbedder(options.clap_checkpoint, options.clap_model)
    if name == "vggish":
        return VggishEmbedder(options.vggish_checkpoint)
    if name == "mert":
        return MertEmbedder(options.mert_checkpoint, options.mert_layer)
    raise StageError(f"unknown embedder {name!r} (choose from {', '.join(EMBEDDERS)})")
