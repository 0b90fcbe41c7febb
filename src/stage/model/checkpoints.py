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
one-line `CheckpointError` that names the first offending key in the source's own naming.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from stage.errors import CheckpointError, ConfigError
from stage.model.config import T5_BASE, CodecConfig, LMConfig, StageConfig, TextConfig, preset
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

# Short names for well-known hub models.
HUB_ALIASES = {
    "musicgen-small": "facebook/musicgen-small",
    "musicgen-medium": "facebook/musicgen-medium",
    "musicgen-large": "facebook/musicgen-large",
}
HF_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt"]
CONTEXT_ROW_SEED = 2049
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
    except Exception as err:
        text = str(err)
        if "weights_only" in text or "Unsupported global" in text or "GLOBAL" in text:
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
        state = read_torch(binary)
        if not isinstance(state, dict):
            raise CheckpointError(f"{binary}: expected a state dict")
        return state
    raise CheckpointError(f"{folder}: no model.safetensors or pytorch_model.bin found")


# --------------------------------------------------------------------------- key remapping


@dataclass(frozen=True)
class Part:
    """One source tensor (or a row slice of it) that goes into a target tensor."""

    key: str
    rows: slice | None = None


@dataclass(frozen=True)
class Rule:
    """Target tensor <- the concatenation (along dim 0) of source parts."""

    target: str
    parts: tuple[Part, ...]


def _p(*keys: str) -> tuple[Part, ...]:
    return tuple(Part(k) for k in keys)


def hf_rules(config: LMConfig) -> Iterator[Rule]:
    """transformers MusicgenForConditionalGeneration names -> StageLM names."""
    P = "decoder.model.decoder."
    for k in range(config.num_codebooks):
        yield Rule(f"emb.{k}.weight", _p(f"{P}embed_tokens.{k}.weight"))
        yield Rule(f"heads.{k}.weight", _p(f"decoder.lm_heads.{k}.weight"))
    for i in range(config.num_layers):
        L = f"{P}layers.{i}."
        B = f"blocks.{i}."
        for ours, theirs in (
            ("self_norm", "self_attn_layer_norm"),
            ("cross_norm", "encoder_attn_layer_norm"),
            ("ff_norm", "final_layer_norm"),
        ):
            for w in ("weight", "bias"):
                yield Rule(f"{B}{ours}.{w}", _p(f"{L}{theirs}.{w}"))
        yield Rule(f"{B}self_attn.qkv.weight", _p(*(f"{L}self_attn.{x}_proj.weight" for x in "qkv")))
        yield Rule(f"{B}self_attn.out.weight", _p(f"{L}self_attn.out_proj.weight"))
        yield Rule(f"{B}cross_attn.q.weight", _p(f"{L}encoder_attn.q_proj.weight"))
        yield Rule(f"{B}cross_attn.kv.weight", _p(f"{L}encoder_attn.k_proj.weight", f"{L}encoder_attn.v_proj.weight"))
        yield Rule(f"{B}cross_attn.out.weight", _p(f"{L}encoder_attn.out_proj.weight"))
        yield Rule(f"{B}ff_in.weight", _p(f"{L}fc1.weight"))
        yield Rule(f"{B}ff_out.weight", _p(f"{L}fc2.weight"))
    for w in ("weight", "bias"):
        yield Rule(f"norm.{w}", _p(f"{P}layer_norm.{w}"))


def authors_rules(config: LMConfig) -> Iterator[Rule]:
    """The authors' x-transformers names (docs/method.md §7.4) -> StageLM names.

    Sublayer j of `attn_layers.layers` is self-attention (j = 3i), cross-attention (3i + 1) or
    feed-forward (3i + 2) of block i; `.0.0` is its pre-norm and `.1` the sublayer itself.
    """
    P = "lm.decoder."
    A = f"{P}attn_layers.layers."
    for k in range(config.num_codebooks):
        yield Rule(f"emb.{k}.weight", _p(f"{P}token_emb.emb.{k}.weight"))
        yield Rule(f"heads.{k}.weight", _p(f"{P}to_logits.linears.{k}.weight"))
    for i in range(config.num_layers):
        B = f"blocks.{i}."
        sa, ca, ff = 3 * i, 3 * i + 1, 3 * i + 2
        for ours, j in (("self_norm", sa), ("cross_norm", ca), ("ff_norm", ff)):
            for w in ("weight", "bias"):
                yield Rule(f"{B}{ours}.{w}", _p(f"{A}{j}.0.0.{w}"))
        yield Rule(f"{B}self_attn.qkv.weight", _p(*(f"{A}{sa}.1.to_{x}.weight" for x in "qkv")))
        yield Rule(f"{B}self_attn.out.weight", _p(f"{A}{sa}.1.to_out.weight"))
        yield Rule(f"{B}cross_attn.q.weight", _p(f"{A}{ca}.1.to_q.weight"))
        yield Rule(f"{B}cross_attn.kv.weight", _p(f"{A}{ca}.1.to_k.weight", f"{A}{ca}.1.to_v.weight"))
        yield Rule(f"{B}cross_attn.out.weight", _p(f"{A}{ca}.1.to_out.weight"))
        yield Rule(f"{B}ff_in.weight", _p(f"{A}{ff}.1.ff.0.0.weight"))
        yield Rule(f"{B}ff_out.weight", _p(f"{A}{ff}.1.ff.2.weight"))
    for w in ("weight", "bias"):
        yield Rule(f"norm.{w}", _p(f"{P}attn_layers.final_norm.{w}"))


