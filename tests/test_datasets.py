"""Dataset readers: MoisesDB, MUSDB18-HQ, Slakh2100 and plain folders, on fake trees."""

from __future__ import annotations

import json

import pytest
from helpers import make_fake_folder_dataset, make_fake_moisesdb, make_fake_musdb, make_fake_slakh

from stage.data.datasets import assign_validation, list_songs, make_caption, parse_stem_map
from stage.errors import ConfigError, StageError


def names(song):
    return {stem: sorted(p.name for p in paths) for stem, paths in song.stems.items()}


def test_moisesdb_maps_stem_folders_and_keeps_every_drum_track(tmp_path):
    root = make_fake_moisesdb(tmp_path / "moises", songs=3, seconds=1.0)
    # The authors' summed drums file must not be counted on top of the drum tracks (§6.3).
    first = sorted(p for p in root.iterdir())[0]
    (first / "drums_mixed").mkdir()
    (first / "drums_mixed" / "drums.wav").write_bytes((first / "bass" / next((first / "bass").iterdir()).name).read_bytes())
    songs = list_songs(root, "moisesdb")
    assert [s.id for s in songs] == sorted(p.name for p in root.iterdir())
    song = songs[0]
    assert song.dataset == "moisesdb"
    assert set(song.stems) == {"drums", "bass", "guitar", "keyboard", "vocals"}  # other_keys -> keyboard
    assert len(song.stems["drums"]) == 2 and all(p.parent.name == "drums" for p in song.stems["drums"])
    assert song.stems["keyboard"][0].parent.name == "other_keys"
    assert all(p.is_absolute() and p.is_file() for paths in song.stems.values() for p in paths)
    assert [s.caption for s in songs] == ["Genre: rock.", "Genre: pop.", "Genre: singer songwriter."]
    assert song.meta == {"song": "Fake Song 0", "artist": "Fake Artist", "genre": "rock"}
    assert [s.split for s in songs] == ["train", "train", "valid"]  # the last song by id (§6.4)


def test_moisesdb_without_genre_has_an_empty_caption(tmp_path):
    root = make_fake_moisesdb(tmp_path / "moises", songs=1, seconds=0.5)
    meta_file = next(root.iterdir()) / "data.json"
    meta = json.loads(meta_file.read_text())
    meta["genre"] = ""
    meta_file.write_text(json.dumps(meta))
    (song,) = list_songs(root, "moisesdb")
    assert song.caption == ""


def test_musdb_splits_from_folders_and_ignores_the_mixture(tmp_path):
    root = make_fake_musdb(tmp_path / "musdb", train=3, test=2, seconds=0.5)
    songs = list_songs(root, "musdb", valid_songs=0)
    assert [s.split for s in songs] == ["train"] * 3 + ["test"] * 2
    for song in songs:
        assert names(song) == {k: [f"{k}.wav"] for k in ("bass", "drums", "other", "vocals")}
        assert song.caption == ""
    carved = list_songs(root, "musdb")
    assert [s.split for s in carved] == ["train", "train", "valid", "test", "test"]


def test_slakh_maps_instrument_classes_and_skips_unrendered_stems(tmp_path):
    root = make_fake_slakh(tmp_path / "slakh", tracks=3, seconds=0.5)
    (root / "train" / "Track00001" / "stems" / "S04.flac").unlink()  # a rendered stem whose file is gone
    songs = list_songs(root, "slakh")
    assert [(s.id, s.split) for s in songs] == [("Track00001", "train"), ("Track00002", "valid"), ("Track00003", "test")]
    assert names(songs[0]) == {"drums": ["S00.flac"], "bass": ["S01.flac"], "piano": ["S02.flac"], "keyboard": ["S03.flac"]}
    assert names(songs[1])["wind"] == ["S04.flac"]  # Brass -> wind
    assert "guitar" not in songs[1].stems  # S05 has audio_rendered: false
    assert songs[1].caption == ("Instruments: Drums, Electric Bass (finger), Acoustic Grand Piano, Pad 2 (warm), "
                                "Brass Section.")


def test_flat_slakh_tree_is_all_train_with_a_carved_validation(tmp_path):
    root = make_fake_slakh(tmp_path / "slakh", tracks=2, seconds=0.5, splits=False)
    assert [s.split for s in list_songs(root, "slakh")] == ["train", "valid"]


