"""Test helpers that build real transformers models from tiny configs."""

from __future__ import annotations

import torch


def make_hf_musicgen(seed: int = 0, hidden: int = 64, layers: int = 2, heads: int = 4, ffn: int = 128,
                     text_dim: int = 32, t5_config=None, encodec_overrides=None):
    """A random `MusicgenForConditionalGeneration` (tiny T5 + tiny 32 kHz-stride EnCodec) and the
    tiny tokenizer. Returns (model in eval mode, tokenizer)."""
    from transformers import AutoTokenizer, MusicgenConfig, MusicgenDecoderConfig, MusicgenForConditionalGeneration

    from stage.model.sources import TINY_TOKENIZER
    from stage.text import tiny_t5_config
    from stage.tokens.codec import TINY_ENCODEC_CONFIG, encodec_config, init_random_codebooks

    tokenizer = AutoTokenizer.from_pretrained(str(TINY_TOKENIZER))
    t5 = t5_config or tiny_t5_config(len(tokenizer), text_dim)
    config = MusicgenConfig(
        text_encoder=t5.to_dict(),
        audio_encoder=encodec_config(**{**TINY_ENCODEC_CONFIG, **(encodec_overrides or {})}).to_dict(),
        decoder=MusicgenDecoderConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                                      ffn_dim=ffn, vocab_size=2048, num_codebooks=4, dropout=0.0).to_dict(),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MusicgenForConditionalGeneration(config).eval()
    init_random_codebooks(model.audio_encoder, seed)  # zero codebooks would map all audio to code 0
    return model, tokenizer


def hf_generate_codes(model, inputs, guidance: float, frames: int) -> torch.Tensor:
    """Greedy transformers `generate` and the codes it decodes: [B, K, frames].

    `generate` returns audio; the codes are read off the real call of the audio decoder (a
    recording wrapper around it, the decode still runs)."""
    seen = []
    decode = model.audio_encoder.decode

    def record(audio_codes, *args, **kwargs):
        seen.append(audio_codes.clone())
        return decode(audio_codes, *args, **kwargs)

    model.audio_encoder.decode = record
    try:
        with torch.no_grad():
            model.generate(**inputs, do_sample=False, guidance_scale=guidance, max_new_tokens=frames + 3)
    finally:
        del model.audio_encoder.decode
    return seen[0][0]


