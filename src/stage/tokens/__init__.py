"""Token-level pieces: EnCodec wrapper, the delay pattern and the STAGE prefix layout.

Special ids (docs/method.md §2.3): per codebook the input vocabulary is `codebook_size + 2`.
The audio codes are 0..codebook_size-1, then one pad id and one context id. For every released
MusicGen/STAGE model codebook_size is 2048, which gives the constants below. Functions take the
ids as arguments (defaulting to these) so that a model with another codebook size works too.
"""

CODEBOOK_SIZE = 2048
PAD_ID = 2048  # delay-pattern filler, left padding, dropped context, and MusicGen's BOS step.
CONTEXT_ID = 2049  # STAGE's learned context (separator) token between the prefix and the stem.
UNSET_ID = -1  # a slot still to be generated (never fed to the model).

__all__ = ["CODEBOOK_SIZE", "PAD_ID", "CONTEXT_ID", "UNSET_ID"]
