"""Regenerate the tiny T5 tokenizer shipped in src/stage/assets/tiny_t5_tokenizer.

It is a SentencePiece unigram model trained on a few music captions, converted once to the
`tokenizers` format (tokenizer.json) so loading it needs neither protobuf nor a download.
Running this script needs `sentencepiece` and `protobuf` (pip install protobuf).

    python scripts/make_tiny_tokenizer.py

`unigram_tokenizer` (used by scripts/make_mini_text.py for STAGE-mini's bigger tokenizer) trains
the same kind of model but builds the T5 tokenizer straight from the SentencePiece vocabulary
and scores, so it needs no protobuf.
"""

import pathlib
import tempfile

import sentencepiece as spm
from transformers import T5Tokenizer


def unigram_tokenizer(lines, vocab_size):
    """A T5 tokenizer (<pad> 0, </s> 1, <unk> 2, no extra ids) with a SentencePiece unigram
    vocabulary of about `vocab_size` pieces trained on `lines`. Every character of `lines` gets a
    piece (character_coverage 1.0), so text made of those characters never maps to <unk>; digits
    are split one by one. No normaliser: transformers' T5Tokenizer rebuilds its pipeline from
    the vocabulary when loading, so one set here would be saved but not loaded."""
    with tempfile.TemporaryDirectory() as tmp:
        corpus = pathlib.Path(tmp) / "corpus.txt"
        corpus.write_text("\n".join(lines) + "\n")
        spm.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=f"{tmp}/spiece", vocab_size=vocab_size, model_type="unigram",
            pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, hard_vocab_limit=False,
            split_digits=True, num_threads=1, minloglevel=2,
        )
        vocab = []
        for line in pathlib.Path(f"{tmp}/spiece.vocab").read_text().splitlines():
            piece, score = line.rsplit("\t", 1)
            vocab.append((piece, float(score)))
    return T5Tokenizer(vocab=vocab, extra_ids=0)


CAPTIONS = [
    "rock drums with a heavy kick and crashing cymbals",
    "funky slap bass line in a minor key",
    "Genres: Rock, Hard Rock, Arena Rock. Moods: epic, melodic, energetic.",
    "Genres: Hip Hop, Funk. Moods: groovy, dark, chill.",
    "Genres: Electronic, House, Techno. Moods: upbeat, happy, party.",
    "Genres: Jazz, Blues, Soul. Moods: relaxing, romantic, sad.",
    "a jazz trio with brushed snare and walking bass",
    "electronic dance music at 128 bpm with a four on the floor kick",
    "acoustic guitar and piano ballad, slow and warm",
    "lo-fi hip hop beat with vinyl crackle",
    "metal double kick drums, fast and aggressive",
    "reggae one drop groove with a deep bass",
    "latin percussion, congas and timbales",
    "country shuffle with a twangy bass",
    "ambient pads and soft synth bass, dreamy",
    "punk rock drums, loud and raw",
]

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "src" / "stage" / "assets" / "tiny_t5_tokenizer"


def main():
    with tempfile.TemporaryDirectory() as tmp:
        corpus = pathlib.Path(tmp) / "captions.txt"
        corpus.write_text("\n".join(CAPTIONS * 10))
        spm.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=f"{tmp}/spiece", vocab_size=160, model_type="unigram",
            pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, hard_vocab_limit=False,
        )
        tokenizer = T5Tokenizer.from_pretrained(tmp, extra_ids=0)
        OUT.mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(str(OUT))
    print(f"wrote {OUT} ({len(tokenizer)} tokens)")


if __name__ == "__main__":
    main()