def audiocraft_rules(config: LMConfig) -> Iterator[Rule]:
    """audiocraft LM names (`best_state`, docs/method.md §7.2) -> StageLM names.

    audiocraft fuses q/k/v as `in_proj_weight` rows [q; k; v], for self- and cross-attention.
    """
    D = config.dim
    for k in range(config.num_codebooks):
        yield Rule(f"emb.{k}.weight", _p(f"emb.{k}.weight"))
        yield Rule(f"heads.{k}.weight", _p(f"linears.{k}.weight"))
    for i in range(config.num_layers):
        L = f"transformer.layers.{i}."
        B = f"blocks.{i}."
        for ours, theirs in (("self_norm", "norm1"), ("cross_norm", "norm_cross"), ("ff_norm", "norm2")):
            for w in ("weight", "bias"):
                yield Rule(f"{B}{ours}.{w}", _p(f"{L}{theirs}.{w}"))
        yield Rule(f"{B}self_attn.qkv.weight", _p(f"{L}self_attn.in_proj_weight"))
        yield Rule(f"{B}self_attn.out.weight", _p(f"{L}self_attn.out_proj.weight"))
        cross = f"{L}cross_attention.in_proj_weight"
        yield Rule(f"{B}cross_attn.q.weight", (Part(cross, slice(0, D)),))
        yield Rule(f"{B}cross_attn.kv.weight", (Part(cross, slice(D, 3 * D)),))
        yield Rule(f"{B}cross_attn.out.weight", _p(f"{L}cross_attention.out_proj.weight"))
        yield Rule(f"{B}ff_in.weight", _p(f"{L}linear1.weight"))
        yield Rule(f"{B}ff_out.weight", _p(f"{L}linear2.weight"))
    for w in ("weight", "bias"):
        yield Rule(f"norm.{w}", _p(f"out_norm.{w}"))


def apply_rules(rules: Iterator[Rule], source: Mapping[str, Tensor], config: LMConfig, what: str) -> tuple[dict[str, Tensor], set[str]]:
    """Assemble StageLM tensors from `source`; check every shape. Returns (state, used keys).

    Embedding tables with codebook_size + 1 rows (MusicGen: codes + BOS/pad) get the context row
    appended (Kaiming-normal, like the authors' extension, §2.3).
    """
    with torch.device("meta"):
        expected = {k: v.shape for k, v in StageLM(config).state_dict().items()}
    state: dict[str, Tensor] = {}
    used: set[str] = set()
    for rule in rules:
        pieces = []
        for part in rule.parts:
            if part.key not in source:
                raise CheckpointError(f"{what}: missing tensor {part.key!r}")
            t = source[part.key]
            if part.rows is not None:
                if t.dim() != 2 or t.shape[0] < part.rows.stop:
                    raise CheckpointError(f"{what}: tensor {part.key!r} has shape {tuple(t.shape)}, too small")
                t = t[part.rows]
            pieces.append(t)
            used.add(part.key)
        tensor = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=0)
        want = expected[rule.target]
        if (
            rule.target.startswith("emb.")
            and tensor.dim() == 2
            and tensor.shape[0] == config.codebook_size + 1
            and tensor.shape[1] == want[1]
        ):
            # Seeded per table, so that loading the same file twice gives the same model.
            g = torch.Generator().manual_seed(CONTEXT_ROW_SEED + int(rule.target.split(".")[1]))
            row = torch.randn(1, want[1], generator=g) * (2.0 / want[1]) ** 0.5  # Kaiming normal, fan_in = D
            tensor = torch.cat([tensor, row.to(tensor.dtype)])
        if tuple(tensor.shape) != tuple(want):
            raise CheckpointError(
                f"{what}: tensor {rule.parts[0].key!r} gives shape {tuple(tensor.shape)} for {rule.target}, expected {tuple(want)}"
            )
        state[rule.target] = tensor
    return state, used


def check_unused(source: Mapping[str, Tensor], used: set[str], what: str, ignore: tuple[str, ...] = ()) -> None:
    """Refuse any source tensor that no rule consumed (naming the first one, in file order)."""
    for key in source:
        if key not in used and not key.startswith(ignore):
            raise CheckpointError(f"{what}: unexpected tensor {key!r}")


def strip_prefix(source: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in source.items() if k.startswith(prefix)}


