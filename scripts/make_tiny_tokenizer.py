"""Regenerate the tiny T5 tokenizer shipped in src/stage/assets/tiny_t5_tokenizer.

It is a SentencePiece unigram model trained on a few music captions, converted once to the
`tokenizers` format (tokenizer.json) so loading it needs neither protobuf nor a download.
Running this script needs `sentencepiece` and `protobuf` (pip install protobuf).

    python scripts/make_tiny_tokenizer.py
"""

import pathlib
import tempfile

import sentencepiece as spm
from transformers import T5Tokenizer

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
