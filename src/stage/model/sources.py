"""Build the frozen parts (EnCodec, T5 + tokenizer) from a source string.

A source is one of:
- "tiny": a seeded random tiny model (and the tiny tokenizer shipped in `stage/assets`);
- a bundled asset name (`BUNDLED`: "stage-mini-codec", "stage-mini-text"): the
  `save_pretrained` folder of that name shipped in `stage/assets` (STAGE-mini's frozen parts);
- a directory (absolute, or relative to the checkpoint that names it) written by
  `save_pretrained`;
- a Hugging Face hub id. The local cache is tried first; then the hub. Offline, or with
  HF_HUB_OFFLINE=1 and nothing cached, an `OfflineError` says what to download and where.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor

from stage.errors import CheckpointError, OfflineError
from stage.model.config import MINI_CODEC, MINI_TEXT, CodecConfig, TextConfig
from stage.text import TextConditioner, tiny_t5_config
from stage.tokens.codec import (
    TINY_ENCODEC_CONFIG,
    Codec,
    encodec_config,
    encodec_config_from_state,
    init_random_codebooks,
)

ASSETS = Path(__file__).resolve().parent.parent / "assets"
TINY_TOKENIZER = ASSETS / "tiny_t5_tokenizer"
TINY_SEED = 1234
# Source name for frozen parts whose weights came from inside another checkpoint file.
EMBEDDED = "embedded"
# Frozen parts shipped inside the package, by name -> how the folder is made (for the error
# message when an install lacks it). They are resolved before any folder or hub id.
BUNDLED = {
    MINI_CODEC: "STAGE-mini's EnCodec (32 kHz, 50 Hz, 4 x 1024 codes), trained for the package",
    MINI_TEXT: "STAGE-mini's frozen T5 and tokenizer, written by `python scripts/make_mini_text.py`",
}


def bundled_dir(source: str) -> Path | None:
    """The package folder `stage/assets/<source>` for a bundled asset name, None for any other
    source. Raises CheckpointError (a StageError) when the name is bundled but the folder is not
    in this install."""
    if source not in BUNDLED:
        return None
    path = ASSETS / source
    if not (path / "config.json").is_file() and not (path / "tokenizer.json").is_file():
        raise CheckpointError(
            f"the bundled asset {source!r} ({BUNDLED[source]}) is missing from this install: expected the folder "
            f"{path}; reinstall stage-music, or pass another source (a save_pretrained folder)"
        )
    return path


def resolve_dir(source: str, base_dir: Path | None) -> Path | None:
    """An existing directory for `source` (relative to base_dir first), else None."""
    candidates = []
    if base_dir is not None and not os.path.isabs(source):
        candidates.append(base_dir / source)
    candidates.append(Path(source).expanduser())
    for c in candidates:
        if c.is_dir():
            return c
    return None


def looks_like_hub_id(source: str) -> bool:
    parts = source.split("/")
    return 1 <= len(parts) <= 2 and all(p and not p.startswith(".") for p in parts) and not source.endswith(
        (".safetensors", ".bin", ".pt", ".th", ".ckpt", ".json")
    )


def from_pretrained(cls, source: str, what: str, **kwargs):
    """`cls.from_pretrained(source)`, cache first, with an actionable error when offline."""
    try:
        return cls.from_pretrained(source, local_files_only=True, **kwargs)
    except load_errors():
        pass  # not in the cache (an OSError), or a broken cached copy: the hub attempt says which
    if hub_offline():
        raise OfflineError(
            f"{what} {source!r} is not in the local cache and HF_HUB_OFFLINE is set; download it on a "
            f"machine with network (`huggingface-cli download {source}`) or pass a local directory"
        ) from None
    try:
        return cls.from_pretrained(source, **kwargs)
    except (*load_errors(), *_http_errors()) as err:
        if _is_network_error(err):
            raise OfflineError(
                f"cannot download {what} {source!r} from the Hugging Face hub (no network?); download it on a "
                f"machine with network (`huggingface-cli download {source}`) or pass a local directory"
            ) from None
        raise CheckpointError(f"cannot load {what} from {source!r}: {_first_line(err)}") from None


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE asks for the local cache only (any value but 0 / false / empty)."""
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def load_errors() -> tuple[type[Exception], ...]:
    """What transformers' `from_pretrained` raises for a folder or hub repo it cannot load
    (measured with transformers 5.24): OSError for a missing or unreadable file (huggingface_hub's
    errors subclass it), ValueError or huggingface_hub's StrictDataclassError for a bad config
    value, TypeError for a value of the wrong kind, safetensors' SafetensorError for a corrupt
    weights file, RuntimeError for tensors of the wrong shape, and ImportError for a folder that
    needs a package this install lacks (a sentencepiece tokenizer)."""
    from huggingface_hub.errors import StrictDataclassError
    from safetensors import SafetensorError

    return (OSError, ValueError, TypeError, RuntimeError, ImportError, SafetensorError, StrictDataclassError)


