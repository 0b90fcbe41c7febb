"""Load and save models: our checkpoints, HF MusicGen, audiocraft MusicGen and the authors' STAGE files.

`load_model(source)` accepts:
- "tiny": a seeded random tiny model (no files);
- "mini": a fresh seeded random STAGE-mini (the `mini` preset; its EnCodec and T5 are package
  assets), the starting point of `configs/mini-*.yaml`;
- "musicgen-small" / "musicgen-medium" / "musicgen-large": the HF hub ids facebook/musicgen-*;
- a stage checkpoint directory (`stage.json` + `model.safetensors`, optionally `codec/` and
  `text/` with the frozen parts), as written by `save_checkpoint` / `stage convert`;
- a directory written by transformers' `MusicgenForConditionalGeneration.save_pretrained`
  (plus tokenizer files), or the hub id of such a model;
- the authors' released `stage-{drums,bass}.safetensors` (full `LightningMusicgen` state_dict,
  x-transformers names, docs/method.md §7.4);
- an audiocraft MusicGen `state_dict.bin` (`best_state`, §7.2).

Weights are read with safetensors or `torch.load(weights_only=True)`; nothing is unpickled.
Every tensor is accounted for: a missing, unexpected or wrongly shaped tensor is refused with a
one-line `CheckpointError` that names the first offending key in the source's own naming. The
foreign formats' names are mapped onto stage's by the key tables in `stage.model.key_rules`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor

from stage.errors import CheckpointError, ConfigError
from stage.formats import check_header
from stage.model.config import T5_BASE, CodecConfig, LMConfig, StageConfig, TextConfig, preset
from stage.model.key_rules import AUDIOCRAFT_KEYS, AUTHORS_KEYS, HF_KEYS, audiocraft_encodec_to_hf, read_proj, remap, strip_prefix
from stage.model.lm import StageLM

# The folder format and its writer live in stage.model.saving (StageModel.save uses it, and this
# module builds StageModels: one module holding both would import itself round a cycle).
from stage.model.saving import (  # noqa: F401 (re-exported)
    CONFIG_FILE,
    FORMAT_NAME,
    FORMAT_VERSION,
    WEIGHTS_FILE,
    check_output_dir,
    plain_permissions,
    save_checkpoint,
)
from stage.model.sources import (
    EMBEDDED,
    TINY_SEED,
    build_codec,
    build_text,
    check_tensors,
    hub_snapshot,
    looks_like_hub_id,
    seeded,
    t5_config_from_state,
)

if TYPE_CHECKING:
    from transformers import EncodecConfig, MusicgenDecoderConfig, T5Config

# Short names for well-known hub models.
HUB_ALIASES = {
    "musicgen-small": "facebook/musicgen-small",
    "musicgen-medium": "facebook/musicgen-medium",
    "musicgen-large": "facebook/musicgen-large",
}
HF_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt"]
MINI_SEED = 4321


# --------------------------------------------------------------------------- reading weights


def read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({str(err).splitlines()[0][:120]})") from None


def read_torch(path: Path) -> object:
    """torch.load with weights_only=True: tensors, dicts, lists and strings only."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=False)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
        text = str(err)
        if isinstance(err, pickle.UnpicklingError):  # weights_only refused a global (a pickled object)
            raise CheckpointError(
                f"{path}: holds pickled Python objects; refusing to unpickle it (only plain tensors are loaded)"
            ) from None
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({text.splitlines()[0][:120] if text else type(err).__name__})"
        ) from None


def read_hf_weights(folder: Path) -> dict[str, Tensor]:
    """All tensors of a save_pretrained folder: single or sharded safetensors, else pytorch_model.bin."""
    single = folder / "model.safetensors"
    if single.exists():
        return read_safetensors(single)
    index = folder / "model.safetensors.index.json"
    if index.exists():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError) as err:
            raise CheckpointError(f"{index}: malformed shard index ({err})") from None
        state: dict[str, Tensor] = {}
        for shard in shards:
            state.update(read_safetensors(folder / shard))
        return state
    binary = folder / "pytorch_model.bin"
    if binary.exists():
        loaded = read_torch(binary)
        if not isinstance(loaded, dict):
            raise CheckpointError(f"{binary}: expected a state dict")
        return loaded
    raise CheckpointError(f"{folder}: no model.safetensors or pytorch_model.bin found")


