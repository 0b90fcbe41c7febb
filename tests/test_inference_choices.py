"""Where stage's inference differs from the authors' on purpose (README "Where we deviate",
docs/method.md §9), pinned by tests: a mix longer than the stem is cropped to the stem's window,
a whitespace-only prompt is no text, and the fast T5 tokenizer gives sentencepiece's ids on the
caption styles the authors trained with."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import stage
from stage.model.sources import load_tokenizer

RATE = 32_000


def _mix(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal(int(seconds * RATE))).astype(np.float32)


def test_a_mix_longer_than_the_stem_is_cropped_to_the_stems_window(tiny_model):
    mix = _mix(3.0)
    options = stage.GenerationOptions(seconds=1.0, seed=5)
    long = stage.generate_stems(tiny_model, mix, RATE, options)
    cropped = stage.generate_stems(tiny_model, mix[:RATE], RATE, options)
    assert long.stems.shape == cropped.stems.shape == (1, 1, RATE)
    np.testing.assert_array_equal(long.stems, cropped.stems)
    # the part of the mix after the stem's end is not read at all: changing it changes nothing ...
    other_tail = np.concatenate([mix[:RATE], _mix(2.0, seed=9)])
    tail = stage.generate_stems(tiny_model, other_tail, RATE, options)
    np.testing.assert_array_equal(tail.stems, long.stems)
    # ... while the part inside the window is read (the check above can fail)
    other_head = np.concatenate([_mix(1.0, seed=9), mix[RATE:]])
    head = stage.generate_stems(tiny_model, other_head, RATE, options)
    assert not np.array_equal(head.stems, long.stems)


@pytest.mark.parametrize("blank", [" ", "   ", "\t\n"])
def test_a_whitespace_only_prompt_is_no_text(tiny_model, blank):
    ids, mask = tiny_model.text.tokenize([blank, "", None, "rock drums"])
    assert not mask[:3].any() and mask[3].any()
    options = stage.GenerationOptions(seconds=0.5, seed=2)
    none = stage.generate_stems(tiny_model, options=replace(options, prompt=None))
    white = stage.generate_stems(tiny_model, options=replace(options, prompt=blank))
    text = stage.generate_stems(tiny_model, options=replace(options, prompt="rock drums"))
    np.testing.assert_array_equal(white.stems, none.stems)
    assert not np.array_equal(text.stems, none.stems)


# The authors' caption style (docs/method.md §6.5 step 9) and stage's own
# (the synthetic band's captions, free-text studio prompts).
CAPTIONS = [
    "Genres: Rock, Hard Rock, Arena Rock. Moods: epic, melodic, energetic.",
    "Genre(s): Funk, Soul. Mood(s): groovy, happy. ",
    "Genre: . Mood(s): dark, calm. ",
    "Genres: Hip Hop. Moods: laid-back.",
    "Genres: Electronic, Drum and Bass, Synth-pop. Moods: energetic, dark, hypnotic.",
    "a funky drum groove with a tight snare, 96 bpm",
    "Jazz ballad; brushed drums (soft) -- 70 BPM!",
]
PROBES = CAPTIONS + [
    "  Genres:  Rock,Pop.  Moods: upbeat  ",  # doubled and leading spaces, no space after a comma
    "Genres: Música Popular Brasileira. Moods: café, naïve.",  # accents: NFKC normalisation
    "Ｇｅｎｒｅｓ： Ｒｏｃｋ",  # full-width forms
    "Moods: 😀",  # outside the vocabulary: <unk>
]


def test_fast_t5_tokenizer_matches_sentencepiece_on_captions(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    pytest.importorskip("google.protobuf")  # transformers' slow-to-fast conversion reads the model proto
    from transformers import T5Tokenizer

    # a real sentencepiece unigram model with T5's special ids (pad 0, eos 1, unk 2, no bos) and
    # sentencepiece's default nmt_nfkc normaliser, trained on the caption styles
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CAPTIONS * 30), model_prefix=str(tmp_path / "spiece"), vocab_size=120,
        model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False, minloglevel=2,
    )
    reference = spm.SentencePieceProcessor(model_file=str(tmp_path / "spiece.model"))
    # the hub's t5-base ships tokenizer.json converted from its spiece.model; do the same, then
    # load the folder the way stage loads the authors' T5 tokenizer
    folder = tmp_path / "t5"
    T5Tokenizer.from_pretrained(str(tmp_path)).save_pretrained(str(folder))
    assert (folder / "tokenizer.json").exists()
    fast = load_tokenizer(str(folder))
    for text in PROBES:
        expected = reference.encode(text) + [1]  # the slow T5Tokenizer: sentencepiece ids, then </s>
        assert fast(text)["input_ids"] == expected, text
    assert reference.unk_id() in reference.encode(PROBES[-1])  # the probes reach <unk> too