def _httpx():
    """huggingface_hub's HTTP client module: httpx under huggingface_hub 1.x, httpx2 under 2.x."""
    try:
        from huggingface_hub.utils import httpx
    except ImportError:  # huggingface_hub releases before it re-exported its client
        import httpx  # type: ignore[no-redef]  # the same module, found where older releases leave it
    return httpx


def _http_errors() -> tuple[type[Exception], ...]:
    """The HTTP client's own errors, which can escape a download that breaks off mid-file."""
    return (_httpx().HTTPError,)


def _network_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the hub could not be reached. huggingface_hub raises
    LocalEntryNotFoundError when a file is neither cached nor reachable (no network, hub down,
    offline mode), OfflineModeIsEnabled (a ConnectionError) under HF_HUB_OFFLINE, and lets its
    HTTP client's connection, timeout and protocol errors through mid-download. A missing or
    gated repository (RepositoryNotFoundError, GatedRepoError) is not one of them."""
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    httpx = _httpx()
    return (
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        ConnectionError,
        httpx.NetworkError,
        httpx.TimeoutException,
        httpx.RemoteProtocolError,
        httpx.ProxyError,
    )


def _is_network_error(err: BaseException) -> bool:
    """True when `err`, or an exception it was raised from, is a `_network_errors` one.
    transformers re-raises hub failures as `OSError(...) from err`, so the chain is walked the way
    Python prints it: `__cause__`, else `__context__` unless suppressed."""
    network = _network_errors()
    seen: set[int] = set()
    link: BaseException | None = err
    while link is not None and id(link) not in seen:
        if isinstance(link, network):
            return True
        seen.add(id(link))
        link = link.__cause__ or (None if link.__suppress_context__ else link.__context__)
    return False


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def hub_snapshot(repo_id: str, patterns: list[str]) -> Path:
    """Download (or find in cache) the files of a hub repo matching `patterns`."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except (OSError, ValueError):
        pass  # not cached (LocalEntryNotFoundError) or a bad repo id (HFValidationError): the hub attempt says which
    if hub_offline():
        raise OfflineError(f"{repo_id!r} is not in the local cache and HF_HUB_OFFLINE is set") from None
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except (OSError, ValueError) + _http_errors() as err:  # hub errors subclass OSError; HFValidationError is a ValueError
        if _is_network_error(err):
            raise OfflineError(
                f"cannot download {repo_id!r} from the Hugging Face hub (no network?); run "
                f"`huggingface-cli download {repo_id}` where you have network, or pass a local directory"
            ) from None
        raise CheckpointError(f"cannot fetch {repo_id!r} from the hub: {_first_line(err)}") from None


def check_tensors(state: Mapping[str, Tensor], expected: Mapping[str, tuple], what: str, prefix: str = "", allowed_missing=()) -> None:
    """Refuse, naming the first offending key (as `prefix + key`), any tensor of `state` that is not
    in `expected` or has another shape, and any expected tensor missing from `state`."""
    for name, tensor in state.items():
        if name not in expected:
            raise CheckpointError(f"{what}: unexpected tensor {prefix + name!r}")
        if tuple(expected[name]) != tuple(tensor.shape):
            raise CheckpointError(
                f"{what}: tensor {prefix + name!r} has shape {tuple(tensor.shape)}, expected {tuple(expected[name])}"
            )
    for name in expected:
        if name not in state and name not in allowed_missing:
            raise CheckpointError(f"{what}: missing tensor {prefix + name!r}")


def load_state_into(module: torch.nn.Module, state: Mapping[str, Tensor], what: str, allowed_missing=()) -> None:
    """Strict load that reports the first offending key in one line."""
    expected = {k: v.shape for k, v in module.state_dict().items()}
    check_tensors(state, expected, what, allowed_missing=allowed_missing)
    module.load_state_dict(dict(state), strict=False)


def load_pretrained(cls, source: str, base_dir: Path | None, what: str):
    """`cls.from_pretrained` from a bundled asset, a local folder (relative to base_dir first) or
    a hub id."""
    local = bundled_dir(source) or resolve_dir(source, base_dir)
    if local is not None:
        return _load_local(cls, local, what)
    if looks_like_hub_id(source):
        return from_pretrained(cls, source, what)
    raise CheckpointError(f"{what} source {source!r}: no such directory")


# --------------------------------------------------------------------------- codec