# --------------------------------------------------------------------------- formats


def detect_format(source: str | os.PathLike) -> str:
    """One of: tiny, mini, stage, hf, authors, audiocraft, hub. Raises CheckpointError otherwise."""
    text = str(source)
    if text in ("tiny", "mini"):
        return text
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / CONFIG_FILE).exists():
            return "stage"
        if (path / "config.json").exists():
            try:
                kind = json.loads((path / "config.json").read_text()).get("model_type")
            except ValueError:
                raise CheckpointError(f"{path / 'config.json'}: not valid JSON") from None
            if kind == "musicgen":
                return "hf"
            raise CheckpointError(f"{path}: a transformers model of type {kind!r}, not MusicGen")
        raise CheckpointError(f"{path}: not a model folder (no {CONFIG_FILE} or config.json)")
    if path.is_file():
        if path.stat().st_size == 0:
            raise CheckpointError(f"{path}: empty file")
        if path.suffix == ".safetensors":
            return "authors"
        if path.suffix in (".bin", ".pt", ".th", ".pth"):
            return "audiocraft"
        raise CheckpointError(f"{path}: unknown checkpoint type (expected a folder, .safetensors or .bin)")
    if text in HUB_ALIASES or (looks_like_hub_id(text) and "/" in text):
        return "hub"
    raise CheckpointError(f"{text}: no such file or folder")


def load_model(
    source: str | os.PathLike = "tiny",
    *,
    device: str | torch.device | None = None,
    codec: str | None = None,
    text: str | None = None,
    tokenizer: str | None = None,
    stem: str | None = None,
):
    """Load a `StageModel` in eval mode from any supported source (see the module docstring).

    codec / text / tokenizer: override where the frozen EnCodec / T5 / tokenizer come from (a
    local folder or hub id). Needed only for files that do not carry them (the authors' and
    audiocraft files default to facebook/encodec_32khz and google-t5/t5-base).
    stem: record the instrument a model generates (the authors' files do not say).
    """
    # Known names (stage-drums, stage-bass, musicgen-small) resolve through the registry, which
    # says where to put the weights when they are missing.
    from stage.devices import resolve_device
    from stage.model.registry import check_stem, resolve_known

    if isinstance(device, str):  # a bad name fails here, before any weights are read
        device = resolve_device(device)
    if stem is not None:  # likewise a bad stem name
        stem = check_stem(stem)
    known = resolve_known(source)
    if known is not None:
        source, stem = known.source, stem or known.stem
    fmt = detect_format(source)
    if fmt == "tiny":
        model = build_tiny()
    elif fmt == "mini":
        model = build_mini(codec=codec, text=text, tokenizer=tokenizer)
    elif fmt == "stage":
        model = load_stage_checkpoint(Path(source), codec=codec, text=text, tokenizer=tokenizer)
    elif fmt == "hf":
        model = load_hf(Path(source), codec=codec, text=text, tokenizer=tokenizer)
    elif fmt == "hub":
        repo = HUB_ALIASES.get(str(source), str(source))
        model = load_hf(hub_snapshot(repo, HF_PATTERNS), codec=codec, text=text, tokenizer=tokenizer, name=repo)
    elif fmt == "authors":
        model = load_authors(Path(source), codec=codec, text=text, tokenizer=tokenizer)
    else:
        model = load_audiocraft(Path(source), codec=codec, text=text, tokenizer=tokenizer)
    if stem is not None:
        model.config = model.config.replace(stem=stem)
    if device is not None:
        model = model.to(device)
    return model.eval()