def drum_loop(bpm: float, seconds: float, sample_rate: int, offset: float = 0.0, channels: int = 1, seed: int = 0):
    """A synthetic drum loop of known tempo in 4/4: kick on beats 1 and 3, snare on 2 and 4,
    closed hi-hat on eighths and a crash on every downbeat; the first beat (a downbeat) at
    `offset` seconds. float32 [C, N]."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    y = np.zeros(n, np.float64)

    def add(t, signal):
        i = int(round(t * sample_rate))
        if 0 <= i < n:
            m = min(len(signal), n - i)
            y[i:i + m] += signal[:m]

    def env(length, decay):
        tt = np.arange(int(length * sample_rate)) / sample_rate
        return tt, np.exp(-tt / decay)

    period = 60.0 / bpm
    beat = 0
    while offset + beat * period < seconds:
        t = offset + beat * period
        if beat % 4 == 0:
            tt, e = env(0.8, 0.3)
            add(t, 0.25 * rng.standard_normal(len(tt)) * e)  # crash
        if beat % 2 == 0:
            tt, e = env(0.25, 0.07)
            add(t, 0.9 * np.sin(2 * np.pi * (50 + 60 * np.exp(-tt / 0.02)) * tt) * e)
        else:
            tt, e = env(0.18, 0.05)
            add(t, 0.5 * rng.standard_normal(len(tt)) * e)
        for half in (0.0, 0.5):
            tt, e = env(0.04, 0.01)
            add(t + half * period, 0.04 * rng.standard_normal(len(tt)) * e)
        beat += 1
    y = np.clip(y, -1, 1).astype(np.float32)
    return np.repeat(y[None], channels, axis=0)


# ---------------------------------------------------------------------------------------------
# Fake stem datasets (short synthetic songs) for the data pipeline and training tests.
# Every builder writes real audio files with soundfile into `root` (created if missing) and
# returns `root` as a Path. Songs are deterministic for a given seed; song i plays at
# bpm + 10 * i with its first downbeat at 0.25 s, in 4/4.
# ---------------------------------------------------------------------------------------------

FAKE_GENRES = ("rock", "pop", "singer_songwriter", "jazz")


def fake_stem(kind: str, seconds: float, sample_rate: int, bpm: float = 120.0, offset: float = 0.25,
              channels: int = 1, seed: int = 0):
    """A synthetic stem of known tempo, float32 [C, N] with peak < 1.

    kind: "drums" (the drum_loop above), "hats" (noise bursts on eighths), "bass" (low sine notes
    on every beat), "guitar" (plucked notes on eighths), "keys" (sustained two-note chords per
    bar), "vocals" (a gliding tone, phrases of two bars on / one bar off), "other" (a soft pad),
    "silence" (zeros).
    """
    import numpy as np

    if kind == "drums":
        return drum_loop(bpm, seconds, sample_rate, offset, channels=channels, seed=seed)
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    period = 60.0 / bpm
    y = np.zeros(n, np.float64)
    beat_index = np.floor((t - offset) / period)
    since = (t - offset) - beat_index * period  # time since the last beat
    active = t >= offset
    if kind == "hats":
        eighth = (t - offset) % (period / 2)
        y = 0.2 * rng.standard_normal(n) * np.exp(-eighth / 0.01) * active
    elif kind == "bass":
        notes = 55.0 * 2 ** (rng.integers(0, 12, size=int(seconds / period) + 2) / 12)
        freq = notes[np.clip(beat_index.astype(int), 0, len(notes) - 1)]
        y = 0.5 * np.sin(2 * np.pi * freq * since) * np.exp(-since / 0.3) * active
    elif kind == "guitar":
        eighth = (t - offset) % (period / 2)
        idx = np.clip(np.floor((t - offset) / (period / 2)).astype(int), 0, None)
        notes = 196.0 * 2 ** (rng.integers(0, 12, size=idx.max() + 1) / 12)
        y = 0.3 * np.sin(2 * np.pi * notes[idx] * eighth) * np.exp(-eighth / 0.08) * active
    elif kind == "keys":
        bar = np.clip(np.floor((t - offset) / (4 * period)).astype(int), 0, None)
        roots = 261.6 * 2 ** (rng.integers(0, 7, size=bar.max() + 1) / 12)
        y = 0.15 * (np.sin(2 * np.pi * roots[bar] * t) + np.sin(2 * np.pi * roots[bar] * 1.5 * t)) * active
    elif kind == "vocals":
        bar = np.floor((t - offset) / (4 * period))
        on = active & (bar % 3 != 2)
        y = 0.3 * np.sin(2 * np.pi * (440.0 * t + 20 * np.sin(2 * np.pi * 0.5 * t))) * on
    elif kind == "other":
        y = 0.1 * np.sin(2 * np.pi * 330.0 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 0.25 * t))
    elif kind != "silence":
        raise ValueError(f"unknown fake stem kind {kind!r}")
    y = y.astype(np.float32)
    return np.repeat(y[None], channels, axis=0)


def _write(path, audio, sample_rate):
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio.T, sample_rate, subtype="PCM_16" if path.suffix != ".flac" else None)


def make_fake_moisesdb(root, songs: int = 3, seconds: float = 8.0, sample_rate: int = 44_100, channels: int = 2,
                       bpm: float = 120.0, seed: int = 0):
    """A MoisesDB tree: ROOT/<uuid>/data.json + drums/ (two tracks: drum loop and hi-hats), bass/,
    guitar/, other_keys/ and vocals/. Genres cycle through FAKE_GENRES; song ids are
    uuid.UUID(int=i + 1) strings. Returns the root Path."""
    import json
    import uuid
    from pathlib import Path

    root = Path(root)
    folders = {"drums": ["drums", "hats"], "bass": ["bass"], "guitar": ["guitar"], "other_keys": ["keys"],
               "vocals": ["vocals"]}
    for i in range(songs):
        song_id = str(uuid.UUID(int=i + 1))
        stems_meta = []
        for folder, kinds in folders.items():
            tracks = []
            for j, kind in enumerate(kinds):
                track_id = str(uuid.UUID(int=1000 * (i + 1) + 10 * len(stems_meta) + j))
                audio = fake_stem(kind, seconds, sample_rate, bpm + 10 * i, channels=channels, seed=seed + 97 * i + j)
                _write(root / song_id / folder / f"{track_id}.wav", audio, sample_rate)
                tracks.append({"id": track_id, "trackType": kind, "extension": "wav", "has_bleed": False})
            stems_meta.append({"id": folder, "stemName": folder, "tracks": tracks})
        meta = {"song": f"Fake Song {i}", "artist": "Fake Artist", "genre": FAKE_GENRES[i % len(FAKE_GENRES)],
                "stems": stems_meta}
        (root / song_id / "data.json").write_text(json.dumps(meta, indent=1))
    return root


def make_fake_musdb(root, train: int = 2, test: int = 1, seconds: float = 8.0, sample_rate: int = 44_100,
                    channels: int = 2, bpm: float = 120.0, seed: int = 0):
    """A MUSDB18-HQ tree: ROOT/{train,test}/Song NN/{bass,drums,other,vocals,mixture}.wav.
    Returns the root Path."""
    from pathlib import Path

    root = Path(root)
    for i in range(train + test):
        split = "train" if i < train else "test"
        folder = root / split / f"Fake Artist - Song {i:02d}"
        total = 0
        for name, kind in (("bass", "bass"), ("drums", "drums"), ("other", "keys"), ("vocals", "vocals")):
            audio = fake_stem(kind, seconds, sample_rate, bpm + 10 * i, channels=channels, seed=seed + 31 * i)
            _write(folder / f"{name}.wav", audio, sample_rate)
            total = total + audio
        _write(folder / "mixture.wav", 0.5 * total, sample_rate)
    return root


def make_fake_slakh(root, tracks: int = 3, seconds: float = 8.0, sample_rate: int = 44_100, bpm: float = 120.0,
                    splits: bool = True, seed: int = 0):
    """A Slakh2100 tree: ROOT/{train,validation,test}/TrackNNNNN/{metadata.yaml, stems/SXX.flac,
    mix.flac} (or ROOT/TrackNNNNN/... when splits=False); mono FLAC. Each track has S00 drums
    (is_drum), S01 Bass, S02 Piano, S03 Synth Pad (-> keyboard), S04 Brass (-> wind) and S05, a
    Guitar whose audio was not rendered (no file, audio_rendered: false). Returns the root Path."""
    from pathlib import Path

    import yaml

    root = Path(root)
    plan = [
        ("S00", "drums", {"inst_class": "Drums", "is_drum": True, "program_num": 0, "midi_program_name": "Drums"}),
        ("S01", "bass", {"inst_class": "Bass", "is_drum": False, "program_num": 33,
                         "midi_program_name": "Electric Bass (finger)"}),
        ("S02", "keys", {"inst_class": "Piano", "is_drum": False, "program_num": 0,
                         "midi_program_name": "Acoustic Grand Piano"}),
        ("S03", "other", {"inst_class": "Synth Pad", "is_drum": False, "program_num": 89,
                          "midi_program_name": "Pad 2 (warm)"}),
        ("S04", "guitar", {"inst_class": "Brass", "is_drum": False, "program_num": 61,
                           "midi_program_name": "Brass Section"}),
        ("S05", None, {"inst_class": "Guitar", "is_drum": False, "program_num": 25,
                       "midi_program_name": "Acoustic Guitar (steel)"}),
    ]
    split_names = ("train", "validation", "test")
    for i in range(tracks):
        name = f"Track{i + 1:05d}"
        folder = root / (split_names[min(i, 2)] if splits else "") / name
        stems = {}
        total = 0
        for stem_id, kind, info in plan:
            rendered = kind is not None
            if rendered:
                audio = fake_stem(kind, seconds, sample_rate, bpm + 10 * i, seed=seed + 13 * i)
                _write(folder / "stems" / f"{stem_id}.flac", audio, sample_rate)
                total = total + audio
            stems[stem_id] = {**info, "audio_rendered": rendered, "midi_saved": True, "plugin_name": "fake.nkm"}
        _write(folder / "mix.flac", 0.5 * total, sample_rate)
        meta = {"UUID": f"fake{i}", "audio_dir": "stems", "midi_dir": "MIDI", "target_peak": -1.0, "stems": stems}
        (folder / "metadata.yaml").write_text(yaml.safe_dump(meta))
    return root


def make_fake_folder_dataset(root, songs: int = 2, seconds: float = 8.0, sample_rate: int = 48_000,
                             channels: int = 1, bpm: float = 120.0, seed: int = 0,
                             files: dict | None = None):
    """A plain folder tree: ROOT/song_NN/<name>.wav. files: file name -> fake_stem kind (default
    kick (drums), hats, bass_di (bass), Vocals (vocals), synth (keys) and a mixture.wav of them).
    Returns the root Path."""
    from pathlib import Path

    root = Path(root)
    files = files or {"kick": "drums", "hats": "hats", "bass_di": "bass", "Vocals": "vocals", "synth": "keys"}
    for i in range(songs):
        total = 0
        for j, (name, kind) in enumerate(files.items()):
            audio = fake_stem(kind, seconds, sample_rate, bpm + 10 * i, channels=channels, seed=seed + 7 * i + j)
            _write(root / f"song_{i:02d}" / f"{name}.wav", audio, sample_rate)
            total = total + audio
        _write(root / f"song_{i:02d}" / "mixture.wav", 0.5 * total, sample_rate)
    return root


def make_tiny_clap(folder, seed: int = 0):
    """A transformers CLAP folder in `folder`: the real `ClapModel` class with tiny random
    weights, its feature extractor (no fusion) and a tokenizer (the tiny T5 one; CLAP only
    needs ids within its vocabulary). Returns the model in eval mode."""
    from transformers import AutoTokenizer, ClapConfig, ClapFeatureExtractor, ClapModel

    from stage.model.sources import TINY_TOKENIZER

    tokenizer = AutoTokenizer.from_pretrained(str(TINY_TOKENIZER))
    config = ClapConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=37, max_position_embeddings=80, projection_dim=16),
        audio_config=dict(depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 1, 1], hidden_size=64,
                          patch_embeds_hidden_size=8, projection_dim=16),
        projection_dim=16,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ClapModel(config).eval()
    model.save_pretrained(str(folder))
    ClapFeatureExtractor(truncation="rand_trunc").save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return model


def make_shift_tokens(folder, examples: int, seed: int = 0, codes: int = 4, target_frames: int = 10,
                      context_frames: tuple[int, int] = (5, 10), num_codebooks: int = 4, caption: str = "shift by one"):
    """A pre-tokenised dataset (`stage.train.tokens`) where the stem copies its context, one up.

    Each example has Tc ~ U{context_frames} context frames of i.i.d. uniform codes in
    [0, codes) and a target of `target_frames` frames starting at the same time (STAGE's aligned
    start, §3.1): target frame t = context frame t + 1 in every codebook for t < Tc, and i.i.d.
    uniform codes in [1, codes] after the context ends. Returns the list of (context, target)
    int64 arrays written."""
    import numpy as np

    from stage.data.example import TokenExample
    from stage.train.tokens import TokenWriter

    rng = np.random.default_rng(seed)
    written = []
    with TokenWriter(folder, num_codebooks=num_codebooks, codebook_size=2048, frame_rate=50) as writer:
        for i in range(examples):
            tc = int(rng.integers(context_frames[0], context_frames[1] + 1))
            context = rng.integers(0, codes, (num_codebooks, tc))
            target = rng.integers(1, codes + 1, (num_codebooks, target_frames))
            target[:, :tc] = context[:, :target_frames] + 1
            writer.add(TokenExample(target=target, context=context, caption=caption, song=f"song{i}"))
            written.append((context, target))
    return written


def open_studio(model, tmp_path, **config):
    """A `Studio` on the given (tiny) model with its sessions and work folders under tmp_path;
    `config` sets the other StudioConfig fields (limits, port, ...). Close it after use."""
    from stage.app.studio import Studio, StudioConfig

    return Studio.create(StudioConfig(model="tiny", sessions=str(tmp_path / "sessions"), work_dir=str(tmp_path / "work"),
                                      **config), model=model)


def session_files(folder) -> dict[str, bytes]:
    """Every file under `folder` (relative name -> bytes), but the empty lock files that
    `Session.lock` leaves (as `stage session` does): to check that a refused request wrote nothing."""
    from pathlib import Path

    from stage.generate.session import LOCK_FILE

    folder = Path(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != LOCK_FILE}