def test_folder_layout_with_a_stem_map(tmp_path):
    root = make_fake_folder_dataset(tmp_path / "mine", songs=1, seconds=0.5)
    (song,) = list_songs(root, "folder", stem_map=parse_stem_map("kick=drums, HATS=drums,bass_di=bass"))
    # Vocals.wav -> vocals (canonical name, any case); synth -> other; mixture.wav ignored.
    assert names(song) == {"drums": ["hats.wav", "kick.wav"], "bass": ["bass_di.wav"], "vocals": ["Vocals.wav"],
                           "other": ["synth.wav"]}
    (song,) = list_songs(root, "folder", stem_map={"synth": "skip", "mixture": "other"})
    assert names(song)["other"] == ["bass_di.wav", "hats.wav", "kick.wav", "mixture.wav"]
    (root / "song_00" / "caption.txt").write_text("Genre: funk.\n")
    assert list_songs(root, "folder")[0].caption == "Genre: funk."


@pytest.mark.parametrize("text, match", [
    ("kick", "expected NAME=STEM"),
    ("kick=drum", "'drum' is not a stem"),
    ("=bass", "empty file name"),
])
def test_bad_stem_maps_are_refused(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_stem_map(text)


def test_captions_never_render_empty_parts():
    assert make_caption() == ""
    assert make_caption(genres=[""]) == ""
    assert make_caption(genres=["rock"]) == "Genre: rock."
    assert make_caption(genres=["Rock", "Hard Rock", "Rock"]) == "Genres: Rock, Hard Rock."
    assert make_caption(genres=["rock"], instruments=["Piano", " "]) == "Genre: rock. Instrument: Piano."
    assert make_caption(moods=["epic", "melodic"]) == "Moods: epic, melodic."


def test_validation_carving_keeps_most_songs_for_training(tmp_path):
    root = make_fake_folder_dataset(tmp_path / "mine", songs=1, seconds=0.1)
    (song,) = list_songs(root, "folder")
    many = [type(song)(f"s{i:03d}", "folder", "train", song.stems) for i in range(240)]
    splits = [s.split for s in assign_validation(many, 24)]
    assert splits == ["train"] * 216 + ["valid"] * 24  # §6.4: the last 24 of 240
    assert [s.split for s in assign_validation(many[:30], 24)] == ["train"] * 27 + ["valid"] * 3
    assert [s.split for s in assign_validation(many[:1], 24)] == ["train"]
    assert [s.split for s in assign_validation(many[:30], 0)] == ["train"] * 30


def test_bad_roots_and_layouts_are_clear_errors(tmp_path):
    with pytest.raises(StageError, match="no such dataset folder"):
        list_songs(tmp_path / "missing", "musdb")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StageError, match="dataset folder is empty"):
        list_songs(tmp_path / "empty", "moisesdb")
    root = make_fake_musdb(tmp_path / "musdb", train=1, test=0, seconds=0.2)
    with pytest.raises(StageError, match="no MoisesDB songs found"):
        list_songs(root, "moisesdb")
    with pytest.raises(StageError, match="not a Slakh2100 tree"):
        list_songs(root, "slakh")
    moises = make_fake_moisesdb(tmp_path / "moises", songs=1, seconds=0.2)
    with pytest.raises(StageError, match="not a MUSDB18-HQ tree"):
        list_songs(moises, "musdb")
    (next(moises.iterdir()) / "data.json").write_text("{not json")
    with pytest.raises(StageError, match="data.json: not valid JSON"):
        list_songs(moises, "moisesdb")
    with pytest.raises(ConfigError, match="unknown dataset format"):
        list_songs(root, "medleydb")
    with pytest.raises(ConfigError, match="only applies to --format folder"):
        list_songs(root, "musdb", stem_map={"kick": "drums"})


def test_the_stems_stage_generates_are_canonical_dataset_stems():
    from stage.data.datasets import CANONICAL_STEMS
    from stage.data.samples import DEFAULT_CONTEXT_STEMS
    from stage.model.registry import STEMS

    assert set(STEMS) <= set(CANONICAL_STEMS) and "vocals" not in STEMS
    assert DEFAULT_CONTEXT_STEMS is STEMS  # one vocabulary for `stage generate --stem` and the training contexts