def assemble(
    config: StageConfig,
    lm_state: Mapping[str, Tensor] | None,
    proj_state: Mapping[str, Tensor] | None,
    base_dir: Path | None = None,
    codec_state: Mapping[str, Tensor] | None = None,
    t5_state: Mapping[str, Tensor] | None = None,
    codec_config=None,
    t5_config=None,
):
    """Build a StageModel from its config and (already remapped) tensors.

    codec_state / t5_state: the frozen EnCodec / T5 found inside the checkpoint (HF names), built
    as codec_config / t5_config (transformers configs; inferred from the tensors when None).
    """
    from stage.model.stage_model import StageModel

    codec = build_codec(config.codec, base_dir, codec_state, codec_config)
    if t5_state is not None and t5_config is None:
        t5_config = t5_config_from_state(t5_state)
    text = build_text(config.text, config.lm.dim, base_dir, t5_state, t5_config)
    if lm_state is None:
        lm = StageLM(config.lm)
    else:
        with torch.device("meta"):
            lm = StageLM(config.lm)
        lm.load_state_dict(dict(lm_state), strict=True, assign=True)
        if config.lm.layout == "stage":
            lm.init_special_rows(context=False)  # the pad row is zero by definition (§2.3)
    if proj_state is not None:
        text.proj.load_state_dict(dict(proj_state), strict=True)
    return StageModel(config, lm.float(), codec, text)


def build_tiny():
    """The seeded random tiny model: identical weights on every call and every machine."""
    config = preset("tiny")
    with seeded(TINY_SEED + 2):
        model = assemble(config, None, None)
        model.lm.reset_parameters()
        model.text.proj.reset_parameters()
    return model


def build_mini(codec: str | None = None, text: str | None = None, tokenizer: str | None = None):
    """A fresh seeded random STAGE-mini (LM and T5 projection; the same on every call) over its
    frozen EnCodec and T5 (package assets, or the given sources). The start of a mini training."""
    config = preset("mini")
    if codec or text or tokenizer:
        c, t = _sources(config.codec, config.text, codec, text, tokenizer)
        config = config.replace(codec=c, text=t)
    with seeded(MINI_SEED):
        model = assemble(config, None, None)
        model.lm.reset_parameters()
        model.text.proj.reset_parameters()
    return model


def _sources(default_codec: CodecConfig, default_text: TextConfig, codec: str | None, text: str | None, tokenizer: str | None):
    # An override replaces where the weights come from, not what they are (rate, codebooks).
    c = dataclasses.replace(default_codec, source=codec) if codec else default_codec
    t = TextConfig(source=text or default_text.source, tokenizer=tokenizer or (text or default_text.tokenizer), dim=default_text.dim)
    return c, t


def load_stage_checkpoint(folder: Path, codec: str | None = None, text: str | None = None, tokenizer: str | None = None):
    """Our format: stage.json (config) + model.safetensors (`lm.*`, `text_proj.*`)."""
    try:
        meta = json.loads((folder / CONFIG_FILE).read_text())
    except ValueError as err:
        raise CheckpointError(f"{folder / CONFIG_FILE}: not valid JSON ({err})") from None
    check_header(meta, expected=FORMAT_NAME, version=FORMAT_VERSION, where=folder / CONFIG_FILE, what="stage checkpoint",
                 error=CheckpointError)
    try:
        config = StageConfig.from_dict(meta.get("config", {}))
    except ConfigError as err:
        raise CheckpointError(f"{folder / CONFIG_FILE}: {err}") from None
    if codec or text or tokenizer:
        c, t = _sources(config.codec, config.text, codec, text, tokenizer)
        config = config.replace(codec=c, text=t)
    weights = folder / WEIGHTS_FILE
    if not weights.exists():
        raise CheckpointError(f"{folder}: missing {WEIGHTS_FILE}")
    state = read_safetensors(weights)
    lm_state = strip_prefix(state, "lm.")
    proj = read_proj(state, "text_proj.", str(weights))
    with torch.device("meta"):
        expected = {k: v.shape for k, v in StageLM(config.lm).state_dict().items()}
    for key in state:
        if not key.startswith(("lm.", "text_proj.")):
            raise CheckpointError(f"{weights}: unexpected tensor {key!r}")
    check_tensors(lm_state, expected, str(weights), prefix="lm.")
    return assemble(config, lm_state, proj, base_dir=folder)


