"""T5 text conditioner (docs/method.md §2.4).

A frozen T5 encoder turns prompts into hidden states; a trained `Linear(text_dim -> D)` projects
them to the LM width; the result is multiplied by the token mask. Empty or None prompts get an
all-False mask, which the LM turns into "attend to one zero vector" (the CFG null condition:
cross-attention then contributes exactly zero, as in audiocraft, HF MusicGen and STAGE).

The tokenizer pads to the longest prompt and never truncates; prompts over `max_tokens` tokens
are refused with a clear error rather than silently cut.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from stage.errors import StageError

if TYPE_CHECKING:
    from transformers import T5EncoderModel


@dataclass
class TextCondition:
    """Projected text states for cross-attention.

    states: [B, L, D] (L text tokens; already multiplied by the mask). mask: [B, L] bool, True =
    real token.
    A row with no True entry is a null condition.
    """

    states: Tensor
    mask: Tensor

    @property
    def batch_size(self) -> int:
        return self.states.shape[0]

    def repeat(self, n: int) -> TextCondition:
        """Repeat every row n times in a block: [a, b] -> [a, a, ..., b, b, ...]."""
        return TextCondition(self.states.repeat_interleave(n, 0), self.mask.repeat_interleave(n, 0))

    @staticmethod
    def null(batch_size: int, dim: int, device=None, dtype=torch.float32) -> TextCondition:
        """The unconditional text: one zero vector per row, masked out (§2.4 null_condition)."""
        return TextCondition(
            torch.zeros(batch_size, 1, dim, device=device, dtype=dtype),
            torch.zeros(batch_size, 1, dtype=torch.bool, device=device),
        )

    @staticmethod
    def cat(conditions: Sequence[TextCondition]) -> TextCondition:
        """Stack along the batch, right-padding the token axis with masked zeros."""
        width = max(c.states.shape[1] for c in conditions)
        states, masks = [], []
        for c in conditions:
            pad = width - c.states.shape[1]
            states.append(nn.functional.pad(c.states, (0, 0, 0, pad)))
            masks.append(nn.functional.pad(c.mask, (0, pad), value=False))
        return TextCondition(torch.cat(states), torch.cat(masks))


def word_dropout(text: str, p: float, rng: random.Random) -> str:
    """Drop each space-separated word independently with probability p (§2.4, training only)."""
    if p <= 0 or not text:
        return text
    return " ".join(w for w in text.split(" ") if rng.random() >= p)


class TextConditioner(nn.Module):
    """Prompts -> `TextCondition`, with a frozen T5 encoder and a trained output projection.

    encoder: a transformers `T5EncoderModel` (frozen, always fp32 and eval).
    tokenizer: the matching transformers tokenizer.
    dim: the LM width D. `proj` maps T5's width to D and is trained with the LM.
    """

    def __init__(self, encoder: T5EncoderModel, tokenizer, dim: int, max_tokens: int = 512):
        super().__init__()
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.proj = nn.Linear(encoder.config.d_model, dim)
        self.encoder.requires_grad_(False)
        self.encoder.eval()

    def train(self, mode: bool = True) -> TextConditioner:
        super().train(mode)
        self.encoder.eval()  # T5 is frozen: never dropout, whatever the trainer does
        return self

    @property
    def dim(self) -> int:
        return self.proj.out_features

    def tokenize(self, prompts: Sequence[str | None]) -> tuple[Tensor, Tensor]:
        """Token ids and mask [B, L]; None and "" rows get an all-False mask."""
        texts = ["" if p is None else str(p) for p in prompts]
        batch = self.tokenizer(texts, padding=True, return_tensors="pt")
        ids, mask = batch["input_ids"], batch["attention_mask"].bool()
        if ids.shape[1] > self.max_tokens:
            longest = max(range(len(texts)), key=lambda i: int(mask[i].sum()))
            raise StageError(
                f"prompt {longest} is {int(mask[longest].sum())} tokens long; the limit is {self.max_tokens}"
            )
        empty = torch.tensor([t.strip() == "" for t in texts])
        mask[empty] = False
        return ids, mask

    def forward(self, prompts: Sequence[str | None]) -> TextCondition:
        """prompts: B strings (None or "" = no text). Returns states [B, L, D], mask [B, L]."""
        device = self.proj.weight.device
        ids, mask = self.tokenize(prompts)
        ids, mask = ids.to(device), mask.to(device)
        with torch.no_grad(), torch.autocast(device.type, enabled=False):
            hidden = self.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state.float()
        states = self.proj(hidden.to(self.proj.weight.dtype))  # [B, L, D]
        states = states * mask[..., None].to(states.dtype)
        return TextCondition(states, mask)


def encoder_t5_config(vocab_size: int, d_model: int, d_kv: int, d_ff: int, num_heads: int, buckets: int):
    """A 2-layer ReLU T5 encoder config with no dropout (pad 0, eos 1) and T5's default maximum
    relative distance (128), so the config can be inferred back from the tensors."""
    from transformers import T5Config

    # decoder_start_token_id is no T5Config field: transformers' configs take extra keyword arguments
    # (@strict(accept_kwargs=True)), which their dataclass-style signature does not show.
    return T5Config(  # type: ignore[call-arg]
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=d_kv,
        d_ff=d_ff,
        num_layers=2,
        num_heads=num_heads,
        relative_attention_num_buckets=buckets,
        relative_attention_max_distance=128,
        dropout_rate=0.0,
        feed_forward_proj="relu",
        is_encoder_decoder=False,
        use_cache=False,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )


def tiny_t5_config(vocab_size: int, d_model: int):
    """A 2-layer T5 encoder config for tests (random weights, no download)."""
    return encoder_t5_config(vocab_size, d_model, d_kv=8, d_ff=2 * d_model, num_heads=d_model // 8, buckets=8)


def mini_t5_config(vocab_size: int, d_model: int = 128):
    """STAGE-mini's T5 encoder config: 2 layers of 4 x 32-dim heads, FFN 4 x d_model, T5's
    relative positions (32 buckets up to distance 128). Its weights are seeded random and frozen
    (STAGE freezes T5, §2.4): a fixed embedding of the words that the decoder's cross-attention
    learns to read. `scripts/make_mini_text.py` writes it to `stage/assets/stage-mini-text`."""
    return encoder_t5_config(vocab_size, d_model, d_kv=d_model // 4, d_ff=4 * d_model, num_heads=4, buckets=32)
