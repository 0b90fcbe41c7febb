"""Foreign checkpoint names -> stage's names: one rule mechanism, and one table of data per format.

A `KeyTable` says where each `StageLM` tensor lives in a foreign state dict, plus where the T5
projection and the frozen T5 / EnCodec tensors are. Its entries map a StageLM key template to
the source key template(s) whose tensors are concatenated along dim 0 into it. Templates are
`str.format` patterns over:
- `{k}` the codebook (the `codebook` entries, once per codebook);
- `{i}` the decoder block (the `block` entries, once per block, under `blocks.{i}.` and the
  table's `block_prefix`); the authors' flat sublayer list also uses `{sa}`, `{ca}`, `{ff}` =
  3i, 3i + 1, 3i + 2;
- `{w}` in a target: the entry stands for both `weight` and `bias`.

For example, with HF_KEYS the block entry `"self_attn.qkv.weight": (q, k, v)` gives, for block 0,
`blocks.0.self_attn.qkv.weight` <- cat(`decoder.model.decoder.layers.0.self_attn.{q,k,v}_proj.weight`).

`remap(table, state, config, what)` applies a table and accounts for every tensor, with the same
one-line `CheckpointError` for every format: a missing tensor, a wrong shape, or a tensor that no
rule consumed, each named in the source's own naming.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from stage.errors import CheckpointError
from stage.model.config import LMConfig
from stage.model.lm import StageLM

CONTEXT_ROW_SEED = 2049
WEIGHT_AND_BIAS = ("weight", "bias")


@dataclass(frozen=True)
class Rows:
    """In a table: rows [start * D, stop * D) of one source tensor (D the model width), for fused
    q/k/v weights that stage splits."""

    key: str
    start: int
    stop: int


# One source (a key template or Rows), or several concatenated along dim 0.
Sources = str | Rows | tuple[str | Rows, ...]


@dataclass(frozen=True)
class KeyTable:
    """Where a format keeps stage's tensors (see the module docstring for the templates).

    codebook / block / final: StageLM key template -> source template(s), applied in this order.
    proj: prefix of the T5 projection (`weight`, `bias`).
    text / codec: prefixes of the frozen T5 encoder / EnCodec tensors, if the format carries them.
    ignore: prefixes of further tensors that stage recomputes rather than loads (HF's sinusoidal
    position table).
    """

    codebook: dict[str, Sources]
    block_prefix: str
    block: dict[str, Sources]
    final: dict[str, Sources]
    proj: str
    text: str | None = None
    codec: str | None = None
    ignore: tuple[str, ...] = ()


# transformers MusicgenForConditionalGeneration names.
HF_KEYS = KeyTable(
    codebook={
        "emb.{k}.weight": "decoder.model.decoder.embed_tokens.{k}.weight",
        "heads.{k}.weight": "decoder.lm_heads.{k}.weight",
    },
    block_prefix="decoder.model.decoder.layers.{i}.",
    block={
        "self_norm.{w}": "self_attn_layer_norm.{w}",
        "cross_norm.{w}": "encoder_attn_layer_norm.{w}",
        "ff_norm.{w}": "final_layer_norm.{w}",
        "self_attn.qkv.weight": ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
        "self_attn.out.weight": "self_attn.out_proj.weight",
        "cross_attn.q.weight": "encoder_attn.q_proj.weight",
        "cross_attn.kv.weight": ("encoder_attn.k_proj.weight", "encoder_attn.v_proj.weight"),
        "cross_attn.out.weight": "encoder_attn.out_proj.weight",
        "ff_in.weight": "fc1.weight",
        "ff_out.weight": "fc2.weight",
    },
    final={"norm.{w}": "decoder.model.decoder.layer_norm.{w}"},
    proj="enc_to_dec_proj.",
    text="text_encoder.",
    codec="audio_encoder.",
    ignore=("decoder.model.decoder.embed_positions.",),
)

# The authors' x-transformers names (docs/method.md §7.4). Sublayer j of `attn_layers.layers` is
# self-attention (j = 3i), cross-attention (3i + 1) or feed-forward (3i + 2) of block i; `.0.0`
# is its pre-norm and `.1` the sublayer itself.
AUTHORS_KEYS = KeyTable(
    codebook={
        "emb.{k}.weight": "lm.decoder.token_emb.emb.{k}.weight",
        "heads.{k}.weight": "lm.decoder.to_logits.linears.{k}.weight",
    },
    block_prefix="lm.decoder.attn_layers.layers.",
    block={
        "self_norm.{w}": "{sa}.0.0.{w}",
        "cross_norm.{w}": "{ca}.0.0.{w}",
        "ff_norm.{w}": "{ff}.0.0.{w}",
        "self_attn.qkv.weight": ("{sa}.1.to_q.weight", "{sa}.1.to_k.weight", "{sa}.1.to_v.weight"),
        "self_attn.out.weight": "{sa}.1.to_out.weight",
        "cross_attn.q.weight": "{ca}.1.to_q.weight",
        "cross_attn.kv.weight": ("{ca}.1.to_k.weight", "{ca}.1.to_v.weight"),
        "cross_attn.out.weight": "{ca}.1.to_out.weight",
        "ff_in.weight": "{ff}.1.ff.0.0.weight",
        "ff_out.weight": "{ff}.1.ff.2.weight",
    },
    final={"norm.{w}": "lm.decoder.attn_layers.final_norm.{w}"},
    proj="condition_provider.embedders.description.output_proj.",
    text="condition_provider.embedders.description.t5.",
    codec="encodec_model.",
)

# audiocraft LM names (`best_state`, docs/method.md §7.2). audiocraft fuses q/k/v as
# `in_proj_weight` rows [q; k; v], for self- and cross-attention.
AUDIOCRAFT_KEYS = KeyTable(
    codebook={"emb.{k}.weight": "emb.{k}.weight", "heads.{k}.weight": "linears.{k}.weight"},
    block_prefix="transformer.layers.{i}.",
    block={
        "self_norm.{w}": "norm1.{w}",
        "cross_norm.{w}": "norm_cross.{w}",
        "ff_norm.{w}": "norm2.{w}",
        "self_attn.qkv.weight": "self_attn.in_proj_weight",
        "self_attn.out.weight": "self_attn.out_proj.weight",
        "cross_attn.q.weight": Rows("cross_attention.in_proj_weight", 0, 1),
        "cross_attn.kv.weight": Rows("cross_attention.in_proj_weight", 1, 3),
        "cross_attn.out.weight": "cross_attention.out_proj.weight",
        "ff_in.weight": "linear1.weight",
        "ff_out.weight": "linear2.weight",
    },
    final={"norm.{w}": "out_norm.{w}"},
    proj="condition_provider.conditioners.description.output_proj.",
)


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


def expand(table: KeyTable, config: LMConfig) -> Iterator[Rule]:
    """The table's rules for a decoder of `config`'s shape, with every template filled in: per
    codebook, then per block, then the final norm."""

    def fill(entries: dict[str, Sources], into: str, source_prefix: str, **index: int) -> Iterator[Rule]:
        for target, sources in entries.items():
            for w in WEIGHT_AND_BIAS if "{w}" in target else ("",):
                names = {**index, "w": w}
                parts = []
                for s in sources if isinstance(sources, tuple) else (sources,):
                    if isinstance(s, Rows):
                        rows = slice(s.start * config.dim, s.stop * config.dim)
                        parts.append(Part((source_prefix + s.key).format(**names), rows))
                    else:
                        parts.append(Part((source_prefix + s).format(**names)))
                yield Rule((into + target).format(**names), tuple(parts))

    for k in range(config.num_codebooks):
        yield from fill(table.codebook, "", "", k=k)
    for i in range(config.num_layers):
        yield from fill(table.block, "blocks.{i}.", table.block_prefix, i=i, sa=3 * i, ca=3 * i + 1, ff=3 * i + 2)
    yield from fill(table.final, "", "")


@dataclass
class Remapped:
    """A foreign state dict split into stage's parts, in stage's names where stage reads them."""

    lm: dict[str, Tensor]  # StageLM names
    proj: dict[str, Tensor]  # the T5 projection: weight [D, text dim], bias [D]
    text: dict[str, Tensor] | None  # the frozen T5 encoder (HF names), None if the file has none
    codec: dict[str, Tensor] | None  # the frozen EnCodec in the file's own names, None if none


def remap(
    table: KeyTable, source: Mapping[str, Tensor], config: LMConfig, what: str, proj_fallback: dict[str, Tensor] | None = None
) -> Remapped:
    """Apply `table` to `source`, accounting for every tensor (`what` names the file in errors).

    proj_fallback: the projection to use when the file has none (None: a missing one is refused).
    """
    lm, used = apply_rules(expand(table, config), source, config, what)
    if proj_fallback is None or f"{table.proj}weight" in source:
        proj = read_proj(source, table.proj, what)
        used |= {table.proj + w for w in WEIGHT_AND_BIAS}
    else:
        proj = proj_fallback
    frozen = tuple(p for p in (table.text, table.codec) if p)
    check_unused(source, used, what, ignore=frozen + table.ignore)
    text = (strip_prefix(source, table.text) or None) if table.text else None
    codec = (strip_prefix(source, table.codec) or None) if table.codec else None
    return Remapped(lm, proj, text, codec)


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


def read_proj(state: Mapping[str, Tensor], prefix: str, what: str) -> dict[str, Tensor]:
    """The T5 projection's `weight` and `bias` under `prefix`; a missing one is refused."""
    out = {}
    for w in WEIGHT_AND_BIAS:
        key = f"{prefix}{w}"
        if key not in state:
            raise CheckpointError(f"{what}: missing tensor {key!r}")
        out[w] = state[key]
    return out


def check_unused(source: Mapping[str, Tensor], used: set[str], what: str, ignore: tuple[str, ...] = ()) -> None:
    """Refuse any source tensor that no rule consumed (naming the first one, in file order)."""
    for key in source:
        if key not in used and not key.startswith(ignore):
            raise CheckpointError(f"{what}: unexpected tensor {key!r}")


def strip_prefix(source: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The tensors under `prefix`, with it taken off their names."""
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