def load_hf(folder: Path, codec: str | None = None, text: str | None = None, tokenizer: str | None = None, name: str | None = None):
    """A transformers MusicGen folder (save_pretrained), text and audio encoders included."""
    from transformers import MusicgenConfig

    try:  # transformers >= 5 validates config fields with huggingface_hub's strict dataclasses
        from huggingface_hub.errors import StrictDataclassError
    except ImportError:  # an older huggingface_hub: those checks raise ValueError / TypeError
        StrictDataclassError = ValueError  # type: ignore[assignment,misc]
    try:
        hf = MusicgenConfig.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, StrictDataclassError) as err:  # unreadable, or the wrong fields
        raise CheckpointError(f"{folder}: unreadable MusicGen config ({str(err).splitlines()[0][:160]})") from None
    # MusicgenConfig types its sub-configs as `dict | PreTrainedConfig | None`; loading builds them
    # as these config classes.
    dec = cast("MusicgenDecoderConfig", hf.decoder)
    audio = cast("EncodecConfig", hf.audio_encoder)
    text_config = cast("T5Config", hf.text_encoder)
    if dec.audio_channels != 1:
        raise CheckpointError(f"{folder}: stereo MusicGen models are not supported (audio_channels={dec.audio_channels})")
    lm = LMConfig(
        dim=dec.hidden_size,
        num_layers=dec.num_hidden_layers,
        num_heads=dec.num_attention_heads,
        ffn_dim=dec.ffn_dim,
        num_codebooks=dec.num_codebooks,
        codebook_size=dec.vocab_size,
        layout="musicgen",
    )
    if dec.activation_function != "gelu" or getattr(dec, "scale_embedding", False):
        raise CheckpointError(f"{folder}: unsupported decoder variant (activation {dec.activation_function!r})")
    if audio.audio_channels != 1:
        raise CheckpointError(f"{folder}: stereo EnCodec is not supported")
    state = read_hf_weights(folder)
    what = str(folder)
    identity = None
    if text_config.d_model == lm.dim:
        identity = {"weight": torch.eye(lm.dim), "bias": torch.zeros(lm.dim)}  # used if this model has no projection
    parts = remap(HF_KEYS, state, lm, what, proj_fallback=identity)
    lm_state, proj = parts.lm, parts.proj
    # The frozen parts come from the same file ("embedded") unless overridden.
    t5_state = None if text else parts.text
    codec_state = None if codec else parts.codec
    if t5_state is None and not text:
        raise CheckpointError(f"{what}: missing tensor 'text_encoder.shared.weight'")
    if codec_state is None and not codec:
        raise CheckpointError(f"{what}: missing tensor 'audio_encoder.quantizer.layers.0.codebook.embed'")
    tok_source = tokenizer or (str(folder) if _has_tokenizer(folder) else T5_BASE)
    config = StageConfig(
        lm=lm,
        codec=CodecConfig(source=codec or EMBEDDED, sample_rate=audio.sampling_rate, frame_rate=int(audio.frame_rate),
                          num_codebooks=lm.num_codebooks, codebook_size=audio.codebook_size),
        text=TextConfig(source=text or EMBEDDED, tokenizer=tok_source, dim=text_config.d_model),
        name=name or folder.name,
    )
    # The frozen parts are built from the folder's own sub-configs, not inferred from the tensors.
    return assemble(config, lm_state, proj, codec_state=codec_state, t5_state=t5_state,
                    codec_config=hf.audio_encoder, t5_config=hf.text_encoder)


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / f).exists() for f in ("tokenizer.json", "spiece.model", "tokenizer_config.json"))


