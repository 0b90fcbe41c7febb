"""Write STAGE-mini's frozen text encoder to src/stage/assets/stage-mini-text (run once; the
folder is committed, so the weights never change).

The folder is a `T5EncoderModel.save_pretrained` folder (fp16 safetensors) plus its tokenizer:
- the tokenizer: a SentencePiece unigram vocabulary (~1000 pieces) trained on captions in the
  band corpus' format ("Genres: Funk. Moods: groovy, energetic.") and on free prompts ("punk
  rock drums"), so every genre, mood and instrument word is one or two pieces and no printable
  ASCII character or common accented letter maps to <unk>;
- the encoder: a seeded random 2-layer, 128-wide T5 (`stage.text.mini_t5_config`). STAGE freezes
  T5 (§2.4); a frozen random T5 is still a fixed, distinct embedding of every prompt, which the
  decoder's cross-attention (and the trained projection) learn to read.

    python scripts/make_mini_text.py            # refuses to replace an existing folder
    python scripts/make_mini_text.py --force

Needs `sentencepiece` (a stage dependency); no protobuf, no network.
"""

import argparse
import pathlib
import random
import shutil
import string
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from make_tiny_tokenizer import unigram_tokenizer  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "src" / "stage" / "assets" / "stage-mini-text"
SEED = 20_250_601
VOCAB_SIZE = 1000
LINES = 3000  # of each kind: captions, free prompts

# The band renderer's caption genres first (src/stage/data/band_score.py, copied here so that
# this script always writes the same vocabulary), then common ones users type.
GENRES = [
    "Rock", "Funk", "Disco", "Hip Hop", "Reggae", "Jazz", "Swing", "Bossa Nova", "Metal", "House", "Ballad",
    "Pop Rock", "Hard Rock", "Indie Rock", "Soul", "R&B", "Dance", "Boom Bap", "Trap", "Dub", "Roots Reggae",
    "Bebop", "Latin Jazz", "Brazilian", "Heavy Metal", "Thrash Metal", "Deep House", "Electronic", "Soft Rock",
    "Pop", "Blues", "Soul", "R&B", "Punk", "Punk Rock", "Hard Rock", "Indie", "Indie Rock", "Alternative",
    "Electronic", "Techno", "Trance", "Dance", "EDM", "Drum and Bass", "Dubstep", "Trap", "Lo-Fi", "Ambient",
    "Country", "Folk", "Latin", "Salsa", "Samba", "Afrobeat", "Ska", "Dub", "Gospel", "Classical", "Fusion",
    "Jazz Fusion", "Heavy Metal", "Grunge", "Motown", "Shuffle", "Waltz", "Breakbeat", "Garage", "Synthwave",
]
MOODS = [
    # the band renderer's moods
    "aggressive", "anthemic", "calm", "chill", "confident", "danceable", "dark", "driving", "emotional",
    "energetic", "funky", "groovy", "happy", "heavy", "hypnotic", "intense", "laid-back", "lively", "melancholic",
    "playful", "positive", "rebellious", "relaxed", "romantic", "smooth", "sophisticated", "sunny", "swinging",
    "tender", "upbeat", "uplifting", "warm",
    # and more
    "groovy", "energetic", "happy", "sad", "dark", "chill", "relaxing", "relaxed", "upbeat", "aggressive",
    "mellow", "romantic", "epic", "melodic", "dreamy", "uplifting", "melancholic", "laid-back", "intense",
    "funky", "smooth", "warm", "powerful", "calm", "peaceful", "emotional", "driving", "bouncy", "tense",
    "playful", "heavy", "soft", "fast", "slow", "party", "fun", "cool", "hypnotic", "bright", "moody",
    "nostalgic", "angry", "joyful", "sexy", "lively", "steady", "tight", "loose", "raw", "loud", "quiet",
    "gentle", "catchy", "danceable", "cinematic", "majestic", "somber", "hopeful", "confident", "sparse", "busy",
]
INSTRUMENTS = [
    "drums", "drum", "bass", "bass line", "bassline", "guitar", "piano", "keys", "keyboard", "organ", "synth",
    "strings", "horns", "brass", "kick", "snare", "hi-hat", "hi-hats", "hihat", "cymbals", "cymbal", "toms",
    "ride", "crash", "brushes", "percussion", "congas", "shaker", "tambourine", "claps", "808", "sub bass",
    "slap bass", "fretless bass", "upright bass", "electric bass", "synth bass", "acoustic drums",
    "drum machine", "breakbeat", "groove", "beat", "fill", "fills", "rhythm", "pattern", "loop",
]
STYLES = [
    "four on the floor", "half-time", "double-time", "double kick", "blast beat", "backbeat", "one drop",
    "walking", "syncopated", "straight", "swung", "shuffle", "ghost notes", "rimshot", "open hi-hat",
    "sixteenth notes", "eighth notes", "staccato", "legato", "fingerstyle", "picked", "muted", "octave",
    "simple", "complex", "minimal", "steady", "tight", "punchy", "deep", "fat", "crunchy", "clean", "distorted",
    "vintage", "modern", "live", "acoustic", "electric", "lo-fi", "analog", "with a heavy kick",
    "in a minor key", "in a major key", "on the beat", "at 120 bpm", "at 90 bpm", "at 128 bpm",
]

