"""One version policy for stage's versioned files (stage/formats.py): the own format at its
version or older is read; a foreign format, a malformed version and a newer version are refused."""

from __future__ import annotations

import json

import pytest

from stage.data import band, manifest
from stage.errors import StageError
from stage.formats import check_format
from stage.generate.session import SESSION_FORMAT, SESSION_VERSION, SessionState


def test_check_format_reads_older_and_current_versions_and_refuses_the_rest():
    kw = dict(expected="stage-x", version=3, where="f.json", what="stage x file")
    assert [check_format("stage-x", v, **kw) for v in (1, 2, 3)] == [1, 2, 3]
    with pytest.raises(StageError, match=r"^f.json: stage x file version 4 is newer than this stage supports \(3\); upgrade stage$"):
        check_format("stage-x", 4, **kw)
    with pytest.raises(StageError, match="not a stage x file .format 'other'"):
        check_format("other", 1, **kw)
    for bad in (None, 0, -1, "1", 1.0, True):
        with pytest.raises(StageError, match="bad stage x file version"):
            check_format("stage-x", bad, **kw)

    class MyError(StageError):
        pass

    with pytest.raises(MyError):
        check_format("stage-x", 9, **kw, error=MyError)


def _session(**over):
    data = {"format": SESSION_FORMAT, "version": SESSION_VERSION, "sample_rate": 32000, "channels": 1,
            "samples": 10, "mixes": [], "current": 0, "takes": [], "next_take": 1}
    return {**data, **over}


def test_session_files_follow_the_policy():
    assert SessionState.from_dict(_session(), "s.json").sample_rate == 32000
    with pytest.raises(StageError, match="newer than this stage"):
        SessionState.from_dict(_session(version=SESSION_VERSION + 1), "s.json")
    with pytest.raises(StageError, match="bad stage session file version None"):
        SessionState.from_dict({k: v for k, v in _session().items() if k != "version"}, "s.json")
    with pytest.raises(StageError, match="not a stage session"):
        SessionState.from_dict([], "s.json")


def test_manifests_follow_the_policy(tmp_path):
    path = tmp_path / "manifest.jsonl"
    path.write_text(json.dumps({"stage_manifest": manifest.FORMAT_VERSION, "dataset": "folder", "root": str(tmp_path)}) + "\n")
    assert manifest.load_manifest(path).songs == []
    path.write_text(json.dumps({"stage_manifest": manifest.FORMAT_VERSION + 1, "dataset": "folder", "root": "."}) + "\n")
    with pytest.raises(StageError, match=f"stage manifest version {manifest.FORMAT_VERSION + 1} is newer"):
        manifest.load_manifest(path)


def test_band_songs_with_a_foreign_or_newer_meta_are_rendered_again(tmp_path):
    (tmp_path / "mix.wav").write_bytes(b"")
    meta = {"format": band.FORMAT, "version": band.VERSION, "stems": {}, "mix": "mix.wav"}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    assert band.read_meta(tmp_path) == meta
    for over in ({"version": band.VERSION + 1}, {"format": "other"}, {"version": "1"}):
        (tmp_path / "meta.json").write_text(json.dumps({**meta, **over}))
        assert band.read_meta(tmp_path) is None
    (tmp_path / "meta.json").write_text("[]")  # not a JSON object
    assert band.read_meta(tmp_path) is None


def test_stage_checkpoints_follow_the_policy(tmp_path, tiny_model):
    from stage.errors import CheckpointError
    from stage.model.checkpoints import load_model

    tiny_model.save(tmp_path / "ckpt")
    meta_path = tmp_path / "ckpt" / "stage.json"
    meta = json.loads(meta_path.read_text())
    for over, message in (({"version": meta["version"] + 1}, "is newer than this stage"),
                          ({"format": "other"}, "not a stage checkpoint"), ({"version": None}, "bad stage checkpoint version")):
        meta_path.write_text(json.dumps({**meta, **over}))
        with pytest.raises(CheckpointError, match=message):
            load_model(tmp_path / "ckpt")