def audiocraft_encodec_to_hf(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """audiocraft EnCodec names (§7.3) -> transformers EncodecModel names.

    `{encoder,decoder}.model.{i}` -> `.layers.{i}`; `conv.conv` / `convtr.convtr` -> `conv`;
    `quantizer.vq.layers.{k}._codebook` -> `quantizer.layers.{k}.codebook`; old weight-norm
    names `weight_g` / `weight_v` -> `parametrizations.weight.original0` / `original1`.
    """
    out = {}
    for key, value in state.items():
        k = re.sub(r"^(encoder|decoder)\.model\.", r"\1.layers.", key)
        k = k.replace(".conv.conv.", ".conv.").replace(".convtr.convtr.", ".conv.")
        k = k.replace("quantizer.vq.layers.", "quantizer.layers.").replace("._codebook.", ".codebook.")
        k = re.sub(r"\.weight_g$", ".parametrizations.weight.original0", k)
        k = re.sub(r"\.weight_v$", ".parametrizations.weight.original1", k)
        out[k] = value
    return out


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
    from stage.model.registry import resolve_known

    if isinstance(device, str):  # a bad name fails here, before any weights are read
        device = resolve_device(device)
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


def _check_proj(state: Mapping[str, Tensor], prefix: str, what: str) -> dict[str, Tensor]:
    out = {}
    for w in ("weight", "bias"):
        key = f"{prefix}{w}"
        if key not in state:
            raise CheckpointError(f"{what}: missing tensor {key!r}")
        out[w] = state[key]
    return out


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
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"{folder / CONFIG_FILE}: not a stage checkpoint (format {meta.get('format') if isinstance(meta, dict) else None!r})"
        )
    if meta.get("version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{folder}: checkpoint format version {meta['version']} is newer than this stage ({FORMAT_VERSION}); upgrade stage"
        )
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
    proj = _check_proj(state, "text_proj.", str(weights))
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

    try:
        hf = MusicgenConfig.from_pretrained(str(folder), local_files_only=True)
    except Exception as err:
        raise CheckpointError(f"{folder}: unreadable MusicGen config ({str(err).splitlines()[0][:160]})") from None
    dec = hf.decoder
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
    audio = hf.audio_encoder
    if audio.audio_channels != 1:
        raise CheckpointError(f"{folder}: stereo EnCodec is not supported")
    state = read_hf_weights(folder)
    what = str(folder)
    lm_state, used = apply_rules(hf_rules(lm), state, lm, what)
    if "enc_to_dec_proj.weight" in state:
        proj = _check_proj(state, "enc_to_dec_proj.", what)
        used |= {"enc_to_dec_proj.weight", "enc_to_dec_proj.bias"}
    elif hf.text_encoder.d_model == lm.dim:
        proj = {"weight": torch.eye(lm.dim), "bias": torch.zeros(lm.dim)}  # this model has no projection
    else:
        raise CheckpointError(f"{what}: missing tensor 'enc_to_dec_proj.weight'")
    check_unused(state, used, what, ignore=("text_encoder.", "audio_encoder.", "decoder.model.decoder.embed_positions."))
    # The frozen parts come from the same file ("embedded") unless overridden.
    t5_state = None if text else strip_prefix(state, "text_encoder.") or None
    codec_state = None if codec else strip_prefix(state, "audio_encoder.") or None
    if t5_state is None and not text:
        raise CheckpointError(f"{what}: missing tensor 'text_encoder.shared.weight'")
    if codec_state is None and not codec:
        raise CheckpointError(f"{what}: missing tensor 'audio_encoder.quantizer.layers.0.codebook.embed'")
    tok_source = tokenizer or (str(folder) if _has_tokenizer(folder) else T5_BASE)
    config = StageConfig(
        lm=lm,
        codec=CodecConfig(source=codec or EMBEDDED, sample_rate=audio.sampling_rate, frame_rate=int(audio.frame_rate),
                          num_codebooks=lm.num_codebooks, codebook_size=audio.codebook_size),
        text=TextConfig(source=text or EMBEDDED, tokenizer=tok_source, dim=hf.text_encoder.d_model),
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
    lm_state, used = apply_rules(authors_rules(lm), state, lm, what)
    proj_prefix = "condition_provider.embedders.description.output_proj."
    proj = _check_proj(state, proj_prefix, what)
    used |= {proj_prefix + "weight", proj_prefix + "bias"}
    t5_prefix = "condition_provider.embedders.description.t5."
    check_unused(state, used, what, ignore=(t5_prefix, "encodec_model."))
    t5_state = strip_prefix(state, t5_prefix) or None
    codec_state = audiocraft_encodec_to_hf(strip_prefix(state, "encodec_model.")) or None
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
    lm_state, used = apply_rules(audiocraft_rules(lm), state, lm, what)
    proj_prefix = "condition_provider.conditioners.description.output_proj."
    proj = _check_proj(state, proj_prefix, what)
    used |= {proj_prefix + "weight", proj_prefix + "bias"}
    check_unused(state, used, what)
    c, t = _sources(CodecConfig(), TextConfig(dim=proj["weight"].shape[1]), codec, text, tokenizer)
    config = StageConfig(lm=lm, codec=c, text=t, name=path.parent.name if path.stem == "state_dict" else path.stem)
    return assemble(config, lm_state, proj)
