"""Typed errors: a codec checkpoint that does not fit its config is a CheckpointError, and Hub
failures are told apart by huggingface_hub's exception types, never by the words in a message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

import stage
from stage.cli import main
from stage.errors import CheckpointError
from stage.model.config import CodecConfig
from stage.model.sources import _is_network_error, build_codec

SRC = Path(__file__).resolve().parents[1] / "src"


# ----------------------------------------------------------------------------- codec checkpoints


@pytest.fixture(scope="module")
def codec_folder(tmp_path_factory):
    """The tiny EnCodec written by `save_pretrained` (32 kHz, 50 Hz, 4 x 2048 codes)."""
    folder = tmp_path_factory.mktemp("codec")
    build_codec(CodecConfig(source="tiny")).model.save_pretrained(str(folder))
    return folder


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(sample_rate=16_000), "EnCodec runs at 32000 Hz / 50 Hz frames, config says 16000 / 50"),
        (dict(codebook_size=1024), "configured codebook size"),
        (dict(num_codebooks=3), "no EnCodec bandwidth gives 3 codebooks"),
    ],
)
def test_a_codec_that_does_not_fit_its_config_is_a_checkpoint_error(codec_folder, change, message):
    with pytest.raises(CheckpointError, match=message) as info:
        build_codec(CodecConfig(source=str(codec_folder), **change))
    assert isinstance(info.value, ValueError)  # callers that caught ValueError still catch it


def test_a_codec_mismatch_in_a_checkpoint_is_one_line_exit_2(tmp_path, capsys):
    folder = tmp_path / "ck"
    stage.load_model("tiny").save(folder)
    meta = json.loads((folder / "stage.json").read_text())
    meta["config"]["codec"]["sample_rate"] = 16_000  # the bundled EnCodec runs at 32 kHz
    (folder / "stage.json").write_text(json.dumps(meta))
    capsys.readouterr()
    assert main(["convert", str(folder), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: EnCodec runs at 32000 Hz") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- hub failures


def raised(make, cause: BaseException | None = None) -> BaseException:
    """`make()` raised (inside `except cause` when given, like transformers' `raise ... from e`)."""
    try:
        if cause is None:
            raise make()
        try:
            raise cause
        except BaseException as inner:
            raise make() from inner
    except BaseException as err:
        return err


def http_response(status: int):
    from huggingface_hub.utils import httpx

    return httpx.Response(status, request=httpx.Request("GET", "https://huggingface.co/api/models/nobody/nothing"))


def test_the_classifier_finds_hub_connection_errors_down_the_chain():
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled
    from huggingface_hub.utils import httpx

    # What from_pretrained raises with no network: the hub's LocalEntryNotFoundError, raised from
    # the HTTP client's ConnectError, re-raised by transformers as a plain OSError.
    refused = raised(lambda: httpx.ConnectError("[Errno 111] Connection refused"), ConnectionRefusedError(111, "refused"))
    hub = raised(lambda: LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub"), refused)
    wrapped = raised(lambda: OSError("We couldn't reach the hub to load the files"), hub)
    assert isinstance(wrapped, OSError) and not isinstance(wrapped, LocalEntryNotFoundError)
    assert _is_network_error(wrapped) and _is_network_error(hub) and _is_network_error(refused)
    assert _is_network_error(raised(lambda: OSError("no cached files"), OfflineModeIsEnabled("offline mode is enabled")))
    assert _is_network_error(raised(lambda: httpx.ReadTimeout("timed out")))  # a download that stalls mid-file


def test_the_classifier_does_not_swallow_unrelated_errors():
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    missing = raised(lambda: RepositoryNotFoundError("404 Client Error.", response=http_response(404)))
    assert not _is_network_error(raised(lambda: OSError("nobody/nothing is not a valid model identifier"), missing))
    assert not _is_network_error(GatedRepoError("403 Client Error.", response=http_response(403)))
    # Words the old message test took for network trouble ("connect", "resolve", "offline"):
    assert not _is_network_error(OSError("Error no file named model.safetensors found at .../resolve/main/"))
    assert not _is_network_error(raised(lambda: RuntimeError("cannot connect layer 3: size mismatch"), ValueError("x")))
    assert not _is_network_error(ValueError("offline tokenizer config is malformed"))


class _RepoNotFound(BaseHTTPRequestHandler):
    """A hub that answers every request like huggingface.co does for a repository that does not exist."""

    def _answer(self):
        self.send_response(404)
        self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("X-Error-Message", "Repository not found")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = _answer

    def log_message(self, *args):
        pass


PROBE = """
from transformers import EncodecModel
from stage.errors import CheckpointError, OfflineError
from stage.model.sources import from_pretrained, hub_snapshot
for call in (lambda: from_pretrained(EncodecModel, "nobody/nothing", "EnCodec"),
             lambda: hub_snapshot("nobody/nothing", ["*.json"])):
    try:
        call()
    except (CheckpointError, OfflineError) as err:
        print(type(err).__name__, err)
"""


def test_a_missing_hub_repo_online_is_a_checkpoint_error_not_offline(tmp_path):
    """Through the real transformers and huggingface_hub code, against a local stand-in for the
    hub (the process running this test stays offline)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RepoNotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{server.server_port}", HF_HOME=str(tmp_path / "hf"),
               PYTHONPATH=str(SRC), TRANSFORMERS_VERBOSITY="error", HF_HUB_DISABLE_TELEMETRY="1")
    try:
        out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
    finally:
        server.shutdown()
        server.server_close()
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2, out.stdout + out.stderr
    assert lines[0].startswith("CheckpointError cannot load EnCodec from 'nobody/nothing':"), lines[0]
    assert lines[1].startswith("CheckpointError cannot fetch 'nobody/nothing' from the hub:"), lines[1]


# ----------------------------------------------------------------------------- narrowed catches


@pytest.mark.parametrize(
    "data, message",
    [
        (b"these are my lyrics\n" * 50, "not a readable audio file"),  # libsndfile refuses, so does audioread
        (b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00", "not a readable audio file"),  # cut in its header
    ],
)
def test_unreadable_audio_is_an_audio_error(tmp_path, data, message):
    from stage.audio import load_audio
    from stage.errors import AudioError

    path = tmp_path / "mix.wav"
    path.write_bytes(data)
    with pytest.raises(AudioError, match=message):
        load_audio(path)


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    "make, error",
    [
        (lambda p: (p.write_bytes(b""), p)[1], "EOFError"),
        (lambda p: (p.write_bytes(b"PK\x03\x04 half a zip"), p)[1], "BadZipFile"),
        (lambda p: _npz(p, x=np.zeros(2)), "KeyError"),  # no header entry
        (lambda p: _npz(p, __meta__=np.array("[1, 2]")), "ValueError"),  # a header that is not a table
        (lambda p: _npz(p, __meta__=np.array("{not json")), "JSONDecodeError"),
    ],
)
def test_a_foreign_embedding_cache_is_ignored_with_a_note(tmp_path, make, error):
    from stage.eval.cache import EmbeddingCache

    path = make(tmp_path / "cache.npz")
    cache = EmbeddingCache(path)
    assert cache.entries == {} and cache.note == f"ignored unreadable embedding cache {path} ({error})"


def test_a_single_array_is_not_an_embedding_cache(tmp_path):
    from stage.eval.cache import EmbeddingCache

    np.save(tmp_path / "cache.npy", np.zeros(3))
    cache = EmbeddingCache(tmp_path / "cache.npy")
    assert cache.note and cache.note.endswith("(ValueError)")


def test_a_folder_that_is_not_a_clap_model_skips_the_metric(tmp_path):
    from stage.eval.adapters import AdapterUnavailable, ClapEmbedder

    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(AdapterUnavailable, match=r"^skipped: could not load CLAP from .*not a valid JSON file"):
        ClapEmbedder(tmp_path)