def infer_lm_config(
    state: Mapping[str, Tensor],
    emb: str,
    layer_key: str,
    ffn_key: str,
    layout: str,
    what: str,
    heads: int | None = None,
    layers: int | None = None,
) -> LMConfig:
    """Infer the decoder shape from tensors. Heads are not visible in the shapes: MusicGen uses
    64-dim heads (audiocraft, §2.3: attn_dim_head=64), so heads = dim // 64 unless given."""
    tables = sorted(int(m.group(1)) for k in state if (m := re.fullmatch(emb.replace("{k}", r"(\d+)"), k)))
    if not tables:
        raise CheckpointError(f"{what}: missing tensor {emb.format(k=0)!r}")
    first = state[emb.format(k=0)]
    dim = first.shape[1]
    if layers is None:
        idx = {int(m.group(1)) for k in state if (m := re.match(layer_key, k))}
        layers = len(idx)
    ffn = state.get(ffn_key)
    if ffn is None:
        raise CheckpointError(f"{what}: missing tensor {ffn_key!r}")
    rows = first.shape[0]
    codebook_size = rows - 2 if layout == "stage" else rows - 1
    try:
        return LMConfig(dim=dim, num_layers=layers, num_heads=heads or max(1, dim // 64), ffn_dim=ffn.shape[0],
                        num_codebooks=len(tables), codebook_size=codebook_size, layout=layout)
    except ConfigError as err:
        raise CheckpointError(f"{what}: {err}") from None


def load_authors(path: Path, codec: str | None = None, text: str | None = None, tokenizer: str | None = None):
    """The authors' `stage-*.safetensors`: LM (x-transformers names), T5 projection, and usually
    the frozen T5 and EnCodec weights too (§7.4). Loaded strictly; the pad row is re-zeroed."""
    state = read_safetensors(path)
    what = str(path)
    if not any(k.startswith("lm.decoder.") for k in state):
        raise CheckpointError(f"{what}: not a STAGE checkpoint (no 'lm.decoder.*' tensors)")
    n_sub = len({int(m.group(1)) for k in state if (m := re.match(r"lm\.decoder\.attn_layers\.layers\.(\d+)\.", k))})
    if n_sub % 3:
        raise CheckpointError(f"{what}: {n_sub} sublayers is not a whole number of (self, cross, ff) blocks")
    lm = infer_lm_config(state, "lm.decoder.token_emb.emb.{k}.weight", r"$^", "lm.decoder.attn_layers.layers.2.1.ff.0.0.weight",
                         "stage", what, layers=n_sub // 3)
    parts = remap(AUTHORS_KEYS, state, lm, what)
    lm_state, proj, t5_state = parts.lm, parts.proj, parts.text
    codec_state = audiocraft_encodec_to_hf(parts.codec) if parts.codec else None
    text_dim = proj["weight"].shape[1]
    c, t = _sources(CodecConfig(), TextConfig(dim=text_dim), codec, text, tokenizer)
    if codec is not None:
        codec_state = None
    if text is not None:
        t5_state = None
    config = StageConfig(lm=lm, codec=c, text=t, name=path.stem)
    return assemble(config, lm_state, proj, codec_state=codec_state, t5_state=t5_state)


def load_audiocraft(path: Path, codec: str | None = None, text: str | None = None, tokenizer: str | None = None):
    """An audiocraft MusicGen export (`state_dict.bin`: {'best_state': ..., 'xp.cfg': yaml})."""
    pkg = read_torch(path)
    what = str(path)
    if not isinstance(pkg, dict) or "best_state" not in pkg:
        raise CheckpointError(f"{what}: not an audiocraft MusicGen export (no 'best_state')")
    state = pkg["best_state"]
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{what}: 'best_state' is not a flat tensor dict")
    heads, layers = None, None
    cfg_text = pkg.get("xp.cfg")
    if isinstance(cfg_text, str):
        import yaml

        try:
            xp = yaml.safe_load(cfg_text) or {}
            tlm = xp.get("transformer_lm", {}) or {}
            heads, layers = tlm.get("num_heads"), tlm.get("num_layers")
        except yaml.YAMLError:
            pass
    lm = infer_lm_config(state, "emb.{k}.weight", r"transformer\.layers\.(\d+)\.", "transformer.layers.0.linear1.weight",
                         "musicgen", what, heads=heads, layers=layers)
    parts = remap(AUDIOCRAFT_KEYS, state, lm, what)
    lm_state, proj = parts.lm, parts.proj
    c, t = _sources(CodecConfig(), TextConfig(dim=proj["weight"].shape[1]), codec, text, tokenizer)
    config = StageConfig(lm=lm, codec=c, text=t, name=path.parent.name if path.stem == "state_dict" else path.stem)
    return assemble(config, lm_state, proj)