def build_codec(
    config: CodecConfig, base_dir: Path | None = None, state: Mapping[str, Tensor] | None = None, hf_config=None
) -> Codec:
    """EnCodec for `config.source`, or the architecture `hf_config` (a transformers EncodecConfig;
    inferred from the tensors when None) filled with `state` (HF names)."""
    from transformers import EncodecModel

    if state is not None:
        if hf_config is None:
            try:
                hf_config = encodec_config_from_state(state, config.sample_rate)
            except (KeyError, ValueError, IndexError):
                raise CheckpointError("EnCodec: the embedded codec tensors are incomplete (missing 'encoder.layers.0.conv')") from None
        model = EncodecModel(hf_config)
        load_state_into(model, state, "EnCodec")
    elif config.source == EMBEDDED:
        raise CheckpointError("the EnCodec weights were embedded in the original checkpoint; load that file instead")
    elif config.source == "tiny":
        with seeded(TINY_SEED):
            model = EncodecModel(encodec_config(**TINY_ENCODEC_CONFIG))
        init_random_codebooks(model.eval(), TINY_SEED)
    else:
        model = load_pretrained(EncodecModel, config.source, base_dir, "EnCodec")
    return Codec(model.float().eval(), config)


def _load_local(cls, path: Path, what: str):
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a local folder: nothing to download, no bar to show
    try:
        return cls.from_pretrained(str(path), local_files_only=True)
    except load_errors() as err:
        raise CheckpointError(f"cannot load {what} from {path}: {_first_line(err)}") from None


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's CPU generator seeded to `seed`, and give the caller's generator
    state back afterwards: seeded random models (tiny, mini) come out the same on every call
    without disturbing anyone else's randomness."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


# --------------------------------------------------------------------------- text


def load_tokenizer(source: str, base_dir: Path | None = None):
    from transformers import AutoTokenizer

    if source == "tiny":
        return AutoTokenizer.from_pretrained(str(TINY_TOKENIZER), local_files_only=True)
    return load_pretrained(AutoTokenizer, source, base_dir, "T5 tokenizer")


def build_text(
    config: TextConfig,
    dim: int,
    base_dir: Path | None = None,
    encoder_state: Mapping[str, Tensor] | None = None,
    encoder_config=None,
) -> TextConditioner:
    """T5 encoder + tokenizer + a (randomly initialised) projection to the LM width `dim`.

    encoder_state/encoder_config: T5 weights found inside a checkpoint (HF `T5EncoderModel`
    names); otherwise the weights come from `config.source`.
    """
    from transformers import T5EncoderModel

    tokenizer = load_tokenizer(config.tokenizer, base_dir)
    if encoder_state is not None:
        encoder = T5EncoderModel(encoder_config)
        load_state_into(encoder, encoder_state, "T5", allowed_missing=_tied_t5_keys(encoder_state))
        encoder.tie_weights()
    elif config.source == EMBEDDED:
        raise CheckpointError("the T5 weights were embedded in the original checkpoint; load that file instead")
    elif config.source == "tiny":
        with seeded(TINY_SEED + 1):
            encoder = T5EncoderModel(tiny_t5_config(len(tokenizer), config.dim))
    else:
        encoder = load_pretrained(T5EncoderModel, config.source, base_dir, "T5 encoder")
    if encoder.config.d_model != config.dim:
        raise CheckpointError(f"T5 width is {encoder.config.d_model}, config says text.dim = {config.dim}")
    return TextConditioner(encoder.float().eval(), tokenizer, dim, config.max_tokens)


def _tied_t5_keys(state: Mapping[str, Tensor]) -> tuple[str, ...]:
    """T5 ties `shared.weight` and `encoder.embed_tokens.weight`; a file may hold either."""
    if "shared.weight" in state:
        return ("encoder.embed_tokens.weight",)
    if "encoder.embed_tokens.weight" in state:
        return ("shared.weight",)
    return ()


def t5_config_from_state(state: Mapping[str, Tensor]):
    """Infer a T5 encoder config from its tensors (vocab, width, depth, heads, FFN width)."""
    from transformers import T5Config

    emb = state.get("shared.weight", state.get("encoder.embed_tokens.weight"))
    if emb is None:
        raise CheckpointError("T5: missing tensor 'shared.weight'")
    bias = state.get("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
    if bias is None:
        raise CheckpointError("T5: missing tensor 'encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight'")
    blocks = {int(k.split(".")[2]) for k in state if k.startswith("encoder.block.")}
    q = state["encoder.block.0.layer.0.SelfAttention.q.weight"]
    wi = state["encoder.block.0.layer.1.DenseReluDense.wi.weight"]
    heads = bias.shape[1]
    return T5Config(
        vocab_size=emb.shape[0],
        d_model=emb.shape[1],
        d_kv=q.shape[0] // heads,
        d_ff=wi.shape[0],
        num_layers=len(blocks),
        num_heads=heads,
        relative_attention_num_buckets=bias.shape[0],
        dropout_rate=0.0,
        feed_forward_proj="relu",
        is_encoder_decoder=False,
        use_cache=False,
    )