GENRES, MOODS = list(dict.fromkeys(GENRES)), list(dict.fromkeys(MOODS))  # drop repeats, keep the order


def corpus(rng: random.Random) -> list[str]:
    """Captions in the band corpus' format and free prompts, each word many times."""
    lines = []
    for _ in range(LINES):
        genres = ", ".join(rng.sample(GENRES, rng.randint(1, 3)))
        moods = ", ".join(rng.sample(MOODS, rng.randint(1, 3)))
        lines.append(f"Genres: {genres}. Moods: {moods}.")
        if rng.random() < 0.3:
            lines[-1] += f" Bpm: {rng.randint(60, 200)}."
    for _ in range(LINES):
        words = [rng.choice(MOODS), rng.choice(GENRES).lower(), rng.choice(INSTRUMENTS)]
        if rng.random() < 0.5:
            words.append(rng.choice(STYLES))
        if rng.random() < 0.2:
            rng.shuffle(words)
        lines.append(" ".join(words))
    for words in (GENRES, MOODS, INSTRUMENTS, STYLES):
        lines += [", ".join(words), ", ".join(w.lower() for w in words), ", ".join(w.title() for w in words)]
    # Every printable ASCII character and the common accented letters, so that typed prompts
    # ("Café del Mar", "Motörhead") do not fall back to <unk>.
    accents = "àáâäãåçèéêëìíîïñòóôöõøùúûüýÿßæœ"
    lines.append(" ".join(string.ascii_letters + string.digits + string.punctuation + accents + accents.upper()))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(OUT), help=f"folder to write (default {OUT})")
    parser.add_argument("--force", action="store_true", help="replace an existing folder")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    if out.exists() and any(out.iterdir()):
        if not args.force:
            sys.exit(f"{out} exists; pass --force to replace it (the shipped weights must not change)")
        shutil.rmtree(out)

    from transformers import T5EncoderModel
    from transformers.utils import logging as hf_logging

    from stage.model.config import MINI_TEXT_DIM
    from stage.text import mini_t5_config

    hf_logging.disable_progress_bar()
    tokenizer = unigram_tokenizer(corpus(random.Random(SEED)), VOCAB_SIZE)
    torch.manual_seed(SEED)
    encoder = T5EncoderModel(mini_t5_config(len(tokenizer), MINI_TEXT_DIM)).eval()
    encoder.half().save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    for f in out.iterdir():
        f.chmod(0o644)  # safetensors writes 0600; package data must be readable by every user
    params = sum(p.numel() for p in encoder.parameters())
    print(f"wrote {out}: T5 encoder {params / 1e6:.2f} M parameters (fp16), tokenizer {len(tokenizer)} tokens")


if __name__ == "__main__":
    main()
